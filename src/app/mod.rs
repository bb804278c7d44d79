//! The desktop app (eframe + wgpu).
//!
//! [`PromptscopeApp::show`] only lays out the panels and routes what they ask for ([`Action`]) to the
//! [`worker`]; the panels own their widget state, [`state::AppState`] owns what is loaded and computed.
//! Nothing here needs a window, so tests drive the same code through `egui_kittest`.

mod compare;
mod data_panel;
mod errors;
pub mod overlay;
mod placeholders;
pub mod state;
mod top_bar;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use egui::{Align2, Color32, FontId, Id, LayerId, Order};

use compare::ComparePanel;
use data_panel::DataPanel;
use state::{AppState, RunningEval, Settings};
use top_bar::TopBar;
use worker::{Event, PickTarget, Worker};

/// Opens the window. `model` and `data`, when given, are filled in and loaded at start-up; otherwise the
/// paths of the last session are filled in.
pub fn run(model: Option<String>, data: Option<PathBuf>) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("promptscope")
            .with_app_id("promptscope")
            .with_inner_size([1280.0, 800.0])
            .with_min_inner_size([720.0, 480.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        ..Default::default()
    };
    eframe::run_native(
        "promptscope",
        options,
        Box::new(move |cc| Ok(Box::new(PromptscopeApp::new(cc.storage).with_startup(model, data)))),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "could not open the promptscope window ({e}). Without a display or GPU driver, use the command-line verbs instead (promptscope --help)"
        )
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tab {
    #[default]
    Compare,
    Train,
    Align,
    Export,
}

impl Tab {
    pub const ALL: [Tab; 4] = [Tab::Compare, Tab::Train, Tab::Align, Tab::Export];

    pub fn label(self) -> &'static str {
        match self {
            Tab::Compare => "Compare",
            Tab::Train => "Train",
            Tab::Align => "Align",
            Tab::Export => "Export",
        }
    }
}

/// What a panel asks the app to do; handled after the frame is laid out.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    LoadModel(String),
    OpenDataset(PathBuf),
    Browse(PickTarget),
    RunZeroShot(Vec<String>),
    CancelZeroShot,
    DismissError(usize),
    /// A file or folder dropped onto the window.
    Dropped(PathBuf),
}

pub struct PromptscopeApp {
    pub state: AppState,
    pub tab: Tab,
    top_bar: TopBar,
    data_panel: DataPanel,
    compare: ComparePanel,
    worker: Worker,
    /// Actions queued before there was a frame (and so an `egui::Context` to repaint): the command line's
    /// paths.
    pending: Vec<Action>,
}

impl PromptscopeApp {
    /// Restores the paths and templates of the last session from `storage`, when there is one.
    pub fn new(storage: Option<&dyn eframe::Storage>) -> Self {
        let settings: Settings = storage.and_then(|s| eframe::get_value(s, eframe::APP_KEY)).unwrap_or_default();
        let mut app = PromptscopeApp {
            state: AppState::default(),
            tab: Tab::default(),
            top_bar: TopBar,
            data_panel: DataPanel::default(),
            compare: ComparePanel::default(),
            worker: Worker::default(),
            pending: Vec::new(),
        };
        app.apply_settings(settings);
        app
    }

    /// A fresh app with default settings and no storage, for tests and tools.
    pub fn new_headless() -> Self {
        Self::new(None)
    }

    /// Fills in the given paths and loads them on the first frame.
    pub fn with_startup(mut self, model: Option<String>, data: Option<PathBuf>) -> Self {
        if let Some(model) = model {
            self.data_panel.model_path = model.clone();
            self.pending.push(Action::LoadModel(model));
        }
        if let Some(data) = data {
            self.data_panel.dataset_path = data.display().to_string();
            self.pending.push(Action::OpenDataset(data));
        }
        self
    }

    pub fn settings(&self) -> Settings {
        Settings {
            model: self.data_panel.model_path.clone(),
            dataset: self.data_panel.dataset_path.clone(),
            templates: self.compare.templates.clone(),
        }
    }

    pub fn apply_settings(&mut self, settings: Settings) {
        self.data_panel.model_path = settings.model;
        self.data_panel.dataset_path = settings.dataset;
        self.compare.templates =
            if settings.templates.is_empty() { ComparePanel::default().templates } else { settings.templates };
    }

