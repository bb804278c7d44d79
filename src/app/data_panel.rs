//! The "Model & data" side panel: where the model and the dataset come from, and what the dataset holds.

use egui::{Grid, RichText, ScrollArea, TextEdit};

use super::events::Action;
use super::events::OpenedDataset;
use super::events::PickTarget;
use super::state::AppState;

/// Label of the model path field; tests find the field by it.
pub const MODEL_FIELD: &str = "Model folder or hub id";
/// Label of the dataset path field.
pub const DATASET_FIELD: &str = "Dataset folder";
/// Label of the optional class-names file field.
pub const CLASSNAMES_FIELD: &str = "Class names (optional)";

/// The two path fields, as typed (they are only read when Load / Open is pressed).
#[derive(Default)]
pub struct DataPanel {
    pub model_path: String,
    pub dataset_path: String,
    /// CoOp's `classnames.txt` for a dataset whose folders are ids (`n01440764 tench`); empty: the
    /// folder names are the class names.
    pub classnames_path: String,
    pub recent_models: Vec<String>,
    pub recent_datasets: Vec<String>,
}

/// A "Recent" menu: picking an entry fills the field and loads it.
fn recent_ui(
    ui: &mut egui::Ui,
    id: &str,
    recent: &[String],
    pick: impl Fn(String) -> Action,
    actions: &mut Vec<Action>,
) {
    ui.add_enabled_ui(!recent.is_empty(), |ui| {
        ui.push_id(id, |ui| {
            ui.menu_button("Recent", |ui| {
                for r in recent {
                    if ui.button(r).clicked() {
                        actions.push(pick(r.clone()));
                        ui.close();
                    }
                }
            })
            .response
            .on_hover_text("Models and datasets opened before");
        });
    });
}

/// The shipped demo models, one click each (greyed out where the checkout has no `assets/models`).
fn demo_ui(ui: &mut egui::Ui, actions: &mut Vec<Action>) {
    ui.menu_button("Demo models", |ui| {
        for (name, note) in crate::clip::demo::DEMO_MODELS {
            let found = crate::clip::demo::find(name).is_some();
            if ui
                .add_enabled(found, egui::Button::new(name))
                .on_hover_text(note)
                .clicked()
            {
                actions.push(Action::PickModel(name.to_string()));
                ui.close();
            }
        }
    })
    .response
    .on_hover_text("The small models shipped with promptscope, pretrained on generated scenes");
}

