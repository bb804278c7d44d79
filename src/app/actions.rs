//! What the panels ask for ([`Action`]), carried out: each starts a worker job (recorded in the job map)
//! or changes what is shown.

use std::path::PathBuf;

use super::*;

impl PromptscopeApp {
    pub(super) fn handle(&mut self, action: Action, ctx: &egui::Context) {
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
                // A class-name file left from another dataset must not keep a new one from opening.
                let other = self
                    .state
                    .dataset
                    .as_ref()
                    .is_none_or(|d| d.folder.root != path);
                let started = self
                    .worker
                    .open_dataset(ctx, path.clone(), classnames, other);
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
            Action::Dropped(path) => match files::classify_drop(&path) {
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
            Action::OpenSweep(manifest) => {
                let started = self.worker.open_sweep(ctx, manifest.clone());
                self.state.start(started, Pending::OpenSweep(manifest));
            }
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

    pub(super) fn list_runs(&mut self, ctx: &egui::Context, delete: Option<PathBuf>) {
        if self.state.jobs.listing_runs() {
            return;
        }
        let started = self.worker.list_runs(ctx, self.runs_dir.clone(), delete);
        self.state.start(started, Pending::ListRuns);
    }
}
