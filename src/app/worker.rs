//! The worker bridge: model loading, dataset scanning and evaluation run on their own threads and report
//! back over one channel, so `update` never waits on disk or maths.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use crate::clip::LoadedClip;
use crate::data::DatasetFolder;
use crate::progress::Reporter;
use crate::run::coop as coop_run;
use crate::run::mpfgvc as mpfgvc_run;
use crate::run::pretrain as pretrain_run;
use crate::train::config::RunConfig;
use crate::train::epoch_loop::TrainEvent;
use crate::train::mpfgvc::StageEvent;

use super::align_job::{self, AlignRequest};
use super::compare_job::{self, CompareRequest};
use super::events::{
    DatasetSummary, Event, Failure, JobId, LoadedModel, OpenedDataset, PickTarget, TrainControl,
    TrainOutcome,
};
use super::prompts_job;

pub struct Worker {
    tx: Sender<Event>,
    rx: Receiver<Event>,
    next_job: JobId,
}

impl Default for Worker {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel();
        Worker {
            tx,
            rx,
            next_job: 1,
        }
    }
}

impl Worker {
    /// Events sent since the last call; never blocks.
    pub fn drain(&self) -> Vec<Event> {
        self.rx.try_iter().collect()
    }

    pub fn load_model(&mut self, ctx: &egui::Context, model: String) -> std::io::Result<JobId> {
        self.spawn(ctx, "load model", move |job, _| {
            let result = (|| -> crate::Result<LoadedModel> {
                let device = crate::device::select("auto")?;
                let clip = crate::clip::load(&model, &device)?;
                Ok(LoadedModel {
                    fingerprint: crate::clip::load::fingerprint(&clip.dir)?,
                    description: clip.describe(),
                    device: crate::device::describe(&device),
                    clip: Arc::new(clip),
                })
            })()
            .map_err(Failure::from);
            Event::ModelLoaded { job, result }
        })
    }

    /// Scans a dataset folder; `classnames` (CoOp's classnames.txt) names its class folders.
    pub fn open_dataset(
        &mut self,
        ctx: &egui::Context,
        path: PathBuf,
        classnames: Option<PathBuf>,
    ) -> std::io::Result<JobId> {
        self.spawn(ctx, "open dataset", move |job, _| {
            let result = (|| {
                let mut folder = DatasetFolder::open(&path)?;
                if let Some(file) = &classnames {
                    folder.apply_class_names(file)?;
                }
                Ok(folder)
            })()
            .map(|folder| OpenedDataset {
                summary: DatasetSummary::of(&folder),
                folder: Arc::new(folder),
            })
            .map_err(|e: crate::Error| Failure::from(e));
            Event::DatasetOpened { job, result }
        })
    }

    pub fn compare(
        &mut self,
        ctx: &egui::Context,
        clip: Arc<LoadedClip>,
        data: Arc<DatasetFolder>,
        req: CompareRequest,
        cache: Option<PathBuf>,
        cancel: Arc<AtomicBool>,
    ) -> std::io::Result<JobId> {
        self.evaluation(ctx, "zero-shot", cancel, move |job, progress| {
            let result = compare_job::run(&clip, &data, &req, cache.as_deref(), progress)
                .map_err(Failure::from);
            Event::ZeroShotFinished { job, result }
        })
    }

    /// Compare's base-to-novel mode: every method trained on the base classes, per seed.
    pub fn base_to_novel(
        &mut self,
        ctx: &egui::Context,
        clip: Arc<LoadedClip>,
        data: Arc<DatasetFolder>,
        req: compare_job::BaseToNovelRequest,
        cache: Option<PathBuf>,
        cancel: Arc<AtomicBool>,
    ) -> std::io::Result<JobId> {
        self.evaluation(ctx, "base-to-novel", cancel, move |job, progress| {
            let result = crate::run::base_to_novel::run(
                &clip,
                &data,
                &req.template,
                0,
                &req.methods,
                &req.seeds,
                cache.as_deref(),
                progress,
                // Which method and seed is training, in the stage the progress bar shows.
                &mut |method, seed, event| {
                    if let TrainEvent::Epoch(s) = event {
                        progress.update(
                            &format!("{method}, seed {seed}: epochs"),
                            s.epoch + 1,
                            s.epochs,
                        );
                    }
                },
            )
            .map_err(Failure::from);
            Event::BaseToNovelFinished { job, result }
        })
    }

