//! `bench` (the towers, CoOp's step, CLIP's prompt ensemble, the suite: one subcommand each) and the other
//! timing verbs: `bench-pretrain`, `bench-maps`, `bench-dataset`, `bench-overlay`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser as _;
use promptscope::train::pretrain::PretrainLoss;

use super::args::{Format, ModelArgs};
use super::{load_model, preset, print_json, serde_name};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub mode: Option<BenchMode>,
    /// The spelling from before the modes were subcommands (`bench --coop --model M`): translated, with
    /// a note that names the new one.
    #[arg(hide = true, num_args = 0.., allow_hyphen_values = true, trailing_var_arg = true)]
    pub old_spelling: Vec<String>,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchMode {
    /// Image-tower images/s and text-tower prompts/s.
    Towers(TowersArgs),
    /// CoOp's training step: forward + backward + update over --classes prompts.
    Coop(StepArgs),
    /// CoOp's step with class-specific contexts.
    Csc(StepArgs),
    /// CoCoOp's step: the meta-net's per-image prompts, so the text tower runs once per image of --batch.
    Cocoop(StepArgs),
    /// CLIP's prompt ensemble: --classes names × --templates of the 80 ImageNet templates.
    ZeroShot(EnsembleArgs),
    /// The whole suite: image tower at batch 1/16/64, text tower, CoOp steps for 100 and 1000 classes,
    /// FILIP 1 image × 100 prompts, SsVP, JPEG loading + preprocessing.
    Suite(SuiteArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct TowersArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, default_value_t = 64)]
    pub images: usize,
    #[arg(long, default_value_t = 64)]
    pub text_batch: usize,
    #[arg(long, default_value_t = 256)]
    pub texts: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StepArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value_t = 100)]
    pub classes: usize,
    #[arg(long, default_value_t = 16)]
    pub n_ctx: usize,
    /// Images a step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct EnsembleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value_t = 100)]
    pub classes: usize,
    /// How many of the 80 ImageNet templates.
    #[arg(long, default_value_t = 80)]
    pub templates: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SuiteArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchPretrainArgs {
    /// The architecture (scenes, tiny, vit-b-32, ...).
    #[arg(long, default_value = "scenes")]
    pub preset: String,
    /// Override the preset's input size (px), as `pretrain --image-size`.
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Override the preset's patch size (px), as `pretrain --patch-size`.
    #[arg(long)]
    pub patch_size: Option<usize>,
    #[arg(long, value_enum, default_value_t = PretrainLoss::Filip)]
    pub loss: PretrainLoss,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Untimed steps first: the first steps grow the process's memory (page faults) as no later
    /// step of a run does.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Also write the initial model (DIR/model) and the batch (DIR/batch.safetensors) for PyTorch.
    #[arg(long)]
    pub save_batch: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchMapsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Methods (names, a comma list, or `all`).
    #[arg(long, default_value = "all")]
    pub methods: Vec<String>,
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchShardsArgs {
    /// Shards as `pretrain --data` takes them.
    #[arg(long)]
    pub data: PathBuf,
    /// The model input the images are preprocessed to (px).
    #[arg(long, default_value_t = promptscope::clip::ClipConfig::scenes().vision_config.image_size)]
    pub image_size: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Batches to read (default: one epoch).
    #[arg(long)]
    pub batches: Option<usize>,
    #[arg(long, default_value_t = promptscope::train::config::ShardReading::default().shuffle_buffer)]
    pub shuffle_buffer: usize,
    #[command(flatten)]
    pub cache: super::args::CacheArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchDatasetArgs {
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 16)]
    pub shots: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchOverlayArgs {
    #[arg(long, default_value_t = 512)]
    pub size: u32,
    #[arg(long, default_value_t = 50)]
    pub repeats: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    let mode = match &args.mode {
        Some(mode) => mode.clone(),
        None => old_spelling(&args.old_spelling)?,
    };
    match &mode {
        BenchMode::Towers(a) => towers(a),
        BenchMode::Coop(a) => step(a, StepKind::Coop),
        BenchMode::Csc(a) => step(a, StepKind::Csc),
        BenchMode::Cocoop(a) => step(a, StepKind::Cocoop),
        BenchMode::ZeroShot(a) => ensemble(a),
        BenchMode::Suite(a) => suite(a),
    }
}

/// `bench`'s flags from before its modes were subcommands, as the subcommand they name: `--coop`
/// (with `--csc` or `--cocoop`), `--zero-shot-templates N`, `--suite`, or none (the towers).
fn old_spelling(given: &[String]) -> Result<BenchMode> {
    /// The one-token parser of the new spelling.
    #[derive(clap::Parser)]
    #[command(name = "promptscope bench")]
    struct Spelled {
        #[command(subcommand)]
        mode: BenchMode,
    }
    let has = |flag: &str| given.iter().any(|a| a == flag);
    let mut rest: Vec<String> = Vec::new();
    let mut templates = None;
    let mut it = given.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--coop" | "--csc" | "--cocoop" | "--suite" => {}
            "--zero-shot-templates" => templates = it.next().cloned(),
            _ => match a.strip_prefix("--zero-shot-templates=") {
                Some(n) => templates = Some(n.to_string()),
                None => rest.push(a.clone()),
            },
        }
    }
    let mode = if has("--suite") {
        "suite"
    } else if templates.is_some() {
        "zero-shot"
    } else if has("--coop") {
        match (has("--csc"), has("--cocoop")) {
            (true, true) => anyhow::bail!(
                "--csc and --cocoop time different steps: `bench csc` or `bench cocoop`"
            ),
            (true, false) => "csc",
            (false, true) => "cocoop",
            (false, false) => "coop",
        }
    } else if has("--csc") || has("--cocoop") {
        anyhow::bail!("bench's step modes are subcommands: `bench csc` or `bench cocoop`")
    } else {
        "towers"
    };
    if let Some(n) = templates {
        rest.extend(["--templates".to_string(), n]);
    }
    let spelled = Spelled::try_parse_from(
        ["promptscope bench", mode]
            .into_iter()
            .map(String::from)
            .chain(rest),
    )
    // A bad flag is clap's own error (its whole message, exit status 2), as for any other verb.
    .unwrap_or_else(|e| e.exit());
    if mode != "towers" {
        eprintln!("note: bench's modes are subcommands now: `promptscope bench {mode} ...`");
    }
    Ok(spelled.mode)
}

