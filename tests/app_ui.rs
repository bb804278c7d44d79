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
use promptscope::app::state::{AppState, RunningEval, Settings};
use promptscope::app::worker::{Event, Failure};
use promptscope::app::PromptscopeApp;
use promptscope::clip::{synth, ClipConfig, HiddenAct};

const MODEL_FIELD: &str = "Model folder or hub id";
const DATASET_FIELD: &str = "Dataset folder";
/// Far above what the tiny model needs, so only a hung worker fails the wait.
const WORKER_TIMEOUT: Duration = Duration::from_secs(180);

struct Fixture {
    _dir: tempfile::TempDir,
    model: PathBuf,
    data: PathBuf,
}

/// A random-weight tiny CLIP and 3 classes × (4 train, 2 val, 3 test) generated images.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-clip");
    let data = dir.path().join("shapes");
    synth::write_model_folder(&ClipConfig::tiny(HiddenAct::QuickGelu, 1e-5), &model).unwrap();
    promptscope::data::synth::write_dataset(&data, 3, 0, Some((4, 2, 3)), 0).unwrap();
    Fixture { _dir: dir, model, data }
}

fn harness(app: PromptscopeApp) -> Harness<'static, PromptscopeApp> {
    Harness::builder().with_size(egui::vec2(1280.0, 800.0)).build_ui_state(|ui, app: &mut PromptscopeApp| app.show(ui), app)
}

/// Runs frames until no worker job is under way (the worker repaints from its own thread, so
/// `Harness::run` would not know when to stop).
fn wait_idle(h: &mut Harness<'_, PromptscopeApp>) {
    let deadline = Instant::now() + WORKER_TIMEOUT;
    h.step();
    while !h.state().state.is_idle() {
        assert!(Instant::now() < deadline, "the worker did not finish within {WORKER_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(10));
        h.step();
    }
    // One more frame draws what the last event brought.
    h.step();
}

fn type_into(h: &mut Harness<'_, PromptscopeApp>, field: &str, text: &str) {
    h.get_by_label(field).click();
    h.step();
    h.get_by_label(field).type_text(text);
    h.step();
}

/// Clicks, then runs a second frame so the widgets reflect what the click did.
fn click(h: &mut Harness<'_, PromptscopeApp>, label: &str) {
    h.get_by_label(label).click();
    h.step();
    h.step();
}

fn labels_containing(h: &Harness<'_, PromptscopeApp>, text: &str) -> usize {
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
    let ds = app.state.dataset.as_ref().expect("the dataset did not open");
    assert_eq!(ds.summary.columns, ["train", "val", "test"]);
    assert_eq!(ds.summary.counts, vec![vec![4, 2, 3]; 3]);
    // Each class is listed once in the side panel, with its counts per split.
    for class in ["red circle", "red square", "red stripes"] {
        assert_eq!(h.query_all_by_label(class).count(), 1, "{class} listed");
    }
    assert_eq!(labels_containing(&h, "3 classes · 27 images · 0 skipped"), 1);
    // The top bar shows the model's description and the device.
    assert!(labels_containing(&h, "ViT 224×224 px") >= 1);
    assert_eq!(labels_containing(&h, "device: CPU"), 1);
    h.check_accessibility();

    click(&mut h, "Run zero-shot");
    assert!(h.state().state.zero_shot.is_some(), "pressing Run did not start a run");
    wait_idle(&mut h);

    let report = h.state().state.report.as_ref().expect("no zero-shot report");
    assert_eq!(report.eval.per_class.len(), 3);
    assert_eq!(report.eval.total, 9);
    assert!(h.query_by_label("Zero-shot accuracy").is_some());
    // An overall row, then one row per class: its name (now also in the side panel) and correct / total.
    assert!(h.query_by_label("overall").is_some());
    let overall = format!("{} / 9", report.eval.correct);
    assert!(h.query_by_label(&overall).is_some());
    for class in ["red circle", "red square", "red stripes"] {
        assert_eq!(h.query_all_by_label(class).count(), 2, "{class} in the results");
    }
    assert_eq!(labels_containing(&h, " / 3"), 3);
    // Each row's accuracy bar says its percentage.
    assert_eq!(labels_containing(&h, "%"), 4);
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
    assert!(h.query_by_label_contains("config.json").is_some(), "not shown: {:?}", h.state().state.errors);
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

    let mut h = harness(PromptscopeApp::new_headless().with_startup(Some(model.display().to_string()), Some(data.clone())));
    wait_idle(&mut h);
    let errors = &h.state().state.errors;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("config.json") && e.contains("not a CLIP config")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("no class folders")), "{errors:?}");
    assert_eq!(h.query_all_by_label("Dismiss").count(), 2);
    // Zero-shot cannot start without a model and a dataset.
    assert!(h.query_by_label_contains("Load a model first").is_some());
}

