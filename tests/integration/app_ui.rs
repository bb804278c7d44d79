#![cfg(feature = "gui")]
//! The desktop app driven headless through egui_kittest: type paths, press buttons, wait for the worker,
//! read what the window shows. No GPU or display is needed (nothing is rendered to pixels).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::Storage as _;
use egui_kittest::kittest::{NodeT as _, Queryable};
use egui_kittest::Harness;
use promptscope::app::events::{Event, Failure};
use promptscope::app::jobs::Pending;
use promptscope::app::state::{AppState, RunningEval, Settings};
use promptscope::app::PromptscopeApp;
use promptscope::clip::{synth, ClipConfig, HiddenAct};

pub(crate) const MODEL_FIELD: &str = "Model folder or hub id";
pub(crate) const DATASET_FIELD: &str = "Dataset folder";
/// Far above what the tiny model needs, so only a hung worker fails the wait.
const WORKER_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct Fixture {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) model: PathBuf,
    pub(crate) data: PathBuf,
}

/// A random-weight tiny CLIP and 3 classes × (4 train, 2 val, 3 test) generated images.
pub(crate) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-clip");
    let data = dir.path().join("shapes");
    synth::write_model_folder(&ClipConfig::tiny(HiddenAct::QuickGelu, 1e-5), &model).unwrap();
    promptscope::data::synth::write_dataset(&data, 3, 0, Some((4, 2, 3)), 0).unwrap();
    Fixture {
        _dir: dir,
        model,
        data,
    }
}

pub(crate) fn harness(app: PromptscopeApp) -> Harness<'static, PromptscopeApp> {
    Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .build_ui_state(|ui, app: &mut PromptscopeApp| app.show(ui), app)
}

/// Runs frames until no worker job is under way (the worker repaints from its own thread, so
/// `Harness::run` would not know when to stop).
pub(crate) fn wait_idle(h: &mut Harness<'_, PromptscopeApp>) {
    let deadline = Instant::now() + WORKER_TIMEOUT;
    h.step();
    while !h.state().state.is_idle() {
        assert!(
            Instant::now() < deadline,
            "the worker did not finish within {WORKER_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
        h.step();
    }
    // One more frame draws what the last event brought.
    h.step();
}

pub(crate) fn type_into(h: &mut Harness<'_, PromptscopeApp>, field: &str, text: &str) {
    h.get_by_label(field).click();
    h.step();
    h.get_by_label(field).type_text(text);
    h.step();
}

/// Clicks, then runs a second frame so the widgets reflect what the click did.
pub(crate) fn click(h: &mut Harness<'_, PromptscopeApp>, label: &str) {
    h.get_by_label(label).click();
    h.step();
    h.step();
}

pub(crate) fn labels_containing(h: &Harness<'_, PromptscopeApp>, text: &str) -> usize {
    h.query_all_by_label_contains(text).count()
}

#[test]
fn load_open_and_run_zero_shot_through_the_ui() {
    let fx = fixture();
    let mut h = harness(PromptscopeApp::new_headless());
    assert!(h.query_by_label("Compare").is_some() && h.query_by_label("Export").is_some());
    assert_eq!(labels_containing(&h, "no model loaded"), 1);

    type_into(&mut h, MODEL_FIELD, &fx.model.display().to_string());
    click(&mut h, "Load");
    type_into(&mut h, DATASET_FIELD, &fx.data.display().to_string());
    click(&mut h, "Open");
    wait_idle(&mut h);

    let app = h.state();
    assert!(app.state.errors.is_empty(), "{:?}", app.state.errors);
    assert!(app.state.model.is_some(), "the model did not load");
    let ds = app
        .state
        .dataset
        .as_ref()
        .expect("the dataset did not open");
    assert_eq!(ds.summary.columns, ["train", "val", "test"]);
    assert_eq!(ds.summary.counts, vec![vec![4, 2, 3]; 3]);
    // Each class is listed once in the side panel, with its counts per split.
    for class in ["red circle", "red square", "red stripes"] {
        assert!(h.query_all_by_label(class).count() >= 1, "{class} listed");
    }
    assert_eq!(
        labels_containing(&h, "3 classes · 27 images · 0 skipped"),
        1
    );
    // The top bar shows the model's description and the device.
    assert!(labels_containing(&h, "ViT 224×224 px") >= 1);
    assert_eq!(labels_containing(&h, "device: CPU"), 1);
    h.check_accessibility();

    click(&mut h, "Run zero-shot");
    assert!(
        h.state().state.jobs.evaluation().is_some(),
        "pressing Run did not start a run"
    );
    wait_idle(&mut h);

    let report = h.state().state.report.as_ref().expect("no comparison");
    assert_eq!(
        report.methods.len(),
        1,
        "one template, no learned prompts, no probe"
    );
    let eval = report.methods[0].eval.clone();
    assert_eq!(eval.per_class.len(), 3);
    assert_eq!(eval.total, 9);
    assert!(h.query_by_label("Accuracy on the test split").is_some());
    // A column per method, an overall row, then one row per class (its name is also in the side panel).
    assert!(h.query_by_label("\"a photo of a {}.\"").is_some());
    assert!(h.query_by_label("overall").is_some());
    for class in ["red circle", "red square", "red stripes"] {
        assert!(
            h.query_all_by_label(class).count() >= 2,
            "{class} in the results"
        );
    }
    assert_eq!(
        labels_containing(&h, &format!("{} / 9 correct", eval.correct)),
        1
    );
    // Each row's accuracy bar says its percentage.
    assert_eq!(labels_containing(&h, "%"), 4);

    // A class's images marked correct / wrong, with their top-5; the confusion matrix adds up to the images.
    // The class name in the results table (it is also in the side panel), a selectable label.
    h.get_all_by_label("red square")
        .find(|n| n.accesskit_node().role() != egui::accesskit::Role::Label)
        .expect("the results row's class button")
        .click();
    h.step();
    h.step();
    assert_eq!(labels_containing(&h, "images and top-5 predictions"), 1);
    assert_eq!(
        h.query_all_by_label("correct").count() + h.query_all_by_label("wrong").count(),
        3
    );
    click(&mut h, "confusion matrix");
    assert!(h.query_by_label("true \\ predicted").is_some());
    let cells: usize = eval.confusion.iter().flatten().sum();
    assert_eq!(cells, 9);
    h.check_accessibility();
}

#[test]
fn a_bad_model_folder_shows_a_dismissable_error_naming_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(PromptscopeApp::new_headless());
    type_into(&mut h, MODEL_FIELD, &dir.path().display().to_string());
    click(&mut h, "Load");
    wait_idle(&mut h);

    assert!(h.state().state.model.is_none());
    assert_eq!(h.state().state.errors.len(), 1);
    assert!(
        h.query_by_label_contains("config.json").is_some(),
        "not shown: {:?}",
        h.state().state.errors
    );
    click(&mut h, "Dismiss");
    h.step();
    assert!(h.state().state.errors.is_empty());
    assert!(h.query_by_label_contains("config.json").is_none());
}

