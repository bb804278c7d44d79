//! The one run seam. The app's worker and every CLI verb that trains (`train`, `adapter`, `mpfgvc
//! train`, `pretrain`) run a [`RunConfig`] through [`execute`], so they write the same files and the same
//! checkpoints, and each resumes what the other left (a run is keyed by what it is, not by who ran it).

use std::path::{Path, PathBuf};

use crate::clip::LoadedClip;
use crate::data::fewshot::FewShotSplit;
use crate::data::DatasetFolder;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::train::config::{PretrainRun, PretrainStart, RunConfig};
use crate::train::epoch_loop::{EpochStats, TrainEvent};
use crate::train::pretrain::PretrainConfig;

/// What a run reads: the model and dataset the front end has loaded (pretraining needs neither), the
/// feature cache, and where progress and cancellation go.
pub struct RunCtx<'a> {
    pub clip: Option<&'a LoadedClip>,
    pub data: Option<&'a DatasetFolder>,
    /// The feature cache folder; None reads and writes no cache.
    pub cache: Option<&'a Path>,
    pub progress: &'a dyn Progress,
}

/// Where a run writes (None: nowhere, as base-to-novel's inner runs), and whether it continues from
/// the checkpoint a stopped run left there.
pub struct RunOutput {
    pub path: Option<PathBuf>,
    pub resume: bool,
}

pub use crate::train::epoch_loop::Metric;

/// What a run says while it runs, besides progress.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// The data is ready and training starts: the items trained on, notes on the split, and one line
    /// that says what the run trains on.
    Ready {
        train_images: usize,
        notes: Vec<String>,
        describe: String,
    },
    /// A step or an epoch of stage `stage` (from 1; MP-FGVC has two). `epoch_offset` counts the epochs
    /// of the stages before, for one continuous curve; `extra` holds the stage's own metrics at an
    /// epoch's end (MP-FGVC's stage 1: `val_acc_i2t`).
    Train {
        stage: u8,
        epoch_offset: usize,
        event: TrainEvent,
        extra: Vec<Metric>,
    },
}

impl RunEvent {
    /// A single-stage run's training event.
    fn stage1(event: TrainEvent) -> Self {
        RunEvent::Train {
            stage: 1,
            epoch_offset: 0,
            event,
            extra: Vec::new(),
        }
    }
}

/// What a run leaves behind.
#[derive(Debug, Clone, PartialEq)]
pub enum Artifact {
    /// A prompts file (CoOp, KgCoOp, CoCoOp).
    Prompts(PathBuf),
    /// MP-FGVC's weights file.
    MpFgvcWeights(PathBuf),
    /// A model folder in the Hugging Face layout (pretraining).
    ModelFolder(PathBuf),
    /// Nothing (feature adapters; a run given no output).
    None,
}

/// The method's own report, as its CLI verb prints it.
#[derive(Debug, Clone)]
pub enum Report {
    Coop(super::coop::RunMetrics),
    MpFgvc(super::mpfgvc::RunMetrics),
    Pretrain {
        history: Vec<EpochStats>,
        /// What the run is (start, sizes, data): what its checkpoint must match.
        run: serde_json::Value,
        config: PretrainConfig,
        /// The shards' samples it could not use (None: not read from shards).
        skipped: Option<crate::data::webdataset::Skipped>,
    },
    Adapter(super::tip::TipReport),
}

/// How a run ended: what it wrote and what it measured.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub artifact: Artifact,
    pub report: Report,
}

impl RunSummary {
    /// The run's results by name.
    pub fn metrics(&self) -> Vec<Metric> {
        let m = |name, value| Metric { name, value };
        let mut out = Vec::new();
        match &self.report {
            Report::Coop(r) => {
                out.extend([
                    m("val_acc", r.val_acc),
                    m("test_acc", r.test_acc),
                    m("handcrafted_test_acc", r.handcrafted_test_acc),
                ]);
                out.extend(r.final_loss.map(|v| m("final_loss", v)));
            }
            Report::MpFgvc(r) => {
                out.extend(r.test.stage2.map(|v| m("test_acc", v)));
                out.extend([
                    m("test_acc_stage1_i2t", r.test.stage1_i2t),
                    m("test_acc_stage1_head", r.test.stage1_head),
                ]);
            }
            Report::Pretrain { history, .. } => {
                if let Some(h) = history.last() {
                    out.extend([m("final_loss", h.loss), m("batch_retrieval", h.train_acc)]);
                }
            }
            Report::Adapter(r) => out.extend([
                m("val_acc", r.val_acc),
                m("test_acc", r.test.accuracy),
                m("zero_shot_test_acc", r.zero_shot_test_acc),
            ]),
        }
        out
    }

    /// A metric by name.
    pub fn metric(&self, name: &str) -> Option<f64> {
        crate::train::epoch_loop::metric(&self.metrics(), name)
    }

