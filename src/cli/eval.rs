//! The verbs that score or read prompts without training: `embed`, `zero-shot`, `eval`, `interpret`,
//! `import-coop`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use promptscope::clip::encode::{image_features, text_features};
use promptscope::clip::LoadedClip;
use promptscope::data::classnames::Format as NamesFormat;
use promptscope::eval::zeroshot;
use promptscope::prompt::coop::ClassPosition;

use super::args::{DataArgs, FewShotInputs, Format, ModelArgs};
use super::{load_model, open_dataset, print_json, Bar};

#[derive(clap::Args, Debug, Clone)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long = "text")]
    pub texts: Vec<String>,
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct FeaturesArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A dataset folder: ROOT/<class>/<images>, or ROOT/train|val|test/<class>/<images> (every split).
    #[arg(long)]
    pub data: PathBuf,
    /// This task's slice of the folder's images, I/N.
    #[arg(long, default_value = "0/1")]
    pub shard: promptscope::train::features::Slice,
    #[command(flatten)]
    pub cache: super::args::CacheArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// `features --shard I/N`: slice I of the folder's images (every split, in the folder's order) encoded
/// into the per-image feature store, images already there read instead.
pub fn features(a: &FeaturesArgs) -> Result<()> {
    let Some(cache) = a.cache.dir() else {
        bail!("features fills the feature cache: drop --no-cache");
    };
    let ds = promptscope::data::DatasetFolder::open(&a.data)?;
    let clip = load_model(&a.model)?;
    let r = {
        let bar = Bar::new();
        promptscope::train::features::fill_slice(&clip, &ds, a.shard, &cache, &bar)?
    };
    print_slice(&r, a.format)
}

