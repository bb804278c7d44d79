//! `promptscope pretrain`: both towers trained on image–caption pairs with FILIP's or CLIP's loss, from
//! random weights (`--preset`) or an existing CLIP (`--init`), written as a Hugging Face folder.

use std::path::PathBuf;

use anyhow::Result;
use promptscope::data::webdataset::BadSamples;
use promptscope::run::execute::Report;
use promptscope::train::config::{PretrainRun, PretrainStart, RunConfig, ShardReading};
use promptscope::train::optim::OptimConfig;
use promptscope::train::pairs::StreamRecipe;
use promptscope::train::pretrain::{PretrainConfig, PretrainLoss, ShapeHeadInput};

use super::{Bar, Format};

fn defaults() -> PretrainConfig {
    PretrainConfig::default()
}

#[derive(clap::Args, Debug, Clone)]
pub struct PretrainArgs {
    /// A folder of pairs: NAME.jpg + NAME.txt, or images beside a captions.tsv / captions.jsonl
    /// (read into memory once). Or WebDataset shards, streamed: 'shards/{00000..00009}.tar', one .tar,
    /// a folder of .tar files, or a folder of shard folders (img2dataset's layouts; `promptscope
    /// synth-scenes --format webdataset` writes them).
    #[arg(long, required_unless_present = "scenes")]
    pub data: Option<PathBuf>,
    /// Shards: the sample shuffle buffer (1 reads each shuffled shard in order). Memory holds this many
    /// encoded samples.
    #[arg(long, default_value_t = ShardReading::default().shuffle_buffer)]
    pub shuffle_buffer: usize,
    /// Shards: a sample without caption or image, a caption that is not UTF-8, an image that does not
    /// decode, or a shard cut short is skipped and counted, or stops the run naming shard and key.
    #[arg(long, value_enum, default_value_t = BadSamples::Skip)]
    pub bad_samples: BadSamples,
    /// Shards without a sizes.json are counted once; the counts are cached here.
    #[command(flatten)]
    pub cache: super::args::CacheArgs,
    /// Instead of --data: this many generated scenes an epoch, drawn afresh every epoch (from
    /// --scene-seed, the epoch and the index) beside the step, never all in memory, with the levers that
    /// make colour insufficient (same-colour scenes, grey scenes, shape-first wording, minimal-pair twins,
    /// shape-swapped captions as extra negatives: the shape-aware demo models' recipe).
    #[arg(long, conflicts_with = "data")]
    pub scenes: Option<usize>,
    #[arg(long, default_value_t = 1, requires = "scenes")]
    pub scene_seed: u64,
    /// Stream scenes as the first demo models saw them (no levers, no twins, no negatives).
    #[arg(long, requires = "scenes")]
    pub plain_scenes: bool,
    /// The weight of a dense shape loss beside the contrastive one: a linear head on every patch token
    /// learns which shape the scene's generator drew there (the head is not saved). Needs --scenes.
    #[arg(long, default_value_t = defaults().shape_labels, requires = "scenes")]
    pub shape_labels: f64,
    /// Where the shape head reads the patch tokens: projected (after visual_projection), hidden (after
    /// post_layernorm; only the contrastive loss trains the projection) or block:N (standardised hidden
    /// states entering block N; the blocks from N on learn from the contrastive loss alone).
    #[arg(long, default_value_t = defaults().shape_head, requires = "scenes")]
    pub shape_head: ShapeHeadInput,
    /// The new model's folder (must not exist yet, or be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// filip (token-wise late interaction) or clip (pooled features).
    #[arg(long, value_enum, default_value_t = defaults().loss)]
    pub loss: PretrainLoss,
    /// The architecture to start from random weights (scenes, tiny, vit-b-32, ...).
    #[arg(long, default_value = "scenes", conflicts_with = "init")]
    pub preset: String,
    /// Start from this CLIP folder's weights instead (fine-tuning).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Override the preset's input size (px); images are resized to it.
    #[arg(long, conflicts_with = "init")]
    pub image_size: Option<usize>,
    /// Override the preset's patch size (px): a finer grid gives finer maps at more cost.
    #[arg(long, conflicts_with = "init")]
    pub patch_size: Option<usize>,
    /// FILIP's token selection: the share of each side's tokens that enter the means (FILIP: 0.25).
    #[arg(long, default_value_t = defaults().top_fraction)]
    pub top_fraction: f64,
    #[arg(long, default_value_t = defaults().optim.epochs)]
    pub epochs: usize,
    #[arg(long, default_value_t = defaults().batch_size)]
    pub batch_size: usize,
    #[arg(long, default_value_t = defaults().optim.lr)]
    pub lr: f64,
    #[arg(long, default_value_t = defaults().optim.weight_decay)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = defaults().optim.warmup_epochs)]
    pub warmup_epochs: usize,
    #[arg(long, default_value_t = defaults().seed)]
    pub seed: u64,
    /// Store the weights as f16 (half the size; loaded back as f32).
    #[arg(long)]
    pub fp16: bool,
    /// Continue from the checkpoint a killed run left next to --out (OUT.ckpt).
    #[arg(long)]
    pub resume: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn pretrain(args: &PretrainArgs) -> Result<()> {
    let loss = args.loss;
    let optim = OptimConfig {
        lr: args.lr,
        momentum: 0.9,
        weight_decay: args.weight_decay,
        warmup_epochs: args.warmup_epochs,
        warmup_lr: args.lr / 10.0,
        epochs: args.epochs,
    };
    let config = PretrainConfig {
        loss,
        top_fraction: args.top_fraction,
        optim,
        batch_size: args.batch_size,
        seed: args.seed,
        shape_labels: args.shape_labels,
        shape_head: args.shape_head,
    };
    let recipe = args.scenes.map(|count| {
        let shape = StreamRecipe::shape_recipe(count, args.scene_seed);
        if args.plain_scenes {
            StreamRecipe {
                levers: Default::default(),
                minimal_pairs: 0.0,
                hard_negatives: false,
                ..shape
            }
        } else {
            shape
        }
    });
    let run = PretrainRun {
        pairs: args.data.clone().unwrap_or_default(),
        scenes: recipe,
        start: match &args.init {
            Some(dir) => PretrainStart::Init(dir.clone()),
            None => PretrainStart::Preset(args.preset.clone()),
        },
        image_size: args.image_size,
        patch_size: args.patch_size,
        config,
        fp16: args.fp16,
        shards: ShardReading {
            shuffle_buffer: args.shuffle_buffer,
            bad_samples: args.bad_samples,
        },
    };
    let json = args.format == Format::Json;
    let lines = super::output::Lines::default();
    let output = promptscope::run::execute::RunOutput {
        path: Some(args.out.clone()),
        resume: args.resume,
    };
    let cache = args.cache.dir();
    let summary = super::execute(
        &RunConfig::Pretrain(run),
        None,
        None,
        cache.as_deref(),
        output,
        &mut |bar, e| {
            let s = e.stats;
            if json {
                lines.line(serde_json::json!({"epoch": s.epoch, "loss": s.loss, "lr": s.lr, "batch_acc": s.train_acc}));
            } else {
                bar.0.suspend(|| {
                    eprintln!(
                        "epoch {:>4}/{}  loss {:.4}  lr {:.2e}  in-batch retrieval {:5.1}%",
                        s.epoch + 1,
                        s.epochs,
                        s.loss,
                        s.lr,
                        100.0 * s.train_acc
                    )
                });
            }
        },
    )?;
    lines.finish()?;
    let Report::Pretrain {
        history,
        run,
        config,
        skipped,
    } = &summary.report
    else {
        unreachable!("a pretraining run reports its history")
    };
    let last = history.last();
    if json {
        outln!(
            "{}",
            serde_json::json!({"out": args.out, "epochs": history.len(), "final_loss": last.map(|h| h.loss), "seconds": last.map(|h| h.elapsed_s), "run": run, "config": config, "skipped": skipped})
        );
    } else {
        outln!(
            "wrote {} ({} epochs, final loss {:.4})",
            args.out.display(),
            history.len(),
            last.map_or(f64::NAN, |h| h.loss)
        );
        if let Some(s) = skipped.as_ref().filter(|s| s.total() > 0) {
            let kinds: Vec<String> = s
                .by_kind
                .iter()
                .map(|(k, n)| {
                    format!(
                        "{n} {}",
                        serde_json::to_value(k)
                            .unwrap_or_default()
                            .as_str()
                            .unwrap_or("?")
                            .replace('_', " ")
                    )
                })
                .collect();
            eprintln!(
                "skipped {} samples of the shards: {}",
                s.total(),
                kinds.join(", ")
            );
            for e in &s.examples {
                eprintln!("  {e}");
            }
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct PointingArgs {
    #[command(flatten)]
    pub model: super::ModelArgs,
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// The scenes' seed (pretraining used others: `synth-scenes --seed`).
    #[arg(long, default_value_t = 1000)]
    pub seed: u64,
    /// Scenes may contain the colour–shape pairs held out of pretraining.
    #[arg(long)]
    pub held_out: bool,
    /// Score these explanation-map methods instead (names, a comma list, or `all`): a table of
    /// method × hit rate (15 px rule and strict) × ms per map.
    #[arg(long)]
    pub methods: Vec<String>,
    /// With --methods: images with masks instead of generated scenes (ROOT/<class>/NAME.png beside
    /// NAME.mask.png; the prompt "a photo of a {class}.").
    #[arg(long, requires = "methods")]
    pub data: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ShapeCheckArgs {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Scenes for each measure (the probe trains on as many again).
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// The scenes' seed (pretraining streams use others).
    #[arg(long, default_value_t = 2000)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn pointing(a: &PointingArgs) -> Result<()> {
    let (model, count, seed, held_out, methods, format) =
        (&a.model, a.count, a.seed, a.held_out, &a.methods, a.format);
    let data = a.data.as_deref();
    use promptscope::align::maps::MapMethod;
    use promptscope::align::pointing::{pointing_of_methods, PointingSet};
    use promptscope::align::AlignMode;
    use promptscope::data::scenes::{generate, SceneConfig};
    let methods = MapMethod::parse_list(methods)?;
    let set = match data {
        Some(root) => {
            // Checked before the model loads, so a folder without masks fails at once.
            promptscope::data::masked::masked_images(root)?;
            PointingSet::Masked(root.to_path_buf())
        }
        None => PointingSet::Scenes {
            count,
            seed,
            held_out,
        },
    };
    let clip = super::load_model(model)?;
    let bar = Bar::new();
    if !methods.is_empty() {
        let r = pointing_of_methods(&clip, &set, &methods, &bar)?;
        drop(bar);
        return match format {
            Format::Json => super::print_json(&r),
            Format::Text => {
                outln!(
                    "pointing game on {} images, {} objects (peak within {:.1} px of the object; strict: the peak patch at least a quarter on it)",
                    r.scenes,
                    r.objects,
                    r.tolerance_px
                );
                outln!(
                    "{:20} {:>9} {:>9} {:>11}",
                    "method",
                    "pointing",
                    "strict",
                    "ms per map"
                );
                outln!(
                    "{:20} {:>8.1}% {:>8.1}% {:>11}",
                    "random patch",
                    100.0 * r.point_chance,
                    100.0 * r.chance,
                    "-"
                );
                for m in &r.methods {
                    outln!(
                        "{:20} {:>8.1}% {:>8.1}% {:>11.3}",
                        m.method.name(),
                        100.0 * m.point_rate,
                        100.0 * m.hit_rate,
                        m.ms_per_map
                    );
                }
                Ok(())
            }
        };
    }
    let cfg = SceneConfig {
        size: clip.image_size() as u32,
        allow_held_out: held_out,
        ..SceneConfig::default()
    };
    let scenes = (0..count as u64)
        .map(|i| generate(seed, i, &cfg))
        .collect::<promptscope::Result<Vec<_>>>()?;
    let reports = [AlignMode::Token, AlignMode::Value]
        .into_iter()
        .map(|mode| promptscope::align::pointing::pointing_game(&clip, &scenes, mode, &bar))
        .collect::<promptscope::Result<Vec<_>>>()?;
    drop(bar);
    match format {
        Format::Json => outln!("{}", serde_json::to_string(&reports)?),
        Format::Text => {
            for r in &reports {
                outln!(
                    "{:?} mode: pointing game (peak within {:.1} px of the object) {} of {} objects, {:.1}% (a random patch: {:.1}%); strict (peak patch at least a quarter on the object) {:.1}% (random {:.1}%; {} hittable); mean map mass on the object {:.1}%",
                    r.mode,
                    r.tolerance_px,
                    r.point_hits,
                    r.objects,
                    100.0 * r.point_rate,
                    100.0 * r.point_chance,
                    100.0 * r.hit_rate,
                    100.0 * r.chance,
                    r.hittable,
                    100.0 * r.mean_mass_inside
                );
                let rate = |(n, h): (usize, usize)| {
                    if n == 0 {
                        0.0
                    } else {
                        100.0 * h as f64 / n as f64
                    }
                };
                let shapes: Vec<String> = r
                    .by_shape
                    .iter()
                    .map(|(s, n, h)| format!("{s} {:.0}%", rate((*n, *h))))
                    .collect();
                outln!(
                    "  strict, by shape: {}; small {:.0}%, large {:.0}%",
                    shapes.join(", "),
                    rate(r.by_size[0]),
                    rate(r.by_size[1])
                );
            }
            if let Some(r) = reports.first() {
                outln!(
                    "SsVP: {:.1}% of its top-{} patches lie on an object (a random pick: {:.1}%)",
                    100.0 * r.ssvp_object_share,
                    r.ssvp_k,
                    100.0 * r.random_object_share
                );
            }
        }
    }
    Ok(())
}

pub fn shape_check(a: &ShapeCheckArgs) -> Result<()> {
    let (model, count, seed, format) = (&a.model, a.count, a.seed, a.format);
    use promptscope::align::shape::{same_colour_pointing, shape_probe};
    use promptscope::align::AlignMode;
    use promptscope::data::scenes::same_colour_scenes;
    use promptscope::data::scenes::{generate, SceneConfig};
    let clip = super::load_model(model)?;
    let size = clip.image_size() as u32;
    let bar = Bar::new();
    let cfg = SceneConfig {
        size,
        allow_held_out: true,
        ..SceneConfig::default()
    };
    let draw = |seed: u64| -> promptscope::Result<Vec<_>> {
        (0..count as u64).map(|i| generate(seed, i, &cfg)).collect()
    };
    let (train, test) = (draw(seed)?, draw(seed + 1)?);
    let probe = shape_probe(&clip, &train, &test, AlignMode::Token, &bar)?;
    let same = same_colour_scenes(seed + 2, count, size)?;
    let pointing = [AlignMode::Token, AlignMode::Value]
        .into_iter()
        .map(|mode| same_colour_pointing(&clip, &same, mode, &bar))
        .collect::<promptscope::Result<Vec<_>>>()?;
    let zero_shot = promptscope::align::shape::shape_only_zero_shot(&clip, 10, seed + 3, &bar)?;
    drop(bar);
    match format {
        Format::Json => outln!(
            "{}",
            serde_json::json!({ "probe": probe, "same_colour_pointing": pointing, "shape_only_zero_shot": zero_shot })
        ),
        Format::Text => {
            outln!(
                "shape probe (token at each object's place, {} training and {} test objects): {:.1}% (chance {:.1}%)",
                probe.train_objects,
                probe.test_objects,
                100.0 * probe.accuracy,
                100.0 * probe.chance
            );
            for r in &pointing {
                outln!(
                    "same-colour pointing, {} mode ({} objects in {} scenes): the shape word's map singles out the named object {:.1}% (chance {:.1}%); its peak within {:.1} px of it {:.1}% (a random patch {:.1}%)",
                    r.mode,
                    r.objects,
                    r.scenes,
                    100.0 * r.pick_rate,
                    100.0 * r.pick_chance,
                    promptscope::align::pointing::tolerance_px(size as usize),
                    100.0 * r.point_rate,
                    100.0 * r.point_chance
                );
            }
            outln!(
                "shape-only zero-shot ({} images, 8 shapes in mixed colours, \"{}\"): global {:.1}%, token-wise {:.1}% (chance {:.1}%)",
                zero_shot.images,
                zero_shot.template,
                100.0 * zero_shot.global,
                100.0 * zero_shot.tokenwise,
                100.0 * zero_shot.chance
            );
        }
    }
    Ok(())
}