#[test]
fn a_corrupt_config_and_an_empty_dataset_are_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(model.join("config.json"), "{ not json").unwrap();
    let data = dir.path().join("empty");
    std::fs::create_dir(&data).unwrap();

    let mut h = harness(
        PromptscopeApp::new_headless()
            .with_startup(Some(model.display().to_string()), Some(data.clone())),
    );
    wait_idle(&mut h);
    let errors = &h.state().state.errors;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("config.json") && e.contains("not a CLIP config")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("no class folders")),
        "{errors:?}"
    );
    assert_eq!(h.query_all_by_label("Dismiss").count(), 2);
    // Zero-shot cannot start without a model and a dataset.
    assert!(h.query_by_label_contains("Load a model first").is_some());
}

#[test]
fn command_line_paths_load_at_start_up() {
    let fx = fixture();
    let app = PromptscopeApp::new_headless()
        .with_startup(Some(fx.model.display().to_string()), Some(fx.data.clone()));
    let mut h = harness(app);
    wait_idle(&mut h);
    let s = &h.state().state;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert!(s.model.is_some() && s.dataset.is_some());
    assert_eq!(h.state().settings().dataset, fx.data.display().to_string());
}

#[test]
fn the_demo_models_are_one_click_away_and_say_what_they_are() {
    let mut h =
        harness(PromptscopeApp::new_headless().with_startup(Some("scenes-filip".into()), None));
    wait_idle(&mut h);
    let model = h
        .state()
        .state
        .model
        .as_ref()
        .expect("the FILIP demo model loads by name")
        .clip
        .clone();
    assert!(
        model
            .demo_note
            .as_deref()
            .is_some_and(|n| n.contains("FILIP")),
        "{:?}",
        model.demo_note
    );
    assert_eq!(
        promptscope::app::window_title(&model),
        "promptscope — scenes-filip (small demo model)"
    );
    assert!(
        h.query_by_label("demo model").is_some(),
        "the top bar marks it"
    );
    // The picker offers both shipped models; choosing the CLIP twin loads it.
    click(&mut h, "Demo models");
    assert!(h.query_by_label("scenes-filip").is_some());
    click(&mut h, "scenes-clip");
    wait_idle(&mut h);
    let s = &h.state().state;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.model.as_ref().unwrap().clip.id, "scenes-clip");
    // An ordinary folder is not called a demo model.
    let fx = fixture();
    let mut h = harness(
        PromptscopeApp::new_headless().with_startup(Some(fx.model.display().to_string()), None),
    );
    wait_idle(&mut h);
    assert!(h
        .state()
        .state
        .model
        .as_ref()
        .unwrap()
        .clip
        .demo_note
        .is_none());
    assert!(h.query_by_label("demo model").is_none());
}

/// What a window system hands egui when a folder is dropped.
#[derive(Debug)]
pub(crate) struct DroppedFolder(pub(crate) PathBuf);

impl egui::DroppedFile for DroppedFolder {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        Err("a folder".into())
    }
}

#[test]
fn dropping_folders_sets_the_model_and_the_dataset() {
    let fx = fixture();
    let mut h = harness(PromptscopeApp::new_headless());
    h.input_mut()
        .dropped_files
        .push(Arc::new(DroppedFolder(fx.model.clone())));
    h.input_mut()
        .dropped_files
        .push(Arc::new(DroppedFolder(fx.data.clone())));
    wait_idle(&mut h);
    let app = h.state();
    assert!(app.state.errors.is_empty(), "{:?}", app.state.errors);
    assert!(app.state.model.is_some() && app.state.dataset.is_some());
    let settings = app.settings();
    assert_eq!(
        (settings.model, settings.dataset),
        (
            fx.model.display().to_string(),
            fx.data.display().to_string()
        )
    );
}

#[test]
fn templates_can_be_added_and_removed() {
    let mut h = harness(PromptscopeApp::new_headless());
    assert_eq!(h.state().settings().templates, ["a photo of a {}."]);
    click(&mut h, "Add template");
    type_into(&mut h, "Template 2", "a drawing of a {}.");
    assert_eq!(
        h.state().settings().templates,
        ["a photo of a {}.", "a drawing of a {}."]
    );
    h.get_all_by_label("Remove")
        .next()
        .expect("a Remove button")
        .click();
    h.step();
    h.step();
    assert_eq!(h.state().settings().templates, ["a drawing of a {}."]);
    // The last template cannot be removed.
    assert!(h.get_by_label("Remove").accesskit_node().is_disabled());
}

/// An in-memory eframe storage, as eframe hands the app at start-up and on save.
#[derive(Default)]
struct MemoryStorage(HashMap<String, String>);

