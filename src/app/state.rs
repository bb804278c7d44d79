//! What the app knows, apart from how it is drawn: the loaded model, the open dataset, the last results,
//! the tasks under way and the errors to show. Worker events change it through [`AppState::apply`], so it
//! can be driven and checked without a window.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::eval::zeroshot::DEFAULT_TEMPLATE;

use super::align_job::{AlignRequest, AlignView};
use super::compare_job::Comparison;
use super::prompts_job::LoadedPrompts;

use super::events::{Action, Event, Failure, JobId, LoadedModel, OpenedDataset, PickTarget};
pub use super::jobs::RunningEval;
use super::jobs::{Jobs, Pending};
use super::training::{RunStatus, TrainRecord};
use crate::train::config::RunConfig;

/// What is remembered between launches (eframe storage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub model: String,
    pub dataset: String,
    /// CoOp's classnames.txt for the dataset, if any.
    pub classnames: String,
    pub templates: Vec<String>,
    /// Most recent first.
    pub recent_models: Vec<String>,
    pub recent_datasets: Vec<String>,
    pub train: super::train_form::TrainForm,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model: String::new(),
            dataset: String::new(),
            classnames: String::new(),
            templates: vec![DEFAULT_TEMPLATE.to_string()],
            recent_models: Vec::new(),
            recent_datasets: Vec::new(),
            train: Default::default(),
        }
    }
}

/// Entries kept in each recent list.
pub const RECENT: usize = 8;

/// Moves `item` to the front of `list`, keeping at most [`RECENT`].
pub fn remember(list: &mut Vec<String>, item: &str) {
    list.retain(|x| x != item);
    list.insert(0, item.to_string());
    list.truncate(RECENT);
}

#[derive(Default)]
pub struct AppState {
    pub model: Option<LoadedModel>,
    pub dataset: Option<OpenedDataset>,
    pub report: Option<Comparison>,
    /// The last base-to-novel table of Compare's base-to-novel mode.
    pub base_to_novel: Option<crate::run::base_to_novel::Report>,
    /// The sweep whose merged results Compare shows: its manifest and its tables.
    pub sweep: Option<(PathBuf, crate::run::sweep::Collected)>,
    /// Shown until dismissed, oldest first.
    pub errors: Vec<String>,
    /// The worker jobs in flight, but training runs (their records hold their jobs).
    pub jobs: Jobs,
    /// Set when the last zero-shot run was cancelled, so the panel can say so.
    pub last_run_cancelled: bool,
    /// Training runs, oldest first.
    pub runs: Vec<TrainRecord>,
    /// Learned prompts: finished runs' and files the user loaded.
    pub prompts: Vec<LoadedPrompts>,
    pub last_export: Option<PathBuf>,
    pub align: Option<AlignView>,
    /// The last alignment that failed and why: it is not asked again until something in it changes or
    /// the user retries (a corrupt image would otherwise be re-sent every frame).
    pub align_failed: Option<(AlignRequest, String)>,
    /// Small pictures of single images (the Compare tab's class view) by path; None: did not decode.
    pub images: std::collections::HashMap<PathBuf, Option<egui::TextureHandle>>,
    /// The runs folder as last listed; None until listed.
    pub runs_on_disk: Option<Vec<super::runs::RunEntry>>,
    pub classified: Option<super::classify_job::Classified>,
    /// Align's Evaluate maps' last table.
    pub maps_eval: Option<crate::align::pointing::MethodsPointing>,
    /// A few decoded images per class of the open dataset, for the side panel.
    pub thumbnails: Vec<Vec<egui::TextureHandle>>,
}

impl AppState {
    /// True while no job the user waits on is under way (pictures being decoded do not count).
    pub fn is_idle(&self) -> bool {
        self.jobs.none_holding_the_user() && !self.is_training()
    }

    /// Records a job the worker started as `pending`, or says why it could not start.
    pub fn start(&mut self, started: std::io::Result<JobId>, pending: Pending) {
        match started {
            Ok(job) => self.jobs.insert(job, pending),
            Err(e) => self.error(format!("Could not start {}: {e}", pending.doing())),
        }
    }

    /// Whether a picture of `path` is neither decoded (or known not to decode) nor on its way.
    pub fn wants_image(&self, path: &std::path::Path) -> bool {
        !self.images.contains_key(path) && !self.jobs.image_pending(path)
    }

    pub fn is_training(&self) -> bool {
        self.runs.iter().any(TrainRecord::is_active)
    }

    pub fn run_mut(&mut self, number: usize) -> Option<&mut TrainRecord> {
        self.runs.iter_mut().find(|r| r.number == number)
    }

    fn run_of_job(&mut self, job: JobId) -> Option<&mut TrainRecord> {
        self.runs.iter_mut().find(|r| r.job == Some(job))
    }

    pub fn error(&mut self, message: impl Into<String>) {
        let message = message.into();
        // The same failure repeated (e.g. Load pressed twice) would only push the others out of view.
        if self.errors.last() != Some(&message) {
            self.errors.push(message);
        }
    }
}