    /// A cancellable job of Compare's whose progress is shown under its Run button.
    fn evaluation(
        &mut self,
        ctx: &egui::Context,
        what: &str,
        cancel: Arc<AtomicBool>,
        work: impl FnOnce(JobId, &dyn crate::progress::Progress) -> Event + Send + 'static,
    ) -> std::io::Result<JobId> {
        let progress_ctx = ctx.clone();
        self.spawn(ctx, what, move |job, tx| {
            let reporter = Reporter {
                cancel: &cancel,
                on_update: |stage: &str, done, total| {
                    // A closed channel means the app is gone; the result would be dropped anyway.
                    let _ = tx.send(Event::Progress {
                        job,
                        stage: stage.to_string(),
                        done,
                        total,
                    });
                    progress_ctx.request_repaint();
                },
            };
            work(job, &reporter)
        })
    }

    /// `class_names`: the open dataset's, for importing a CoOp checkpoint into `imports`.
    pub fn load_prompts(
        &mut self,
        ctx: &egui::Context,
        clip: Arc<LoadedClip>,
        path: PathBuf,
        label: String,
        class_names: Option<Vec<String>>,
        imports: PathBuf,
    ) -> std::io::Result<JobId> {
        self.spawn(ctx, "load prompts", move |job, _| Event::PromptsLoaded {
            job,
            result: prompts_job::load(&clip, &path, label, class_names.as_deref(), &imports)
                .map_err(Failure::from),
        })
    }

    /// Small pictures (at most `side` px) of `paths`, for the Compare tab's class view.
    pub fn images(
        &mut self,
        ctx: &egui::Context,
        paths: Vec<PathBuf>,
        side: u32,
    ) -> std::io::Result<JobId> {
        self.spawn(ctx, "images", move |job, _| {
            let images = paths
                .into_iter()
                .map(|p| {
                    let img = small_image(&p, side);
                    (p, img)
                })
                .collect();
            Event::Images { job, images }
        })
    }

    /// Lists the runs folder, first deleting `delete` from it when given.
    pub fn list_runs(
        &mut self,
        ctx: &egui::Context,
        dir: PathBuf,
        delete: Option<PathBuf>,
    ) -> std::io::Result<JobId> {
        self.spawn(ctx, "runs", move |job, _| {
            let result = (|| {
                if let Some(run) = &delete {
                    super::runs::delete(&dir, run)?;
                }
                super::runs::list(&dir)
            })()
            .map_err(Failure::from);
            Event::RunsListed { job, result }
        })
    }

    /// Align's Evaluate maps: a cancellable pointing game with progress per scene.
    pub fn evaluate_maps(
        &mut self,
        ctx: &egui::Context,
        clip: Arc<LoadedClip>,
        req: super::maps_eval_job::MapsEvalRequest,
        cancel: Arc<AtomicBool>,
    ) -> std::io::Result<JobId> {
        self.evaluation(ctx, "evaluate maps", cancel, move |job, progress| {
            Event::MapsEvaluated {
                job,
                result: super::maps_eval_job::run(&clip, &req, progress).map_err(Failure::from),
            }
        })
    }

    pub fn classify(
        &mut self,
        ctx: &egui::Context,
        clip: Arc<LoadedClip>,
        prompts: PathBuf,
        image: PathBuf,
    ) -> std::io::Result<JobId> {
        self.spawn(ctx, "classify", move |job, _| Event::Classified {
            job,
            result: super::classify_job::run(&clip, &prompts, &image).map_err(Failure::from),
        })
    }