/// `bench-maps`: ms per map of each method.
pub fn bench_maps(a: &BenchMapsArgs) -> Result<()> {
    let methods = promptscope::align::maps::MapMethod::parse_list(&a.methods)?;
    let clip = load_model(&a.model)?;
    let mut rows = Vec::new();
    for m in methods {
        let ms = promptscope::bench::map_ms(&clip, m, a.repeats)?;
        if a.format == Format::Text {
            outln!("{:20} {ms:9.2} ms per map", m.name());
        }
        rows.push(serde_json::json!({ "method": m, "ms_per_map": ms }));
    }
    if a.format == Format::Json {
        print_json(&rows)?;
    }
    Ok(())
}

fn towers(a: &TowersArgs) -> Result<()> {
    let clip = load_model(&a.model)?;
    let r = promptscope::bench::run(&clip, a.batch, a.images, a.text_batch, a.texts)?;
    match a.format {
        Format::Json => print_json(&r),
        Format::Text => {
            outln!("device: {}", r.device);
            outln!(
                "image tower: {:8.2} images/s  (batch {}, {} images)",
                r.images_per_s,
                r.batch,
                r.images
            );
            outln!(
                "text tower:  {:8.2} prompts/s (batch {}, {} prompts)",
                r.prompts_per_s,
                r.text_batch,
                r.texts
            );
            Ok(())
        }
    }
}

