//! The Compare tab: hand-written prompt templates scored zero-shot on the dataset.

use egui::{Color32, Grid, ProgressBar, RichText, ScrollArea, TextEdit};

use crate::eval::zeroshot::{ZeroShotReport, DEFAULT_TEMPLATE};

use super::state::{AppState, RunningEval};
use super::Action;

pub const RUN_BUTTON: &str = "Run zero-shot";
/// Heading above the results table; tests wait for it.
pub const RESULTS_HEADING: &str = "Zero-shot accuracy";

pub struct ComparePanel {
    /// As typed, blank lines included; cleaned when a run starts.
    pub templates: Vec<String>,
}

impl Default for ComparePanel {
    fn default() -> Self {
        ComparePanel { templates: vec![DEFAULT_TEMPLATE.to_string()] }
    }
}

impl ComparePanel {
    /// The templates a run would use: trimmed, blanks dropped.
    pub fn cleaned_templates(&self) -> Vec<String> {
        self.templates.iter().map(|t| t.trim()).filter(|t| !t.is_empty()).map(str::to_string).collect()
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
        ui.label("Prompt templates. {} is replaced by the class name; several templates are averaged (CLIP's prompt ensemble).");
        ui.add_space(4.0);
        self.templates_ui(ui);
        ui.add_space(8.0);
        self.run_ui(ui, state, actions);
        ui.add_space(8.0);
        ui.separator();
        match &state.report {
            Some(report) => report_ui(ui, report),
            None if state.zero_shot.is_some() => {}
            None if state.last_run_cancelled => {
                ui.weak("The last run was cancelled.");
            }
            None => {
                ui.weak(format!("No results yet: press {RUN_BUTTON} to see the accuracy overall and per class."));
            }
        }
    }

    fn templates_ui(&mut self, ui: &mut egui::Ui) {
        let mut remove = None;
        let removable = self.templates.len() > 1;
        for (i, template) in self.templates.iter_mut().enumerate() {
            ui.horizontal(|ui| {
                let label = ui.label(format!("Template {}", i + 1));
                ui.add(TextEdit::singleline(template).hint_text(DEFAULT_TEMPLATE).desired_width(ui.available_width() - 90.0))
                    .labelled_by(label.id);
                let button = ui.add_enabled(removable, egui::Button::new("Remove")).on_hover_text(format!("Remove template {}", i + 1));
                if button.clicked() {
                    remove = Some(i);
                }
            });
        }
        if let Some(i) = remove {
            self.templates.remove(i);
        }
        if ui.button("Add template").clicked() {
            self.templates.push(String::new());
        }
    }

    fn run_ui(&mut self, ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
        let templates = self.cleaned_templates();
        let missing = if state.model.is_none() {
            Some("Load a model first.")
        } else if state.dataset.is_none() {
            Some("Open a dataset first.")
        } else if templates.is_empty() {
            Some("Write at least one template.")
        } else {
            None
        };
        ui.horizontal(|ui| {
            let can_run = missing.is_none() && state.zero_shot.is_none();
            let accent = ui.visuals().selection.bg_fill;
            let button = egui::Button::new(RichText::new(RUN_BUTTON).strong().color(Color32::WHITE)).fill(accent);
            if ui.add_enabled(can_run, button).clicked() {
                actions.push(Action::RunZeroShot(templates));
            }
            match (missing, &state.dataset) {
                (Some(why), _) => {
                    ui.weak(why);
                }
                (None, Some(ds)) => {
                    let split = if ds.folder.test.is_some() { "test split" } else { "whole dataset" };
                    ui.weak(format!("scores the {} images of the {split}", ds.folder.eval_samples().len()));
                }
                (None, None) => {}
            }
        });
        if let Some(running) = &state.zero_shot {
            progress_ui(ui, running, actions);
        }
    }
}

fn progress_ui(ui: &mut egui::Ui, running: &RunningEval, actions: &mut Vec<Action>) {
    ui.horizontal(|ui| {
        let text = if running.cancel_requested() {
            "cancelling…".to_string()
        } else if running.total == 0 {
            format!("{}…", running.stage)
        } else {
            format!("{} {}/{}", running.stage, running.done, running.total)
        };
        ui.add(ProgressBar::new(running.fraction()).desired_width(ui.available_width() - 80.0).text(text).animate(true));
        if ui.add_enabled(!running.cancel_requested(), egui::Button::new("Cancel")).clicked() {
            actions.push(Action::CancelZeroShot);
        }
    });
}

fn report_ui(ui: &mut egui::Ui, report: &ZeroShotReport) {
    let e = &report.eval;
    ui.heading(RESULTS_HEADING);
    ui.weak(format!(
        "{} split · {} · {} template{}",
        report.split,
        report.model,
        report.templates.len(),
        if report.templates.len() == 1 { "" } else { "s" }
    ));
    ui.add_space(4.0);
    ScrollArea::vertical().auto_shrink([false, true]).show(ui, |ui| {
        Grid::new("zero_shot_per_class").striped(true).num_columns(3).min_col_width(80.0).show(ui, |ui| {
            ui.strong("class");
            ui.strong("correct / total");
            ui.strong("accuracy");
            ui.end_row();
            ui.strong("overall");
            ui.strong(format!("{} / {}", e.correct, e.total));
            accuracy_bar(ui, e.accuracy, e.total);
            ui.end_row();
            for class in &e.per_class {
                ui.label(&class.name);
                ui.label(format!("{} / {}", class.correct, class.total));
                accuracy_bar(ui, class.accuracy, class.total);
                ui.end_row();
            }
        });
    });
}

/// A bar with the percentage on it. egui's `ProgressBar` always paints a rounded stub, which reads as
/// a few percent where the accuracy is zero.
fn accuracy_bar(ui: &mut egui::Ui, accuracy: f64, total: usize) {
    let text = if total == 0 { "no images".to_string() } else { format!("{:.1}%", 100.0 * accuracy) };
    let size = egui::vec2(180.0, ui.spacing().interact_size.y * 0.9);
    let (rect, response) = ui.allocate_exact_size(size, egui::Sense::hover());
    response.widget_info(|| {
        let mut info = egui::WidgetInfo::labeled(egui::Role::ProgressIndicator, ui.is_enabled(), &text);
        info.value = Some(100.0 * accuracy);
        info
    });
    if !ui.is_rect_visible(rect) {
        return;
    }
    let visuals = ui.visuals();
    let painter = ui.painter();
    painter.rect_filled(rect, 3.0, visuals.extreme_bg_color);
    if accuracy > 0.0 {
        let filled = egui::Rect::from_min_size(rect.min, egui::vec2(rect.width() * accuracy.clamp(0.0, 1.0) as f32, rect.height()));
        painter.rect_filled(filled, 3.0, visuals.selection.bg_fill);
    }
    let font = egui::TextStyle::Body.resolve(ui.style());
    painter.text(rect.left_center() + egui::vec2(6.0, 0.0), egui::Align2::LEFT_CENTER, text, font, visuals.strong_text_color());
}