impl eframe::Storage for MemoryStorage {
    fn get_string(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
    fn set_string(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
    fn remove_string(&mut self, key: &str) {
        self.0.remove(key);
    }
    fn flush(&mut self) {}
}

#[test]
fn paths_and_templates_are_remembered_between_launches() {
    let mut storage = MemoryStorage::default();
    let mut first = PromptscopeApp::new(None);
    let remembered = Settings {
        model: "openai/clip-vit-base-patch32".into(),
        dataset: "/data/pets".into(),
        classnames: "/data/pets/classnames.txt".into(),
        templates: vec![
            "a photo of a {}, a type of pet.".into(),
            "a blurry photo of a {}.".into(),
        ],
        recent_models: vec!["openai/clip-vit-base-patch32".into(), "/models/b16".into()],
        recent_datasets: vec!["/data/pets".into()],
        train: {
            let mut form = promptscope::app::train_form::TrainForm::default();
            (form.coop.shots, form.coop.coop.csc) = (Some(4), true);
            form
        },
    };
    first.apply_settings(remembered.clone());
    eframe::App::save(&mut first, &mut storage);

    let second = PromptscopeApp::new(Some(&storage));
    assert_eq!(second.settings(), remembered);
    // Garbage in storage falls back to defaults rather than failing to start.
    storage.set_string(eframe::APP_KEY, "not ron".into());
    assert_eq!(
        PromptscopeApp::new(Some(&storage)).settings(),
        Settings::default()
    );
}

#[test]
fn cancelled_and_superseded_results_are_handled() {
    let mut state = AppState::default();
    let cancel = Arc::new(AtomicBool::new(true));
    state
        .jobs
        .insert(7, Pending::Evaluate(RunningEval::new(cancel)));
    // Progress and results of another job are ignored.
    state.apply(Event::Progress {
        job: 6,
        stage: "images".into(),
        done: 1,
        total: 2,
    });
    assert_eq!(state.jobs.evaluation().map(|r| r.done), Some(0));
    state.apply(Event::ZeroShotFinished {
        job: 6,
        result: Err(Failure::Error("old".into())),
    });
    assert!(state.jobs.evaluation().is_some() && state.errors.is_empty());
    // A cancelled run ends quietly.
    state.apply(Event::ZeroShotFinished {
        job: 7,
        result: Err(Failure::Cancelled),
    });
    assert!(state.is_idle() && state.errors.is_empty() && state.last_run_cancelled);
    // A crashed job ends its task with a message.
    state.jobs.insert(8, Pending::LoadModel("m".into()));
    state.apply(Event::Crashed {
        job: 8,
        message: "internal error".into(),
    });
    assert!(state.is_idle());
    assert_eq!(state.errors, ["internal error"]);
}

/// A decode or thumbnail job that panicked clears exactly its own entry: its pictures are asked again
/// the next time they are wanted, and the other jobs in flight stay.
#[test]
fn a_crashed_decode_or_thumbnail_job_is_asked_again() {
    let mut state = AppState::default();
    let picture = Path::new("class/a.png");
    state
        .jobs
        .insert(9, Pending::Images(vec![picture.to_path_buf()]));
    state
        .jobs
        .insert(10, Pending::Thumbnails(PathBuf::from("data")));
    state.jobs.insert(11, Pending::LoadModel("m".into()));
    assert!(!state.wants_image(picture), "asked once while on its way");
    state.apply(Event::Crashed {
        job: 9,
        message: "internal error during images: boom".into(),
    });
    assert!(state.wants_image(picture), "not asked again after a crash");
    assert_eq!(state.jobs.loading_model(), Some("m"));
    state.apply(Event::Crashed {
        job: 10,
        message: "internal error during thumbnails: boom".into(),
    });
    assert_eq!(state.errors.len(), 2);
    assert_eq!(state.jobs.loading_model(), Some("m"));
    assert!(!state.is_idle(), "the model is still loading");
    state.apply(Event::ModelLoaded {
        job: 11,
        result: Err(Failure::Cancelled),
    });
    assert!(state.is_idle());
}

/// An app with the fixture loaded, writing its runs and caches into the fixture's folder.
pub(crate) fn loaded(fx: &Fixture) -> Harness<'static, PromptscopeApp> {
    let mut app = PromptscopeApp::new_headless()
        .with_startup(Some(fx.model.display().to_string()), Some(fx.data.clone()));
    app.runs_dir = fx._dir.path().join("runs");
    app.cache_dir = None;
    let mut h = harness(app);
    wait_idle(&mut h);
    assert!(
        h.state().state.errors.is_empty(),
        "{:?}",
        h.state().state.errors
    );
    h
}

/// Runs frames until `done` holds (the worker reports from its own thread).
pub(crate) fn wait_for(
    h: &mut Harness<'_, PromptscopeApp>,
    what: &str,
    done: impl Fn(&PromptscopeApp) -> bool,
) {
    let deadline = Instant::now() + WORKER_TIMEOUT;
    while !done(h.state()) {
        assert!(
            Instant::now() < deadline,
            "waited {WORKER_TIMEOUT:?} for {what}; runs: {:?}",
            h.state()
                .state
                .runs
                .iter()
                .map(|r| (&r.status, r.epochs.len(), r.job))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
        h.step();
    }
    h.step();
}

fn epochs_of(h: &Harness<'_, PromptscopeApp>, run: usize) -> usize {
    h.state().state.runs[run].epochs.len()
}

/// Stops the first run, resumes it from its checkpoint (the epoch numbers carry on, no gap or repeat)
/// and stops it again.
pub(crate) fn stop_resume_stop(h: &mut Harness<'_, PromptscopeApp>) {
    use promptscope::app::training::RunStatus;
    click(h, "Stop");
    assert!(
        h.state().state.runs[0]
            .control
            .cancel
            .load(std::sync::atomic::Ordering::Relaxed),
        "Stop did not reach the run"
    );
    wait_for(h, "the stop", |a| {
        a.state.runs[0].status == RunStatus::Stopped
    });
    let stopped_at = epochs_of(h, 0);
    assert!(stopped_at < h.state().state.runs[0].run.total_epochs());
    click(h, "Resume");
    wait_for(h, "epochs after resuming a stopped run", |a| {
        a.state.runs[0].epochs.len() >= stopped_at + 2
    });
    let numbers: Vec<usize> = h.state().state.runs[0]
        .epochs
        .iter()
        .map(|e| e.epoch)
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "epochs 0, 1, 2, … without gaps or repeats: {numbers:?}"
    );
    click(h, "Stop");
    wait_for(h, "the second stop", |a| !a.state.is_training());
}

#[test]
fn pretraining_runs_from_the_train_tab_stops_resumes_and_its_model_loads() {
    use promptscope::app::train_panel::{series, PAIRS_FIELD, PRETRAIN_METHOD};
    use promptscope::app::training::RunStatus;
    use promptscope::data::scenes::{write_pairs, SceneConfig};
    let fx = fixture();
    let pairs = fx._dir.path().join("pairs");
    write_pairs(
        &pairs,
        16,
        4,
        &SceneConfig {
            size: 224,
            ..SceneConfig::default()
        },
    )
    .unwrap();
    let mut h = loaded(&fx);
    click(&mut h, "Train");
    click(&mut h, PRETRAIN_METHOD);
    assert_eq!(
        h.state().train.form.kind,
        promptscope::app::train_form::TrainKind::Pretrain
    );
    type_into(&mut h, PAIRS_FIELD, pairs.to_str().unwrap());
    click(&mut h, "the loaded model (fine-tune)");
    {
        let p = &mut h.state_mut().train.form.pretrain;
        assert!(
            matches!(&p.start, promptscope::train::config::PretrainStart::Init(d) if d == &fx.model),
            "{:?}",
            p.start
        );
        (p.config.optim.epochs, p.config.batch_size) = (2000, 8);
    }
    click(&mut h, "Start training");
    wait_for(&mut h, "a few pretraining epochs", |a| {
        a.state.runs[0].epochs.len() >= 2
    });
    let s = series(&h.state().state.runs[0]);
    assert!(
        s.iter()
            .any(|(_, n, p)| n.ends_with("step loss") && p.len() >= 4),
        "a loss point per step"
    );
    stop_resume_stop(&mut h);

    h.state_mut().train.form.pretrain.config.optim.epochs = 3;
    click(&mut h, "Start training");
    wait_for(&mut h, "the short pretraining run", |a| {
        a.state.runs[1].status == RunStatus::Finished
    });
    let out = h.state().state.runs[1]
        .outcome
        .as_ref()
        .unwrap()
        .prompts
        .clone();
    assert_eq!(epochs_of(&h, 1), 3);
    assert!(
        out.join("model.safetensors").is_file() && out.join("config.json").is_file(),
        "{}",
        out.display()
    );
    // The written model is one click from being the loaded one.
    click(&mut h, "Export");
    click(&mut h, "Load this model");
    wait_idle(&mut h);
    assert!(
        h.state().state.errors.is_empty(),
        "{:?}",
        h.state().state.errors
    );
    assert_eq!(
        h.state().state.model.as_ref().unwrap().clip.id,
        out.display().to_string()
    );
}

/// Pretraining on generated scenes streamed each epoch (no pairs folder), from the Train tab: the run
/// says how many scenes an epoch holds, and the model it writes loads.
#[test]
fn pretraining_on_streamed_scenes_runs_from_the_train_tab() {
    use promptscope::app::train_panel::{PRETRAIN_METHOD, SCENES_FIELD, SHAPE_LABELS_FIELD};
    use promptscope::app::training::RunStatus;
    use promptscope::train::pretrain::PretrainConfig;
    let fx = fixture();
    let mut h = loaded(&fx);
    click(&mut h, "Train");
    click(&mut h, PRETRAIN_METHOD);
    assert!(
        h.query_by_label(SHAPE_LABELS_FIELD).is_none(),
        "a folder of pairs has no patch labels to learn from"
    );
    click(&mut h, SCENES_FIELD);
    // Drawn scenes label their patches: the dense shape loss is offered, and the form holds the demo
    // models' recipe (the loss stays the one picked).
    assert!(h.query_by_label(SHAPE_LABELS_FIELD).is_some());
    let config = &h.state().train.form.pretrain.config;
    assert_eq!(config, &PretrainConfig::demo_recipe(config.loss));
    assert!(config.shape_labels > 0.0);
    click(&mut h, "the loaded model (fine-tune)");
    {
        let p = &mut h.state_mut().train.form.pretrain;
        let recipe = p
            .scenes
            .as_mut()
            .expect("the checkbox picks generated scenes");
        assert!(
            recipe.hard_negatives && recipe.minimal_pairs > 0.0,
            "the shape recipe"
        );
        recipe.count = 16;
        (p.config.optim.epochs, p.config.batch_size) = (2, 8);
    }
    click(&mut h, "Start training");
    wait_for(&mut h, "the streamed pretraining run", |a| {
        a.state
            .runs
            .first()
            .is_some_and(|r| matches!(r.status, RunStatus::Finished | RunStatus::Failed(_)))
    });
    let run = &h.state().state.runs[0];
    assert_eq!(
        run.status,
        RunStatus::Finished,
        "{:?}",
        h.state().state.errors
    );
    assert_eq!(run.epochs.len(), 2);
    let out = run.outcome.as_ref().unwrap().prompts.clone();
    assert!(out.join("model.safetensors").is_file(), "{}", out.display());
}

/// Pretraining on WebDataset shards from the Train tab: a brace list typed as the pairs, the shuffle
/// buffer and the broken-sample policy set in the form; a broken sample skipped is named in the run's
/// summary, and with "stop the run" the run fails naming its shard and key.
#[test]
fn pretraining_on_shards_runs_from_the_train_tab_and_says_what_it_skipped() {
    use promptscope::app::train_panel::{
        BAD_SAMPLES_FAIL, PAIRS_FIELD, PRETRAIN_METHOD, SHUFFLE_BUFFER_FIELD,
    };
    use promptscope::app::training::RunStatus;
    use promptscope::data::webdataset::{write_shards, BadSamples};
    let fx = fixture();
    let shards = fx._dir.path().join("shards");
    write_shards(&shards, 16, 8, &|i| {
        let img = image::RgbImage::from_pixel(32, 32, image::Rgb([(i * 15) as u8, 90, 40]));
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        // Sample 5's caption is not UTF-8.
        let caption = if i == 5 {
            vec![0xff, 0xfe]
        } else {
            format!("a square number {i}").into_bytes()
        };
        Ok(vec![("png", png), ("txt", caption)])
    })
    .unwrap();
    let mut h = loaded(&fx);
    click(&mut h, "Train");
    click(&mut h, PRETRAIN_METHOD);
    let list = format!("{}/{{00000..00001}}.tar", shards.display());
    type_into(&mut h, PAIRS_FIELD, &list);
    assert!(h.query_by_label(SHUFFLE_BUFFER_FIELD).is_some());
    {
        let p = &mut h.state_mut().train.form.pretrain;
        assert_eq!(p.pairs.to_str(), Some(list.as_str()));
        assert_eq!(
            p.shards.bad_samples,
            BadSamples::Skip,
            "skipping is the default"
        );
        p.shards.shuffle_buffer = 3;
        (p.config.optim.epochs, p.config.batch_size) = (2, 4);
    }
    click(&mut h, "Start training");
    let finished = |a: &promptscope::app::PromptscopeApp, i: usize| {
        a.state
            .runs
            .get(i)
            .is_some_and(|r| matches!(r.status, RunStatus::Finished | RunStatus::Failed(_)))
    };
    wait_for(&mut h, "the shard run", |a| finished(a, 0));
    let run = &h.state().state.runs[0];
    assert_eq!(
        run.status,
        RunStatus::Finished,
        "{:?}",
        h.state().state.errors
    );
    let summary = &run.outcome.as_ref().unwrap().summary;
    assert!(
        summary.contains("skipped 1 broken samples") && summary.contains("000000005"),
        "{summary}"
    );
    click(&mut h, BAD_SAMPLES_FAIL);
    assert_eq!(
        h.state().train.form.pretrain.shards.bad_samples,
        BadSamples::Fail
    );
    click(&mut h, "Start training");
    wait_for(&mut h, "the strict shard run", |a| finished(a, 1));
    let RunStatus::Failed(why) = &h.state().state.runs[1].status else {
        panic!("{:?}", h.state().state.runs[1].status);
    };
    assert!(
        why.contains("00000.tar") && why.contains("000000005") && why.contains("UTF-8"),
        "{why}"
    );
}

#[test]
fn training_runs_live_pauses_stops_resumes_and_exports() {
    use promptscope::app::runs::RunKind;
    use promptscope::app::train_panel::series;
    use promptscope::app::training::RunStatus;
    use promptscope::app::PickTarget;
    let fx = fixture();
    let mut h = loaded(&fx);
    click(&mut h, "Train");
    click(&mut h, "2-shot");
    assert_eq!(h.state().train.form.coop.shots, Some(2));
    assert_eq!(
        h.state().train.form.coop.train.optim.epochs,
        100,
        "CoOp's epochs for 2 shots"
    );
    // A long run to pause and stop, then a short one that finishes.
    h.state_mut().train.form.coop.train.optim.epochs = 2000;
    click(&mut h, "Start training");
    assert_eq!(h.state().state.runs.len(), 1);
    wait_for(&mut h, "a few epochs", |a| {
        a.state.runs[0].epochs.len() >= 3
    });
    // The plot's data: a loss point per step and per-epoch accuracy, growing as epochs finish.
    let s = series(&h.state().state.runs[0]);
    let points = |name: &str| {
        s.iter()
            .find(|(_, n, _)| n.ends_with(name))
            .map_or(0, |(_, _, p)| p.len())
    };
    assert!(
        points("step loss") >= 3
            && points("epoch loss") >= 3
            && points(" val") >= 3
            && points(" lr") >= 3
    );

    click(&mut h, "Pause");
    wait_for(&mut h, "the pause", |a| {
        a.state.runs[0].status == RunStatus::Paused
    });
    std::thread::sleep(Duration::from_millis(100));
    h.step();
    let paused_at = epochs_of(&h, 0);
    std::thread::sleep(Duration::from_millis(400));
    h.step();
    assert!(
        epochs_of(&h, 0) <= paused_at + 1,
        "paused, yet epochs went on: {paused_at} → {}",
        epochs_of(&h, 0)
    );
    click(&mut h, "Resume");
    wait_for(&mut h, "epochs after resuming", |a| {
        a.state.runs[0].epochs.len() >= paused_at + 3
    });
    stop_resume_stop(&mut h);

    h.state_mut().train.form.coop.train.optim.epochs = 5;
    click(&mut h, "Start training");
    wait_for(&mut h, "the short run and its prompts", |a| {
        a.state.is_idle() && a.state.prompts.len() == 1
    });
    let run = &h.state().state.runs[1];
    assert_eq!(run.status, RunStatus::Finished);
    assert_eq!(run.epochs.len(), 5);
    assert!(run.outcome.as_ref().unwrap().prompts.is_file());

    // Export to a path of our choosing (as the Save as… dialog answers), load it back, and compare it
    // with the template.
    let test_acc = run.outcome.as_ref().unwrap().test_acc;
    click(&mut h, "Export");
    wait_idle(&mut h);
    let suggested = h
        .state()
        .export
        .export_paths
        .get(&2)
        .cloned()
        .expect("a suggested export path");
    assert!(
        Path::new(&suggested).is_absolute()
            && suggested.ends_with("prompts-shapes-run2.safetensors"),
        "{suggested}"
    );
    // The runs folder: the stopped run left only its checkpoint, the finished one its prompts.
    let on_disk = h
        .state()
        .state
        .runs_on_disk
        .clone()
        .expect("the runs folder listed");
    let kinds: Vec<_> = on_disk.iter().map(|r| r.kind).collect();
    assert_eq!(on_disk.len(), 2, "{on_disk:?}");
    assert!(
        kinds.contains(&RunKind::Unfinished) && kinds.contains(&RunKind::Prompts),
        "{kinds:?}"
    );
    assert_eq!(labels_containing(&h, "checkpoint only"), 1);
    let out = fx._dir.path().join("exported.safetensors");
    h.state_mut().choose(PickTarget::ExportRun(2), out.clone());
    wait_idle(&mut h);
    assert_eq!(h.state().state.last_export.as_deref(), Some(out.as_path()));
    assert!(h.query_by_label_contains("saved").is_some());
    h.state_mut().export.load_path = out.display().to_string();
    click(&mut h, "Load prompts");
    wait_idle(&mut h);
    let app = h.state();
    assert!(app.state.errors.is_empty(), "{:?}", app.state.errors);
    assert_eq!(app.state.prompts.len(), 2);
    let loaded = &app.state.prompts[1];
    assert_eq!(loaded.label, "exported.safetensors");
    assert_eq!(
        loaded.words.len(),
        16,
        "a unified context of 16 vectors, each with its nearest words"
    );
    assert!(loaded.words.iter().all(|w| w.nearest.len() == 5));
    assert!(loaded
        .summary()
        .contains("nearest words per context vector"));

    click(&mut h, "Compare");
    click(&mut h, "Run zero-shot");
    wait_idle(&mut h);
    let report = h.state().state.report.as_ref().expect("a comparison");
    let names: Vec<&str> = report.methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    // The learned rows score what the run measured on the same test split.
    for m in &report.methods[1..] {
        assert!(
            (m.eval.accuracy - test_acc).abs() < 1e-9,
            "{}: {} vs the run's {test_acc}",
            m.name,
            m.eval.accuracy
        );
    }
    h.check_accessibility();
}

/// The Align tab through a real wgpu renderer (Mesa's software Vulkan in CI): the heatmap of the chosen
/// word is drawn by the shader over the image, and clicking another word redraws it.
#[test]
fn the_alignment_view_draws_the_chosen_words_heatmap_on_the_gpu() {
    use egui_kittest::wgpu::{create_render_state, default_wgpu_setup, WgpuTestRenderer};
    use promptscope::render::{Colormap, GridMap};
    let fx = fixture();
    let render_state =
        create_render_state(default_wgpu_setup(), egui_wgpu::RendererOptions::default());
    let mut app = PromptscopeApp::new_headless()
        .with_startup(Some(fx.model.display().to_string()), Some(fx.data.clone()));
    app.gpu_format = Some(render_state.target_format);
    app.cache_dir = None;
    app.align.style.opacity = 1.0;
    let mut h = Harness::builder()
        .with_size(egui::vec2(1280.0, 900.0))
        .renderer(WgpuTestRenderer::from_render_state(render_state))
        .build_ui_state(|ui, app: &mut PromptscopeApp| app.show(ui), app);
    wait_idle(&mut h);
    click(&mut h, "Align");
    wait_idle(&mut h);
    assert!(
        h.state().state.errors.is_empty(),
        "{:?}",
        h.state().state.errors
    );
    let tokens = h
        .state()
        .state
        .align
        .as_ref()
        .expect("an alignment")
        .alignment
        .text_tokens
        .clone();
    assert_eq!(tokens.first().map(String::as_str), Some("a"), "{tokens:?}");
    assert!(h.query_by_label_contains("s_I").is_some());
    assert!(h.query_by_label_contains("kept patches outlined").is_some());

    let ppp = h.ctx.pixels_per_point();
    let check_word = |h: &mut Harness<'_, PromptscopeApp>, word: usize| {
        let view = h.state().state.align.as_ref().unwrap();
        let map =
            GridMap::new(&view.alignment.word_map(word).unwrap(), view.alignment.grid).unwrap();
        let rect = h.get_by_label("alignment map").rect();
        let img = h.render().expect("a rendered frame");
        let [gh, gw] = map.grid;
        let mut worst = 0u8;
        for r in 0..gh {
            for c in 0..gw {
                // The centre of patch (r, c): the shader's bilinear value there is the patch's own.
                let x = rect.min.x + (c as f32 + 0.5) * rect.width() / gw as f32;
                let y = rect.min.y + (r as f32 + 0.5) * rect.height() / gh as f32;
                let want = Colormap::Viridis.sample_u8(map.values[r * gw + c]);
                // The painted image may sit up to a couple of pixels off the widget's unrounded rect
                // (pixel snapping moves with the layout), so the best match within ±2 px counts.
                let (px, py) = ((x * ppp).round() as i64, (y * ppp).round() as i64);
                let best = (-2..=2)
                    .flat_map(|dy| (-2..=2).map(move |dx| (px + dx, py + dy)))
                    .map(|(qx, qy)| {
                        let p = img.get_pixel(qx as u32, qy as u32);
                        (0..3).map(|ch| p[ch].abs_diff(want[ch])).max().unwrap_or(0)
                    })
                    .min()
                    .unwrap_or(u8::MAX);
                worst = worst.max(best);
            }
        }
        assert!(
            worst <= 4,
            "word {word}: the drawn heatmap differs from the map by {worst}/255"
        );
        map
    };
    // A new prompt opens on its class word, the map a user came for.
    let word = tokens
        .iter()
        .rposition(|t| t == "circle" || t == "square" || t == "stripes")
        .expect("a class word");
    assert_eq!(h.state().align.word, word, "{tokens:?}");
    let first = check_word(&mut h, word);
    // Click another word's token: the panel switches to its map and the GPU draws that one.
    h.get_all_by_label(&tokens[0])
        .find(|n| n.accesskit_node().role() == egui::accesskit::Role::Button)
        .expect("the word's button")
        .click();
    h.step();
    h.step();
    assert_eq!(h.state().align.word, 0);
    let second = check_word(&mut h, 0);
    assert_ne!(first.values, second.values, "two words, two maps");
}

