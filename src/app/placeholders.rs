//! Tabs whose work arrives in later releases: each says what it will do, greyed out.

use super::Tab;

pub fn ui(ui: &mut egui::Ui, tab: Tab) {
    let (what, button) = match tab {
        Tab::Train => (
            "Learn prompt context vectors on the train split (CoOp: one shared context or one per class, class \
             token at the front, middle or end), with live loss and accuracy curves.",
            "Start training",
        ),
        Tab::Align => (
            "Show which image regions each word of a prompt matches: FILIP token-wise similarity and SsVP, drawn \
             as heatmaps over the images.",
            "Show alignment",
        ),
        Tab::Export => (
            "Save learned prompts as safetensors with their metadata (model, classes, settings), and import CoOp \
             checkpoints.",
            "Export…",
        ),
        Tab::Compare => return,
    };
    ui.add_enabled_ui(false, |ui| {
        ui.label(what);
        ui.add_space(8.0);
        let _ = ui.button(button);
    });
    ui.add_space(8.0);
    ui.weak("Coming in a later version.");
}