fn step(a: &StepArgs, kind: StepKind) -> Result<()> {
    let clip = load_model(&a.model)?;
    let (classes, n_ctx, batch, steps) = (a.classes, a.n_ctx, a.batch, a.steps);
    let r = match kind {
        StepKind::Cocoop => promptscope::bench::cocoop_step(&clip, classes, n_ctx, batch, steps)?,
        _ => promptscope::bench::coop_step(
            &clip,
            classes,
            n_ctx,
            batch,
            kind == StepKind::Csc,
            steps,
        )?,
    };
    match a.format {
        Format::Json => print_json(&r),
        Format::Text => {
            outln!(
                "{} step ({} classes, M = {}, batch {}{}, {} text positions): {:.1} ms/step over {} steps; peak RSS {}",
                if r.cocoop { "CoCoOp" } else { "CoOp" },
                r.classes,
                r.n_ctx,
                r.batch,
                if r.csc { ", CSC" } else { "" },
                r.text_positions,
                r.ms_per_step,
                r.steps,
                r.peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.0} MiB"))
            );
            if let (Some(m), Some(f)) = (&r.machine, r.fraction_of_sgemm_peak) {
                outln!(
                    "{:.1} GFLOP of matrix products a step: {:.0} GFLOP/s, {:.0} % of this CPU's sgemm peak ({:.0} GFLOP/s, {}, {} threads)",
                    r.gemm_gflop_per_step,
                    r.gemm_gflop_per_step / r.ms_per_step * 1000.0,
                    100.0 * f,
                    m.sgemm_gflops,
                    m.isa,
                    m.threads
                );
            }
            if let Some(b) = &r.breakdown {
                let p = &b.parts;
                outln!(
                    "where a step goes (ms): matrix products {:.0} ({:.0} GFLOP/s inside them), attention {:.0}, element-wise {:.0}, copies {:.0}, other {:.0}; CPU busy {}",
                    p.matrix_products_ms,
                    r.gemm_gflop_per_step / p.matrix_products_ms.max(1e-9) * 1000.0,
                    p.attention_ms,
                    p.elementwise_ms,
                    p.copies_ms,
                    b.other_ms,
                    b.cpu_utilisation.map_or("n/a".into(), |u| format!("{:.0} %", 100.0 * u))
                );
            }
            Ok(())
        }
    }
}

/// `bench-pretrain`: pretraining steps of a random-weight preset on a generated batch.
pub fn bench_pretrain(a: &BenchPretrainArgs) -> Result<()> {
    let preset_name = a.preset.as_str();
    let sizes = (a.image_size, a.patch_size);
    let mut cfg = preset(preset_name)?;
    let v = &mut cfg.vision_config;
    (v.image_size, v.patch_size) = (
        sizes.0.unwrap_or(v.image_size),
        sizes.1.unwrap_or(v.patch_size),
    );
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("--image-size / --patch-size: {e}"))?;
    let name = match sizes {
        (None, None) => preset_name.to_string(),
        _ => format!(
            "{preset_name} {}/{}",
            cfg.vision_config.image_size, cfg.vision_config.patch_size
        ),
    };
    let r = promptscope::bench::pretrain_step(
        &name,
        &cfg,
        a.loss,
        a.batch,
        a.warmup,
        a.steps,
        a.save_batch.as_deref(),
    )?;
    match a.format {
        Format::Json => print_json(&r),
        Format::Text => {
            outln!(
                "pretraining '{}' with the {} loss, batch {} ({} text positions): {:.1} ms/step, {:.1} images/s over {} steps on {} ({} threads, sgemm peak {:.0} GFLOP/s); peak RSS {}",
                r.preset,
                serde_name(r.loss),
                r.batch,
                r.text_positions,
                r.ms_per_step,
                r.images_per_s,
                r.steps,
                r.machine.isa,
                r.machine.threads,
                r.machine.sgemm_gflops,
                r.peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.0} MiB"))
            );
            Ok(())
        }
    }
}

