//! The Export tab: save a run's learned prompt vectors (the engine's safetensors + metadata), load an
//! exported file or CoOp checkpoint back (it then joins Compare and Align), see each vector's nearest
//! words, classify an image with it, and see / delete what runs left on disk.

use std::path::PathBuf;

use egui::{RichText, ScrollArea, TextEdit};

use super::events::{Action, PickTarget};
use super::glyphs::displayable;
use super::prompts_job::LoadedPrompts;
use super::runs::{human_size, RunKind};
use super::state::AppState;
use super::training::RunStatus;

pub const EXPORT_FIELD: &str = "Export to";
pub const LOAD_FIELD: &str = "Prompts file";
pub const SAVE_BUTTON: &str = "Save prompts";
pub const LOAD_MODEL_BUTTON: &str = "Load this model";
pub const RUNS_HEADING: &str = "Runs on disk";
pub const CLASSIFY_BUTTON: &str = "Classify an image…";

#[derive(Default)]
pub struct ExportPanel {
    /// Per run number: the path typed for its export.
    pub export_paths: std::collections::HashMap<usize, String>,
    pub load_path: String,
    /// Index into `state.prompts` whose details are shown.
    pub selected: usize,
    /// The run on disk whose Delete was pressed once: a second press deletes.
    pub confirm_delete: Option<PathBuf>,
    /// Whether the runs folder has been listed since the tab was shown.
    listed: bool,
}

impl ExportPanel {
    /// Where exports go by default: beside the last export, else beside the open dataset, else the home
    /// folder (never a path relative to wherever the app was started).
    pub fn export_dir(&self, state: &AppState) -> Option<PathBuf> {
        state
            .last_export
            .as_ref()
            .and_then(|p| p.parent().map(PathBuf::from))
            .or_else(|| {
                state
                    .dataset
                    .as_ref()
                    .and_then(|d| d.folder.root.parent().map(PathBuf::from))
            })
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
            .filter(|d| !d.as_os_str().is_empty())
    }