/// The Method picker: choosing a method maps the whole prompt with it (the worker's map is the one the
/// registry makes for the same image and text); Compare methods draws each chosen method's map in a
/// grid, and unticking one removes it.
#[test]
fn the_method_picker_and_compare_grid_show_each_methods_map() {
    use promptscope::align::maps::MapMethod;
    let fx = fixture();
    let mut h = loaded(&fx);
    click(&mut h, "Align");
    wait_idle(&mut h);
    h.get_all_by_label("Method")
        .find(|n| n.accesskit_node().role() == egui::accesskit::Role::ComboBox)
        .expect("the method picker")
        .click();
    h.step();
    h.step();
    h.get_all_by_label("gem")
        .find(|n| n.accesskit_node().role() == egui::accesskit::Role::Button)
        .expect("gem in the method list")
        .click();
    h.step();
    wait_idle(&mut h);
    assert_eq!(h.state().align.method, MapMethod::Gem);
    let view = h.state().state.align.as_ref().expect("a view");
    assert_eq!(view.request.method, MapMethod::Gem);
    let gem = view.maps_of(MapMethod::Gem).expect("gem's map").clone();
    assert_eq!(gem.targets, ["<text>"]);
    assert!(h.query_by_label_contains("gem: the whole prompt").is_some());
    assert!(h.query_by_label("alignment map").is_some());

    click(&mut h, "Compare methods");
    wait_idle(&mut h);
    let view = h.state().state.align.as_ref().expect("a view");
    assert_eq!(view.request.compare.len(), 4);
    for m in &view.request.compare {
        assert!(view.maps_of(*m).is_some(), "{m}: {:?}", view.maps);
        assert!(
            h.query_by_label(&format!("{m} map")).is_some(),
            "{m}'s map is not drawn"
        );
    }
    // Each drawn map is its own method's, not the main one's.
    let token = view.maps_of(MapMethod::Token).unwrap();
    assert_eq!(token.targets, view.alignment.text_tokens);
    assert_ne!(
        view.maps_of(MapMethod::Surgery).unwrap().maps[0],
        gem.maps[0]
    );
    h.get_all_by_label("chefer")
        .find(|n| n.accesskit_node().role() == egui::accesskit::Role::CheckBox)
        .expect("chefer's box")
        .click();
    h.step();
    wait_idle(&mut h);
    let view = h.state().state.align.as_ref().expect("a view");
    assert!(!view.request.compare.contains(&MapMethod::Chefer));
    assert!(h.query_by_label("chefer map").is_none());
    h.check_accessibility();
}

