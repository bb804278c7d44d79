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
use crate::run::execute::{execute, RunCtx, RunEvent, RunOutput};
use crate::train::config::RunConfig;
use crate::train::epoch_loop::TrainEvent;

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
        another_dataset: bool,
    ) -> std::io::Result<JobId> {
        self.spawn(ctx, "open dataset", move |job, _| {
            let result = (|| {
                let mut folder = DatasetFolder::open(&path)?;
                let mut dropped = None;
                if let Some(file) = &classnames {
                    match folder.apply_class_names(file) {
                        Ok(()) => {}
                        // Opening another dataset, the file is most likely the last one's.
                        Err(e) if another_dataset => dropped = Some(format!(
                            "{e}. The class-name file was meant for another dataset: it was cleared, so {} uses its folder names; pick this dataset's file to name its classes.",
                            path.display()
                        )),
                        Err(e) => return Err(e),
                    }
                }
                Ok((folder, dropped))
            })()
            .map(|(folder, classnames_dropped)| OpenedDataset {
                summary: DatasetSummary::of(&folder),
                test: crate::data::fewshot::test_split(&folder, compare_job::SPLIT_SEED)
                    .map(|t| t.samples)
                    .unwrap_or_default(),
                folder: Arc::new(folder),
                classnames_dropped,
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
                compare_job::SPLIT_SEED,
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
        let textures = ctx.clone();
        self.spawn(ctx, "images", move |job, _| {
            let images = paths
                .into_iter()
                .map(|p| {
                    let name = format!("image-{}", p.display());
                    let img = small_image(&p, side).map(|img| texture(&textures, name, img));
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

    /// A sweep's results merged into tables (`sweep collect`).
    pub fn open_sweep(&mut self, ctx: &egui::Context, manifest: PathBuf) -> std::io::Result<JobId> {
        self.spawn(ctx, "sweep", move |job, _| Event::SweepOpened {
            job,
            result: crate::run::sweep::collect(&manifest).map_err(Failure::from),
            manifest,
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
        let textures = ctx.clone();
        self.spawn(ctx, "thumbnails", move |job, _| {
            let mut images: Vec<Vec<egui::TextureHandle>> = vec![Vec::new(); data.num_classes()];
            for s in &data.all {
                let class = &mut images[s.label];
                if class.len() >= per_class {
                    continue;
                }
                if let Some(img) = small_image(&s.path, side) {
                    let name = format!("thumb-{}-{}", s.label, class.len());
                    class.push(texture(&textures, name, img));
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
                on_update: |stage: &str, done, total| {
                    send(Event::TrainProgress {
                        job,
                        stage: stage.to_string(),
                        done,
                        total,
                    })
                },
            };
            // Every event, then (paused) a hold here, between steps, until resumed or stopped.
            let report = |event: TrainEvent, epoch_offset: usize| {
                match event {
                    TrainEvent::Step {
                        epoch,
                        step,
                        steps,
                        loss,
                        ..
                    } => send(Event::TrainStep {
                        job,
                        epoch: epoch + epoch_offset,
                        step,
                        steps,
                        loss,
                    }),
                    TrainEvent::Epoch(mut stats) => {
                        stats.epoch += epoch_offset;
                        send(Event::TrainEpoch { job, stats })
                    }
                }
                while control.pause.load(Ordering::Relaxed)
                    && !control.cancel.load(Ordering::Relaxed)
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            };
            let result = (|| -> crate::Result<TrainOutcome> {
                if let Some(dir) = out.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
                }
                let ctx = RunCtx {
                    clip: clip.as_deref(),
                    data: data.as_deref(),
                    cache: cache.as_deref(),
                    progress: &reporter,
                };
                let output = RunOutput {
                    path: Some(out.clone()),
                    resume,
                };
                let summary = execute(&run, &ctx, &output, &mut |e| match e {
                    RunEvent::Ready { train_images, .. } => {
                        send(Event::TrainReady { job, train_images })
                    }
                    RunEvent::Train {
                        epoch_offset,
                        event,
                        ..
                    } => report(event, epoch_offset),
                })?;
                Ok(TrainOutcome {
                    test_acc: summary.headline(),
                    summary: summary.line(),
                    train_seconds: summary.seconds(),
                    prompts: out.clone(),
                })
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
        PickTarget::Sweep => dialog.add_filter("sweep manifest", &["jsonl"]).pick_file(),
    }
}

/// Uploads a decoded picture (egui takes textures from any thread).
fn texture(ctx: &egui::Context, name: String, img: egui::ColorImage) -> egui::TextureHandle {
    ctx.load_texture(name, img, egui::TextureOptions::LINEAR)
}