pub fn bench_dataset(a: &BenchDatasetArgs) -> Result<()> {
    let (root, shots) = (a.data.as_path(), a.shots);
    let t = std::time::Instant::now();
    let ds = promptscope::data::DatasetFolder::open(root)?;
    let listed = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let test = promptscope::data::fewshot::test_split(&ds, 0)?;
    let split = promptscope::data::fewshot::few_shot(&ds, Some(shots), 1, 0)?;
    let split_s = t.elapsed().as_secs_f64();
    let files = ds.train.as_ref().map_or(0, Vec::len)
        + ds.val.as_ref().map_or(0, Vec::len)
        + ds.test.as_ref().map_or(0, Vec::len)
        + ds.all.len();
    let r = serde_json::json!({
        "classes": ds.num_classes(), "files": files, "list_seconds": listed, "split_seconds": split_s,
        "test_images": test.samples.len(), "train_shots": split.train.len(),
    });
    match a.format {
        Format::Json => print_json(&r),
        Format::Text => {
            outln!("{} classes, {files} images: listed in {listed:.2} s, split ({shots}-shot + test) in {split_s:.2} s", ds.num_classes());
            Ok(())
        }
    }
}

/// `bench-shards`: an epoch (or --batches) of shards read as pretraining reads them, without a model.
pub fn bench_shards(a: &BenchShardsArgs) -> Result<()> {
    use promptscope::data::webdataset::{BadSamples, StreamOrder};
    use promptscope::train::pairs::PairSource;
    use promptscope::train::shard_pairs::ShardStream;
    let t = std::time::Instant::now();
    let cache = a.cache.dir();
    let stream = ShardStream::open(
        &a.data,
        cache.as_deref(),
        StreamOrder {
            seed: 0,
            buffer: a.shuffle_buffer,
        },
        BadSamples::Skip,
        a.image_size,
        promptscope::clip::ClipTokenizer::bundled(77)?,
        promptscope::clip::PreprocessConfig::clip(a.image_size),
        &candle_core::Device::Cpu,
        &promptscope::progress::Silent,
    )?;
    let open_s = t.elapsed().as_secs_f64();
    let batch = a.batch.max(1);
    let batches = a.batches.unwrap_or(stream.len() / batch).max(1);
    let rows: Vec<usize> = (0..batch).collect();
    let t = std::time::Instant::now();
    for _ in 0..batches {
        stream.batch(0, &rows)?;
    }
    let read_s = t.elapsed().as_secs_f64();
    let images = batches * batch;
    let r = serde_json::json!({
        "shards": stream.shards().shards.len(), "pairs": stream.len(), "open_seconds": open_s,
        "images": images, "images_per_s": images as f64 / read_s, "image_size": a.image_size,
        "shuffle_buffer": a.shuffle_buffer, "skipped": stream.skipped().map(|s| s.total()),
        "peak_rss_mb": promptscope::bench::peak_rss_mb(), "threads": rayon::current_num_threads(),
    });
    match a.format {
        Format::Json => print_json(&r),
        Format::Text => {
            outln!(
                "{} pairs in {} shards (opened in {open_s:.2} s): read, decoded and preprocessed {images} at {:.0} images/s ({} px, buffer {}); peak RSS {}",
                stream.len(),
                stream.shards().shards.len(),
                images as f64 / read_s,
                a.image_size,
                a.shuffle_buffer,
                promptscope::bench::peak_rss_mb().map_or("n/a".into(), |m| format!("{m:.0} MiB"))
            );
            Ok(())
        }
    }
}

/// Which training step `bench coop|csc|cocoop` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepKind {
    Coop,
    Csc,
    Cocoop,
}