    /// Run `n`'s export path: as typed, else `<export dir>/prompts-<dataset>-run<n>.safetensors`.
    pub fn export_path(&self, n: usize, state: &AppState) -> PathBuf {
        if let Some(p) = self.export_paths.get(&n).filter(|p| !p.trim().is_empty()) {
            return PathBuf::from(p.trim());
        }
        let dataset = state
            .dataset
            .as_ref()
            .and_then(|d| d.folder.root.file_name())
            .map(|n| format!("{}-", n.to_string_lossy()))
            .unwrap_or_default();
        let name = format!("prompts-{dataset}run{n}.safetensors");
        match self.export_dir(state) {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        state: &AppState,
        runs_dir: &std::path::Path,
        actions: &mut Vec<Action>,
    ) {
        if !self.listed {
            self.listed = true;
            actions.push(Action::ListRuns);
        }
        ScrollArea::vertical()
            .id_salt("export_tab")
            .auto_shrink([false; 2])
            .show(ui, |ui| {
                self.trained_ui(ui, state, actions);
                ui.add_space(8.0);
                ui.separator();
                self.load_ui(ui, state, actions);
                ui.add_space(8.0);
                ui.separator();
                self.runs_ui(ui, state, runs_dir, actions);
                ui.add_space(8.0);
                ui.separator();
                self.details_ui(ui, state, actions);
            });
    }

    fn trained_ui(&mut self, ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
        ui.heading("Trained runs");
        let finished: Vec<_> = state
            .runs
            .iter()
            .filter(|r| r.status == RunStatus::Finished)
            .collect();
        if finished.is_empty() {
            ui.weak("Runs appear here when their training finishes.");
        }
        for run in finished {
            let Some(outcome) = &run.outcome else {
                continue;
            };
            // A feature adapter wrote nothing: its result is its score.
            if matches!(run.run, crate::train::config::RunConfig::Adapter(_)) {
                ui.horizontal(|ui| {
                    ui.label(RichText::new(&run.label).strong());
                    ui.weak(&outcome.summary);
                });
                continue;
            }
            // A pretraining run wrote a model folder, not prompts: it is loaded, not exported.
            if matches!(run.run, crate::train::config::RunConfig::Pretrain(_)) {
                ui.horizontal(|ui| {
                    ui.label(RichText::new(&run.label).strong());
                    if ui
                        .button(LOAD_MODEL_BUTTON)
                        .on_hover_text(outcome.prompts.display().to_string())
                        .clicked()
                    {
                        actions.push(Action::LoadModel(outcome.prompts.display().to_string()));
                    }
                });
                continue;
            }
            if !self.export_paths.contains_key(&run.number) {
                let default = self.export_path(run.number, state).display().to_string();
                self.export_paths.insert(run.number, default);
            }
            let path = self
                .export_paths
                .get_mut(&run.number)
                .expect("inserted above");
            ui.horizontal(|ui| {
                ui.label(RichText::new(&run.label).strong());
                ui.weak(format!("test {:.1}%", 100.0 * outcome.test_acc));
            });
            ui.horizontal(|ui| {
                let l = ui.label(EXPORT_FIELD);
                ui.add(TextEdit::singleline(path).desired_width(420.0))
                    .labelled_by(l.id);
                if ui
                    .button("Save as…")
                    .on_hover_text("Choose where to save it")
                    .clicked()
                {
                    actions.push(Action::Browse(PickTarget::ExportRun(run.number)));
                }
                if ui
                    .button(SAVE_BUTTON)
                    .on_hover_text("Write the prompts file (ctx, class_embeds, metadata)")
                    .clicked()
                {
                    actions.push(Action::ExportRun {
                        from: outcome.prompts.clone(),
                        to: path.trim().into(),
                    });
                }
            });
        }
        if let Some(last) = &state.last_export {
            ui.label(format!("saved {}", last.display()));
        }
    }

    fn load_ui(&mut self, ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
        ui.heading("Load a prompts file");
        ui.horizontal(|ui| {
            let l = ui.label(LOAD_FIELD);
            ui.add(
                TextEdit::singleline(&mut self.load_path)
                    .hint_text("prompts.safetensors or CoOp's model.pth.tar-50")
                    .desired_width(420.0),
            )
            .labelled_by(l.id);
            let busy = state.jobs.loading_prompts();
            if ui
                .add_enabled(!busy, egui::Button::new("Open…"))
                .on_hover_text("Choose a prompts file or a CoOp checkpoint")
                .clicked()
            {
                actions.push(Action::Browse(PickTarget::Prompts));
            }
            if ui
                .add_enabled(!busy, egui::Button::new("Load prompts"))
                .clicked()
            {
                actions.push(Action::LoadPrompts(self.load_path.trim().into()));
            }
            if busy {
                ui.spinner();
            }
        });
        ui.weak(
            "Files from `promptscope train --out`, this tab, or `import-coop`; CoOp's own checkpoints (model.pth.tar-N) are imported with \
             the open dataset's class names. They join the Compare and Align tabs.",
        );
    }

    fn details_ui(&mut self, ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
        if state.prompts.is_empty() {
            ui.weak("No learned prompts loaded.");
            return;
        }
        ui.horizontal_wrapped(|ui| {
            for (i, p) in state.prompts.iter().enumerate() {
                ui.selectable_value(&mut self.selected, i, &p.label);
            }
        });
        self.selected = self.selected.min(state.prompts.len() - 1);
        let p = &state.prompts[self.selected];
        ui.horizontal(|ui| {
            let busy = state.jobs.classifying();
            if ui
                .add_enabled(!busy, egui::Button::new(CLASSIFY_BUTTON))
                .on_hover_text("Top-5 classes of one image with these prompts")
                .clicked()
            {
                actions.push(Action::Browse(PickTarget::ClassifyImage));
            }
            if busy {
                ui.spinner();
            }
            if let Some(c) = state.classified.as_ref().filter(|c| c.prompts == p.path) {
                let name = c
                    .image
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let top: Vec<String> = c
                    .top
                    .iter()
                    .map(|(class, prob)| format!("{class} {:.1}%", 100.0 * prob))
                    .collect();
                ui.label(RichText::new(format!("{name}: {}", top.join(" · "))).strong())
                    .on_hover_text(c.image.display().to_string());
            }
        });
        words_ui(ui, p);
    }

    fn runs_ui(
        &mut self,
        ui: &mut egui::Ui,
        state: &AppState,
        runs_dir: &std::path::Path,
        actions: &mut Vec<Action>,
    ) {
        ui.horizontal(|ui| {
            ui.heading(RUNS_HEADING);
            if ui
                .add_enabled(!state.jobs.listing_runs(), egui::Button::new("Refresh"))
                .clicked()
            {
                actions.push(Action::ListRuns);
            }
        });
        let Some(runs) = &state.runs_on_disk else {
            ui.spinner();
            return;
        };
        let total: u64 = runs.iter().map(|r| r.bytes).sum();
        ui.weak(format!(
            "{} · {} run{} · {}",
            runs_dir.display(),
            runs.len(),
            if runs.len() == 1 { "" } else { "s" },
            human_size(total)
        ));
        // A run this session is still writing is not offered for deletion.
        let active: Vec<&PathBuf> = state
            .runs
            .iter()
            .filter(|r| r.is_active())
            .map(|r| &r.out)
            .collect();
        egui::Grid::new("runs_on_disk")
            .striped(true)
            .num_columns(5)
            .show(ui, |ui| {
                for run in runs {
                    let name = run.name();
                    ui.label(&name).on_hover_text(
                        run.parts
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join("\n"),
                    );
                    ui.weak(match run.kind {
                        RunKind::Prompts => "prompts",
                        RunKind::Model => "model",
                        RunKind::Unfinished => "checkpoint only",
                    });
                    ui.label(human_size(run.bytes));
                    let open = match run.kind {
                        RunKind::Prompts => Some("Load run"),
                        RunKind::Model => Some("Load model"),
                        RunKind::Unfinished => None,
                    };
                    match open {
                        Some(text) => {
                            if ui
                                .button(text)
                                .on_hover_text(format!("Open {name}"))
                                .clicked()
                            {
                                actions.push(Action::OpenRun(run.path.clone()));
                            }
                        }
                        None => {
                            ui.label("");
                        }
                    }
                    let busy = active.contains(&&run.path);
                    let confirming = self.confirm_delete.as_ref() == Some(&run.path);
                    let text = if confirming {
                        "Really delete?"
                    } else {
                        "Delete"
                    };
                    if ui
                        .add_enabled(!busy, egui::Button::new(text))
                        .on_hover_text(format!("Delete {name} and its checkpoint"))
                        .clicked()
                    {
                        if confirming {
                            self.confirm_delete = None;
                            actions.push(Action::DeleteRun(run.path.clone()));
                        } else {
                            self.confirm_delete = Some(run.path.clone());
                        }
                    }
                    ui.end_row();
                }
            });
    }
}

fn words_ui(ui: &mut egui::Ui, p: &LoadedPrompts) {
    let summary = p.summary();
    ui.horizontal(|ui| {
        ui.strong("Nearest words of each context vector");
        if ui.button("Copy summary").clicked() {
            ui.ctx().copy_text(summary.clone());
        }
    });
    ScrollArea::vertical()
        .id_salt("nearest_words_scroll")
        .max_height(240.0)
        .show(ui, |ui| {
            egui::Grid::new("nearest_words")
                .striped(true)
                .num_columns(3)
                .show(ui, |ui| {
                    ui.strong("class");
                    ui.strong("vector");
                    ui.strong("nearest words (distance)");
                    ui.end_row();
                    for w in &p.words {
                        ui.label(
                            w.class
                                .and_then(|c| p.meta.class_names.get(c))
                                .cloned()
                                .unwrap_or_else(|| "all".into()),
                        );
                        ui.label((w.position + 1).to_string());
                        let near: Vec<String> = w
                            .nearest
                            .iter()
                            .map(|n| format!("{} ({:.2})", displayable(&n.token), n.distance))
                            .collect();
                        ui.label(near.join(", "));
                        ui.end_row();
                    }
                });
        });
    ui.add_space(4.0);
    // What is shown uses the fonts' glyphs; Copy summary copies the tokens as they are.
    let mut text = displayable(&summary).into_owned();
    ui.add(
        TextEdit::multiline(&mut text)
            .code_editor()
            .desired_rows(6)
            .desired_width(f32::INFINITY)
            .interactive(true),
    );
}
