//! The strip along the top: what is loaded and where it runs.

use egui::{Label, RichText};

use super::state::AppState;

#[derive(Default)]
pub struct TopBar;

impl TopBar {
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &AppState) {
        let device = state
            .model
            .as_ref()
            .map_or("device: picked when a model loads".to_string(), |m| {
                format!("device: {}", m.device)
            });
        // The right side goes first so a long model description is truncated, not the device.
        egui::Sides::new().shrink_left().truncate().show(
            ui,
            |ui| {
                ui.label(RichText::new("promptscope").strong().size(16.0));
                ui.separator();
                match (&state.model, state.jobs.loading_model()) {
                    (_, Some(id)) => {
                        ui.spinner();
                        ui.label(format!("loading {id}…"));
                    }
                    (Some(model), None) => {
                        if let Some(note) = &model.clip.demo_note {
                            ui.label(
                                RichText::new("demo model")
                                    .color(ui.visuals().warn_fg_color)
                                    .strong(),
                            )
                            .on_hover_text(note);
                        }
                        let family = model.clip.family();
                        if !family.token_level() {
                            ui.label(
                                RichText::new(format!("{} · global features", family.name()))
                                    .strong(),
                            )
                            .on_hover_text(format!(
                                "With a {} model promptscope runs {}",
                                family.name(),
                                family.supports()
                            ));
                        }
                        ui.add(Label::new(&model.description).truncate())
                            .on_hover_text(&model.description);
                    }
                    (None, None) => {
                        ui.weak("no model loaded");
                    }
                }
            },
            |ui| {
                ui.label(device);
            },
        );
    }
}