/// Evaluate maps: a worker job with progress that can be cancelled, whose table is the one
/// `promptscope pointing --methods all` prints for the same scenes (all but the timings).
#[test]
fn evaluate_maps_runs_the_pointing_game_as_a_cancellable_job() {
    let fx = fixture();
    let mut h = loaded(&fx);
    click(&mut h, "Align");
    wait_idle(&mut h);
    let button = |h: &mut Harness<'_, PromptscopeApp>, label: &str| {
        h.get_all_by_label(label)
            .find(|n| n.accesskit_node().role() == egui::accesskit::Role::Button)
            .unwrap_or_else(|| panic!("a button {label}"))
            .click();
        h.step();
        h.step();
    };
    h.get_by_label("Evaluate maps").click();
    h.step();
    h.step();
    // A long evaluation, cancelled while it runs: no table, no error.
    h.state_mut().align.eval_count = 3000;
    button(&mut h, "Evaluate maps");
    assert!(h.state().state.jobs.maps_evaluation().is_some());
    assert!(h.query_by_label("Cancel evaluation").is_some());
    button(&mut h, "Cancel evaluation");
    wait_idle(&mut h);
    assert!(h.state().state.maps_eval.is_none());
    assert!(
        h.state().state.errors.is_empty(),
        "{:?}",
        h.state().state.errors
    );

    h.state_mut().align.eval_count = 3;
    button(&mut h, "Evaluate maps");
    wait_idle(&mut h);
    let table = h.state().state.maps_eval.clone().expect("a table");
    assert_eq!(
        table.methods.len(),
        promptscope::align::maps::MapMethod::ALL.len()
    );
    assert!(h.query_by_label("random patch").is_some());
    let out = crate::common::promptscope(&[
        "pointing",
        "--model",
        fx.model.to_str().unwrap(),
        "--device",
        "cpu",
        "--count",
        "3",
        "--seed",
        "1000",
        "--methods",
        "all",
        "--format",
        "json",
    ]);
    let mut cli: serde_json::Value = serde_json::from_str(&crate::common::ok(&out)).unwrap();
    let mut app = serde_json::to_value(&table).unwrap();
    for v in [&mut cli, &mut app] {
        for m in v["methods"].as_array_mut().unwrap() {
            m.as_object_mut().unwrap().remove("ms_per_map");
        }
    }
    assert_eq!(app, cli);
    h.check_accessibility();
}