    /// Draws one frame and acts on what the user did in it.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        let mut actions = std::mem::take(&mut self.pending);
        for event in self.worker.drain() {
            match event {
                Event::FolderPicked { target, path } => actions.push(self.folder_chosen(target, path)),
                other => self.state.apply(other),
            }
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).collect());
        actions.extend(dropped.into_iter().map(Action::Dropped));

        egui::Panel::top("top_bar").show(ui, |ui| self.top_bar.ui(ui, &self.state));
        egui::Panel::left("model_data")
            .resizable(true)
            .default_size(340.0)
            .min_size(260.0)
            .show(ui, |ui| self.data_panel.ui(ui, &self.state, &mut actions));
        egui::CentralPanel::default().show(ui, |ui| {
            errors::ui(ui, &self.state.errors, &mut actions);
            ui.horizontal(|ui| {
                for tab in Tab::ALL {
                    ui.selectable_value(&mut self.tab, tab, tab.label());
                }
            });
            ui.separator();
            match self.tab {
                Tab::Compare => self.compare.ui(ui, &self.state, &mut actions),
                other => placeholders::ui(ui, other),
            }
        });
        drop_hint(&ctx);

        for action in actions {
            self.handle(action, &ctx);
        }
    }

    fn handle(&mut self, action: Action, ctx: &egui::Context) {
        match action {
            Action::LoadModel(model) => {
                if model.is_empty() {
                    return self.state.error("Enter a model folder or a hub id (such as openai/clip-vit-base-patch32) first.");
                }
                match self.worker.load_model(ctx, model.clone()) {
                    Ok(job) => self.state.loading_model = Some((job, model)),
                    Err(e) => self.state.error(format!("Could not start loading the model: {e}")),
                }
            }
            Action::OpenDataset(path) => {
                if path.as_os_str().is_empty() {
                    return self.state.error("Enter a dataset folder first.");
                }
                match self.worker.open_dataset(ctx, path.clone()) {
                    Ok(job) => self.state.opening_dataset = Some((job, path)),
                    Err(e) => self.state.error(format!("Could not start opening the dataset: {e}")),
                }
            }
            Action::Browse(target) => {
                let current = match target {
                    PickTarget::Model => &self.data_panel.model_path,
                    PickTarget::Dataset => &self.data_panel.dataset_path,
                };
                let start = (!current.is_empty()).then(|| PathBuf::from(current));
                self.worker.pick_folder(ctx, target, start);
            }
            Action::RunZeroShot(templates) => self.start_zero_shot(ctx, templates),
            Action::CancelZeroShot => {
                if let Some(run) = &self.state.zero_shot {
                    run.cancel.store(true, Ordering::Relaxed);
                }
            }
            Action::DismissError(i) => {
                if i < self.state.errors.len() {
                    self.state.errors.remove(i);
                }
            }
            Action::Dropped(path) => match classify_drop(&path) {
                Ok(target) => {
                    let action = self.folder_chosen(target, path);
                    self.handle(action, ctx);
                }
                Err(message) => self.state.error(message),
            },
        }
    }

    /// A folder picked in the dialog or dropped: it fills its field and is used at once.
    fn folder_chosen(&mut self, target: PickTarget, path: PathBuf) -> Action {
        match target {
            PickTarget::Model => {
                let model = path.display().to_string();
                self.data_panel.model_path = model.clone();
                Action::LoadModel(model)
            }
            PickTarget::Dataset => {
                self.data_panel.dataset_path = path.display().to_string();
                Action::OpenDataset(path)
            }
        }
    }

    fn start_zero_shot(&mut self, ctx: &egui::Context, templates: Vec<String>) {
        if self.state.zero_shot.is_some() {
            return;
        }
        let (Some(model), Some(dataset)) = (&self.state.model, &self.state.dataset) else {
            return self.state.error("Load a model and open a dataset before running zero-shot.");
        };
        if templates.is_empty() {
            return self.state.error("Write at least one prompt template.");
        }
        if dataset.folder.eval_samples().is_empty() {
            return self.state.error(format!(
                "Dataset {}: its test split has no images to evaluate; add images to test/<class>/ or remove the empty test folder.",
                dataset.folder.root.display()
            ));
        }
        let cancel = Arc::new(AtomicBool::new(false));
        match self.worker.zero_shot(ctx, model.clip.clone(), dataset.folder.clone(), templates, cancel.clone()) {
            Ok(job) => {
                self.state.zero_shot = Some(RunningEval::new(job, cancel));
                self.state.last_run_cancelled = false;
            }
            Err(e) => self.state.error(format!("Could not start zero-shot: {e}")),
        }
    }
}

impl eframe::App for PromptscopeApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.settings());
    }
}

/// A folder with a `config.json` is a model; any other folder is a dataset.
fn classify_drop(path: &Path) -> Result<PickTarget, String> {
    if !path.is_dir() {
        return Err(format!("{}: not a folder. Drop a model folder (with config.json) or a dataset folder.", path.display()));
    }
    Ok(if path.join("config.json").is_file() { PickTarget::Model } else { PickTarget::Dataset })
}

/// While files are dragged over the window, says what dropping them does.
fn drop_hint(ctx: &egui::Context) {
    if ctx.input(|i| i.raw.hovered_files.is_empty()) {
        return;
    }
    let painter = ctx.layer_painter(LayerId::new(Order::Foreground, Id::unique("drop_hint")));
    let rect = ctx.content_rect();
    painter.rect_filled(rect, 0.0, Color32::from_black_alpha(170));
    painter.text(
        rect.center(),
        Align2::CENTER_CENTER,
        "Drop a model folder (with config.json) or a dataset folder",
        FontId::proportional(22.0),
        Color32::WHITE,
    );
}