/// What an event asks of the app beyond the state: what only the window and its panels can do.
#[derive(Debug)]
pub enum AfterEvent {
    /// A path chosen in a dialog: its field is filled and it is used.
    Picked { target: PickTarget, path: PathBuf },
    /// The model asked for is loaded: it is remembered among the recent ones and named in the title.
    ModelLoaded(String),
    /// The dataset asked for is open: it is remembered among the recent ones, its thumbnails decoded,
    /// and a class-name file that did not fit it is cleared from its field.
    DatasetOpened {
        path: PathBuf,
        classnames_dropped: bool,
    },
    /// Work to do next: a finished run's prompts to load, the runs list to refresh.
    Then(Action),
}

impl AppState {
    /// Folds one worker event into the state (results of jobs that were superseded are dropped) and
    /// says what else the app must do about it. Every event goes through here.
    pub fn apply(&mut self, event: Event) -> Vec<AfterEvent> {
        let mut after = Vec::new();
        match &event {
            Event::Picked { target, path } => after.push(AfterEvent::Picked {
                target: *target,
                path: path.clone(),
            }),
            Event::ModelLoaded { job, result: Ok(_) } => {
                if let Some(Pending::LoadModel(id)) = self.jobs.get(*job) {
                    after.push(AfterEvent::ModelLoaded(id.clone()));
                }
            }
            Event::DatasetOpened {
                job,
                result: Ok(ds),
            } => {
                if let Some(Pending::OpenDataset(path)) = self.jobs.get(*job) {
                    after.push(AfterEvent::DatasetOpened {
                        path: path.clone(),
                        classnames_dropped: ds.classnames_dropped.is_some(),
                    });
                }
            }
            Event::TrainFinished {
                job,
                result: Ok(outcome),
            } => {
                if self.runs_on_disk.is_some() {
                    after.push(AfterEvent::Then(Action::ListRuns));
                }
                // A finished CoOp run's prompts join Compare, Align and Export.
                let coop =
                    |r: &&TrainRecord| r.job == Some(*job) && matches!(r.run, RunConfig::Coop(_));
                if let Some(run) = self.runs.iter().find(coop) {
                    after.push(AfterEvent::Then(Action::LoadPromptsAs(
                        outcome.prompts.clone(),
                        run.label.clone(),
                    )));
                }
            }
            _ => {}
        }
        self.fold(event);
        after
    }

