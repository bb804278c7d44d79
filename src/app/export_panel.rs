//! The Export tab: save a run's learned prompt vectors (the engine's safetensors + metadata), load an
//! exported file back (it then joins Compare and Align), and see each vector's nearest words.

use egui::{RichText, ScrollArea, TextEdit};

use super::prompts_job::LoadedPrompts;
use super::state::AppState;
use super::training::RunStatus;
use super::events::Action;

pub const EXPORT_FIELD: &str = "Export to";
pub const LOAD_FIELD: &str = "Prompts file";
pub const SAVE_BUTTON: &str = "Save prompts";
pub const LOAD_MODEL_BUTTON: &str = "Load this model";

#[derive(Default)]
pub struct ExportPanel {
    /// Per run number: the path typed for its export.
    pub export_paths: std::collections::HashMap<usize, String>,
    pub load_path: String,
    /// Index into `state.prompts` whose details are shown.
    pub selected: usize,
}

impl ExportPanel {
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
        ui.heading("Trained runs");
        let finished: Vec<_> = state.runs.iter().filter(|r| r.status == RunStatus::Finished).collect();
        if finished.is_empty() {
            ui.weak("Runs appear here when their training finishes.");
        }
        for run in finished {
            let Some(outcome) = &run.outcome else { continue };
            // A pretraining run wrote a model folder, not prompts: it is loaded, not exported.
            if matches!(run.run, crate::train::config::RunConfig::Pretrain(_)) {
                ui.horizontal(|ui| {
                    ui.label(RichText::new(&run.label).strong());
                    if ui.button(LOAD_MODEL_BUTTON).on_hover_text(outcome.prompts.display().to_string()).clicked() {
                        actions.push(Action::LoadModel(outcome.prompts.display().to_string()));
                    }
                });
                continue;
            }
            let path = self.export_paths.entry(run.number).or_insert_with(|| format!("prompts-run{}.safetensors", run.number));
            ui.horizontal(|ui| {
                ui.label(RichText::new(&run.label).strong());
                ui.weak(format!("test {:.1}%", 100.0 * outcome.test_acc));
            });
            ui.horizontal(|ui| {
                let l = ui.label(EXPORT_FIELD);
                ui.add(TextEdit::singleline(path).desired_width(360.0)).labelled_by(l.id);
                if ui.button(SAVE_BUTTON).on_hover_text("Write the prompts file (ctx, class_embeds, metadata)").clicked() {
                    actions.push(Action::ExportRun { from: outcome.prompts.clone(), to: path.trim().into() });
                }
            });
        }
        if let Some(last) = &state.last_export {
            ui.label(format!("saved {}", last.display()));
        }
        ui.add_space(8.0);
        ui.separator();
        ui.heading("Load a prompts file");
        ui.horizontal(|ui| {
            let l = ui.label(LOAD_FIELD);
            ui.add(TextEdit::singleline(&mut self.load_path).hint_text("prompts.safetensors").desired_width(360.0)).labelled_by(l.id);
            let busy = state.loading_prompts.is_some();
            if ui.add_enabled(!busy, egui::Button::new("Load prompts")).clicked() {
                actions.push(Action::LoadPrompts(self.load_path.trim().into()));
            }
            if busy {
                ui.spinner();
            }
        });
        ui.weak("Files from `promptscope train --out`, this tab, or `import-coop`; they join the Compare and Align tabs.");
        ui.add_space(8.0);
        ui.separator();
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
        details_ui(ui, &state.prompts[self.selected]);
    }
}

fn details_ui(ui: &mut egui::Ui, p: &LoadedPrompts) {
    let summary = p.summary();
    ui.horizontal(|ui| {
        ui.strong("Nearest words of each context vector");
        if ui.button("Copy summary").clicked() {
            ui.ctx().copy_text(summary.clone());
        }
    });
    ScrollArea::vertical().max_height(ui.available_height() * 0.6).show(ui, |ui| {
        egui::Grid::new("nearest_words").striped(true).num_columns(3).show(ui, |ui| {
            ui.strong("class");
            ui.strong("vector");
            ui.strong("nearest words (distance)");
            ui.end_row();
            for w in &p.words {
                ui.label(w.class.and_then(|c| p.meta.class_names.get(c)).cloned().unwrap_or_else(|| "all".into()));
                ui.label((w.position + 1).to_string());
                let near: Vec<String> = w.nearest.iter().map(|n| format!("{} ({:.2})", n.token, n.distance)).collect();
                ui.label(near.join(", "));
                ui.end_row();
            }
        });
    });
    ui.add_space(4.0);
    let mut text = summary;
    ui.add(TextEdit::multiline(&mut text).code_editor().desired_rows(6).desired_width(f32::INFINITY).interactive(true));
}
