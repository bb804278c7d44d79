//! The desktop app (eframe + wgpu).
//!
//! [`PromptscopeApp::show`] only lays out the panels and routes what they ask for ([`Action`]) to the
//! [`worker`]; the panels own their widget state, [`state::AppState`] owns what is loaded and computed.
//! Nothing here needs a window, so tests drive the same code through `egui_kittest`.

mod actions;
pub mod align_job;
mod align_panel;
pub mod base_to_novel_panel;
pub mod classify_job;
pub mod compare;
pub mod compare_job;
mod data_panel;
mod errors;
pub mod events;
mod export_panel;
mod files;
mod frame_times;
mod glyphs;
pub mod jobs;
mod launch;
pub mod maps_eval_job;
pub mod overlay;
pub mod prompts_job;
pub mod runs;
pub mod state;
mod top_bar;
pub mod train_form;
pub mod train_panel;
pub mod training;
pub mod worker;

use crate::train::config::RunConfig;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use align_panel::COMPARE_MAX;
use align_panel::{AlignPanel, LearnedSource};
use compare::ComparePanel;
use data_panel::DataPanel;
pub use events::Action;
pub use events::PickTarget;
use export_panel::ExportPanel;
pub use files::default_runs_dir;
pub use frame_times::FrameTimes;
use jobs::Pending;
use state::{AfterEvent, AppState, RunningEval, Settings};
use top_bar::TopBar;
use train_panel::TrainPanel;
use training::{RunStatus, TrainRecord};
use worker::Worker;

pub use crate::startup::{StartMethod, Startup, Tab};

/// The window's title: the model, and that it is a small demo model when it is one.
pub fn window_title(clip: &crate::clip::LoadedClip) -> String {
    match clip.demo_note {
        Some(_) => format!("promptscope — {} (small demo model)", clip.id),
        None => format!("promptscope — {}", clip.id),
    }
}

/// Opens the window as `startup` says. The model and dataset it names are filled in and loaded at
/// start-up; otherwise the paths of the last session are filled in.
pub fn run(startup: Startup) -> anyhow::Result<()> {
    startup.validate()?;
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
        Box::new(move |cc| {
            let mut app = PromptscopeApp::new(cc.storage)
                .with_startup(startup.model.clone(), startup.data.clone());
            app.gpu_format = cc.wgpu_render_state.as_ref().map(|rs| rs.target_format);
            app.tab = startup.tab;
            app.autorun = startup.autorun;
            app.startup_prompts = startup.prompts;
            app.align.side_by_side = startup.side_by_side;
            if !startup.compare_methods.is_empty() {
                app.align.compare_on = true;
                app.align.compare = startup.compare_methods;
            }
            app.evaluate_maps_at_start = startup.evaluate_maps;
            if startup.base_to_novel {
                app.compare.mode = compare::CompareMode::BaseToNovel;
            }
            if let Some(manifest) = startup.sweep {
                app.tab = Tab::Compare;
                app.compare.mode = compare::CompareMode::BaseToNovel;
                app.pending.push(Action::OpenSweep(manifest));
            }
            if let Some(method) = startup.method {
                app.train.form.start_with(method);
            }
            if let Some(word) = startup.super_category {
                app.train.form.mpfgvc.datp.super_category = word;
            }
            if let Some(e) = startup.epochs {
                app.train.form.set_epochs(e);
            }
            app.frame_log = std::env::var_os("PROMPTSCOPE_FRAME_LOG").map(PathBuf::from);
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "could not open the promptscope window ({e}). Without a display or GPU driver, use the command-line verbs instead (promptscope --help)"
        )
    })
}

/// Images per class shown in the side panel.
const THUMBNAILS_PER_CLASS: usize = 6;
/// Side in px of the pictures in the Compare tab's class view.
const IMAGE_SIDE: u32 = 96;

