//! Training runs as the app tracks them: their settings, their live curves, and the controls shared with
//! the worker thread that trains them. Several runs are kept so their curves can be overlaid.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::train::coop::EpochStats;
use crate::run::coop::RunMetrics;
use crate::train::config::CoopRun;

use super::worker::JobId;

/// Flags the worker checks between steps: `cancel` ends the run (the last epoch's checkpoint stays, so
/// it can be resumed), `pause` holds it until cleared.
#[derive(Default)]
pub struct TrainControl {
    pub cancel: AtomicBool,
    pub pause: AtomicBool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    /// Few-shot split and image features (`stage`, `done` of `total`).
    Preparing { stage: String, done: usize, total: usize },
    Training,
    Paused,
    /// Stopped by the user; resumable from the last finished epoch.
    Stopped,
    Finished,
    Failed(String),
}

/// What a finished run leaves: its metrics and the prompts file it wrote.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub metrics: RunMetrics,
    /// The engine's export (ctx, class_embeds, metadata), in the app's runs folder until exported.
    pub prompts: PathBuf,
}

pub struct TrainRecord {
    /// 1-based, shown as "#n".
    pub number: usize,
    pub label: String,
    pub run: CoopRun,
    /// Where the engine writes the prompts file (and its checkpoint while training).
    pub out: PathBuf,
    pub job: Option<JobId>,
    pub control: Arc<TrainControl>,
    pub status: RunStatus,
    /// (epoch + step / steps, loss) of every step.
    pub steps: Vec<[f64; 2]>,
    pub epochs: Vec<EpochStats>,
    pub outcome: Option<TrainOutcome>,
    /// Drawn in the plots.
    pub visible: bool,
    /// Training images per epoch, for the throughput.
    pub train_images: usize,
}

impl TrainRecord {
    pub fn new(number: usize, run: CoopRun, out: PathBuf) -> Self {
        TrainRecord {
            number,
            label: format!("#{number} {}", describe(&run)),
            run,
            out,
            job: None,
            control: Arc::default(),
            status: RunStatus::Preparing { stage: "starting".into(), done: 0, total: 0 },
            steps: Vec::new(),
            epochs: Vec::new(),
            outcome: None,
            visible: true,
            train_images: 0,
        }
    }

    pub fn is_active(&self) -> bool {
        self.job.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.control.pause.load(Ordering::Relaxed)
    }

    /// Forgets what came after the last finished epoch, which the checkpoint does not hold: a resumed run
    /// starts from there.
    pub fn rewind_to_checkpoint(&mut self) {
        let done = self.epochs.len() as f64;
        self.steps.retain(|p| p[0] < done);
    }

    /// Images per second of training over the finished epochs.
    pub fn throughput(&self) -> Option<f64> {
        let last = self.epochs.last()?;
        (last.elapsed_s > 0.0 && self.train_images > 0).then(|| (self.epochs.len() * self.train_images) as f64 / last.elapsed_s)
    }
}

/// "16-shot · unified · end · M=16" and the like.
pub fn describe(run: &CoopRun) -> String {
    let shots = run.shots.map_or("all shots".to_string(), |k| format!("{k}-shot"));
    let ctx = if run.coop.csc { "CSC" } else { "unified" };
    let pos = format!("{:?}", run.coop.class_position).to_lowercase();
    let init = run.coop.ctx_init.as_deref().map_or(format!("M={}", run.coop.n_ctx), |p| format!("init \"{p}\""));
    format!("{shots} · {ctx} · {pos} · {init}")
}