    pub fn export(
        &mut self,
        ctx: &egui::Context,
        from: PathBuf,
        to: PathBuf,
    ) -> std::io::Result<JobId> {
        self.spawn(ctx, "export", move |job, _| Event::Exported {
            job,
            result: prompts_job::export(&from, &to).map_err(Failure::from),
        })
    }

    pub fn thumbnails(
        &mut self,
        ctx: &egui::Context,
        data: Arc<DatasetFolder>,
        per_class: usize,
        side: u32,
    ) -> std::io::Result<JobId> {
        self.spawn(ctx, "thumbnails", move |job, _| {
            let mut images = vec![Vec::new(); data.num_classes()];
            for s in &data.all {
                if images[s.label].len() >= per_class {
                    continue;
                }
                if let Some(img) = small_image(&s.path, side) {
                    images[s.label].push(img);
                }
            }
            Event::Thumbnails { job, images }
        })
    }

    pub fn align(
        &mut self,
        ctx: &egui::Context,
        clip: Arc<LoadedClip>,
        req: AlignRequest,
    ) -> std::io::Result<JobId> {
        self.spawn(ctx, "align", move |job, _| Event::AlignDone {
            job,
            result: align_job::run(&clip, &req).map_err(Failure::from),
        })
    }

    /// Trains one run of any method (resuming from `out`'s checkpoint when `resume`), reporting every step
    /// and epoch (an MP-FGVC run's stage 2 continues stage 1's epoch numbers). `control.pause` holds the
    /// run between steps; `control.cancel` stops it there.
    #[allow(clippy::too_many_arguments)]
    pub fn train(
        &mut self,
        ctx: &egui::Context,
        clip: Option<Arc<LoadedClip>>,
        data: Option<Arc<DatasetFolder>>,
        run: RunConfig,
        out: PathBuf,
        resume: bool,
        cache: Option<PathBuf>,
        control: Arc<TrainControl>,
    ) -> std::io::Result<JobId> {
        let repaint = ctx.clone();
        self.spawn(ctx, "training", move |job, tx| {
            let send = |event: Event| {
                let _ = tx.send(event);
                repaint.request_repaint();
            };
            let reporter = Reporter {
                cancel: &control.cancel,
                on_update: |stage: &str, done, total| send(Event::TrainProgress { job, stage: stage.to_string(), done, total }),
            };
            // Every event, then (paused) a hold here, between steps, until resumed or stopped.
            let report = |event: TrainEvent, epoch_offset: usize| {
                match event {
                    TrainEvent::Step { epoch, step, steps, loss, .. } => send(Event::TrainStep { job, epoch: epoch + epoch_offset, step, steps, loss }),
                    TrainEvent::Epoch(mut stats) => {
                        stats.epoch += epoch_offset;
                        send(Event::TrainEpoch { job, stats })
                    }
                }
                while control.pause.load(Ordering::Relaxed) && !control.cancel.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            };
            let result = (|| -> crate::Result<TrainOutcome> {
                if let Some(dir) = out.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
                }
                let need = || -> crate::Result<(&LoadedClip, &DatasetFolder)> {
                    match (&clip, &data) {
                        (Some(c), Some(d)) => Ok((c, d)),
                        _ => Err(crate::Error::invalid("load a model and open a dataset before training prompts")),
                    }
                };
                match &run {
                    RunConfig::Pretrain(p) => {
                        let device = candle_core::Device::Cpu;
                        let (model, tok, pre) = pretrain_run::start_model(&p.start, p.config.seed, (None, None), &device)?;
                        let source = pretrain_run::open_pairs(Some(&p.pairs), p.scenes.as_ref(), &model.config.vision_config, tok, pre, &device, &reporter)?;
                        let describe = match &p.scenes {
                            Some(recipe) => serde_json::json!({ "start": p.start, "scenes": recipe }),
                            None => serde_json::json!({ "start": p.start, "pairs": p.pairs, "count": source.len() }),
                        };
                        send(Event::TrainReady { job, train_images: source.len() });
                        let storage = if p.fp16 { crate::clip::synth::Storage::F16 } else { crate::clip::synth::Storage::F32 };
                        let history = pretrain_run::train(&model, source.as_ref(), &p.config, &describe, &out, storage, resume, &reporter, &mut |e| report(e, 0))?;
                        let last = history.last();
                        Ok(TrainOutcome {
                            test_acc: last.map_or(0.0, |h| h.train_acc),
                            summary: format!(
                                "model written to {} · final loss {:.4} · in-batch retrieval {:.1}%",
                                out.display(),
                                last.map_or(f64::NAN, |h| h.loss),
                                100.0 * last.map_or(0.0, |h| h.train_acc)
                            ),
                            train_seconds: last.map_or(0.0, |h| h.elapsed_s),
                            prompts: out.clone(),
                        })
                    }
                    RunConfig::Adapter(run) => {
                        // Feature-level: nothing is written (no checkpoint either: a stopped run starts over).
                        let (clip, data) = need()?;
                        let prepared = crate::run::tip::prepare(clip, data, run, cache.as_deref(), &reporter)?;
                        send(Event::TrainReady { job, train_images: prepared.split.train.len() });
                        let r = crate::run::tip::fit(clip, data, &prepared, run, &reporter, &mut |e| report(e, 0))?;
                        let searched = r.searched.map_or(String::new(), |s| format!(" · α {:.2}, β {:.2}", s.alpha, s.beta));
                        Ok(TrainOutcome {
                            test_acc: r.test.accuracy,
                            summary: format!("test {:.1}% (zero-shot {:.1}%){searched}", 100.0 * r.test.accuracy, 100.0 * r.zero_shot_test_acc),
                            train_seconds: r.train_seconds,
                            prompts: out.clone(),
                        })
                    }
                    RunConfig::Coop(run) => {
                        let (clip, data) = need()?;
                        let rd = coop_run::prepare(clip, data, run, cache.as_deref(), &reporter)?;
                        send(Event::TrainReady { job, train_images: rd.split.train.len() });
                        let o = coop_run::train(clip, data, &rd, run, Some(&out), resume, &reporter, &mut |e| report(e, 0))?;
                        let m = &o.metrics;
                        Ok(TrainOutcome {
                            test_acc: m.test_acc,
                            summary: format!("test {:.1}% (hand-crafted {:.1}%) · {} epochs", 100.0 * m.test_acc, 100.0 * m.handcrafted_test_acc, m.epochs_run),
                            train_seconds: m.train_seconds,
                            prompts: out.clone(),
                        })
                    }
                    RunConfig::MpFgvc(run) => {
                        let (clip, data) = need()?;
                        let rd = mpfgvc_run::prepare(clip, data, run, cache.as_deref(), &reporter)?;
                        send(Event::TrainReady { job, train_images: rd.split.train.len() });
                        let first = run.stage1.optim.epochs;
                        let mut on_event = |e: StageEvent| report(e.event, if e.stage == 2 { first } else { 0 });
                        let o = mpfgvc_run::train(clip, data, &rd, run, Some(&out), resume, &reporter, &mut on_event)?;
                        let (m, t) = (&o.metrics, &o.metrics.test);
                        let last = t.stage2.unwrap_or(t.stage1_i2t);
                        let stage2 = t.stage2.map_or(String::new(), |a| format!("stage 2 {:.1}%, ", 100.0 * a));
                        Ok(TrainOutcome {
                            test_acc: last,
                            summary: format!("test: {stage2}stage 1 {:.1}% (i2t), {:.1}% (head) · {} epochs", 100.0 * t.stage1_i2t, 100.0 * t.stage1_head, m.epochs1 + m.epochs2),
                            train_seconds: m.stage1_seconds + m.stage2_seconds,
                            prompts: out.clone(),
                        })
                    }
                }
            })()
            .map_err(Failure::from);
            Event::TrainFinished { job, result }
        })
    }

    /// Opens the system file dialog `target` calls for (folder, file or save) without freezing the
    /// window, starting in `start` (a folder, or a file to suggest); the choice arrives as [`Event::Picked`].
    pub fn pick(&self, ctx: &egui::Context, target: PickTarget, start: Option<PathBuf>) {
        // AppKit only opens dialogs from the main thread; elsewhere a thread keeps the UI painting.
        if cfg!(target_os = "macos") {
            if let Some(path) = dialog(target, start) {
                let _ = self.tx.send(Event::Picked { target, path });
            }
            return;
        }
        let tx = self.tx.clone();
        let ctx = ctx.clone();
        let thread_start = start.clone();
        let spawned = std::thread::Builder::new()
            .name("promptscope file dialog".into())
            .spawn(move || {
                if let Some(path) = dialog(target, thread_start) {
                    let _ = tx.send(Event::Picked { target, path });
                    ctx.request_repaint();
                }
            });
        if spawned.is_err() {
            // Without a spare thread, a dialog that blocks the window is still better than none.
            if let Some(path) = dialog(target, start) {
                let _ = self.tx.send(Event::Picked { target, path });
            }
        }
    }

    /// Runs `work` on a new thread and sends the event it returns; a panic inside it becomes
    /// [`Event::Crashed`] instead of a task that never finishes.
    fn spawn(
        &mut self,
        ctx: &egui::Context,
        what: &str,
        work: impl FnOnce(JobId, &Sender<Event>) -> Event + Send + 'static,
    ) -> std::io::Result<JobId> {
        let job = self.next_job;
        self.next_job += 1;
        let tx = self.tx.clone();
        let ctx = ctx.clone();
        let what = what.to_string();
        std::thread::Builder::new()
            .name(format!("promptscope {what}"))
            .spawn(move || {
                let event = std::panic::catch_unwind(AssertUnwindSafe(|| work(job, &tx)))
                    .unwrap_or_else(|panic| {
                        let detail = panic
                            .downcast_ref::<&str>()
                            .map(ToString::to_string)
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "no details".into());
                        Event::Crashed {
                            job,
                            message: format!("internal error during {what}: {detail}"),
                        }
                    });
                let _ = tx.send(event);
                ctx.request_repaint();
            })?;
        Ok(job)
    }
}