pub struct PromptscopeApp {
    pub state: AppState,
    pub tab: Tab,
    top_bar: TopBar,
    data_panel: DataPanel,
    pub compare: ComparePanel,
    pub train: TrainPanel,
    pub align: AlignPanel,
    pub export: ExportPanel,
    worker: Worker,
    /// Start the tab's job once a model and a dataset are loaded (`app --autorun`).
    pub autorun: bool,
    /// Align's job for `autorun`: evaluate the maps (`app --evaluate-maps`).
    pub evaluate_maps_at_start: bool,
    /// Prompts files to load once the model is there, one after the other (`app --prompts`).
    pub startup_prompts: Vec<PathBuf>,
    /// Frame intervals, written as statistics to `frame_log` ($PROMPTSCOPE_FRAME_LOG) every second.
    pub frames: FrameTimes,
    pub frame_log: Option<PathBuf>,
    /// The window's wgpu target format; None without a wgpu renderer (the overlay is then drawn on the
    /// CPU).
    pub gpu_format: Option<egui_wgpu::wgpu::TextureFormat>,
    /// Where training runs write their prompts files and checkpoints.
    pub runs_dir: PathBuf,
    /// Feature cache; None recomputes features every run.
    pub cache_dir: Option<PathBuf>,
    /// Actions queued before there was a frame (and so an `egui::Context` to repaint): the command line's
    /// paths.
    pending: Vec<Action>,
}

impl PromptscopeApp {
    /// Restores the paths and templates of the last session from `storage`, when there is one.
    pub fn new(storage: Option<&dyn eframe::Storage>) -> Self {
        let settings: Settings = storage
            .and_then(|s| eframe::get_value(s, eframe::APP_KEY))
            .unwrap_or_default();
        let mut app = PromptscopeApp {
            state: AppState::default(),
            tab: Tab::default(),
            top_bar: TopBar,
            data_panel: DataPanel::default(),
            compare: ComparePanel::default(),
            train: TrainPanel::default(),
            align: AlignPanel::default(),
            export: ExportPanel::default(),
            worker: Worker::default(),
            gpu_format: None,
            autorun: false,
            evaluate_maps_at_start: false,
            startup_prompts: Vec::new(),
            frames: FrameTimes::default(),
            frame_log: None,
            runs_dir: default_runs_dir(),
            cache_dir: Some(crate::train::features::default_cache_dir()),
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
            classnames: self.data_panel.classnames_path.clone(),
            templates: self.compare.templates.clone(),
            recent_models: self.data_panel.recent_models.clone(),
            recent_datasets: self.data_panel.recent_datasets.clone(),
            train: self.train.form.clone(),
        }
    }

    pub fn apply_settings(&mut self, settings: Settings) {
        self.data_panel.model_path = settings.model;
        self.data_panel.dataset_path = settings.dataset;
        self.data_panel.classnames_path = settings.classnames;
        self.data_panel.recent_models = settings.recent_models;
        self.data_panel.recent_datasets = settings.recent_datasets;
        self.train.form = settings.train.settled();
        self.compare.templates = if settings.templates.is_empty() {
            ComparePanel::default().templates
        } else {
            settings.templates
        };
    }

