//! Training runs as the app tracks them: their settings, their live curves, and the controls shared with
//! the worker thread that trains them. Several runs are kept so their curves can be overlaid.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::train::config::RunConfig;
use crate::train::epoch_loop::EpochStats;

use super::events::{JobId, TrainControl, TrainOutcome};

#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    /// Few-shot split and image features (`stage`, `done` of `total`).
    Preparing {
        stage: String,
        done: usize,
        total: usize,
    },
    Training,
    Paused,
    /// Stopped by the user; resumable from the last finished epoch.
    Stopped,
    Finished,
    Failed(String),
}

pub struct TrainRecord {
    /// 1-based, shown as "#n".
    pub number: usize,
    pub label: String,
    pub run: RunConfig,
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
    pub fn new(number: usize, run: RunConfig, out: PathBuf) -> Self {
        TrainRecord {
            number,
            label: format!("#{number} {}", run.describe()),
            run,
            out,
            job: None,
            control: Arc::default(),
            status: RunStatus::Preparing {
                stage: "starting".into(),
                done: 0,
                total: 0,
            },
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
        (last.elapsed_s > 0.0 && self.train_images > 0)
            .then(|| (self.epochs.len() * self.train_images) as f64 / last.elapsed_s)
    }
}
