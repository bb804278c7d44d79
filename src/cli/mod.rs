//! The command line's verbs: each family's flags and body in its own module (`train`, `eval`, `align`,
//! `bench`, `synth`, `baselines`, `pretrain`, `fusion`, `classify`, `app`); this module maps a verb to its
//! body and holds what they share (loading, progress, output). Progress goes to stderr, results to stdout.

use std::path::Path;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use promptscope::clip::{ClipConfig, LoadedClip};
use promptscope::data::DatasetFolder;
use promptscope::progress::Progress;
use promptscope::run::execute::{Metric, RunCtx, RunEvent, RunOutput, RunSummary};
use promptscope::train::config::RunConfig;
use promptscope::train::epoch_loop::TrainEvent;

pub mod align;
mod app;
pub mod args;
pub mod baselines;
pub mod bench;
pub mod classify;
pub mod eval;
pub mod fusion;
pub mod interrupt;
pub mod output;
pub mod pretrain;
pub mod sweep;
pub mod synth;
pub mod train;

pub use app::open_default_app;
use args::Verb;
pub use args::{DataArgs, Format, ModelArgs};

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

pub(crate) fn print_json(v: &impl serde::Serialize) -> Result<()> {
    outln!("{}", serde_json::to_string(v)?);
    Ok(())
}

/// A unit enum's name as the library serialises it (and the CLI takes it): `crop-flip`, `adamw`.
pub fn serde_name(v: impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// An epoch's end, as a training verb prints it.
pub(crate) struct Epoch<'a> {
    pub stage: u8,
    pub stats: &'a promptscope::train::epoch_loop::EpochStats,
    pub extra: &'a [Metric],
}

impl Epoch<'_> {
    /// A named extra metric of the epoch (MP-FGVC's `val_acc_i2t`).
    pub fn extra(&self, name: &str) -> Option<f64> {
        promptscope::train::epoch_loop::metric(self.extra, name)
    }
}

/// Runs `run` through the library's one run seam (`run::execute`, as the app's worker does) under a
/// progress bar: the split or data line and its notes go to stderr, each finished epoch to `on_epoch`,
/// and a run stopped with Ctrl-C says how to resume it.
pub(crate) fn execute(
    run: &RunConfig,
    clip: Option<&LoadedClip>,
    data: Option<&DatasetFolder>,
    cache: Option<&Path>,
    out: RunOutput,
    on_epoch: &mut dyn FnMut(&Bar, Epoch),
) -> Result<RunSummary> {
    let bar = Bar::new();
    let ctx = RunCtx {
        clip,
        data,
        cache,
        progress: &bar,
    };
    let ckpt = out
        .path
        .as_deref()
        .map(promptscope::train::coop::checkpoint_path);
    promptscope::run::execute::execute(run, &ctx, &out, &mut |e| match e {
        RunEvent::Ready {
            notes, describe, ..
        } => bar.0.suspend(|| {
            for note in &notes {
                eprintln!("note: {note}");
            }
            eprintln!("{describe}");
        }),
        RunEvent::Train {
            stage,
            event: TrainEvent::Epoch(stats),
            extra,
            ..
        } => on_epoch(
            &bar,
            Epoch {
                stage,
                stats: &stats,
                extra: &extra,
            },
        ),
        RunEvent::Train { .. } => {}
    })
    .map_err(|e| match &ckpt {
        Some(c) => interrupt::resume_hint(e, c),
        None => e.into(),
    })
}

/// Runs one verb.
pub fn run(verb: Verb) -> Result<()> {
    match verb {
        Verb::App(a) => app::open_app(a),
        Verb::Embed(a) => eval::embed(&a),
        Verb::ZeroShot(a) => eval::zero_shot(&a),
        Verb::Bench(a) => bench::bench(&a),
        Verb::BenchPretrain(a) => bench::bench_pretrain(&a),
        Verb::BenchMaps(a) => bench::bench_maps(&a),
        Verb::BenchDataset(a) => bench::bench_dataset(&a),
        Verb::BenchShards(a) => bench::bench_shards(&a),
        Verb::Features(a) => eval::features(&a),
        Verb::BenchOverlay(a) => bench::bench_overlay(&a),
        Verb::Train(a) => train::train(&a),
        Verb::Eval(a) => eval::eval(&a),
        Verb::Interpret(a) => eval::interpret(&a),
        Verb::Classify(a) => classify::classify(&a),
        Verb::ImportCoop(a) => eval::import_coop(&a),
        Verb::LinearProbe(a) => baselines::linear_probe(&a),
        Verb::Adapter(a) => baselines::adapter(&a),
        Verb::BaseToNovel(a) => baselines::base_to_novel(&a),
        Verb::Sweep(a) => sweep::sweep(&a),
        Verb::Align(a) => align::align_verb(&a),
        Verb::Ssvp(a) => align::ssvp_verb(&a),
        Verb::AlignEval(a) => align::align_eval_verb(&a),
        Verb::Mpfgvc(a) => fusion::run(&a),
        Verb::SynthModel(a) => synth::synth_model(&a),
        Verb::SynthDataset(a) => synth::synth_dataset(&a),
        Verb::Pretrain(a) => pretrain::pretrain(&a),
        Verb::Pointing(a) => pretrain::pointing(&a),
        Verb::ShapeCheck(a) => pretrain::shape_check(&a),
        Verb::SynthScenes(a) => synth::synth_scenes(&a),
        Verb::Sample(a) => synth::sample(&a),
    }
}