    /// Draws one frame and acts on what the user did in it.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        let started = std::time::Instant::now();
        let training = self.state.is_training();
        self.frames.tick(training);
        if let Some(path) = &self.frame_log {
            self.frames.maybe_write(path);
        }
        let mut actions = std::mem::take(&mut self.pending);
        for event in self.worker.drain() {
            for after in self.state.apply(event) {
                self.after_event(after, &ctx, &mut actions);
            }
        }
        actions.extend(files::dropped(&ctx).into_iter().map(Action::Dropped));

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
                Tab::Train => self.train.ui(ui, &self.state, &mut actions),
                Tab::Align => {
                    let sources = self.learned_sources();
                    self.align
                        .ui(ui, &self.state, &sources, self.gpu_format, &mut actions);
                    if let Some(req) = self.align.new_request(&self.state, &sources) {
                        actions.push(Action::Align(Box::new(req)));
                    }
                }
                Tab::Export => self
                    .export
                    .ui(ui, &self.state, &self.runs_dir, &mut actions),
            }
        });
        files::drop_hint(&ctx);
        if self.state.is_training() {
            // Elapsed time, ETA and spinners move between worker events too.
            ctx.request_repaint_after(std::time::Duration::from_millis(33));
        }

        let mut queued_prompts = false;
        if self.state.model.is_some() && self.state.is_idle() && !self.startup_prompts.is_empty() {
            actions.push(Action::LoadPrompts(self.startup_prompts.remove(0)));
            queued_prompts = true;
        }
        // Not in the frame that queued the prompts: the run should include them.
        if self.autorun
            && !queued_prompts
            && self.startup_prompts.is_empty()
            && self.state.model.is_some()
            && self.state.dataset.is_some()
            && self.state.is_idle()
        {
            self.autorun = false;
            match self.tab {
                Tab::Compare => actions.extend(self.compare.run_action()),
                Tab::Train => match self.train.form.to_run() {
                    Ok(run) => actions.push(Action::StartTraining(Box::new(run))),
                    Err(e) => self.state.error(format!("Cannot start training: {e}")),
                },
                Tab::Align if self.evaluate_maps_at_start => {
                    actions.push(Action::EvaluateMaps(maps_eval_job::MapsEvalRequest {
                        methods: self.align.eval_methods(),
                        count: self.align.eval_count,
                        seed: self.align.eval_seed,
                        masked: None,
                    }))
                }
                _ => {}
            }
        }
        for action in actions {
            self.handle(action, &ctx);
        }
        if training {
            self.frames.built(started.elapsed().as_secs_f64() * 1e3);
        }
    }

    /// What an event left for the window and its panels (`AppState::apply` did the rest).
    fn after_event(&mut self, after: AfterEvent, ctx: &egui::Context, actions: &mut Vec<Action>) {
        match after {
            AfterEvent::Picked { target, path } => actions.extend(self.picked(target, path)),
            AfterEvent::ModelLoaded(id) => {
                state::remember(&mut self.data_panel.recent_models, &id);
                if let Some(model) = &self.state.model {
                    let title = window_title(&model.clip);
                    ctx.send_viewport_cmd(egui::ViewportCommand::Title(title));
                }
            }
            AfterEvent::DatasetOpened {
                path,
                classnames_dropped,
            } => {
                if classnames_dropped {
                    self.data_panel.classnames_path.clear();
                }
                state::remember(
                    &mut self.data_panel.recent_datasets,
                    &path.display().to_string(),
                );
                if let Some(ds) = &self.state.dataset {
                    let started =
                        self.worker
                            .thumbnails(ctx, ds.folder.clone(), THUMBNAILS_PER_CLASS, 64);
                    let root = ds.folder.root.clone();
                    self.state.start(started, Pending::Thumbnails(root));
                }
            }
            AfterEvent::Then(action) => actions.push(action),
        }
    }

    /// Learned prompts the Align tab can show: every loaded file, runs' included.
    fn learned_sources(&self) -> Vec<LearnedSource> {
        self.state
            .prompts
            .iter()
            .map(|p| LearnedSource {
                label: p.label.clone(),
                path: p.path.clone(),
                class_names: p.meta.class_names.clone(),
            })
            .collect()
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

/// Keeps a tab's layout within what is visible: wrapped rows and columns size to the visible width even
/// when the panel's rectangle reaches past the window's edge (seen at 1280 px on the first frames).
fn fit_visible_width(ui: &mut egui::Ui) {
    let visible = ui.clip_rect().right() - ui.max_rect().left();
    if visible > 0.0 && visible < ui.max_rect().width() {
        ui.set_max_width(visible);
    }
}