/// What `features` and `sweep features` print of a slice filled.
pub fn print_slice(r: &promptscope::train::features::SliceReport, format: Format) -> Result<()> {
    match format {
        Format::Json => print_json(r),
        Format::Text => {
            outln!(
                "slice {} of {}: images {}..{} of {}: {} encoded, {} already in the cache ({:.1} s) → {}",
                r.shard,
                r.data.display(),
                r.first,
                r.first + r.images,
                r.folder_images,
                r.computed,
                r.reused,
                r.seconds,
                r.store.display()
            );
            Ok(())
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ZeroShotArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Seed of the 30 % test split set aside when the folder has no test/ (the split `train
    /// --split-seed` trains beside, so learned and hand-crafted prompts meet the same images).
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// A prompt template with {} for the class name; repeat for an ensemble. `@imagenet` stands for
    /// CLIP's 80 ImageNet templates.
    #[arg(long = "template")]
    pub templates: Vec<String>,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct InterpretArgs {
    pub file: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ImportCoopArgs {
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// The class names in CoOp's class order: one name a line, or CoOp's classnames.txt
    /// ('<folder name> <class name>' a line).
    #[arg(long)]
    pub classnames: PathBuf,
    /// How --classnames lists the classes: coop or plain (default: coop when every line starts with a
    /// folder name that has a digit, as WordNet ids do).
    #[arg(long, value_enum)]
    pub classnames_format: Option<NamesFormat>,
    #[arg(long, value_enum, default_value_t = ClassPosition::End)]
    pub class_position: ClassPosition,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn embed(a: &EmbedArgs) -> Result<()> {
    let (args, texts, images, format) = (&a.model, &a.texts, &a.images, a.format);
    if texts.is_empty() && images.is_empty() {
        bail!("nothing to embed: pass --text and/or --image");
    }
    let clip = load_model(args)?;
    let bar = Bar::new();
    let text_embeds: Vec<Vec<f32>> = if texts.is_empty() {
        vec![]
    } else {
        text_features(&clip, texts, 64, &bar)?.to_vec2()?
    };
    let image_embeds: Vec<Vec<f32>> = if images.is_empty() {
        vec![]
    } else {
        image_features(&clip, images, 16, &bar)?.to_vec2()?
    };
    drop(bar);
    let logit_scale = clip.logit_scale();
    match format {
        Format::Json => print_json(&serde_json::json!({
            "text_embeds": text_embeds, "image_embeds": image_embeds, "logit_scale": logit_scale
        })),
        Format::Text => {
            let show = |v: &[f32]| {
                let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:+.4}")).collect();
                format!(
                    "[{}{}] (dim {})",
                    head.join(", "),
                    if v.len() > 6 { ", …" } else { "" },
                    v.len()
                )
            };
            for (t, e) in texts.iter().zip(&text_embeds) {
                outln!("text  {t:?}: {}", show(e));
            }
            for (p, e) in images.iter().zip(&image_embeds) {
                outln!("image {}: {}", p.display(), show(e));
            }
            outln!("logit_scale (exp): {logit_scale:.4}");
            Ok(())
        }
    }
}

/// Says on stderr which prompts are cut to the model's context (at most three, then how many more).
fn note_overlong(clip: &LoadedClip, classes: &[String], templates: &[String]) -> Result<()> {
    let long = zeroshot::overlong_prompts(clip, classes, templates)?;
    let max = clip.tokenizer().map_or(0, |t| t.max_len);
    for (prompt, n) in long.iter().take(3) {
        let shown: String = prompt.chars().take(60).collect();
        eprintln!("note: the prompt \"{shown}…\" is {n} tokens: cut to the model's {max}, end-of-text kept (CLIP's truncate=True)");
    }
    if long.len() > 3 {
        eprintln!(
            "note: and {} more prompts are cut the same way",
            long.len() - 3
        );
    }
    Ok(())
}

pub fn zero_shot(a: &ZeroShotArgs) -> Result<()> {
    let (args, data, split_seed, batch, format) =
        (&a.model, &a.data, a.split_seed, a.batch, a.format);
    let mut templates = a.templates.clone();
    let ds = open_dataset(data)?;
    let split = promptscope::data::fewshot::test_split(&ds, split_seed)?;
    let clip = load_model(args)?;
    if templates.is_empty() {
        templates.push(zeroshot::DEFAULT_TEMPLATE.to_string());
    }
    note_overlong(&clip, &ds.class_names, &templates)?;
    let report = {
        let bar = Bar::new();
        zeroshot::run(&clip, &ds, &split, &templates, batch, &bar)?
    };
    match format {
        Format::Json => print_json(&report),
        Format::Text => {
            outln!(
                "zero-shot on {} ({}, {} images, {} classes), {} template(s)",
                data.data.display(),
                report.split_description,
                report.eval.total,
                report.classes.len(),
                templates.len()
            );
            let width = report
                .classes
                .iter()
                .map(|c| c.len())
                .max()
                .unwrap_or(5)
                .max(5);
            for c in &report.eval.per_class {
                outln!(
                    "  {:width$}  {:6.2}%  ({}/{})",
                    c.name,
                    100.0 * c.accuracy,
                    c.correct,
                    c.total
                );
            }
            outln!(
                "  {:width$}  {:6.2}%  ({}/{})",
                "overall",
                100.0 * report.eval.accuracy,
                report.eval.correct,
                report.eval.total
            );
            Ok(())
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    #[command(flatten)]
    pub input: FewShotInputs,
    /// A prompts file exported by `train` or `import-coop`.
    #[arg(long, conflicts_with = "templates")]
    pub prompts: Option<PathBuf>,
    /// Hand-crafted templates (several = ensemble; `@imagenet` = CLIP's 80 ImageNet templates).
    #[arg(long = "template")]
    pub templates: Vec<String>,
    /// Which images to score: test, or val (min(K, 4) per class with --shots K, all of val otherwise).
    #[arg(long = "on", value_enum, default_value_t = EvalOn::Test)]
    pub on: EvalOn,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

fn print_eval(
    what: &str,
    split: &str,
    e: &promptscope::eval::metrics::Evaluation,
    format: Format,
) -> Result<()> {
    match format {
        Format::Json => {
            print_json(&serde_json::json!({"prompts": what, "split": split, "eval": e}))
        }
        Format::Text => {
            outln!(
                "{what} on {split}: {:.2}% ({}/{})",
                100.0 * e.accuracy,
                e.correct,
                e.total
            );
            for c in &e.per_class {
                outln!(
                    "  {:24} {:6.2}% ({}/{})",
                    c.name,
                    100.0 * c.accuracy,
                    c.correct,
                    c.total
                );
            }
            Ok(())
        }
    }
}

/// The images `eval --on` scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalOn {
    Test,
    Val,
}

pub fn eval(args: &EvalArgs) -> Result<()> {
    use promptscope::data::fewshot::{few_shot, test_split};
    use promptscope::train::features::extract;
    let ds = open_dataset(&args.input.data)?;
    // The test images are the ones every evaluation shares (`test_split`); validation needs the shots.
    let (samples, split) = match args.on {
        EvalOn::Test => {
            let t = test_split(&ds, args.input.split.split_seed)?;
            (t.samples, t.description)
        }
        EvalOn::Val => {
            let f = few_shot(
                &ds,
                args.input.split.shots_or(None),
                args.input.split.seed,
                args.input.split.split_seed,
            )?;
            (
                f.val,
                format!(
                    "validation images (seed {}, split seed {})",
                    args.input.split.seed, args.input.split.split_seed
                ),
            )
        }
    };
    let samples = &samples;
    let clip = load_model(&args.input.model)?;
    let bar = Bar::new();
    let feats = extract(
        &clip,
        samples,
        0,
        0,
        args.input.split.cache.dir().as_deref(),
        &bar,
    )?;
    let (what, logits) = match &args.prompts {
        Some(path) => {
            let file = promptscope::export::prompt_file::PromptFile::load(path)?;
            if file.meta.class_names != ds.class_names {
                bail!(
                    "{}: trained for classes {:?}, but {} has {:?}",
                    path.display(),
                    file.meta.class_names,
                    args.input.data.data.display(),
                    ds.class_names
                );
            }
            let logits = file
                .scorer(&clip, path)?
                .logits(&clip, &feats.first_views()?)?;
            (path.display().to_string(), logits.to_vec2()?)
        }
        None => {
            let templates = if args.templates.is_empty() {
                vec![zeroshot::DEFAULT_TEMPLATE.to_string()]
            } else {
                args.templates.clone()
            };
            let w = zeroshot::class_weights(&clip, &ds.class_names, &templates, &bar)?;
            (
                templates.join(" | "),
                zeroshot::logits(&feats.feats, &w, clip.logit_scale())?,
            )
        }
    };
    drop(bar);
    let e = promptscope::run::coop::evaluate_logits(&logits, samples, &ds.class_names);
    print_eval(&what, &split, &e, args.format)
}

pub fn interpret(a: &InterpretArgs) -> Result<()> {
    let (file, args, k, format) = (a.file.as_path(), &a.model, a.top_k, a.format);
    let clip = load_model(args)?;
    let f = promptscope::export::prompt_file::PromptFile::load(file)?;
    f.check_model(&clip, file)?;
    let words = promptscope::export::interpret::nearest_tokens(
        &f.ctx,
        &clip.model()?.text.token_embedding,
        clip.tokenizer()?,
        k,
    )?;
    match format {
        Format::Json => print_json(&words),
        Format::Text => {
            for w in &words {
                let class = w
                    .class
                    .map(|c| {
                        format!(
                            "{} ",
                            f.meta.class_names.get(c).cloned().unwrap_or_default()
                        )
                    })
                    .unwrap_or_default();
                let near: Vec<String> = w
                    .nearest
                    .iter()
                    .map(|n| format!("{:?} ({:.3})", n.token, n.distance))
                    .collect();
                outln!("{class}[V]{}: {}", w.position + 1, near.join(", "));
            }
            Ok(())
        }
    }
}

pub fn import_coop(a: &ImportCoopArgs) -> Result<()> {
    let (ckpt, args, classnames, out) = (&a.checkpoint, &a.model, &a.classnames, &a.out);
    let (names_format, position) = (a.classnames_format, a.class_position);
    use promptscope::data::classnames::read_names;
    let (names, read_as) = read_names(classnames, names_format)?;
    eprintln!(
        "{} class names from {} ({})",
        names.len(),
        classnames.display(),
        match read_as {
            NamesFormat::Coop => "CoOp's '<folder name> <class name>' lines",
            NamesFormat::Plain => "one name a line",
        }
    );
    let clip = load_model(args)?;
    let file = promptscope::export::coop_import::to_prompt_file(&clip, ckpt, &names, position)?;
    file.save(out)?;
    let (n_ctx, csc) = (file.meta.coop.n_ctx, file.meta.coop.csc);
    eprintln!(
        "imported {} ({} classes, {n_ctx} context vectors{}) into {}",
        ckpt.display(),
        names.len(),
        if csc { ", class-specific" } else { "" },
        out.display()
    );
    Ok(())
}
