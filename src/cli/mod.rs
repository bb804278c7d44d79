//! The verbs' bodies: call the library, render text or JSON. Progress goes to stderr, results to stdout.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use promptscope::clip::encode::{image_features, text_features};
use promptscope::clip::{ClipConfig, LoadedClip};
use promptscope::data::classnames::Format as NamesFormat;
use promptscope::data::DatasetFolder;
use promptscope::eval::zeroshot;
use promptscope::progress::Progress;
use promptscope::prompt::coop::ClassPosition;
use promptscope::train::config::Augment;
use promptscope::train::config::{CoopRun, RunConfig};
use promptscope::train::optim::{default_epochs, OptimConfig};
use promptscope::train::pretrain::PretrainLoss;

pub mod align;
mod app;
pub mod args;
pub mod classify;
pub mod fusion;
pub mod interrupt;
pub mod output;
pub mod pretrain;

pub use app::open_default_app;
use app::{bench_overlay, open_app, AppStart};
pub use args::{DataArgs, Format, ModelArgs};
use args::{DatasetKind, Verb};

/// An indicatif bar on stderr, hidden when stderr is not a terminal. While one is alive, Ctrl-C asks the
/// job to stop at its next batch (`interrupt`) instead of ending the process.
pub(crate) struct Bar(pub(crate) ProgressBar, interrupt::Listening);

impl Bar {
    pub(crate) fn new() -> Self {
        let pb = ProgressBar::new(0);
        pb.set_style(
            ProgressStyle::with_template("{msg:>8} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .expect("valid template"),
        );
        Bar(pb, interrupt::Listening::new())
    }
}

impl Progress for Bar {
    fn update(&self, stage: &str, done: usize, total: usize) {
        self.0.set_message(stage.to_string());
        self.0.set_length(total as u64);
        self.0.set_position(done as u64);
    }

