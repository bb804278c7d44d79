//! The Train tab: a method (CoOp, or MP-FGVC's two stages) and every option the CLI has, start / pause /
//! stop / resume, and live curves of loss (per step), learning rate and train / validation accuracy (per
//! epoch) for every run, overlaid.

use egui::{Color32, DragValue, RichText, ScrollArea, TextEdit};
use egui_plot::{Corner, Legend, Line, LineStyle, Plot, PlotPoints};

use crate::prompt::coop::ClassPosition;
use crate::prompt::{CoopVariant, PromptMethodKind};
use crate::train::config::{
    AdapterMethod, AdapterRun, Augment, CoopRun, MpFgvcRun, PretrainRun, RunConfig,
};
use crate::train::mpfgvc::OptimizerKind;
use crate::train::optim::{default_epochs, OptimConfig};

use super::events::Action;
use super::state::AppState;
use super::train_form::{TrainForm, TrainKind};
use super::training::{RunStatus, TrainRecord};
use crate::train::epoch_loop::EpochStats;
use forms::*;
use runs::{plots_ui, runs_ui};

mod forms;
mod runs;

pub const START_BUTTON: &str = "Start training";
pub const PRETRAIN_METHOD: &str = "Pretrain (FILIP / CLIP)";
/// Label of the pairs-folder field of the pretraining form.
/// The method button of the feature adapters.
pub const ADAPTER_METHOD: &str = "Feature adapters";

/// The CoOp form's KgCoOp weight.
pub const KG_FIELD: &str = "KgCoOp λ";
pub const PAIRS_FIELD: &str = "Image–caption pairs";
/// The checkbox that pretrains on generated scenes streamed each epoch instead of a folder.
pub const SHUFFLE_BUFFER_FIELD: &str = "Shuffle buffer";
pub const BAD_SAMPLES_FAIL: &str = "stop the run";
pub const SCENES_FIELD: &str = "Generated scenes, drawn afresh each epoch";
pub const SHAPE_LABELS_FIELD: &str = "Shape labels weight";
pub const SHOT_CHOICES: [Option<usize>; 6] = [Some(1), Some(2), Some(4), Some(8), Some(16), None];

#[derive(Default)]
pub struct TrainPanel {
    pub form: TrainForm,
}

/// A distinct colour per run number.
pub fn run_colour(number: usize) -> Color32 {
    let [r, g, b] = crate::render::colormap::CATEGORICAL
        [(number.saturating_sub(1)) % crate::render::colormap::CATEGORICAL.len()];
    Color32::from_rgb(r, g, b)
}

/// The series a run contributes to the plots: (plot, name, points). The plots draw exactly these, so
/// tests read the curves' data here. An MP-FGVC run's stages are separate series on one epoch axis.
pub fn series(run: &TrainRecord) -> Vec<(&'static str, String, Vec<[f64; 2]>)> {
    let parts: Vec<(String, std::ops::Range<usize>)> = match &run.run {
        RunConfig::Coop(_) | RunConfig::Pretrain(_) | RunConfig::Adapter(_) => {
            vec![(String::new(), 0..usize::MAX)]
        }
        RunConfig::MpFgvc(m) => {
            let first = m.stage1.optim.epochs;
            vec![
                ("stage 1 ".to_string(), 0..first),
                ("stage 2 ".to_string(), first..usize::MAX),
            ]
        }
    };
    let mut out = Vec::new();
    for (stage, range) in parts {
        let e: Vec<&EpochStats> = run
            .epochs
            .iter()
            .filter(|s| range.contains(&s.epoch))
            .collect();
        // Epoch k's statistics are drawn at its end, k + 1.
        let at = |f: &dyn Fn(&EpochStats) -> Option<f64>| -> Vec<[f64; 2]> {
            e.iter()
                .filter_map(|s| f(s).map(|v| [(s.epoch + 1) as f64, v]))
                .collect()
        };
        let steps = run
            .steps
            .iter()
            .filter(|p| p[0] > range.start as f64 && p[0] <= range.end as f64)
            .copied()
            .collect();
        let name = |what: &str| format!("{} {stage}{what}", run.label);
        out.extend([
            ("loss", name("step loss"), steps),
            ("loss", name("epoch loss"), at(&|s| Some(s.loss))),
            (
                "accuracy",
                name("train"),
                at(&|s| Some(100.0 * s.train_acc)),
            ),
            (
                "accuracy",
                name("val"),
                at(&|s| s.val_acc.map(|v| 100.0 * v)),
            ),
            ("lr", name("lr"), at(&|s| Some(s.lr))),
        ]);
    }
    out
}