impl DataPanel {
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
        ui.heading("Model & data");
        ui.add_space(4.0);
        ScrollArea::vertical()
            .auto_shrink([false; 2])
            .show(ui, |ui| {
                self.model_ui(ui, state, actions);
                ui.add_space(8.0);
                ui.separator();
                self.dataset_ui(ui, state, actions);
            });
    }

    fn model_ui(&mut self, ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
        let label = ui.label(MODEL_FIELD);
        let field = ui
            .add(
                TextEdit::singleline(&mut self.model_path)
                    .hint_text("path/to/clip or openai/clip-vit-base-patch32")
                    .desired_width(f32::INFINITY),
            )
            .labelled_by(label.id);
        let submitted = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        let busy = state.jobs.loading_model().is_some();
        ui.horizontal(|ui| {
            if ui
                .button("Browse…")
                .on_hover_text("Choose a model folder")
                .clicked()
            {
                actions.push(Action::Browse(PickTarget::Model));
            }
            let load = ui.add_enabled(!busy, egui::Button::new("Load"));
            if load.clicked() || (submitted && !busy) {
                actions.push(Action::LoadModel(self.model_path.trim().to_string()));
            }
            demo_ui(ui, actions);
            recent_ui(
                ui,
                "recent_models",
                &self.recent_models,
                Action::PickModel,
                actions,
            );
            if busy {
                ui.spinner();
                ui.label("loading…");
            }
        });
        if let Some(model) = &state.model {
            ui.add(
                egui::Label::new(RichText::new(format!("loaded: {}", model.clip.id)).small())
                    .truncate(),
            )
            .on_hover_text(&model.description);
        }
    }

    fn dataset_ui(&mut self, ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
        let label = ui.label(DATASET_FIELD);
        let field = ui
            .add(
                TextEdit::singleline(&mut self.dataset_path)
                    .hint_text("ROOT/<class>/<images>")
                    .desired_width(f32::INFINITY),
            )
            .labelled_by(label.id);
        let submitted = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        let busy = state.jobs.opening_dataset().is_some();
        ui.horizontal(|ui| {
            if ui
                .button("Browse…")
                .on_hover_text("Choose a dataset folder")
                .clicked()
            {
                actions.push(Action::Browse(PickTarget::Dataset));
            }
            let open = ui.add_enabled(!busy, egui::Button::new("Open"));
            if open.clicked() || (submitted && !busy) {
                actions.push(Action::OpenDataset(self.dataset_path.trim().into()));
            }
            recent_ui(
                ui,
                "recent_datasets",
                &self.recent_datasets,
                Action::PickRecentDataset,
                actions,
            );
            if busy {
                ui.spinner();
                ui.label("scanning…");
            }
        });
        // Folders named by id (ImageNet's n01440764) read their class names from CoOp's classnames.txt.
        let l = ui.label(CLASSNAMES_FIELD);
        ui.horizontal(|ui| {
            if ui.button("Browse…").on_hover_text("Choose a classnames.txt").clicked() {
                actions.push(Action::Browse(PickTarget::ClassNames));
            }
            // Last in the row and as wide as what is left: a fixed width would overflow the panel and
            // widen it frame after frame.
            ui.add(TextEdit::singleline(&mut self.classnames_path).hint_text("classnames.txt").desired_width(f32::INFINITY))
                .labelled_by(l.id)
                .on_hover_text("CoOp's classnames.txt: one \"<folder name> <class name>\" per line. Leave empty to use the folder names.");
        });
        ui.add_space(4.0);
        match &state.dataset {
            Some(ds) => dataset_summary_ui(ui, ds, &state.thumbnails),
            None => {
                ui.weak("Open a folder with one sub-folder of images per class (optionally inside train/, val/, test/), or drop it onto the window.");
            }
        }
    }
}

fn dataset_summary_ui(
    ui: &mut egui::Ui,
    ds: &OpenedDataset,
    thumbnails: &[Vec<egui::TextureHandle>],
) {
    let s = &ds.summary;
    let names = &ds.folder.class_names;
    ui.add(
        egui::Label::new(RichText::new(format!("open: {}", ds.folder.root.display())).small())
            .truncate(),
    )
    .on_hover_text(ds.folder.root.display().to_string());
    ui.label(format!(
        "{} classes · {} images · {} skipped non-image file{}",
        names.len(),
        s.images,
        s.skipped_files,
        if s.skipped_files == 1 { "" } else { "s" }
    ));
    ui.add_space(4.0);
    Grid::new("dataset_classes")
        .striped(true)
        .num_columns(1 + s.columns.len())
        .show(ui, |ui| {
            ui.strong("class");
            for column in &s.columns {
                ui.strong(*column);
            }
            ui.end_row();
            for (name, counts) in names.iter().zip(&s.counts) {
                ui.label(name);
                for n in counts {
                    ui.label(n.to_string());
                }
                ui.end_row();
            }
        });
    if thumbnails.is_empty() {
        return;
    }
    ui.add_space(6.0);
    for (name, thumbs) in names.iter().zip(thumbnails) {
        ui.label(RichText::new(name).small());
        ui.horizontal_wrapped(|ui| {
            for t in thumbs {
                ui.add(
                    egui::Image::new(t)
                        .fit_to_exact_size(egui::vec2(44.0, 44.0))
                        .corner_radius(3),
                );
            }
        });
    }
}