    fn cancelled(&self) -> bool {
        interrupt::requested()
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

pub fn load_model(args: &ModelArgs) -> Result<LoadedClip> {
    let device = promptscope::device::select(&args.device)?;
    let clip = promptscope::clip::load(&args.model, &device)?;
    eprintln!("model: {}", clip.describe());
    for w in &clip.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!("device: {}", promptscope::device::describe(&device));
    Ok(clip)
}

/// Opens `--data`, names its classes from `--classnames` when given, and says what was skipped.
pub fn open_dataset(args: &DataArgs) -> Result<DatasetFolder> {
    let mut ds = DatasetFolder::open(&args.data)?;
    if let Some(file) = &args.classnames {
        ds.apply_class_names(file)?;
    }
    if ds.skipped_files > 0 {
        eprintln!("skipped {} files that are not images", ds.skipped_files);
    }
    Ok(ds)
}

pub fn preset(name: &str) -> Result<ClipConfig> {
    ClipConfig::preset(name).map_err(anyhow::Error::msg)
}

pub fn parse_splits(s: &str) -> Result<(usize, usize, usize)> {
    let v: Vec<usize> = s
        .split(',')
        .map(|x| x.trim().parse())
        .collect::<std::result::Result<_, _>>()?;
    match v.as_slice() {
        [a, b, c] => Ok((*a, *b, *c)),
        _ => bail!("--splits takes three counts: train,val,test (e.g. 16,4,8)"),
    }
}

pub(crate) fn print_json(v: &impl serde::Serialize) -> Result<()> {
    outln!("{}", serde_json::to_string(v)?);
    Ok(())
}

pub fn embed(args: &ModelArgs, texts: &[String], images: &[PathBuf], format: Format) -> Result<()> {
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

pub fn zero_shot(
    args: &ModelArgs,
    data: &DataArgs,
    split_seed: u64,
    mut templates: Vec<String>,
    batch: usize,
    format: Format,
) -> Result<()> {
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

pub fn bench(
    args: &ModelArgs,
    batch: usize,
    images: usize,
    text_batch: usize,
    texts: usize,
    format: Format,
) -> Result<()> {
    let clip = load_model(args)?;
    let r = promptscope::bench::run(&clip, batch, images, text_batch, texts)?;
    match format {
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

pub fn bench_coop(
    args: &ModelArgs,
    classes: usize,
    n_ctx: usize,
    batch: usize,
    kind: StepKind,
    steps: usize,
    format: Format,
) -> Result<()> {
    let clip = load_model(args)?;
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
    match format {
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
            Ok(())
        }
    }
}

/// `bench-pretrain`: pretraining steps of a random-weight preset on a generated batch.
#[allow(clippy::too_many_arguments)]
pub fn bench_pretrain(
    preset_name: &str,
    sizes: (Option<usize>, Option<usize>),
    loss: PretrainLoss,
    batch: usize,
    warmup: usize,
    steps: usize,
    save_batch: Option<&Path>,
    format: Format,
) -> Result<()> {
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
    let r = promptscope::bench::pretrain_step(&name, &cfg, loss, batch, warmup, steps, save_batch)?;
    match format {
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

pub fn bench_dataset(root: &Path, shots: usize, format: Format) -> Result<()> {
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
    match format {
        Format::Json => print_json(&r),
        Format::Text => {
            outln!("{} classes, {files} images: listed in {listed:.2} s, split ({shots}-shot + test) in {split_s:.2} s", ds.num_classes());
            Ok(())
        }
    }
}

/// Which training step `bench --coop` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Coop,
    Csc,
    Cocoop,
}

pub fn bench_suite(args: &ModelArgs, format: Format) -> Result<()> {
    let clip = load_model(args)?;
    let photos = std::env::temp_dir().join("promptscope-bench-photos");
    let r = promptscope::bench::suite(&clip, &[100, 1000], &photos)?;
    match format {
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

pub fn bench_zero_shot(
    args: &ModelArgs,
    classes: usize,
    templates: usize,
    format: Format,
) -> Result<()> {
    let clip = load_model(args)?;
    let r = promptscope::bench::zero_shot_ensemble(&clip, classes, templates)?;
    match format {
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

/// The bundled sample: a tiny random-weight CLIP and a generated dataset, then zero-shot on them.
pub fn sample(out: &Path, format: Format) -> Result<()> {
    use promptscope::data::scene_sets::{write_scene_set, SceneSet};
    let data = out.join("warm-light");
    if !data.is_dir() {
        let size = promptscope::clip::ClipConfig::scenes()
            .vision_config
            .image_size as u32;
        write_scene_set(&data, SceneSet::WarmLight, (16, 4, 25), size, 0)?;
    }
    // The shipped FILIP demo model; a random-weight one only where the checkout has no assets/models.
    let model = match promptscope::clip::demo::find("scenes-filip") {
        Some(_) => "scenes-filip".to_string(),
        None => {
            let dir = out.join("tiny-clip");
            if !dir.exists() {
                promptscope::clip::synth::write_model_folder(&preset("tiny")?, &dir)?;
            }
            eprintln!("warning: the demo models (assets/models) are missing; using a random-weight model, whose results mean nothing");
            dir.display().to_string()
        }
    };
    eprintln!("sample model: {model}\nsample dataset: {}", data.display());
    zero_shot(
        &ModelArgs {
            model,
            device: "auto".into(),
        },
        &DataArgs {
            data,
            classnames: None,
        },
        0,
        vec![],
        32,
        format,
    )
}

/// A count flag whose `word` means None: `--shots K|all`, `--batch-size N|full`.
pub struct CountFlag {
    pub flag: &'static str,
    pub word: &'static str,
}

pub const SHOTS: CountFlag = CountFlag {
    flag: "--shots",
    word: "all",
};
pub const BATCH: CountFlag = CountFlag {
    flag: "--batch-size",
    word: "full",
};

impl CountFlag {
    pub fn parse(&self, s: &str) -> Result<Option<usize>> {
        if s == self.word {
            return Ok(None);
        }
        Ok(Some(s.parse().map_err(|_| {
            anyhow::anyhow!("{} takes a number or '{}', not '{s}'", self.flag, self.word)
        })?))
    }

    pub fn text(&self, v: Option<usize>) -> String {
        v.map_or(self.word.into(), |k| k.to_string())
    }
}

/// A unit enum's name as the library serialises it (and the CLI takes it): `crop-flip`, `adamw`.
pub fn serde_name(v: impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Where a training verb writes, and how it reports.
#[derive(clap::Args, Debug, Clone)]
pub struct RunOutputArgs {
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the checkpoint a killed run left next to --out.
    #[arg(long)]
    pub resume: bool,
    /// Print the run's settings as JSON (what the app's Train form would start) and exit.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// The CoOp defaults every flag of `train` shows: the library's, which the app's Train form starts from too.
fn coop_defaults() -> CoopRun {
    CoopRun::default()
}

#[derive(clap::Args, Debug, Clone)]
pub struct SplitArgs {
    /// Images per class for training: 1, 2, 4, 8, 16, ... or all (default: 16 for train and
    /// linear-probe, all for eval).
    #[arg(long)]
    pub shots: Option<String>,
    /// Seed of the few-shot draw (CoOp reports the mean over seeds 1, 2, 3).
    #[arg(long, default_value_t = coop_defaults().seed)]
    pub seed: u64,
    /// Seed of the train/val/test split derived for folders without split sub-folders.
    #[arg(long, default_value_t = coop_defaults().split_seed)]
    pub split_seed: u64,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// Where image features are cached.
#[derive(clap::Args, Debug, Clone)]
pub struct CacheArgs {
    /// Feature cache folder (default: $PROMPTSCOPE_CACHE or ~/.cache/promptscope/features).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Do not read or write the feature cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl CacheArgs {
    pub fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            None
        } else {
            Some(
                self.cache
                    .clone()
                    .unwrap_or_else(promptscope::train::features::default_cache_dir),
            )
        }
    }
}

impl SplitArgs {
    fn shots_or(&self, default: &str) -> Result<Option<usize>> {
        SHOTS.parse(self.shots.as_deref().unwrap_or(default))
    }

    fn cache_dir(&self) -> Option<PathBuf> {
        self.cache.dir()
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub split: SplitArgs,
    /// Context length M (random N(0, 0.02²) initialisation).
    #[arg(long, default_value_t = coop_defaults().coop.n_ctx, conflicts_with = "ctx_init")]
    pub n_ctx: usize,
    /// Initialise the context from a phrase (M = its token count), e.g. "a photo of a".
    #[arg(long)]
    pub ctx_init: Option<String>,
    /// Class-specific contexts.
    #[arg(long)]
    pub csc: bool,
    #[arg(long, value_enum, default_value_t = coop_defaults().coop.class_position)]
    pub class_position: ClassPosition,
    /// Default: CoOp's 50/100/100/200/200 for 1/2/4/8/16 shots.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// A number, or `full` for one batch of the whole train set.
    #[arg(long, default_value_t = BATCH.text(coop_defaults().train.batch_size))]
    pub batch_size: String,
    #[arg(long, default_value_t = coop_defaults().train.optim.lr)]
    pub lr: f64,
    #[arg(long, default_value_t = coop_defaults().train.optim.momentum)]
    pub momentum: f64,
    #[arg(long, default_value_t = coop_defaults().train.optim.weight_decay)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = coop_defaults().train.optim.warmup_epochs)]
    pub warmup_epochs: usize,
    #[arg(long, default_value_t = coop_defaults().train.optim.warmup_lr)]
    pub warmup_lr: f64,
    /// none, or crop-flip (CoOp's random resized crop + flip, as cached views).
    #[arg(long, value_enum, default_value_t = coop_defaults().augment)]
    pub augment: Augment,
    /// Cached augmented views per training image.
    #[arg(long, default_value_t = coop_defaults().views)]
    pub views: usize,
    /// The hand-crafted template reported beside the learned context (and KgCoOp's anchor).
    #[arg(long, default_value_t = coop_defaults().template)]
    pub template: String,
    /// KgCoOp: the weight λ of the pull of each learned class weight towards the template's (KgCoOp
    /// uses 8); 0 trains plain CoOp.
    #[arg(long, default_value_t = coop_defaults().train.kg_lambda)]
    pub kg_lambda: f64,
    /// CoCoOp: a meta-net, trained with the context, adds π(x) to it for each image. Its recipe for
    /// what is not given: context "a photo of a", 10 epochs, batch 1. The export holds the meta-net.
    #[arg(long, conflicts_with_all = ["kg_lambda", "csc"])]
    pub cocoop: bool,
    #[command(flatten)]
    pub output: RunOutputArgs,
}

impl TrainArgs {
    /// The library's defaults with every flag applied, validated as the app validates its form.
    pub fn to_run(&self) -> Result<CoopRun> {
        let mut run = coop_defaults().with_seed(self.split.seed);
        run.shots = self.split.shots_or(&SHOTS.text(run.shots))?;
        run.split_seed = self.split.split_seed;
        run.coop.n_ctx = self.n_ctx;
        run.coop.ctx_init = self.ctx_init.clone();
        run.coop.csc = self.csc;
        run.coop.class_position = self.class_position;
        run.train.optim = OptimConfig {
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            warmup_epochs: self.warmup_epochs,
            warmup_lr: self.warmup_lr,
            epochs: self.epochs.unwrap_or_else(|| default_epochs(run.shots)),
        };
        run.train.batch_size = BATCH.parse(&self.batch_size)?;
        run.augment = self.augment;
        run.views = self.views;
        run.template = self.template.clone();
        run.train.kg_lambda = self.kg_lambda;
        if self.cocoop {
            let recipe = CoopRun::cocoop_recipe();
            run.cocoop = true;
            if self.ctx_init.is_none() && self.n_ctx == coop_defaults().coop.n_ctx {
                (run.coop.ctx_init, run.coop.n_ctx) = (recipe.coop.ctx_init, recipe.coop.n_ctx);
            }
            if self.epochs.is_none() {
                run.train.optim.epochs = recipe.train.optim.epochs;
            }
            if self.batch_size == BATCH.text(coop_defaults().train.batch_size) {
                run.train.batch_size = recipe.train.batch_size;
            }
        }
        run.validate()?;
        Ok(run)
    }
}

/// The few-shot split's notes and sizes, on stderr; `extra` continues the sizes line.
pub(crate) fn report_split(
    split: &promptscope::data::fewshot::FewShotSplit,
    classes: usize,
    extra: &str,
) {
    for note in &split.notes {
        eprintln!("note: {note}");
    }
    eprintln!(
        "split: {} train, {} val, {} test images over {classes} classes{extra}",
        split.train.len(),
        split.val.len(),
        split.test.len()
    );
}

pub fn train(args: &TrainArgs) -> Result<()> {
    use promptscope::train::coop::TrainEvent;
    let run = args.to_run()?;
    if args.output.dry_run {
        outln!("{}", serde_json::to_string_pretty(&RunConfig::Coop(run))?);
        return Ok(());
    }
    let ds = open_dataset(&args.data)?;
    let clip = load_model(&args.model)?;
    let cache = args.split.cache_dir();
    let rd = {
        let bar = Bar::new();
        promptscope::run::coop::prepare(&clip, &ds, &run, cache.as_deref(), &bar)?
    };
    report_split(&rd.split, ds.num_classes(), "");
    let bar = Bar::new();
    let json = args.output.format == Format::Json;
    let lines = output::Lines::default();
    let mut on_event = |ev: TrainEvent| {
        if let TrainEvent::Epoch(s) = ev {
            if json {
                lines.line(serde_json::json!({"epoch": s.epoch, "loss": s.loss, "lr": s.lr, "train_acc": s.train_acc, "val_acc": s.val_acc}));
            } else {
                bar.0.suspend(|| {
                    eprintln!(
                        "epoch {:>4}/{}  loss {:.4}  lr {:.2e}  train acc {:5.1}%  val acc {}",
                        s.epoch + 1,
                        s.epochs,
                        s.loss,
                        s.lr,
                        100.0 * s.train_acc,
                        s.val_acc
                            .map_or("-".into(), |v| format!("{:5.1}%", 100.0 * v))
                    )
                });
            }
        }
    };
    let outcome = promptscope::run::coop::train(
        &clip,
        &ds,
        &rd,
        &run,
        Some(&args.output.out),
        args.output.resume,
        &bar,
        &mut on_event,
    )
    .map_err(|e| {
        interrupt::resume_hint(
            e,
            &promptscope::train::coop::checkpoint_path(&args.output.out),
        )
    })?;
    drop(bar);
    lines.finish()?;
    let m = &outcome.metrics;
    if json {
        print_json(&serde_json::json!({"summary": m, "out": args.output.out}))
    } else {
        outln!(
            "learned context: val {:.2}%, test {:.2}%; hand-crafted {:?}: test {:.2}%  ({} epochs, {:.1} s{})",
            100.0 * m.val_acc,
            100.0 * m.test_acc,
            m.handcrafted_template,
            100.0 * m.handcrafted_test_acc,
            m.epochs_run,
            m.train_seconds,
            m.ms_per_step.map_or(String::new(), |ms| format!(", {ms:.2} ms/step"))
        );
        outln!("wrote {}", args.output.out.display());
        Ok(())
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// A prompts file exported by `train` or `import-coop`.
    #[arg(long, conflicts_with = "templates")]
    pub prompts: Option<PathBuf>,
    /// Hand-crafted templates (several = ensemble; `@imagenet` = CLIP's 80 ImageNet templates).
    #[arg(long = "template")]
    pub templates: Vec<String>,
    #[command(flatten)]
    pub split: SplitArgs,
    /// Which images to score: test, or val (min(K, 4) per class with --shots K, all of val otherwise).
    #[arg(long = "on", default_value = "test")]
    pub on: String,
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

pub fn eval(args: &EvalArgs) -> Result<()> {
    use promptscope::data::fewshot::{few_shot, test_split};
    use promptscope::train::features::extract;
    let ds = open_dataset(&args.data)?;
    // The test images are the ones every evaluation shares (`test_split`); validation needs the shots.
    let (samples, split) = match args.on.as_str() {
        "test" => {
            let t = test_split(&ds, args.split.split_seed)?;
            (t.samples, t.description)
        }
        "val" => {
            let f = few_shot(
                &ds,
                args.split.shots_or("all")?,
                args.split.seed,
                args.split.split_seed,
            )?;
            (
                f.val,
                format!(
                    "validation images (seed {}, split seed {})",
                    args.split.seed, args.split.split_seed
                ),
            )
        }
        other => bail!("--on takes test or val, not '{other}'"),
    };
    let samples = &samples;
    let clip = load_model(&args.model)?;
    let bar = Bar::new();
    let feats = extract(
        &clip,
        samples,
        0,
        0,
        args.split.cache_dir().as_deref(),
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
                    args.data.data.display(),
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

pub fn interpret(file: &Path, args: &ModelArgs, k: usize, format: Format) -> Result<()> {
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

pub fn import_coop(
    ckpt: &Path,
    args: &ModelArgs,
    classnames: &Path,
    names_format: Option<NamesFormat>,
    position: ClassPosition,
    out: &Path,
) -> Result<()> {
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

#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub split: SplitArgs,
    #[arg(long, default_value_t = 300)]
    pub iters: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn linear_probe(args: &ProbeArgs) -> Result<()> {
    use promptscope::eval::linear_probe::LinearProbe;
    use promptscope::train::features::extract;
    let ds = open_dataset(&args.data)?;
    let clip = load_model(&args.model)?;
    let split = promptscope::data::fewshot::few_shot(
        &ds,
        args.split.shots_or("16")?,
        args.split.seed,
        args.split.split_seed,
    )?;
    let bar = Bar::new();
    let cache = args.split.cache_dir();
    let f = |s: &[promptscope::data::Sample]| extract(&clip, s, 0, 0, cache.as_deref(), &bar);
    let (train, val, test) = (f(&split.train)?, f(&split.val)?, f(&split.test)?);
    let (probe, search) = LinearProbe::search(
        (&train.feats, &train.labels),
        (&val.feats, &val.labels),
        ds.num_classes(),
        args.iters,
        &bar,
    )?;
    let test_acc = probe.accuracy(&test.feats, &test.labels)?;
    drop(bar);
    match args.format {
        Format::Json => print_json(
            &serde_json::json!({"lambda": probe.lambda, "search": search, "test_acc": test_acc}),
        ),
        Format::Text => {
            for s in &search {
                outln!("  lambda {:8.0e}: val {:6.2}%", s.lambda, 100.0 * s.val_acc);
            }
            outln!(
                "linear probe (lambda {:.0e}): test {:.2}%",
                probe.lambda,
                100.0 * test_acc
            );
            Ok(())
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct AdapterArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub split: SplitArgs,
    /// tip-adapter (training-free), tip-adapter-f (its cache keys trained) or clip-adapter.
    #[arg(long, default_value = "tip-adapter")]
    pub method: String,
    /// Training epochs (default: Tip-Adapter-F's 20, CLIP-Adapter's 200).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Augmented views of each training image (Tip-Adapter's augment_epoch).
    #[arg(long, default_value_t = promptscope::run::tip::AdapterRun::default().views)]
    pub views: usize,
    /// The hand-crafted template of the zero-shot part.
    #[arg(long, default_value_t = promptscope::run::tip::AdapterRun::default().template)]
    pub template: String,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn adapter(args: &AdapterArgs) -> Result<()> {
    use promptscope::run::tip::{run, AdapterMethod, AdapterRun};
    let method = match args.method.as_str() {
        "tip-adapter" => AdapterMethod::TipAdapter,
        "tip-adapter-f" => AdapterMethod::TipAdapterF {
            epochs: args.epochs.unwrap_or(20),
        },
        "clip-adapter" => AdapterMethod::ClipAdapter {
            epochs: args.epochs.unwrap_or(200),
        },
        other => bail!("--method takes tip-adapter, tip-adapter-f or clip-adapter, not '{other}'"),
    };
    let tip = AdapterRun {
        shots: args.split.shots_or("16")?,
        seed: args.split.seed,
        split_seed: args.split.split_seed,
        views: args.views,
        template: args.template.clone(),
        method,
    };
    // The run's own checks, before the model loads.
    tip.validate()?;
    let ds = open_dataset(&args.data)?;
    let clip = load_model(&args.model)?;
    let report = {
        let bar = Bar::new();
        let mut on_event = |ev: promptscope::train::epoch_loop::TrainEvent| {
            if let promptscope::train::epoch_loop::TrainEvent::Epoch(s) = ev {
                bar.update(&format!("{} epochs", method.name()), s.epoch + 1, s.epochs);
            }
        };
        run(
            &clip,
            &ds,
            &tip,
            args.split.cache.dir().as_deref(),
            &bar,
            &mut on_event,
        )?
    };
    match args.format {
        Format::Json => print_json(&report),
        Format::Text => {
            let searched = report.searched.map_or(String::new(), |s| {
                format!(": α {:.3}, β {:.3} searched on val", s.alpha, s.beta)
            });
            outln!(
                "{}, {} training images × {} views{searched} (val {:.2}%)",
                method.name(),
                report.cache_images,
                tip.views,
                100.0 * report.val_acc
            );
            outln!(
                "{}: test {:.2}% (zero-shot \"{}\" {:.2}%)",
                report.split,
                100.0 * report.test.accuracy,
                tip.template,
                100.0 * report.zero_shot_test_acc
            );
            Ok(())
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct BaseToNovelArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Shots per base class (default 16).
    #[arg(long)]
    pub shots: Option<String>,
    /// The seeds to average over, e.g. 1,2,3.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub seeds: Vec<u64>,
    #[arg(long, default_value_t = coop_defaults().split_seed)]
    pub split_seed: u64,
    /// Context length M (ignored with --ctx-init).
    #[arg(long, default_value_t = coop_defaults().coop.n_ctx, conflicts_with = "ctx_init")]
    pub n_ctx: usize,
    #[arg(long)]
    pub ctx_init: Option<String>,
    /// Default: CoOp's epochs for the shots.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// KgCoOp's λ (8 in its paper); 0 learns plain CoOp.
    #[arg(long, default_value_t = coop_defaults().train.kg_lambda)]
    pub kg_lambda: f64,
    /// CoCoOp: a meta-net adds π(x) to the context per image. Its recipe unless given: context
    /// "a photo of a", 10 epochs, batch 1.
    #[arg(long, conflicts_with = "kg_lambda")]
    pub cocoop: bool,
    /// Images per step (default: CoOp's 32; CoCoOp's 1 with --cocoop).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// The methods, each with its paper's recipe, e.g. coop,kgcoop,cocoop,tip-adapter,tip-adapter-f,
    /// clip-adapter, or `all`. The context flags above (and --epochs, --batch-size, a non-zero
    /// --kg-lambda) then adjust every prompt method. Default: the one method the flags describe (CoOp,
    /// KgCoOp with --kg-lambda, CoCoOp with --cocoop).
    #[arg(long, value_delimiter = ',', conflicts_with = "cocoop")]
    pub methods: Vec<String>,
    /// Augmented views per image of the feature adapters (Tip-Adapter's 10).
    #[arg(long)]
    pub views: Option<usize>,
    /// The hand-crafted template: the zero-shot row, and KgCoOp's anchor.
    #[arg(long, default_value_t = coop_defaults().template)]
    pub template: String,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn base_to_novel(args: &BaseToNovelArgs) -> Result<()> {
    use promptscope::run::base_to_novel::{run, Method, METHOD_NAMES};
    let shots = SHOTS.parse(args.shots.as_deref().unwrap_or("16"))?;
    let names: Vec<String> = match args.methods.as_slice() {
        [] if args.cocoop => vec!["cocoop".into()],
        [] if args.kg_lambda > 0.0 => vec!["kgcoop".into()],
        [] => vec!["coop".into()],
        [all] if all == "all" => METHOD_NAMES.iter().map(|m| m.to_string()).collect(),
        given => given.iter().map(|m| m.trim().to_lowercase()).collect(),
    };
    let methods: Vec<Method> = names
        .iter()
        .map(|name| {
            let mut m = Method::recipe(name, shots, &args.template, args.split_seed)?;
            match &mut m {
                // The flags given adjust every prompt method's recipe.
                Method::Prompts(r) => {
                    if args.ctx_init.is_some() || args.n_ctx != coop_defaults().coop.n_ctx {
                        r.coop.n_ctx = args.n_ctx;
                        r.coop.ctx_init = args.ctx_init.clone();
                    }
                    if let Some(e) = args.epochs {
                        r.train.optim.epochs = e;
                    }
                    if let Some(b) = args.batch_size {
                        r.train.batch_size = Some(b.max(1));
                    }
                    if r.train.kg_lambda > 0.0 && args.kg_lambda > 0.0 {
                        r.train.kg_lambda = args.kg_lambda;
                    }
                }
                Method::Adapter(r) => {
                    if let Some(v) = args.views {
                        r.views = v;
                    }
                }
            }
            Ok(m)
        })
        .collect::<promptscope::Result<_>>()?;
    let ds = open_dataset(&args.data)?;
    let clip = load_model(&args.model)?;
    let bar = Bar::new();
    let mut on_event = |method: &str, seed: u64, ev: promptscope::train::coop::TrainEvent| {
        if let promptscope::train::coop::TrainEvent::Epoch(s) = ev {
            bar.update(
                &format!("{method} seed {seed}: epochs"),
                s.epoch + 1,
                s.epochs,
            );
        }
    };
    let report = run(
        &clip,
        &ds,
        &args.template,
        args.split_seed,
        &methods,
        &args.seeds,
        args.cache.dir().as_deref(),
        &bar,
        &mut on_event,
    )?;
    drop(bar);
    match args.format {
        Format::Json => print_json(&report),
        Format::Text => {
            let shots = report.shots.map_or("all".to_string(), |k| k.to_string());
            outln!(
                "base ({}): {}",
                report.base_classes.len(),
                report.base_classes.join(", ")
            );
            outln!(
                "novel ({}): {}",
                report.novel_classes.len(),
                report.novel_classes.join(", ")
            );
            outln!(
                "{shots} shots per base class, seeds {:?}; accuracy % (mean ± std over seeds)",
                args.seeds
            );
            let width = report
                .rows
                .iter()
                .map(|r| r.method.chars().count())
                .max()
                .unwrap_or(6)
                .max(6);
            outln!(
                "  {:width$}  {:>13}  {:>13}  {:>13}",
                "method",
                "base",
                "novel",
                "H"
            );
            for r in &report.rows {
                let cell = |m: f64, s: f64| format!("{:5.1} ± {:4.1}", 100.0 * m, 100.0 * s);
                outln!(
                    "  {:width$}  {:>13}  {:>13}  {:>13}",
                    r.method,
                    cell(r.mean.base, r.std.base),
                    cell(r.mean.novel, r.std.novel),
                    cell(r.mean.harmonic, r.std.harmonic)
                );
            }
            Ok(())
        }
    }
}

/// Runs one verb.
pub fn run(verb: Verb) -> Result<()> {
    match verb {
        Verb::App {
            model,
            data,
            tab,
            autorun,
            epochs,
            prompts,
            side_by_side,
            base_to_novel,
            compare_methods,
            evaluate_maps,
            method,
            super_category,
        } => {
            let compare_methods = match compare_methods {
                Some(list) => promptscope::align::maps::MapMethod::parse_list(&[list])?,
                None => Vec::new(),
            };
            open_app(
                model,
                data,
                AppStart {
                    tab,
                    autorun,
                    epochs,
                    prompts,
                    side_by_side,
                    base_to_novel,
                    method,
                    super_category,
                    compare_methods,
                    evaluate_maps,
                },
            )
        }
        Verb::Embed {
            model,
            texts,
            images,
            format,
        } => embed(&model, &texts, &images, format),
        Verb::ZeroShot {
            model,
            data,
            split_seed,
            templates,
            batch,
            format,
        } => zero_shot(&model, &data, split_seed, templates, batch, format),
        Verb::Bench {
            model,
            batch,
            images,
            text_batch,
            texts,
            coop,
            classes,
            n_ctx,
            csc,
            cocoop,
            steps,
            zero_shot_templates,
            suite,
            format,
        } => {
            if suite {
                bench_suite(&model, format)
            } else if let Some(templates) = zero_shot_templates {
                bench_zero_shot(&model, classes, templates, format)
            } else if coop {
                bench_coop(
                    &model,
                    classes,
                    n_ctx,
                    batch,
                    if cocoop {
                        StepKind::Cocoop
                    } else if csc {
                        StepKind::Csc
                    } else {
                        StepKind::Coop
                    },
                    steps,
                    format,
                )
            } else {
                bench(&model, batch, images, text_batch, texts, format)
            }
        }
        Verb::BenchPretrain {
            preset,
            image_size,
            patch_size,
            loss,
            batch,
            warmup,
            steps,
            save_batch,
            format,
        } => bench_pretrain(
            &preset,
            (image_size, patch_size),
            loss,
            batch,
            warmup,
            steps,
            save_batch.as_deref(),
            format,
        ),
        Verb::BenchMaps {
            model,
            methods,
            repeats,
            format,
        } => {
            let methods = promptscope::align::maps::MapMethod::parse_list(&methods)?;
            let clip = load_model(&model)?;
            let mut rows = Vec::new();
            for m in methods {
                let ms = promptscope::bench::map_ms(&clip, m, repeats)?;
                if format == Format::Text {
                    outln!("{:20} {ms:9.2} ms per map", m.name());
                }
                rows.push(serde_json::json!({ "method": m, "ms_per_map": ms }));
            }
            if format == Format::Json {
                print_json(&rows)?;
            }
            Ok(())
        }
        Verb::BenchDataset {
            data,
            shots,
            format,
        } => bench_dataset(&data, shots, format),
        Verb::BenchOverlay {
            size,
            repeats,
            format,
        } => bench_overlay(size, repeats, format),
        Verb::SynthModel { out, preset } => {
            let cfg = self::preset(&preset)?;
            promptscope::clip::synth::write_model_folder(&cfg, &out)
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!("wrote a random-weight '{preset}' CLIP to {}", out.display());
            Ok(())
        }
        Verb::SynthDataset {
            out,
            classes,
            per_class,
            splits,
            seed,
            kind,
            size,
        } => {
            let split = splits.map(|s| parse_splits(&s)).transpose()?;
            use promptscope::data::scene_sets::{self, SceneSet};
            use promptscope::data::{synth, synth_fine};
            match (kind, split) {
                (DatasetKind::Shapes, split) => synth::write_dataset(&out, classes, per_class, split, seed)?,
                (DatasetKind::Crest, Some(split)) => synth_fine::write_dataset(&out, classes, split, 14, seed)?,
                (DatasetKind::Dimorphic, Some(split)) => synth_fine::write_dimorphic_dataset(&out, classes, split, seed)?,
                (DatasetKind::Objects, Some(split)) => scene_sets::write_scene_set(&out, SceneSet::Objects, split, size, seed)?,
                (DatasetKind::WarmLight, Some(split)) => scene_sets::write_scene_set(&out, SceneSet::WarmLight, split, size, seed)?,
                (DatasetKind::SceneShapes, Some(split)) => scene_sets::write_scene_set(&out, SceneSet::Shapes, split, size, seed)?,
                (DatasetKind::Outlines, Some(split)) => scene_sets::write_scene_set(&out, SceneSet::Outlines, split, size, seed)?,
                (_, None) => anyhow::bail!("--kind crest, dimorphic and the scene kinds write train/val/test folders: give --splits, e.g. 16,4,16"),
            }
            eprintln!("wrote a generated dataset to {}", out.display());
            Ok(())
        }
        Verb::SynthScenes {
            out,
            count,
            seed,
            size,
            held_out,
            same_colour,
        } => {
            use promptscope::data::scenes::{
                same_colour_scenes, write_pairs, write_scenes, SceneConfig,
            };
            if same_colour {
                write_scenes(
                    &out,
                    same_colour_scenes(seed, count, size)?.into_iter().map(Ok),
                )?;
            } else {
                write_pairs(
                    &out,
                    count,
                    seed,
                    &SceneConfig {
                        size,
                        allow_held_out: held_out,
                        ..SceneConfig::default()
                    },
                )?;
            }
            eprintln!("wrote {count} captioned scenes to {}", out.display());
            Ok(())
        }
        Verb::Pretrain(args) => pretrain::pretrain(&args),
        Verb::Pointing {
            model,
            count,
            seed,
            held_out,
            methods,
            data,
            format,
        } => pretrain::pointing(
            &model,
            count,
            seed,
            held_out,
            &methods,
            data.as_deref(),
            format,
        ),
        Verb::ShapeCheck {
            model,
            count,
            seed,
            format,
        } => pretrain::shape_check(&model, count, seed, format),
        Verb::Sample { out, format } => sample(&out, format),
        Verb::Train(args) => train(&args),
        Verb::Eval(args) => eval(&args),
        Verb::Interpret {
            file,
            model,
            top_k,
            format,
        } => interpret(&file, &model, top_k, format),
        Verb::ImportCoop {
            checkpoint,
            model,
            classnames,
            classnames_format,
            class_position,
            out,
        } => import_coop(
            &checkpoint,
            &model,
            &classnames,
            classnames_format,
            class_position,
            &out,
        ),
        Verb::Classify(args) => classify::classify(&args),
        Verb::LinearProbe(args) => linear_probe(&args),
        Verb::Adapter(args) => adapter(&args),
        Verb::BaseToNovel(args) => base_to_novel(&args),
        Verb::Align(args) => align::align_verb(&args),
        Verb::Ssvp(args) => align::ssvp_verb(&args),
        Verb::AlignEval(args) => align::align_eval_verb(&args),
        Verb::Mpfgvc(args) => fusion::run(&args),
    }
}
