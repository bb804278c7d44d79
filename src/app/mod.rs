//! The desktop app (eframe + wgpu).
//!
//! [`PromptscopeApp::show`] only lays out the panels and routes what they ask for ([`Action`]) to the
//! [`worker`]; the panels own their widget state, [`state::AppState`] owns what is loaded and computed.
//! Nothing here needs a window, so tests drive the same code through `egui_kittest`.

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
mod glyphs;
pub mod jobs;
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
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use egui::{Align2, Color32, FontId, Id, LayerId, Order};

pub use align_panel::COMPARE_MAX;
use align_panel::{AlignPanel, LearnedSource};
use compare::ComparePanel;
use data_panel::DataPanel;
pub use events::Action;
use events::Event;
pub use events::PickTarget;
use export_panel::ExportPanel;
use jobs::Pending;
use state::{AppState, RunningEval, Settings};
use top_bar::TopBar;
use train_panel::TrainPanel;
use training::{RunStatus, TrainRecord};
use worker::Worker;

/// Opens the window. `model` and `data`, when given, are filled in and loaded at start-up; otherwise the
/// paths of the last session are filled in.
/// How the window opens: which tab, and whether to start that tab's job once loaded.
#[derive(Debug, Clone, Default)]
pub struct Startup {
    pub tab: Tab,
    pub autorun: bool,
    pub epochs: Option<usize>,
    pub prompts: Vec<PathBuf>,
    pub side_by_side: bool,
    /// The Train tab's method (prompts, adapters or pretraining).
    pub method: Option<train_form::TrainKind>,
    /// Pretraining starts on generated scenes streamed each epoch instead of a pairs folder.
    pub pretrain_scenes: bool,
    pub super_category: Option<String>,
    /// Compare opens in its base-to-novel mode.
    pub base_to_novel: bool,
    /// Align opens comparing these map methods.
    pub compare_methods: Vec<crate::align::maps::MapMethod>,
    /// With `autorun` on Align: evaluate the maps.
    pub evaluate_maps: bool,
}

/// The window's title: the model, and that it is a small demo model when it is one.
pub fn window_title(clip: &crate::clip::LoadedClip) -> String {
    match clip.demo_note {
        Some(_) => format!("promptscope — {} (small demo model)", clip.id),
        None => format!("promptscope — {}", clip.id),
    }
}