impl TrainPanel {
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
        egui::Panel::left("train_form")
            .resizable(true)
            .default_size(300.0)
            .show(ui, |ui| {
                ScrollArea::vertical()
                    .auto_shrink([false; 2])
                    .show(ui, |ui| self.form_ui(ui, state, actions));
            });
        ScrollArea::vertical()
            .auto_shrink([false; 2])
            .show(ui, |ui| {
                // Rows and plots fit the visible width (a wide row would widen the plots past the window's
                // edge at 1280 px).
                ui.set_max_width(ui.available_width());
                runs_ui(ui, state, actions);
                ui.separator();
                plots_ui(ui, &state.runs);
            });
    }

    fn form_ui(&mut self, ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
        let f = &mut self.form;
        ui.heading("Method");
        ui.horizontal_wrapped(|ui| {
            for kind in PromptMethodKind::ALL {
                ui.selectable_value(&mut f.kind, TrainKind::Prompts(kind), kind.label());
            }
            let hover = "Baselines on the image features: Tip-Adapter (training-free), Tip-Adapter-F, CLIP-Adapter";
            ui.selectable_value(&mut f.kind, TrainKind::Adapters, ADAPTER_METHOD).on_hover_text(hover);
            ui.selectable_value(&mut f.kind, TrainKind::Pretrain, PRETRAIN_METHOD)
                .on_hover_text("Train both towers of a CLIP on image–caption pairs");
        });
        match f.kind {
            TrainKind::Pretrain => pretrain_form(ui, &mut f.pretrain, state),
            TrainKind::Adapters => adapter_form(ui, &mut f.adapter),
            TrainKind::Prompts(PromptMethodKind::Datp) => mpfgvc_form(ui, &mut f.mpfgvc),
            TrainKind::Prompts(kind) => {
                if let Some(r) = f.coop_run(kind) {
                    coop_form(ui, r);
                }
            }
        }
        ui.add_space(8.0);
        let run = f.to_run();
        // Pretraining needs only its pairs (and a model only to fine-tune, which the form checks).
        let global_only = state
            .model
            .as_ref()
            .map(|m| m.clip.family())
            .filter(|f| !f.token_level());
        let pretraining = f.kind == TrainKind::Pretrain;
        let missing = if state.model.is_none() && !pretraining {
            Some("Load a model first.".to_string())
        } else if let (Some(family), TrainKind::Prompts(method)) = (global_only, f.kind) {
            Some(format!(
                "{} learns prompts inside CLIP's text tower; the loaded {} model gives global features only. Choose {ADAPTER_METHOD}, or load a CLIP or FILIP model.",
                method.label(),
                family.name()
            ))
        } else if state.dataset.is_none() && !pretraining {
            Some("Open a dataset first.".to_string())
        } else {
            run.as_ref().err().map(|e| e.to_string())
        };
        let accent = ui.visuals().selection.bg_fill;
        let button = egui::Button::new(RichText::new(START_BUTTON).strong().color(Color32::WHITE))
            .fill(accent);
        if ui.add_enabled(missing.is_none(), button).clicked() {
            if let Ok(run) = run {
                actions.push(Action::StartTraining(Box::new(run)));
            }
        }
        if let Some(why) = missing {
            ui.weak(why);
        }
    }
}