fn suite(a: &SuiteArgs) -> Result<()> {
    let clip = load_model(&a.model)?;
    let photos = std::env::temp_dir().join("promptscope-bench-photos");
    let r = promptscope::bench::suite(&clip, &[100, 1000], &photos)?;
    match a.format {
        Format::Json => print_json(&r),
        Format::Text => {
            outln!("{} on {}", r.model, r.device);
            outln!(
                "CPU: {} matrix kernels, {} threads, sgemm peak {:.0} GFLOP/s",
                r.machine.isa,
                r.machine.threads,
                r.machine.sgemm_gflops
            );
            for (b, v) in &r.image_per_s {
                outln!("image tower, batch {b:<3}          {v:10.2} images/s");
            }
            outln!(
                "text tower                      {:10.1} prompts/s",
                r.text_prompts_per_s
            );
            for (c, ms) in &r.coop_ms {
                let share = r
                    .coop_fraction_of_sgemm_peak
                    .iter()
                    .find(|(k, _)| k == c)
                    .map_or(String::new(), |(_, f)| {
                        format!("  ({:.0} % of the sgemm peak)", 100.0 * f)
                    });
                outln!("CoOp step, {c:>4} classes, M = 16 {ms:10.1} ms{share}");
            }
            for (loss, v) in &r.pretrain_images_per_s {
                let loss = serde_name(loss);
                outln!("pretraining 'scenes', {loss:<5} loss {v:10.1} images/s");
            }
            outln!(
                "FILIP, 1 image × 100 prompts    {:10.2} ms",
                r.filip_1x100_ms
            );
            outln!(
                "SsVP (batch 16)                 {:10.1} images/s",
                r.ssvp_images_per_s
            );
            outln!(
                "JPEG loading + preprocessing    {:10.1} images/s",
                r.loading_images_per_s
            );
            outln!(
                "peak RSS                        {}",
                r.coop_peak_rss_mb
                    .map_or("n/a".into(), |m| format!("{m:.0} MiB"))
            );
            Ok(())
        }
    }
}

fn ensemble(a: &EnsembleArgs) -> Result<()> {
    let clip = load_model(&a.model)?;
    let r = promptscope::bench::zero_shot_ensemble(&clip, a.classes, a.templates)?;
    match a.format {
        Format::Json => print_json(&r),
        Format::Text => {
            outln!(
                "prompt ensemble ({} classes × {} templates): {:.1} s, {:.0} prompts/s; peak RSS {}",
                r.classes,
                r.templates,
                r.seconds,
                r.prompts_per_s,
                r.peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.0} MiB"))
            );
            Ok(())
        }
    }
}

#[cfg(feature = "gui")]
pub fn bench_overlay(a: &BenchOverlayArgs) -> Result<()> {
    let (size, repeats, format) = (a.size, a.repeats, a.format);
    use promptscope::app::overlay::{headless_device, render_offscreen, OverlayData};
    let (device, queue, adapter) = headless_device()?;
    let values: Vec<f32> = (0..49).map(|i| ((i * 37) % 49) as f32).collect();
    let map = promptscope::render::GridMap::new(&values, [7, 7])?;
    let image: Vec<u8> = (0..224 * 224)
        .flat_map(|i| [(i % 224) as u8, (i / 224) as u8, 128, 255])
        .collect();
    let data = OverlayData {
        id: 1,
        image,
        size: [224, 224],
        map,
    };
    let style = promptscope::render::HeatmapStyle {
        grid_lines: true,
        ..Default::default()
    };
    // The first draw compiles the pipeline's shaders: not counted.
    let (_, mut times) = render_offscreen(
        &device,
        &queue,
        &data,
        &style,
        [size, size],
        repeats.max(1) + 1,
    )?;
    times.remove(0);
    let ms: Vec<f64> = times.iter().map(|t| t * 1e3).collect();
    let (n, median, p99) = promptscope::app::FrameTimes::stats(&ms).expect("at least one draw");
    match format {
        Format::Json => outln!("{}", serde_json::json!({"adapter": adapter, "size": size, "repeats": n, "median_ms": median, "p99_ms": p99})),
        Format::Text => outln!("overlay {size}×{size} on {adapter}: median {median:.3} ms, p99 {p99:.3} ms per draw ({n} draws, submit + wait)"),
    }
    Ok(())
}

#[cfg(not(feature = "gui"))]
pub fn bench_overlay(_: &BenchOverlayArgs) -> Result<()> {
    anyhow::bail!("this promptscope was built without the GPU overlay (feature `gui`)")
}