/// An image decoded and shrunk to at most `side` px for the panels; None when the file does not decode.
fn small_image(path: &std::path::Path, side: u32) -> Option<egui::ColorImage> {
    let t = crate::clip::preprocess::load_image(path)
        .ok()?
        .thumbnail(side, side)
        .to_rgba8();
    Some(egui::ColorImage::from_rgba_unmultiplied(
        [t.width() as usize, t.height() as usize],
        t.as_raw(),
    ))
}

fn dialog(target: PickTarget, start: Option<PathBuf>) -> Option<PathBuf> {
    let mut dialog = rfd::FileDialog::new().set_title(target.title());
    if let Some(start) = &start {
        // A suggested file: open in its folder with its name filled in.
        let (dir, name) = if start.is_dir() {
            (Some(start.as_path()), None)
        } else {
            (start.parent(), start.file_name())
        };
        if let Some(dir) = dir.filter(|d| d.is_dir()) {
            dialog = dialog.set_directory(dir);
        }
        if let Some(name) = name {
            dialog = dialog.set_file_name(name.to_string_lossy());
        }
    }
    match target {
        PickTarget::Model | PickTarget::Dataset => dialog.pick_folder(),
        PickTarget::ExportRun(_) => dialog
            .add_filter("safetensors", &["safetensors"])
            .save_file(),
        // No extension filter: CoOp names its checkpoints model.pth.tar-50.
        PickTarget::Prompts => dialog.pick_file(),
        PickTarget::ClassNames => dialog
            .add_filter("text", &["txt"])
            .add_filter("any file", &["*"])
            .pick_file(),
        PickTarget::Image | PickTarget::ClassifyImage => dialog
            .add_filter("images", crate::data::folder::IMAGE_EXTENSIONS)
            .pick_file(),
    }
}