    /// The headline accuracy: the learned prompts' or adapter's on the test split, MP-FGVC's last
    /// stage's, pretraining's in-batch retrieval.
    pub fn headline(&self) -> f64 {
        match &self.report {
            Report::MpFgvc(r) => r.test.stage2.unwrap_or(r.test.stage1_i2t),
            Report::Pretrain { history, .. } => history.last().map_or(0.0, |h| h.train_acc),
            _ => self.metric("test_acc").unwrap_or(0.0),
        }
    }

    /// Seconds spent training.
    pub fn seconds(&self) -> f64 {
        match &self.report {
            Report::Coop(r) => r.train_seconds,
            Report::MpFgvc(r) => r.stage1_seconds + r.stage2_seconds,
            Report::Pretrain { history, .. } => history.last().map_or(0.0, |h| h.elapsed_s),
            Report::Adapter(r) => r.train_seconds,
        }
    }

    /// One line for people: "test 84.0% (hand-crafted 61.2%) · 200 epochs".
    pub fn line(&self) -> String {
        let pct = |v: f64| format!("{:.1}%", 100.0 * v);
        match &self.report {
            Report::Coop(m) => format!(
                "test {} (hand-crafted {}) · {} epochs",
                pct(m.test_acc),
                pct(m.handcrafted_test_acc),
                m.epochs_run
            ),
            Report::MpFgvc(m) => {
                let t = &m.test;
                let stage2 = t
                    .stage2
                    .map_or(String::new(), |a| format!("stage 2 {}, ", pct(a)));
                format!(
                    "test: {stage2}stage 1 {} (i2t), {} (head) · {} epochs",
                    pct(t.stage1_i2t),
                    pct(t.stage1_head),
                    m.epochs1 + m.epochs2
                )
            }
            Report::Pretrain {
                history, skipped, ..
            } => {
                let last = history.last();
                let folder = match &self.artifact {
                    Artifact::ModelFolder(p) => p.display().to_string(),
                    _ => String::new(),
                };
                // A skip is never silent: the first one is named.
                let skipped =
                    skipped
                        .as_ref()
                        .filter(|s| s.total() > 0)
                        .map_or(String::new(), |s| {
                            format!(
                                " · skipped {} broken samples of the shards ({})",
                                s.total(),
                                s.examples.first().map_or("", String::as_str)
                            )
                        });
                format!(
                    "model written to {folder} · final loss {:.4} · in-batch retrieval {}{skipped}",
                    last.map_or(f64::NAN, |h| h.loss),
                    pct(last.map_or(0.0, |h| h.train_acc))
                )
            }
            Report::Adapter(r) => {
                let searched = r.searched.map_or(String::new(), |s| {
                    format!(" · α {:.2}, β {:.2}", s.alpha, s.beta)
                });
                format!(
                    "test {} (zero-shot {}){searched}",
                    pct(r.test.accuracy),
                    pct(r.zero_shot_test_acc)
                )
            }
        }
    }
}

/// Runs `run` to its end: prepares its data, trains (from `out`'s checkpoint when resuming), evaluates,
/// and writes its artifact to `out`.
pub fn execute(
    run: &RunConfig,
    ctx: &RunCtx,
    out: &RunOutput,
    on_event: &mut dyn FnMut(RunEvent),
) -> Result<RunSummary> {
    run.validate()?;
    let need = || -> Result<(&LoadedClip, &DatasetFolder)> {
        match (ctx.clip, ctx.data) {
            (Some(c), Some(d)) => Ok((c, d)),
            _ => Err(Error::invalid(
                "load a model and open a dataset before training prompts",
            )),
        }
    };
    let path = out.path.as_deref();
    match run {
        RunConfig::Coop(run) => {
            let (clip, data) = need()?;
            let rd = super::coop::prepare(clip, data, run, ctx.cache, ctx.progress)?;
            on_event(ready(&rd.split, data.num_classes(), ""));
            let o = super::coop::train(
                clip,
                data,
                &rd,
                run,
                path,
                out.resume,
                ctx.progress,
                &mut |e| on_event(RunEvent::stage1(e)),
            )?;
            Ok(RunSummary {
                artifact: path.map_or(Artifact::None, |p| Artifact::Prompts(p.into())),
                report: Report::Coop(o.metrics),
            })
        }
        RunConfig::MpFgvc(run) => {
            let (clip, data) = need()?;
            let rd = super::mpfgvc::prepare(clip, data, run, ctx.cache, ctx.progress)?;
            let blocks = format!(
                "; training the last {} of {} vision blocks",
                run.train_blocks,
                clip.model()?.vision.layers.len()
            );
            on_event(ready(&rd.split, data.num_classes(), &blocks));
            let first = run.stage1.optim.epochs;
            let o = super::mpfgvc::train(
                clip,
                data,
                &rd,
                run,
                path,
                out.resume,
                ctx.progress,
                &mut |e| {
                    on_event(RunEvent::Train {
                        stage: e.stage,
                        epoch_offset: if e.stage == 2 { first } else { 0 },
                        event: e.event,
                        extra: e.extra,
                    })
                },
            )?;
            Ok(RunSummary {
                artifact: path.map_or(Artifact::None, |p| Artifact::MpFgvcWeights(p.into())),
                report: Report::MpFgvc(o.metrics),
            })
        }
        RunConfig::Adapter(run) => {
            // Feature-level: nothing is written (no checkpoint either: a stopped run starts over).
            let (clip, data) = need()?;
            let prepared = super::tip::prepare(clip, data, run, ctx.cache, ctx.progress)?;
            on_event(ready(&prepared.split, data.num_classes(), ""));
            let r = super::tip::fit(clip, data, &prepared, run, ctx.progress, &mut |e| {
                on_event(RunEvent::stage1(e))
            })?;
            Ok(RunSummary {
                artifact: Artifact::None,
                report: Report::Adapter(r),
            })
        }
        RunConfig::Pretrain(p) => {
            let out_dir = path.ok_or_else(|| {
                Error::invalid("pretraining writes a model folder: give it an output path")
            })?;
            pretrain(p, ctx, out_dir, out.resume, on_event)
        }
    }
}