    fn fold(&mut self, event: Event) {
        match event {
            Event::Progress {
                job,
                stage,
                done,
                total,
            } => {
                if let Some(Pending::Evaluate(run) | Pending::EvaluateMaps(run)) =
                    self.jobs.get_mut(job)
                {
                    run.stage = stage;
                    run.done = done;
                    run.total = total;
                }
            }
            Event::ModelLoaded { job, result } => {
                let Some(Pending::LoadModel(id)) = self.jobs.take(job) else {
                    return;
                };
                match result {
                    Ok(model) => {
                        // What a download fell back on (a missing tokenizer or preprocessing file) is
                        // said, not silently assumed.
                        for w in &model.clip.warnings {
                            self.error(format!("Model '{}': {w}", model.clip.id));
                        }
                        self.model = Some(model);
                        self.report = None;
                        self.base_to_novel = None;
                    }
                    Err(f) => self.fail(f, &format!("Loading model '{id}'")),
                }
            }
            Event::DatasetOpened { job, result } => {
                let Some(Pending::OpenDataset(path)) = self.jobs.take(job) else {
                    return;
                };
                match result {
                    Ok(ds) => {
                        if let Some(why) = &ds.classnames_dropped {
                            self.error(why.clone());
                        }
                        self.thumbnails.clear();
                        self.dataset = Some(ds);
                        self.report = None;
                        self.base_to_novel = None;
                    }
                    Err(f) => self.fail(f, &format!("Opening dataset {}", path.display())),
                }
            }
            Event::BaseToNovelFinished { job, result } => {
                let Some(Pending::Evaluate(_)) = self.jobs.take(job) else {
                    return;
                };
                match result {
                    Ok(report) => {
                        self.base_to_novel = Some(report);
                        self.last_run_cancelled = false;
                    }
                    Err(Failure::Cancelled) => self.last_run_cancelled = true,
                    Err(f) => self.fail(f, "Base-to-novel"),
                }
            }
            Event::ZeroShotFinished { job, result } => {
                let Some(Pending::Evaluate(_)) = self.jobs.take(job) else {
                    return;
                };
                match result {
                    Ok(report) => {
                        self.report = Some(report);
                        self.last_run_cancelled = false;
                    }
                    Err(Failure::Cancelled) => self.last_run_cancelled = true,
                    Err(f) => self.fail(f, "Zero-shot"),
                }
            }
            Event::PromptsLoaded { job, result } => {
                let Some(Pending::LoadPrompts(path)) = self.jobs.take(job) else {
                    return;
                };
                match result {
                    Ok(p) => {
                        // Loading the same file again refreshes it rather than listing it twice.
                        self.prompts.retain(|q| q.path != p.path);
                        self.prompts.push(p);
                    }
                    Err(f) => self.fail(f, &format!("Loading prompts {}", path.display())),
                }
            }
            Event::Exported { job, result } => {
                let Some(Pending::Export) = self.jobs.take(job) else {
                    return;
                };
                match result {
                    Ok(path) => self.last_export = Some(path),
                    Err(f) => self.fail(f, "Export"),
                }
            }
            Event::AlignDone { job, result } => {
                let Some(Pending::Align(request)) = self.jobs.take(job) else {
                    return;
                };
                match result {
                    Ok(view) => {
                        self.align = Some(view);
                        self.align_failed = None;
                    }
                    Err(Failure::Cancelled) => {}
                    Err(Failure::Error(message)) => {
                        self.error(format!(
                            "Alignment of {}: {message}",
                            request.image.display()
                        ));
                        self.align_failed = Some((request, message));
                    }
                }
            }
            Event::TrainProgress {
                job,
                stage,
                done,
                total,
            } => {
                if let Some(run) = self
                    .run_of_job(job)
                    .filter(|r| matches!(r.status, RunStatus::Preparing { .. }))
                {
                    run.status = RunStatus::Preparing { stage, done, total };
                }
            }
            Event::TrainReady { job, train_images } => {
                if let Some(run) = self.run_of_job(job) {
                    run.train_images = train_images;
                    run.status = if run.is_paused() {
                        RunStatus::Paused
                    } else {
                        RunStatus::Training
                    };
                }
            }
            Event::TrainStep {
                job,
                epoch,
                step,
                steps,
                loss,
            } => {
                if let Some(run) = self.run_of_job(job) {
                    run.steps
                        .push([epoch as f64 + (step + 1) as f64 / steps.max(1) as f64, loss]);
                }
            }
            Event::TrainEpoch { job, stats } => {
                if let Some(run) = self.run_of_job(job) {
                    run.epochs.push(stats);
                }
            }
            Event::TrainFinished { job, result } => {
                let Some(run) = self.run_of_job(job) else {
                    return;
                };
                run.job = None;
                match result {
                    Ok(outcome) => {
                        run.status = RunStatus::Finished;
                        run.outcome = Some(outcome);
                    }
                    Err(Failure::Cancelled) => run.status = RunStatus::Stopped,
                    Err(Failure::Error(message)) => {
                        let context = format!("Training run {}", run.label);
                        run.status = RunStatus::Failed(message.clone());
                        self.error(format!("{context}: {message}"));
                    }
                }
            }
            Event::Crashed { job, message } => {
                let was_run = self.run_of_job(job).map(|run| {
                    run.job = None;
                    run.status = RunStatus::Failed(message.clone());
                });
                // Exactly this job's entry goes: pictures it was decoding are asked again when wanted.
                if was_run.is_some() | self.jobs.take(job).is_some() {
                    self.error(message);
                }
            }
            Event::SweepOpened {
                job,
                manifest,
                result,
            } => {
                let Some(Pending::OpenSweep(_)) = self.jobs.take(job) else {
                    return;
                };
                match result {
                    Ok(tables) => self.sweep = Some((manifest, tables)),
                    Err(f) => self.fail(f, &format!("Opening the sweep {}", manifest.display())),
                }
            }
            Event::RunsListed { job, result } => {
                let Some(Pending::ListRuns) = self.jobs.take(job) else {
                    return;
                };
                match result {
                    Ok(runs) => self.runs_on_disk = Some(runs),
                    Err(f) => self.fail(f, "Listing the runs folder"),
                }
            }
            Event::Classified { job, result } => {
                let Some(Pending::Classify) = self.jobs.take(job) else {
                    return;
                };
                match result {
                    Ok(c) => self.classified = Some(c),
                    Err(f) => self.fail(f, "Classifying the image"),
                }
            }
            Event::MapsEvaluated { job, result } => {
                let Some(Pending::EvaluateMaps(_)) = self.jobs.take(job) else {
                    return;
                };
                match result {
                    Ok(r) => self.maps_eval = Some(r),
                    Err(f) => self.fail(f, "Evaluating maps"),
                }
            }
            Event::Thumbnails { job, images } => {
                // Only the open dataset's: one opened before it may still answer.
                let root = self.dataset.as_ref().map(|d| &d.folder.root);
                if matches!(self.jobs.take(job), Some(Pending::Thumbnails(r)) if Some(&r) == root) {
                    self.thumbnails = images;
                }
            }
            Event::Images { job, images } => {
                self.jobs.take(job);
                self.images.extend(images);
            }
            // Fills a text field: the app does (`AfterEvent::Picked`).
            Event::Picked { .. } => {}
        }
    }

    fn fail(&mut self, failure: Failure, context: &str) {
        match failure {
            Failure::Cancelled => {}
            Failure::Error(message) => self.error(format!("{context}: {message}")),
        }
    }
}
