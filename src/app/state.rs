//! What the app knows, apart from how it is drawn: the loaded model, the open dataset, the last results,
//! the tasks under way and the errors to show. Worker events change it through [`AppState::apply`], so it
//! can be driven and checked without a window.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clip::LoadedClip;
use crate::data::{DatasetFolder, Sample};
use crate::eval::zeroshot::{ZeroShotReport, DEFAULT_TEMPLATE};

use super::worker::{Event, Failure, JobId};

/// What is remembered between launches (eframe storage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub model: String,
    pub dataset: String,
    pub templates: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { model: String::new(), dataset: String::new(), templates: vec![DEFAULT_TEMPLATE.to_string()] }
    }
}

pub struct LoadedModel {
    pub clip: Arc<LoadedClip>,
    /// [`LoadedClip::describe`], computed once.
    pub description: String,
    pub device: String,
}

pub struct OpenedDataset {
    pub folder: Arc<DatasetFolder>,
    pub summary: DatasetSummary,
}

/// Image counts per class and split, computed once when the folder is opened rather than every frame.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSummary {
    /// Column names: the splits present, or "images" for a folder without splits.
    pub columns: Vec<&'static str>,
    /// `counts[class][column]`.
    pub counts: Vec<Vec<usize>>,
    pub images: usize,
    pub skipped_files: usize,
}

impl DatasetSummary {
    pub fn of(ds: &DatasetFolder) -> Self {
        let splits: Vec<(&'static str, &[Sample])> = [("train", &ds.train), ("val", &ds.val), ("test", &ds.test)]
            .into_iter()
            .filter_map(|(name, samples)| samples.as_deref().map(|s| (name, s)))
            .collect();
        let (columns, per_column): (Vec<&'static str>, Vec<Vec<usize>>) = if splits.is_empty() {
            (vec!["images"], vec![ds.counts(&ds.all)])
        } else {
            splits.into_iter().map(|(name, samples)| (name, ds.counts(samples))).unzip()
        };
        let counts = (0..ds.num_classes()).map(|class| per_column.iter().map(|col| col[class]).collect()).collect();
        DatasetSummary { columns, counts, images: ds.all.len(), skipped_files: ds.skipped_files }
    }
}

/// A zero-shot run under way.
pub struct RunningEval {
    pub job: JobId,
    pub stage: String,
    pub done: usize,
    pub total: usize,
    /// Shared with the worker's `Progress`, which stops at the next batch once it is set.
    pub cancel: Arc<AtomicBool>,
}

impl RunningEval {
    pub fn new(job: JobId, cancel: Arc<AtomicBool>) -> Self {
        RunningEval { job, stage: "starting".into(), done: 0, total: 0, cancel }
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

#[derive(Default)]
pub struct AppState {
    pub model: Option<LoadedModel>,
    pub dataset: Option<OpenedDataset>,
    pub report: Option<ZeroShotReport>,
    /// Shown until dismissed, oldest first.
    pub errors: Vec<String>,
    /// The model load under way, if any.
    pub loading_model: Option<(JobId, String)>,
    /// The dataset scan under way, if any.
    pub opening_dataset: Option<(JobId, PathBuf)>,
    pub zero_shot: Option<RunningEval>,
    /// Set when the last zero-shot run was cancelled, so the panel can say so.
    pub last_run_cancelled: bool,
}

impl AppState {
    /// True while no worker job is under way.
    pub fn is_idle(&self) -> bool {
        self.loading_model.is_none() && self.opening_dataset.is_none() && self.zero_shot.is_none()
    }

    pub fn error(&mut self, message: impl Into<String>) {
        let message = message.into();
        // The same failure repeated (e.g. Load pressed twice) would only push the others out of view.
        if self.errors.last() != Some(&message) {
            self.errors.push(message);
        }
    }

    /// Folds one worker event into the state. Results of jobs that were superseded are dropped.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::Progress { job, stage, done, total } => {
                if let Some(run) = self.zero_shot.as_mut().filter(|r| r.job == job) {
                    run.stage = stage;
                    run.done = done;
                    run.total = total;
                }
            }
            Event::ModelLoaded { job, result } => {
                let Some((_, id)) = self.loading_model.take_if(|(j, _)| *j == job) else { return };
                match result {
                    Ok(model) => {
                        self.model = Some(model);
                        self.report = None;
                    }
                    Err(f) => self.fail(f, &format!("Loading model '{id}'")),
                }
            }
            Event::DatasetOpened { job, result } => {
                let Some((_, path)) = self.opening_dataset.take_if(|(j, _)| *j == job) else { return };
                match result {
                    Ok(ds) => {
                        self.dataset = Some(ds);
                        self.report = None;
                    }
                    Err(f) => self.fail(f, &format!("Opening dataset {}", path.display())),
                }
            }
            Event::ZeroShotFinished { job, result } => {
                if self.zero_shot.take_if(|r| r.job == job).is_none() {
                    return;
                }
                match result {
                    Ok(report) => {
                        self.report = Some(report);
                        self.last_run_cancelled = false;
                    }
                    Err(Failure::Cancelled) => self.last_run_cancelled = true,
                    Err(f) => self.fail(f, "Zero-shot"),
                }
            }
            Event::Crashed { job, message } => {
                let mine = self.loading_model.take_if(|(j, _)| *j == job).is_some()
                    | self.opening_dataset.take_if(|(j, _)| *j == job).is_some()
                    | self.zero_shot.take_if(|r| r.job == job).is_some();
                if mine {
                    self.error(message);
                }
            }
            // Fills a text field: the app handles it, not the domain state.
            Event::FolderPicked { .. } => {}
        }
    }

    fn fail(&mut self, failure: Failure, context: &str) {
        match failure {
            Failure::Cancelled => {}
            Failure::Error(message) => self.error(format!("{context}: {message}")),
        }
    }
}
