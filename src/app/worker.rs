//! The worker bridge: model loading, dataset scanning and evaluation run on their own threads and report
//! back over one channel, so `update` never waits on disk or maths.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use crate::clip::LoadedClip;
use crate::data::DatasetFolder;
use crate::error::Error;
use crate::eval::zeroshot::{self, ZeroShotReport};
use crate::progress::Reporter;

use super::state::{DatasetSummary, LoadedModel, OpenedDataset};

/// Identifies one job, so a result that arrives after the user started a newer job of the same kind
/// is recognised as stale and dropped.
pub type JobId = u64;

/// Images per forward pass of the vision tower, as the CLI's default.
const ZERO_SHOT_BATCH: usize = 32;

/// Why a job produced nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Cancelled,
    /// The library's message, which names the file at fault and the fix.
    Error(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Cancelled => Failure::Cancelled,
            other => Failure::Error(other.to_string()),
        }
    }
}

/// Which field a folder picked in the file dialog fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickTarget {
    Model,
    Dataset,
}

pub enum Event {
    Progress { job: JobId, stage: String, done: usize, total: usize },
    ModelLoaded { job: JobId, result: Result<LoadedModel, Failure> },
    DatasetOpened { job: JobId, result: Result<OpenedDataset, Failure> },
    ZeroShotFinished { job: JobId, result: Result<ZeroShotReport, Failure> },
    /// The job panicked; whatever task it belonged to is over.
    Crashed { job: JobId, message: String },
    FolderPicked { target: PickTarget, path: PathBuf },
}

pub struct Worker {
    tx: Sender<Event>,
    rx: Receiver<Event>,
    next_job: JobId,
}

impl Default for Worker {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel();
        Worker { tx, rx, next_job: 1 }
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
                    description: clip.describe(),
                    device: crate::device::describe(&device),
                    clip: Arc::new(clip),
                })
            })()
            .map_err(Failure::from);
            Event::ModelLoaded { job, result }
        })
    }

    pub fn open_dataset(&mut self, ctx: &egui::Context, path: PathBuf) -> std::io::Result<JobId> {
        self.spawn(ctx, "open dataset", move |job, _| {
            let result = DatasetFolder::open(&path)
                .map(|folder| OpenedDataset { summary: DatasetSummary::of(&folder), folder: Arc::new(folder) })
                .map_err(Failure::from);
            Event::DatasetOpened { job, result }
        })
    }

    pub fn zero_shot(
        &mut self,
        ctx: &egui::Context,
        clip: Arc<LoadedClip>,
        data: Arc<DatasetFolder>,
        templates: Vec<String>,
        cancel: Arc<AtomicBool>,
    ) -> std::io::Result<JobId> {
        let progress_ctx = ctx.clone();
        self.spawn(ctx, "zero-shot", move |job, tx| {
            let reporter = Reporter {
                cancel: &cancel,
                on_update: |stage: &str, done, total| {
                    // A closed channel means the app is gone; the result would be dropped anyway.
                    let _ = tx.send(Event::Progress { job, stage: stage.to_string(), done, total });
                    progress_ctx.request_repaint();
                },
            };
            let result = zeroshot::run(&clip, &data, &templates, ZERO_SHOT_BATCH, &reporter).map_err(Failure::from);
            Event::ZeroShotFinished { job, result }
        })
    }

    /// Opens the system folder dialog without freezing the window; the choice arrives as
    /// [`Event::FolderPicked`].
    pub fn pick_folder(&self, ctx: &egui::Context, target: PickTarget, start: Option<PathBuf>) {
        // AppKit only opens dialogs from the main thread; elsewhere a thread keeps the UI painting.
        if cfg!(target_os = "macos") {
            if let Some(path) = folder_dialog(target, start) {
                let _ = self.tx.send(Event::FolderPicked { target, path });
            }
            return;
        }
        let tx = self.tx.clone();
        let ctx = ctx.clone();
        let thread_start = start.clone();
        let spawned = std::thread::Builder::new().name("promptscope folder dialog".into()).spawn(move || {
            if let Some(path) = folder_dialog(target, thread_start) {
                let _ = tx.send(Event::FolderPicked { target, path });
                ctx.request_repaint();
            }
        });
        if spawned.is_err() {
            // Without a spare thread, a dialog that blocks the window is still better than none.
            if let Some(path) = folder_dialog(target, start) {
                let _ = self.tx.send(Event::FolderPicked { target, path });
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
        std::thread::Builder::new().name(format!("promptscope {what}")).spawn(move || {
            let event = std::panic::catch_unwind(AssertUnwindSafe(|| work(job, &tx))).unwrap_or_else(|panic| {
                let detail = panic
                    .downcast_ref::<&str>()
                    .map(ToString::to_string)
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no details".into());
                Event::Crashed { job, message: format!("internal error during {what}: {detail}") }
            });
            let _ = tx.send(event);
            ctx.request_repaint();
        })?;
        Ok(job)
    }
}

fn folder_dialog(target: PickTarget, start: Option<PathBuf>) -> Option<PathBuf> {
    let mut dialog = rfd::FileDialog::new().set_title(match target {
        PickTarget::Model => "Choose a CLIP model folder",
        PickTarget::Dataset => "Choose a dataset folder",
    });
    if let Some(dir) = start.filter(|d| d.is_dir()) {
        dialog = dialog.set_directory(dir);
    }
    dialog.pick_folder()
}