/// Without a wgpu renderer the Align tab still shows both maps (drawn on the CPU).
#[test]
fn the_alignment_view_works_without_wgpu() {
    let fx = fixture();
    let mut h = loaded(&fx);
    assert!(h.state().gpu_format.is_none());
    click(&mut h, "Align");
    wait_idle(&mut h);
    assert!(
        h.state().state.errors.is_empty(),
        "{:?}",
        h.state().state.errors
    );
    assert!(h.state().state.align.is_some());
    assert!(
        h.query_by_label("alignment map").is_some() && h.query_by_label("SsVP attention").is_some()
    );
    h.check_accessibility();
}

#[test]
fn an_mpfgvc_run_trains_both_stages_from_the_train_tab_with_live_curves_stops_and_resumes() {
    use promptscope::app::train_panel::series;
    use promptscope::app::training::RunStatus;
    use promptscope::prompt::PromptMethodKind;
    let fx = fixture();
    let mut h = loaded(&fx);
    click(&mut h, "Train");
    click(&mut h, PromptMethodKind::Datp.label());
    assert_eq!(
        h.state().train.form.kind,
        promptscope::app::train_form::TrainKind::Prompts(PromptMethodKind::Datp)
    );
    // Without the super-category word the run cannot start, and the form says why.
    assert!(h
        .get_by_label("Start training")
        .accesskit_node()
        .is_disabled());
    assert!(
        labels_containing(&h, "has no tokens") >= 1,
        "the form shows why it cannot start"
    );
    type_into(&mut h, "Super-category", "shape");
    let form = &mut h.state_mut().train.form.mpfgvc;
    (form.stage1.optim.epochs, form.stage2.optim.epochs) = (300, 4);
    (form.stage1.optim.lr, form.stage2.optim.lr) = (0.003, 0.003);
    click(&mut h, "Start training");
    assert_eq!(h.state().state.runs.len(), 1);
    wait_for(&mut h, "a few stage-1 epochs", |a| {
        a.state.runs[0].epochs.len() >= 2
    });
    // Stop in stage 1, resume from its checkpoint: the epoch numbers carry on.
    click(&mut h, "Stop");
    wait_for(&mut h, "the stop", |a| {
        a.state.runs[0].status == RunStatus::Stopped
    });
    let stopped_at = epochs_of(&h, 0);
    click(&mut h, "Resume");
    wait_for(&mut h, "epochs after resuming", |a| {
        a.state.runs[0].epochs.len() > stopped_at
    });
    let numbers: Vec<usize> = h.state().state.runs[0]
        .epochs
        .iter()
        .map(|e| e.epoch)
        .collect();
    assert_eq!(
        numbers,
        (0..numbers.len()).collect::<Vec<_>>(),
        "resumed where it stopped"
    );
    // Shorten stage 1 by stopping the long run and starting a short one that reaches stage 2 and ends.
    click(&mut h, "Stop");
    wait_for(&mut h, "the second stop", |a| !a.state.is_training());
    let form = &mut h.state_mut().train.form.mpfgvc;
    form.stage1.optim.epochs = 3;
    click(&mut h, "Start training");
    wait_for(&mut h, "the short MP-FGVC run", |a| {
        a.state.runs.len() == 2 && a.state.is_idle()
    });
    let run = &h.state().state.runs[1];
    assert_eq!(run.status, RunStatus::Finished, "{:?}", run.status);
    assert_eq!(
        run.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(),
        (0..7).collect::<Vec<_>>(),
        "stage 2 continues the epoch axis"
    );
    // Both stages' curves, each on its own epochs.
    let s = series(run);
    let points = |name: &str| {
        s.iter()
            .find(|(_, n, _)| n.ends_with(name))
            .map_or(0, |(_, _, p)| p.len())
    };
    assert_eq!(
        (points("stage 1 epoch loss"), points("stage 2 epoch loss")),
        (3, 4)
    );
    assert!(
        points("stage 1 step loss") >= 3
            && points("stage 2 step loss") >= 4
            && points("stage 2 val") == 4
    );
    let outcome = run.outcome.as_ref().unwrap();
    assert!(
        outcome.prompts.is_file() && outcome.summary.contains("stage 2"),
        "{}",
        outcome.summary
    );
    let file = promptscope::export::mpfgvc_file::MpFgvcFile::load(&outcome.prompts).unwrap();
    assert_eq!(file.meta.stages, 2);
    // The finished run is offered for export like a CoOp run.
    click(&mut h, "Export");
    assert!(labels_containing(&h, &run_label(&h, 1)) >= 1);
}

