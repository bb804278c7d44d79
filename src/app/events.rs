//! The app's messages and the types they carry: what a panel asks the app to do ([`Action`]) and what the
//! worker threads send back ([`Event`]). One module, so the worker, the app state and the panels all
//! depend on it and not on each other.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::clip::LoadedClip;
use crate::data::{DatasetFolder, Sample};
use crate::error::Error;
use crate::train::config::RunConfig;
use crate::train::epoch_loop::EpochStats;

use super::align_job::{AlignRequest, AlignView};
use super::compare_job::Comparison;
use super::prompts_job::LoadedPrompts;

/// Identifies one job, so a result that arrives after the user started a newer job of the same kind
/// is recognised as stale and dropped.
pub type JobId = u64;

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

/// What a path chosen in a file dialog (or dropped) is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickTarget {
    /// A model folder.
    Model,
    /// A dataset folder.
    Dataset,
    /// CoOp's `classnames.txt` for the dataset.
    ClassNames,
    /// A prompts file (or CoOp checkpoint) to load.
    Prompts,
    /// Where to save run `n`'s prompts file.
    ExportRun(usize),
    /// One image for the Align tab.
    Image,
    /// One image to classify with the selected prompts (Export tab).
    ClassifyImage,
    /// A sweep's manifest, whose results Compare shows.
    Sweep,
}

impl PickTarget {
    /// Folder targets open a folder dialog, `ExportRun` a save dialog, the rest a file dialog.
    pub fn is_folder(self) -> bool {
        matches!(self, PickTarget::Model | PickTarget::Dataset)
    }

    pub fn title(self) -> &'static str {
        match self {
            PickTarget::Model => "Choose a CLIP model folder",
            PickTarget::Dataset => "Choose a dataset folder",
            PickTarget::ClassNames => {
                "Choose a classnames.txt (one \"<folder> <class name>\" per line)"
            }
            PickTarget::Prompts => "Open a prompts file or a CoOp checkpoint",
            PickTarget::ExportRun(_) => "Save the learned prompts",
            PickTarget::Image | PickTarget::ClassifyImage => "Choose an image",
            PickTarget::Sweep => "Open a sweep's manifest (the .jsonl `sweep plan` wrote)",
        }
    }
}

pub enum Event {
    Progress {
        job: JobId,
        stage: String,
        done: usize,
        total: usize,
    },
    ModelLoaded {
        job: JobId,
        result: Result<LoadedModel, Failure>,
    },
    DatasetOpened {
        job: JobId,
        result: Result<OpenedDataset, Failure>,
    },
    ZeroShotFinished {
        job: JobId,
        result: Result<Comparison, Failure>,
    },
    BaseToNovelFinished {
        job: JobId,
        result: Result<crate::run::base_to_novel::Report, Failure>,
    },
    /// A sweep's results, merged per model, dataset and shots.
    SweepOpened {
        job: JobId,
        manifest: PathBuf,
        result: Result<crate::run::sweep::Collected, Failure>,
    },
    PromptsLoaded {
        job: JobId,
        result: Result<LoadedPrompts, Failure>,
    },
    Exported {
        job: JobId,
        result: Result<PathBuf, Failure>,
    },
    AlignDone {
        job: JobId,
        result: Result<AlignView, Failure>,
    },
    /// Per class, a few small decoded images (files that fail to decode are left out), as textures:
    /// the worker uploads them, so the frame that receives them does not.
    Thumbnails {
        job: JobId,
        images: Vec<Vec<egui::TextureHandle>>,
    },
    /// Preparing a training run: split and image features.
    TrainProgress {
        job: JobId,
        stage: String,
        done: usize,
        total: usize,
    },
    /// The split is drawn and the features are ready; training starts.
    TrainReady {
        job: JobId,
        train_images: usize,
    },
    TrainStep {
        job: JobId,
        epoch: usize,
        step: usize,
        steps: usize,
        loss: f64,
    },
    TrainEpoch {
        job: JobId,
        stats: EpochStats,
    },
    TrainFinished {
        job: JobId,
        result: Result<TrainOutcome, Failure>,
    },
    /// The job panicked; whatever task it belonged to is over.
    Crashed {
        job: JobId,
        message: String,
    },
    Picked {
        target: PickTarget,
        path: PathBuf,
    },
    /// Small decoded images by path, as textures (None: the file did not decode).
    Images {
        job: JobId,
        images: Vec<(PathBuf, Option<egui::TextureHandle>)>,
    },
    RunsListed {
        job: JobId,
        result: Result<Vec<super::runs::RunEntry>, Failure>,
    },
    Classified {
        job: JobId,
        result: Result<super::classify_job::Classified, Failure>,
    },
    /// The pointing game of the Align tab's chosen map methods.
    MapsEvaluated {
        job: JobId,
        result: Result<crate::align::pointing::MethodsPointing, Failure>,
    },
}

