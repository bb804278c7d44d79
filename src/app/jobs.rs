//! The app's one map of worker jobs in flight: what each was started for, by its id. Every event
//! finds its own entry here; a crashed job clears exactly its own, so nothing waits forever on a job
//! that will never answer (a decode that panicked is asked again the next time the picture is wanted).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::align_job::AlignRequest;
use super::events::JobId;

/// An evaluation under way (Compare's runs, Align's Evaluate maps) and how far it got.
pub struct RunningEval {
    pub stage: String,
    pub done: usize,
    pub total: usize,
    /// Shared with the worker's `Progress`, which stops at the next batch once it is set.
    pub cancel: Arc<AtomicBool>,
}

impl RunningEval {
    pub fn new(cancel: Arc<AtomicBool>) -> Self {
        RunningEval {
            stage: "starting".into(),
            done: 0,
            total: 0,
            cancel,
        }
    }

    pub fn fraction(&self) -> f32 {
        if self.total == 0 {
            0.0
        } else {
            self.done as f32 / self.total as f32
        }
    }

    pub fn cancel_requested(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// What a job in flight was started for. Training runs are tracked by their [`super::state::TrainRecord`]s.
pub enum Pending {
    /// A model folder or hub id being loaded.
    LoadModel(String),
    OpenDataset(PathBuf),
    /// Compare's zero-shot or base-to-novel run.
    Evaluate(RunningEval),
    LoadPrompts(PathBuf),
    Export,
    Align(AlignRequest),
    ListRuns,
    /// A sweep's results being merged.
    OpenSweep(PathBuf),
    Classify,
    /// Align's Evaluate maps.
    EvaluateMaps(RunningEval),
    /// Pictures for the Compare tab's class view.
    Images(Vec<PathBuf>),
    /// The side panel's few pictures per class of the dataset at this root.
    Thumbnails(PathBuf),
}

impl Pending {
    /// What the job does, as "Could not start {doing}" reads it.
    pub fn doing(&self) -> &'static str {
        match self {
            Self::LoadModel(_) => "loading the model",
            Self::OpenDataset(_) => "opening the dataset",
            Self::Evaluate(_) => "the evaluation",
            Self::LoadPrompts(_) => "loading prompts",
            Self::Export => "the export",
            Self::Align(_) => "the alignment",
            Self::ListRuns => "listing the runs folder",
            Self::OpenSweep(_) => "opening the sweep",
            Self::Classify => "classifying",
            Self::EvaluateMaps(_) => "evaluating maps",
            Self::Images(_) => "decoding images",
            Self::Thumbnails(_) => "decoding thumbnails",
        }
    }

    /// Whether the user waits on it: start-up prompts and autorun wait for these, not for pictures.
    fn holds_the_user(&self) -> bool {
        !matches!(self, Self::Images(_) | Self::Thumbnails(_))
    }
}

/// The jobs in flight.
#[derive(Default)]
pub struct Jobs {
    map: HashMap<JobId, Pending>,
}

impl Jobs {
    pub fn insert(&mut self, job: JobId, pending: Pending) {
        self.map.insert(job, pending);
    }

    /// Removes and returns `job`'s entry: its work is done, failed or crashed.
    pub fn take(&mut self, job: JobId) -> Option<Pending> {
        self.map.remove(&job)
    }

    pub fn get(&self, job: JobId) -> Option<&Pending> {
        self.map.get(&job)
    }

    pub fn get_mut(&mut self, job: JobId) -> Option<&mut Pending> {
        self.map.get_mut(&job)
    }

    /// True while no job the user waits on is in flight.
    pub fn none_holding_the_user(&self) -> bool {
        !self.map.values().any(Pending::holds_the_user)
    }

    /// The first entry `f` picks out (there is at most one of each kind but pictures).
    fn find<'a, T>(&'a self, f: impl Fn(&'a Pending) -> Option<T>) -> Option<T> {
        self.map.values().find_map(f)
    }

    pub fn loading_model(&self) -> Option<&str> {
        self.find(|p| match p {
            Pending::LoadModel(id) => Some(id.as_str()),
            _ => None,
        })
    }

    pub fn opening_dataset(&self) -> Option<&Path> {
        self.find(|p| match p {
            Pending::OpenDataset(path) => Some(path.as_path()),
            _ => None,
        })
    }

    pub fn evaluation(&self) -> Option<&RunningEval> {
        self.find(|p| match p {
            Pending::Evaluate(run) => Some(run),
            _ => None,
        })
    }

    pub fn maps_evaluation(&self) -> Option<&RunningEval> {
        self.find(|p| match p {
            Pending::EvaluateMaps(run) => Some(run),
            _ => None,
        })
    }

    /// The id of Align's Evaluate maps job in flight (a panel opens once per job).
    pub fn maps_evaluation_job(&self) -> Option<JobId> {
        self.map
            .iter()
            .find_map(|(&job, p)| matches!(p, Pending::EvaluateMaps(_)).then_some(job))
    }

    pub fn aligning(&self) -> Option<&AlignRequest> {
        self.find(|p| match p {
            Pending::Align(req) => Some(req),
            _ => None,
        })
    }

    pub fn loading_prompts(&self) -> bool {
        self.find(|p| matches!(p, Pending::LoadPrompts(_)).then_some(()))
            .is_some()
    }

    pub fn listing_runs(&self) -> bool {
        self.find(|p| matches!(p, Pending::ListRuns).then_some(()))
            .is_some()
    }

    pub fn classifying(&self) -> bool {
        self.find(|p| matches!(p, Pending::Classify).then_some(()))
            .is_some()
    }

    pub fn exporting(&self) -> bool {
        self.find(|p| matches!(p, Pending::Export).then_some(()))
            .is_some()
    }

    /// Whether any pictures for the class view are on their way.
    pub fn images_pending(&self) -> bool {
        self.find(|p| matches!(p, Pending::Images(_)).then_some(()))
            .is_some()
    }

    /// Whether a picture of `path` is on its way.
    pub fn image_pending(&self, path: &Path) -> bool {
        self.find(|p| match p {
            Pending::Images(paths) => paths.iter().any(|q| q == path).then_some(()),
            _ => None,
        })
        .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_job_clears_only_its_own_entry_and_pictures_do_not_hold_the_user() {
        let mut jobs = Jobs::default();
        jobs.insert(1, Pending::Images(vec!["a.png".into()]));
        jobs.insert(2, Pending::Thumbnails("data".into()));
        assert!(jobs.none_holding_the_user());
        assert!(jobs.image_pending(Path::new("a.png")));
        jobs.insert(3, Pending::LoadModel("m".into()));
        assert!(!jobs.none_holding_the_user());
        assert_eq!(jobs.loading_model(), Some("m"));
        assert!(matches!(jobs.take(1), Some(Pending::Images(_))));
        assert!(!jobs.image_pending(Path::new("a.png")));
        assert!(jobs.take(1).is_none());
        assert_eq!(jobs.loading_model(), Some("m"));
        jobs.take(3);
        assert!(jobs.none_holding_the_user());
        assert!(matches!(jobs.take(2), Some(Pending::Thumbnails(_))));
    }
}