pub fn run(model: Option<String>, data: Option<PathBuf>, startup: Startup) -> anyhow::Result<()> {
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
            let mut app = PromptscopeApp::new(cc.storage).with_startup(model, data);
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
            if let Some(kind) = startup.method {
                app.train.form.kind = kind;
            }
            if startup.pretrain_scenes {
                app.train.form.pretrain.use_demo_recipe();
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
        self.train.form = settings.train;
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
            match event {
                Event::Picked { target, path } => actions.extend(self.picked(target, path)),
                Event::Images { job, images } => {
                    self.state.jobs.take(job);
                    for (path, image) in images {
                        let texture = image.map(|img| {
                            ctx.load_texture(
                                format!("image-{}", path.display()),
                                img,
                                egui::TextureOptions::LINEAR,
                            )
                        });
                        self.state.images.insert(path, texture);
                    }
                }
                Event::TrainFinished {
                    job,
                    result: Ok(outcome),
                } => {
                    if self.state.runs_on_disk.is_some() {
                        actions.push(Action::ListRuns);
                    }
                    // A finished CoOp run's prompts join Compare, Align and Export.
                    if let Some(run) = self
                        .state
                        .runs
                        .iter()
                        .find(|r| r.job == Some(job) && matches!(r.run, RunConfig::Coop(_)))
                    {
                        actions.push(Action::LoadPromptsAs(
                            outcome.prompts.clone(),
                            run.label.clone(),
                        ));
                    }
                    self.state.apply(Event::TrainFinished {
                        job,
                        result: Ok(outcome),
                    });
                }
                Event::Thumbnails { job, images } => {
                    // Only the open dataset's: one opened before it may still answer.
                    let root = self.state.dataset.as_ref().map(|d| &d.folder.root);
                    let taken = self.state.jobs.take(job);
                    if matches!(&taken, Some(Pending::Thumbnails(r)) if Some(r) == root) {
                        self.state.thumbnails = images
                            .into_iter()
                            .enumerate()
                            .map(|(c, imgs)| {
                                imgs.into_iter()
                                    .enumerate()
                                    .map(|(i, img)| {
                                        ctx.load_texture(
                                            format!("thumb-{c}-{i}"),
                                            img,
                                            egui::TextureOptions::LINEAR,
                                        )
                                    })
                                    .collect()
                            })
                            .collect();
                    }
                }
                Event::ModelLoaded { job, result } => {
                    let loading = match self.state.jobs.get(job) {
                        Some(Pending::LoadModel(id)) => Some(id.clone()),
                        _ => None,
                    };
                    let fresh = result.is_ok() && loading.is_some();
                    if let (true, Some(id)) = (fresh, &loading) {
                        state::remember(&mut self.data_panel.recent_models, id);
                    }
                    self.state.apply(Event::ModelLoaded { job, result });
                    if let Some(model) = &self.state.model {
                        ctx.send_viewport_cmd(egui::ViewportCommand::Title(window_title(
                            &model.clip,
                        )));
                        // What the download fell back on (a missing tokenizer or preprocessing file) is said,
                        // not silently assumed.
                        let warnings: Vec<String> = if fresh {
                            model
                                .clip
                                .warnings
                                .iter()
                                .map(|w| format!("Model '{}': {w}", model.clip.id))
                                .collect()
                        } else {
                            Vec::new()
                        };
                        for w in warnings {
                            self.state.error(w);
                        }
                    }
                }
                Event::DatasetOpened { job, result } => {
                    let opened = match (&result, self.state.jobs.get(job)) {
                        (Ok(_), Some(Pending::OpenDataset(path))) => {
                            Some(path.display().to_string())
                        }
                        _ => None,
                    };
                    if let Some(path) = &opened {
                        state::remember(&mut self.data_panel.recent_datasets, path);
                    }
                    self.state.apply(Event::DatasetOpened { job, result });
                    if let (Some(_), Some(ds)) = (opened, &self.state.dataset) {
                        let started = self.worker.thumbnails(
                            &ctx,
                            ds.folder.clone(),
                            THUMBNAILS_PER_CLASS,
                            64,
                        );
                        let root = ds.folder.root.clone();
                        self.state.start(started, Pending::Thumbnails(root));
                    }
                }
                other => self.state.apply(other),
            }
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
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
                Tab::Train => self.train.ui(ui, &self.state, &mut actions),
                Tab::Align => {
                    let sources = self.learned_sources();
                    self.align
                        .ui(ui, &self.state, &sources, self.gpu_format, &mut actions);
                    if let Some(req) = self.align.request(&self.state, &sources) {
                        let current = self.state.align.as_ref().map(|v| &v.request);
                        let pending = self.state.jobs.aligning();
                        // A request that failed waits for the user (Retry, or another choice).
                        let failed = self.state.align_failed.as_ref().map(|(r, _)| r);
                        if current != Some(&req) && pending.is_none() && failed != Some(&req) {
                            actions.push(Action::Align(Box::new(req)));
                        }
                    }
                }
                Tab::Export => self
                    .export
                    .ui(ui, &self.state, &self.runs_dir, &mut actions),
            }
        });
        drop_hint(&ctx);
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

    fn handle(&mut self, action: Action, ctx: &egui::Context) {
        match action {
            Action::LoadModel(model) => {
                if model.is_empty() {
                    return self.state.error("Enter a model folder or a hub id (such as openai/clip-vit-base-patch32) first.");
                }
                let started = self.worker.load_model(ctx, model.clone());
                self.state.start(started, Pending::LoadModel(model));
            }
            Action::OpenDataset(path) => {
                if path.as_os_str().is_empty() {
                    return self.state.error("Enter a dataset folder first.");
                }
                let names = self.data_panel.classnames_path.trim();
                let classnames = (!names.is_empty()).then(|| PathBuf::from(names));
                let started = self.worker.open_dataset(ctx, path.clone(), classnames);
                self.state.start(started, Pending::OpenDataset(path));
            }
            Action::Browse(target) => {
                let start = self.dialog_start(target);
                self.worker.pick(ctx, target, start);
            }
            Action::RunZeroShot(templates) => self.start_zero_shot(ctx, templates),
            Action::RunBaseToNovel(req) => self.start_base_to_novel(ctx, req),
            Action::EvaluateMaps(req) => {
                if self.state.jobs.maps_evaluation().is_some() {
                    return;
                }
                let Some(model) = &self.state.model else {
                    return self.state.error("Load a model before evaluating maps.");
                };
                let cancel = Arc::new(AtomicBool::new(false));
                let started =
                    self.worker
                        .evaluate_maps(ctx, model.clip.clone(), req, cancel.clone());
                self.state
                    .start(started, Pending::EvaluateMaps(RunningEval::new(cancel)));
            }
            Action::CancelMapsEval => {
                if let Some(run) = self.state.jobs.maps_evaluation() {
                    run.cancel.store(true, Ordering::Relaxed);
                }
            }
            Action::CancelZeroShot => {
                if let Some(run) = self.state.jobs.evaluation() {
                    run.cancel.store(true, Ordering::Relaxed);
                }
            }
            Action::DismissError(i) => {
                if i < self.state.errors.len() {
                    self.state.errors.remove(i);
                }
            }
            Action::StartTraining(run) => self.start_training(ctx, *run),
            Action::LoadPrompts(path) => {
                let label = path.file_name().map_or_else(
                    || path.display().to_string(),
                    |f| f.to_string_lossy().into_owned(),
                );
                self.handle(Action::LoadPromptsAs(path, label), ctx);
            }
            Action::LoadPromptsAs(path, label) => {
                let Some(model) = &self.state.model else {
                    return self
                        .state
                        .error("Load the model the prompts were trained with first.");
                };
                if path.as_os_str().is_empty() {
                    return self.state.error("Enter the path of a prompts file first.");
                }
                let names = self
                    .state
                    .dataset
                    .as_ref()
                    .map(|d| d.folder.class_names.clone());
                let started = self.worker.load_prompts(
                    ctx,
                    model.clip.clone(),
                    path.clone(),
                    label,
                    names,
                    self.runs_dir.clone(),
                );
                self.state.start(started, Pending::LoadPrompts(path));
            }
            Action::ExportRun { from, to } => {
                let started = self.worker.export(ctx, from, to);
                self.state.start(started, Pending::Export);
            }
            Action::ShowError(message) => self.state.error(message),
            Action::PickModel(m) => {
                self.data_panel.model_path = m.clone();
                self.handle(Action::LoadModel(m), ctx);
            }
            Action::PickRecentDataset(d) => {
                self.data_panel.dataset_path = d.clone();
                self.handle(Action::OpenDataset(d.into()), ctx);
            }
            Action::Align(req) => {
                let Some(model) = &self.state.model else {
                    return;
                };
                let started = self.worker.align(ctx, model.clip.clone(), (*req).clone());
                self.state.start(started, Pending::Align(*req));
            }
            Action::PauseRun(n) => {
                if let Some(run) = self.state.run_mut(n) {
                    run.control.pause.store(true, Ordering::Relaxed);
                    if run.status == RunStatus::Training {
                        run.status = RunStatus::Paused;
                    }
                }
            }
            Action::ResumeRun(n) => self.resume_run(ctx, n),
            Action::StopRun(n) => {
                if let Some(run) = self.state.run_mut(n) {
                    run.control.cancel.store(true, Ordering::Relaxed);
                }
            }
            Action::ToggleRunVisible(n) => {
                if let Some(run) = self.state.run_mut(n) {
                    run.visible = !run.visible;
                }
            }
            Action::Dropped(path) => match classify_drop(&path) {
                Ok(target) => {
                    if let Some(action) = self.picked(target, path) {
                        self.handle(action, ctx);
                    }
                }
                Err(message) => self.state.error(message),
            },
            Action::RetryAlign => self.state.align_failed = None,
            Action::UnloadPrompts(path) => self.state.prompts.retain(|p| p.path != path),
            Action::ReloadPrompts(path) => {
                if let Some(p) = self.state.prompts.iter().find(|p| p.path == path) {
                    let label = p.label.clone();
                    self.handle(Action::LoadPromptsAs(path, label), ctx);
                }
            }
            Action::WantImages(paths) => {
                let wanted: Vec<PathBuf> = paths
                    .into_iter()
                    .filter(|p| self.state.wants_image(p))
                    .collect();
                if wanted.is_empty() {
                    return;
                }
                let started = self.worker.images(ctx, wanted.clone(), IMAGE_SIDE);
                self.state.start(started, Pending::Images(wanted));
            }
            Action::ListRuns => self.list_runs(ctx, None),
            Action::DeleteRun(path) => self.list_runs(ctx, Some(path)),
            Action::OpenRun(path) => {
                if path.is_dir() {
                    self.handle(Action::PickModel(path.display().to_string()), ctx);
                } else {
                    self.handle(Action::LoadPrompts(path), ctx);
                }
            }
            Action::Classify { prompts, image } => {
                let Some(model) = &self.state.model else {
                    return self
                        .state
                        .error("Load the model the prompts were trained with first.");
                };
                let started = self
                    .worker
                    .classify(ctx, model.clip.clone(), prompts, image);
                self.state.start(started, Pending::Classify);
            }
        }
    }

    fn list_runs(&mut self, ctx: &egui::Context, delete: Option<PathBuf>) {
        if self.state.jobs.listing_runs() {
            return;
        }
        let started = self.worker.list_runs(ctx, self.runs_dir.clone(), delete);
        self.state.start(started, Pending::ListRuns);
    }

    /// Where a file dialog opens: the field's current path, else a folder the user has just used.
    fn dialog_start(&self, target: PickTarget) -> Option<PathBuf> {
        let non_empty = |s: &str| (!s.trim().is_empty()).then(|| PathBuf::from(s.trim()));
        let dataset_dir = self.state.dataset.as_ref().map(|d| d.folder.root.clone());
        match target {
            PickTarget::Model => non_empty(&self.data_panel.model_path),
            PickTarget::Dataset => non_empty(&self.data_panel.dataset_path),
            PickTarget::ClassNames => non_empty(&self.data_panel.classnames_path).or(dataset_dir),
            PickTarget::Prompts => {
                non_empty(&self.export.load_path).or_else(|| self.export.export_dir(&self.state))
            }
            PickTarget::ExportRun(n) => Some(self.export.export_path(n, &self.state)),
            PickTarget::Image | PickTarget::ClassifyImage => dataset_dir,
        }
    }

    /// What a file dialog answered (or a test, standing in for one): handled on the next frame.
    pub fn choose(&mut self, target: PickTarget, path: PathBuf) {
        let action = self.picked(target, path);
        self.pending.extend(action);
    }

    /// A path picked in a dialog or dropped: it fills its field and is used at once.
    fn picked(&mut self, target: PickTarget, path: PathBuf) -> Option<Action> {
        let shown = path.display().to_string();
        Some(match target {
            PickTarget::Model => {
                self.data_panel.model_path = shown.clone();
                Action::LoadModel(shown)
            }
            PickTarget::Dataset => {
                self.data_panel.dataset_path = shown;
                Action::OpenDataset(path)
            }
            PickTarget::ClassNames => {
                self.data_panel.classnames_path = shown;
                let dataset = self.data_panel.dataset_path.trim();
                if dataset.is_empty() {
                    return None;
                }
                Action::OpenDataset(dataset.into())
            }
            PickTarget::Prompts => {
                self.export.load_path = shown;
                Action::LoadPrompts(path)
            }
            PickTarget::ExportRun(n) => {
                let from = self
                    .state
                    .runs
                    .iter()
                    .find(|r| r.number == n)?
                    .outcome
                    .as_ref()?
                    .prompts
                    .clone();
                self.export.export_paths.insert(n, shown);
                Action::ExportRun { from, to: path }
            }
            PickTarget::Image => {
                self.tab = Tab::Align;
                self.align.image_file = Some(path);
                return None;
            }
            PickTarget::ClassifyImage => {
                let prompts = self.state.prompts.get(self.export.selected)?.path.clone();
                Action::Classify {
                    prompts,
                    image: path,
                }
            }
        })
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

    fn start_training(&mut self, ctx: &egui::Context, run: RunConfig) {
        let pretraining = matches!(run, RunConfig::Pretrain(_));
        let (clip, data) = (
            self.state.model.as_ref().map(|m| m.clip.clone()),
            self.state.dataset.as_ref().map(|d| d.folder.clone()),
        );
        if !pretraining && (clip.is_none() || data.is_none()) {
            return self
                .state
                .error("Load a model and open a dataset before training.");
        }
        let number = self.state.runs.len() + 1;
        // A fresh name per launch and run, so a new session never resumes an old session's checkpoint.
        // Pretraining writes a model folder; the prompt methods a prompts file.
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let out = self.runs_dir.join(if pretraining {
            format!("model-{stamp}-{number}")
        } else {
            format!("run-{stamp}-{number}.safetensors")
        });
        let mut record = TrainRecord::new(number, run.clone(), out.clone());
        match self.worker.train(
            ctx,
            clip,
            data,
            run,
            out,
            false,
            self.cache_dir.clone(),
            record.control.clone(),
        ) {
            Ok(job) => {
                record.job = Some(job);
                self.state.runs.push(record);
            }
            Err(e) => self.state.error(format!("Could not start training: {e}")),
        }
    }

    fn resume_run(&mut self, ctx: &egui::Context, n: usize) {
        let (clip, folder) = (
            self.state.model.as_ref().map(|m| m.clip.clone()),
            self.state.dataset.as_ref().map(|d| d.folder.clone()),
        );
        let cache = self.cache_dir.clone();
        let Some(run) = self.state.runs.iter_mut().find(|r| r.number == n) else {
            return;
        };
        if !matches!(run.run, RunConfig::Pretrain(_)) && (clip.is_none() || folder.is_none()) {
            return self
                .state
                .error("Load the model and dataset of this run before resuming it.");
        }
        run.control.pause.store(false, Ordering::Relaxed);
        match run.status {
            RunStatus::Paused => run.status = RunStatus::Training,
            RunStatus::Stopped => {
                run.rewind_to_checkpoint();
                // Feature adapters keep no checkpoint: a stopped one starts over.
                if matches!(run.run, RunConfig::Adapter(_)) {
                    run.epochs.clear();
                    run.steps.clear();
                }
                run.control = Default::default();
                run.status = RunStatus::Preparing {
                    stage: "resuming".into(),
                    done: 0,
                    total: 0,
                };
                match self.worker.train(
                    ctx,
                    clip,
                    folder,
                    run.run.clone(),
                    run.out.clone(),
                    true,
                    cache,
                    run.control.clone(),
                ) {
                    Ok(job) => run.job = Some(job),
                    Err(e) => {
                        run.status = RunStatus::Stopped;
                        self.state.error(format!("Could not resume the run: {e}"));
                    }
                }
            }
            _ => {}
        }
    }

    fn start_base_to_novel(&mut self, ctx: &egui::Context, req: compare_job::BaseToNovelRequest) {
        if self.state.jobs.evaluation().is_some() {
            return;
        }
        let (Some(model), Some(dataset)) = (&self.state.model, &self.state.dataset) else {
            return self
                .state
                .error("Load a model and open a dataset before running base-to-novel.");
        };
        let cancel = Arc::new(AtomicBool::new(false));
        match self.worker.base_to_novel(
            ctx,
            model.clip.clone(),
            dataset.folder.clone(),
            req,
            self.cache_dir.clone(),
            cancel.clone(),
        ) {
            Ok(job) => {
                self.state
                    .jobs
                    .insert(job, Pending::Evaluate(RunningEval::new(cancel)));
                self.state.last_run_cancelled = false;
            }
            Err(e) => self
                .state
                .error(format!("Could not start base-to-novel: {e}")),
        }
    }

    fn start_zero_shot(&mut self, ctx: &egui::Context, templates: Vec<String>) {
        if self.state.jobs.evaluation().is_some() {
            return;
        }
        let (Some(model), Some(dataset)) = (&self.state.model, &self.state.dataset) else {
            return self
                .state
                .error("Load a model and open a dataset before running zero-shot.");
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
        // The probe and the adapters are fitted on the same K shots.
        let shots = self
            .compare
            .probe_shots
            .resolve(self.state.prompts.iter().map(|p| &p.meta));
        let adapters = self.compare.adapter_methods();
        let req = compare_job::CompareRequest {
            templates,
            learned: self
                .state
                .prompts
                .iter()
                .map(|p| (p.label.clone(), p.path.clone()))
                .collect(),
            linear_probe: self.compare.linear_probe.then_some(shots),
            adapters: (!adapters.is_empty()).then_some((shots, adapters)),
        };
        match self.worker.compare(
            ctx,
            model.clip.clone(),
            dataset.folder.clone(),
            req,
            self.cache_dir.clone(),
            cancel.clone(),
        ) {
            Ok(job) => {
                self.state
                    .jobs
                    .insert(job, Pending::Evaluate(RunningEval::new(cancel)));
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

/// Intervals between frames, split by whether a training run was under way, for the frame-time
/// statistics (median and p99) the README reports.
#[derive(Default)]
pub struct FrameTimes {
    last: Option<std::time::Instant>,
    pub training_ms: Vec<f64>,
    pub idle_ms: Vec<f64>,
    /// Time spent laying out each frame while training (the app's own share of a frame).
    pub training_build_ms: Vec<f64>,
    written: Option<std::time::Instant>,
}

impl FrameTimes {
    fn tick(&mut self, training: bool) {
        let now = std::time::Instant::now();
        if let Some(last) = self.last.replace(now) {
            let ms = (now - last).as_secs_f64() * 1e3;
            push_bounded(
                if training {
                    &mut self.training_ms
                } else {
                    &mut self.idle_ms
                },
                ms,
            );
        }
    }

    fn built(&mut self, ms: f64) {
        push_bounded(&mut self.training_build_ms, ms);
    }

    /// (frames, median, p99) in ms.
    pub fn stats(v: &[f64]) -> Option<(usize, f64, f64)> {
        if v.is_empty() {
            return None;
        }
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
        Some((s.len(), at(0.5), at(0.99)))
    }

    fn maybe_write(&mut self, path: &Path) {
        let now = std::time::Instant::now();
        if self
            .written
            .is_some_and(|w| now - w < std::time::Duration::from_secs(1))
        {
            return;
        }
        self.written = Some(now);
        let json = |v: &[f64]| {
            Self::stats(v).map_or(
                serde_json::Value::Null,
                |(n, med, p99)| serde_json::json!({"frames": n, "median_ms": med, "p99_ms": p99}),
            )
        };
        let body = serde_json::json!({
            "training": json(&self.training_ms),
            "training_build": json(&self.training_build_ms),
            "idle": json(&self.idle_ms),
        });
        let _ = crate::error::write_atomic(path, body.to_string().as_bytes());
    }
}

/// Appends to a bounded history: the last ~10 minutes at 60 fps.
fn push_bounded(v: &mut Vec<f64>, ms: f64) {
    if v.len() >= 36_000 {
        v.drain(..18_000);
    }
    v.push(ms);
}

/// Keeps a tab's layout within what is visible: wrapped rows and columns size to the visible width even
/// when the panel's rectangle reaches past the window's edge (seen at 1280 px on the first frames).
fn fit_visible_width(ui: &mut egui::Ui) {
    let visible = ui.clip_rect().right() - ui.max_rect().left();
    if visible > 0.0 && visible < ui.max_rect().width() {
        ui.set_max_width(visible);
    }
}

/// `$PROMPTSCOPE_RUNS`, else `runs/` beside the feature cache (`~/.cache/promptscope/runs`).
pub fn default_runs_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PROMPTSCOPE_RUNS").filter(|v| !v.is_empty()) {
        return dir.into();
    }
    let features = crate::train::features::default_cache_dir();
    features
        .parent()
        .map_or_else(|| features.join("runs"), |p| p.join("runs"))
}

/// A folder with a `config.json` is a model; any other folder is a dataset; an image file is aligned
/// in the Align tab; a prompts file or CoOp checkpoint is loaded.
fn classify_drop(path: &Path) -> Result<PickTarget, String> {
    if path.is_dir() {
        return Ok(if path.join("config.json").is_file() {
            PickTarget::Model
        } else {
            PickTarget::Dataset
        });
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if path.is_file() && crate::data::folder::IMAGE_EXTENSIONS.contains(&ext.as_str()) {
        return Ok(PickTarget::Image);
    }
    if path.is_file()
        && (ext == "safetensors" || crate::export::coop_import::is_coop_checkpoint(path))
    {
        return Ok(PickTarget::Prompts);
    }
    Err(format!(
        "{}: not something promptscope opens. Drop a model folder (with config.json), a dataset folder, an image, or a prompts file.",
        path.display()
    ))
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
        "Drop a model folder, a dataset folder, an image (to align) or a prompts file",
        FontId::proportional(22.0),
        Color32::WHITE,
    );
}