#[test]
fn command_line_paths_load_at_start_up() {
    let fx = fixture();
    let app = PromptscopeApp::new_headless().with_startup(Some(fx.model.display().to_string()), Some(fx.data.clone()));
    let mut h = harness(app);
    wait_idle(&mut h);
    let s = &h.state().state;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert!(s.model.is_some() && s.dataset.is_some());
    assert_eq!(h.state().settings().dataset, fx.data.display().to_string());
}

/// What a window system hands egui when a folder is dropped.
#[derive(Debug)]
struct DroppedFolder(PathBuf);

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
    h.input_mut().dropped_files.push(Arc::new(DroppedFolder(fx.model.clone())));
    h.input_mut().dropped_files.push(Arc::new(DroppedFolder(fx.data.clone())));
    wait_idle(&mut h);
    let app = h.state();
    assert!(app.state.errors.is_empty(), "{:?}", app.state.errors);
    assert!(app.state.model.is_some() && app.state.dataset.is_some());
    let settings = app.settings();
    assert_eq!((settings.model, settings.dataset), (fx.model.display().to_string(), fx.data.display().to_string()));
}

#[test]
fn templates_can_be_added_and_removed() {
    let mut h = harness(PromptscopeApp::new_headless());
    assert_eq!(h.state().settings().templates, ["a photo of a {}."]);
    click(&mut h, "Add template");
    type_into(&mut h, "Template 2", "a drawing of a {}.");
    assert_eq!(h.state().settings().templates, ["a photo of a {}.", "a drawing of a {}."]);
    h.get_all_by_label("Remove").next().expect("a Remove button").click();
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
        templates: vec!["a photo of a {}, a type of pet.".into(), "a blurry photo of a {}.".into()],
    };
    first.apply_settings(remembered.clone());
    eframe::App::save(&mut first, &mut storage);

    let second = PromptscopeApp::new(Some(&storage));
    assert_eq!(second.settings(), remembered);
    // Garbage in storage falls back to defaults rather than failing to start.
    storage.set_string(eframe::APP_KEY, "not ron".into());
    assert_eq!(PromptscopeApp::new(Some(&storage)).settings(), Settings::default());
}

#[test]
fn cancelled_and_superseded_results_are_handled() {
    let mut state = AppState::default();
    let cancel = Arc::new(AtomicBool::new(true));
    state.zero_shot = Some(RunningEval::new(7, cancel));
    // Progress and results of another job are ignored.
    state.apply(Event::Progress { job: 6, stage: "images".into(), done: 1, total: 2 });
    assert_eq!(state.zero_shot.as_ref().map(|r| r.done), Some(0));
    state.apply(Event::ZeroShotFinished { job: 6, result: Err(Failure::Error("old".into())) });
    assert!(state.zero_shot.is_some() && state.errors.is_empty());
    // A cancelled run ends quietly.
    state.apply(Event::ZeroShotFinished { job: 7, result: Err(Failure::Cancelled) });
    assert!(state.is_idle() && state.errors.is_empty() && state.last_run_cancelled);
    // A crashed job ends its task with a message.
    state.loading_model = Some((8, "m".into()));
    state.apply(Event::Crashed { job: 8, message: "internal error".into() });
    assert!(state.is_idle());
    assert_eq!(state.errors, ["internal error"]);
}