pub struct LoadedModel {
    pub clip: Arc<LoadedClip>,
    /// `clip::load::fingerprint` of its folder: prompts files made on another model are flagged.
    pub fingerprint: String,
    /// [`LoadedClip::describe`], computed once.
    pub description: String,
    pub device: String,
}

pub struct OpenedDataset {
    pub folder: Arc<DatasetFolder>,
    pub summary: DatasetSummary,
    /// The images every score is computed on (the test folder, or the split seed 0 sets aside), which
    /// Align browses too; empty when the folder has none.
    pub test: Vec<crate::data::Sample>,
    /// Why the class-name file was not applied (it names another dataset's folders): the field is
    /// cleared and the message shown.
    pub classnames_dropped: Option<String>,
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
        let splits: Vec<(&'static str, &[Sample])> =
            [("train", &ds.train), ("val", &ds.val), ("test", &ds.test)]
                .into_iter()
                .filter_map(|(name, samples)| samples.as_deref().map(|s| (name, s)))
                .collect();
        let (columns, per_column): (Vec<&'static str>, Vec<Vec<usize>>) = if splits.is_empty() {
            (vec!["images"], vec![ds.counts(&ds.all)])
        } else {
            splits
                .into_iter()
                .map(|(name, samples)| (name, ds.counts(samples)))
                .unzip()
        };
        let counts = (0..ds.num_classes())
            .map(|class| per_column.iter().map(|col| col[class]).collect())
            .collect();
        DatasetSummary {
            columns,
            counts,
            images: ds.all.len(),
            skipped_files: ds.skipped_files,
        }
    }
}

/// Flags the worker checks between steps: `cancel` ends the run (the last epoch's checkpoint stays, so
/// it can be resumed), `pause` holds it until cleared.
#[derive(Default)]
pub struct TrainControl {
    pub cancel: AtomicBool,
    pub pause: AtomicBool,
}

/// What a finished run leaves: its test accuracy, a line for the run list and the file it wrote.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The learned prompts' (CoOp) or the last stage's (MP-FGVC) accuracy on the test split.
    pub test_acc: f64,
    /// "test 84.0% (hand-crafted 61.2%) · 200 epochs", "test: stage 2 71.0%, stage 1 64.5% (i2t) · 50 epochs".
    pub summary: String,
    pub train_seconds: f64,
    /// The engine's export (a prompts file for CoOp, the weights for MP-FGVC), in the app's runs folder
    /// until exported.
    pub prompts: PathBuf,
}

/// What a panel asks the app to do; handled after the frame is laid out.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    LoadModel(String),
    OpenDataset(PathBuf),
    Browse(PickTarget),
    RunZeroShot(Vec<String>),
    /// Compare's base-to-novel mode, with its settings.
    RunBaseToNovel(super::compare_job::BaseToNovelRequest),
    CancelZeroShot,
    DismissError(usize),
    /// A file or folder dropped onto the window.
    Dropped(PathBuf),
    StartTraining(Box<RunConfig>),
    PauseRun(usize),
    /// Unpauses a paused run, or restarts a stopped one from its checkpoint.
    ResumeRun(usize),
    StopRun(usize),
    ToggleRunVisible(usize),
    LoadPrompts(PathBuf),
    PickModel(String),
    PickRecentDataset(String),
    LoadPromptsAs(PathBuf, String),
    ExportRun {
        from: PathBuf,
        to: PathBuf,
    },
    ShowError(String),
    Align(Box<AlignRequest>),
    /// Forget the failed alignment so the Align tab tries again.
    RetryAlign,
    UnloadPrompts(PathBuf),
    /// Reads a loaded prompts file again (re-checked against the model and dataset now loaded).
    ReloadPrompts(PathBuf),
    /// Small pictures of these images are wanted (the Compare tab's class view).
    WantImages(Vec<PathBuf>),
    /// Scan the runs folder again.
    ListRuns,
    /// Show a sweep's merged results in Compare.
    OpenSweep(PathBuf),
    /// Delete a run's files from the runs folder.
    DeleteRun(PathBuf),
    /// Load a run from the runs folder: its prompts into the app, or its model folder as the model.
    OpenRun(PathBuf),
    /// Classify one image with a loaded prompts file.
    Classify {
        prompts: PathBuf,
        image: PathBuf,
    },
    /// Play the pointing game of these map methods on generated scenes (Align's Evaluate maps).
    EvaluateMaps(super::maps_eval_job::MapsEvalRequest),
    CancelMapsEval,
}