fn run_label(h: &Harness<'_, PromptscopeApp>, index: usize) -> String {
    h.state().state.runs[index].label.clone()
}

/// Every kind of bad input dropped onto the window gives one dismissable error naming the file (or, for
/// an image, Align's own error with Retry), leaves the loaded model and dataset as they were, and the
/// app answers the next request.
#[test]
fn bad_inputs_dropped_on_the_window_each_give_one_error_naming_the_file() {
    let fx = fixture();
    let mut h = loaded(&fx);
    let bad = fx._dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    let make = |name: &str, bytes: &[u8]| {
        let p = bad.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let weights = std::fs::read(fx.model.join("model.safetensors")).unwrap();
    let folder = |name: &str, files: &[(&str, &[u8])]| {
        let d = bad.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (f, bytes) in files {
            std::fs::write(d.join(f), bytes).unwrap();
        }
        d
    };
    let config = std::fs::read(fx.model.join("config.json")).unwrap();
    let empty_class = folder("one-empty-class", &[]);
    std::fs::create_dir_all(empty_class.join("cats")).unwrap();
    let inputs: Vec<(PathBuf, &str)> = vec![
        (
            make("cut.safetensors", &weights[..weights.len() / 3]),
            "cut.safetensors",
        ),
        (make("notes.txt", b"hello"), "notes.txt"),
        (
            super::common::fixtures()
                .join("coop_checkpoint")
                .join("evil.pth.tar"),
            "evil.pth.tar",
        ),
        (
            make("garbage.pth.tar", b"PK\x03\x04 not really"),
            "garbage.pth.tar",
        ),
        (
            folder(
                "cut-model",
                &[
                    ("config.json", &config),
                    ("model.safetensors", &weights[..1000]),
                ],
            ),
            "model.safetensors",
        ),
        (
            folder(
                "bad-config",
                &[
                    ("config.json", b"{ \"text_config\": 3 }"),
                    ("model.safetensors", &weights),
                ],
            ),
            "config.json",
        ),
        (folder("empty-dataset", &[]), "empty-dataset"),
        (empty_class, "cats"),
    ];
    for (path, needle) in &inputs {
        h.input_mut()
            .dropped_files
            .push(Arc::new(DroppedFolder(path.clone())));
        wait_idle(&mut h);
        let errors = h.state().state.errors.clone();
        assert_eq!(errors.len(), 1, "{}: {errors:?}", path.display());
        assert!(
            errors[0].contains(needle),
            "{needle:?} not in {:?}",
            errors[0]
        );
        assert_eq!(h.query_all_by_label("Dismiss").count(), 1);
        click(&mut h, "Dismiss");
        assert!(h.state().state.errors.is_empty());
        // What was loaded is still loaded.
        let app = h.state();
        assert!(
            app.state
                .model
                .as_ref()
                .is_some_and(|m| m.clip.dir == fx.model),
            "{}: the model changed",
            path.display()
        );
        assert!(
            app.state
                .dataset
                .as_ref()
                .is_some_and(|d| d.folder.root == fx.data),
            "{}: the dataset changed",
            path.display()
        );
    }
    // Images go to Align: a corrupt one and one whose header claims 30000×30000 each fail there, naming
    // the file, with Retry.
    click(&mut h, "Align");
    for (name, bytes) in [
        ("corrupt.png", b"\x89PNG\r\n\x1a\n garbage".to_vec()),
        (
            "bomb.png",
            promptscope::testing::claimed_png(30_000, 30_000),
        ),
    ] {
        let p = make(name, &bytes);
        h.input_mut().dropped_files.push(Arc::new(DroppedFolder(p)));
        // The drop sets Align's image; the next frame asks for its alignment.
        h.step();
        wait_idle(&mut h);
        h.step();
        wait_idle(&mut h);
        let failed = h
            .state()
            .state
            .align_failed
            .as_ref()
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("{name}: no error; {:?}", h.state().state.errors));
        assert!(failed.contains(name), "{name} not in {failed}");
        assert!(h.query_by_label("Retry").is_some());
    }
    // Still responsive: zero-shot runs.
    click(&mut h, "Compare");
    click(&mut h, "Run zero-shot");
    wait_idle(&mut h);
    assert!(
        h.state().state.report.is_some(),
        "{:?}",
        h.state().state.errors
    );
}
