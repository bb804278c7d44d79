//! Error messages: red, one per failure, until dismissed.

use egui::{Frame, Label, Margin, RichText};

use super::events::Action;

pub const DISMISS: &str = "Dismiss";

pub fn ui(ui: &mut egui::Ui, errors: &[String], actions: &mut Vec<Action>) {
    let red = ui.visuals().error_fg_color;
    for (i, message) in errors.iter().enumerate() {
        Frame::new()
            .fill(red.gamma_multiply(0.12))
            .stroke((1.0, red))
            .corner_radius(4)
            .inner_margin(Margin::same(8))
            .show(ui, |ui| {
                ui.set_width(ui.available_width());
                ui.horizontal_top(|ui| {
                    // The button goes first so it keeps its place however long the message wraps.
                    if ui
                        .button(DISMISS)
                        .on_hover_text("Hide this message")
                        .clicked()
                    {
                        actions.push(Action::DismissError(i));
                    }
                    ui.add(Label::new(RichText::new(message).color(red)).wrap());
                });
            });
        ui.add_space(4.0);
    }
}