/// The split's notes, and its sizes as one line (`extra` continues it).
fn ready(split: &FewShotSplit, classes: usize, extra: &str) -> RunEvent {
    RunEvent::Ready {
        train_images: split.train.len(),
        notes: split.notes.clone(),
        describe: format!(
            "split: {} train, {} val, {} test images over {classes} classes{extra}",
            split.train.len(),
            split.val.len(),
            split.test.len()
        ),
    }
}

/// What a pretraining run is, as its checkpoint and the model's `promptscope_demo.json` record it: the
/// start, the input and patch size, and the data.
pub fn pretrain_identity(
    p: &PretrainRun,
    vision: &crate::clip::config::VisionConfig,
    pairs: usize,
) -> serde_json::Value {
    let start = match &p.start {
        PretrainStart::Preset(name) => format!("preset {name}"),
        PretrainStart::Init(dir) => format!("init {}", dir.display()),
    };
    let source = match &p.scenes {
        Some(recipe) => serde_json::json!({ "scenes": recipe }),
        // A stream's order is its shuffle buffer's too; a folder of pairs keeps its first record.
        None if crate::data::webdataset::names_shards(&p.pairs) => {
            serde_json::json!({ "data": p.pairs, "pairs": pairs, "shards": p.shards })
        }
        None => serde_json::json!({ "data": p.pairs, "pairs": pairs }),
    };
    serde_json::json!({ "start": start, "image_size": vision.image_size, "patch_size": vision.patch_size, "source": source })
}

fn pretrain(
    p: &PretrainRun,
    ctx: &RunCtx,
    out: &Path,
    resume: bool,
    on_event: &mut dyn FnMut(RunEvent),
) -> Result<RunSummary> {
    use crate::clip::synth::Storage;
    let device = candle_core::Device::Cpu;
    let sizes = (p.image_size, p.patch_size);
    let (model, tok, pre) = super::pretrain::start_model(&p.start, p.config.seed, sizes, &device)?;
    let vision = &model.config.vision_config;
    // `validate` made sure there are scenes or a pairs folder; scenes come first.
    let data = super::pretrain::open_pairs(p, vision, tok, pre, &device, ctx.cache, ctx.progress)?;
    let loss = clap::ValueEnum::to_possible_value(&p.config.loss)
        .map_or(String::new(), |v| v.get_name().to_string());
    let epochs = p.config.optim.epochs;
    let describe = match &p.scenes {
        Some(recipe) => format!("pretraining on {} generated scenes an epoch, drawn afresh every epoch ({loss} loss, {epochs} epochs)", recipe.count),
        None => format!(
            "pretraining on {} pairs from {}{} ({loss} loss, {epochs} epochs)",
            data.len(),
            p.pairs.display(),
            if data.skipped().is_some() {
                format!(", streamed through a shuffle buffer of {}", p.shards.shuffle_buffer)
            } else {
                String::new()
            }
        ),
    };
    on_event(RunEvent::Ready {
        train_images: data.len(),
        notes: Vec::new(),
        describe,
    });
    let identity = pretrain_identity(p, vision, data.len());
    let storage = if p.fp16 { Storage::F16 } else { Storage::F32 };
    let history = super::pretrain::train(
        &model,
        data.as_ref(),
        &p.config,
        &identity,
        out,
        storage,
        resume,
        ctx.progress,
        &mut |event| on_event(RunEvent::stage1(event)),
    )?;
    Ok(RunSummary {
        artifact: Artifact::ModelFolder(out.into()),
        report: Report::Pretrain {
            history,
            run: identity,
            config: p.config.clone(),
            skipped: data.skipped(),
        },
    })
}
