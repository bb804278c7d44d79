//! The Train tab: every CoOp option in a form, start / pause / stop / resume, and live curves of loss
//! (per step), learning rate and train / validation accuracy (per epoch) for every run, overlaid.

use egui::{Color32, DragValue, RichText, ScrollArea, TextEdit};
use egui_plot::{Legend, Line, Plot, PlotPoints};

use crate::eval::zeroshot::DEFAULT_TEMPLATE;
use crate::prompt::coop::{ClassPosition, CoopConfig};
use crate::train::coop::TrainConfig;
use crate::train::optim::{default_epochs, OptimConfig};
use crate::train::config::{Augment, CoopRun};

use super::state::AppState;
use super::training::{RunStatus, TrainRecord};
use super::Action;

pub const START_BUTTON: &str = "Start training";
pub const SHOT_CHOICES: [Option<usize>; 6] = [Some(1), Some(2), Some(4), Some(8), Some(16), None];

/// The form's values; `to_run` turns them into the engine's [`CoopRun`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TrainForm {
    pub shots: Option<usize>,
    pub n_ctx: usize,
    /// Empty: random N(0, 0.02²) initialisation.
    pub ctx_init: String,
    pub csc: bool,
    pub class_position: ClassPosition,
    pub epochs: usize,
    pub lr: f64,
    pub batch_size: usize,
    pub momentum: f64,
    pub weight_decay: f64,
    pub warmup_epochs: usize,
    pub augment: bool,
    pub views: usize,
    pub seed: u64,
    pub template: String,
}

impl Default for TrainForm {
    fn default() -> Self {
        let o = OptimConfig::default();
        TrainForm {
            shots: Some(16),
            n_ctx: 16,
            ctx_init: String::new(),
            csc: false,
            class_position: ClassPosition::End,
            epochs: default_epochs(Some(16)),
            lr: o.lr,
            batch_size: 32,
            momentum: o.momentum,
            weight_decay: o.weight_decay,
            warmup_epochs: o.warmup_epochs,
            augment: false,
            views: 4,
            seed: 1,
            template: DEFAULT_TEMPLATE.to_string(),
        }
    }
}

impl TrainForm {
    pub fn to_run(&self) -> CoopRun {
        let init = self.ctx_init.trim();
        CoopRun {
            shots: self.shots,
            seed: self.seed,
            split_seed: 0,
            coop: CoopConfig {
                n_ctx: self.n_ctx.max(1),
                ctx_init: (!init.is_empty()).then(|| init.to_string()),
                csc: self.csc,
                class_position: self.class_position,
                seed: self.seed,
            },
            train: TrainConfig {
                optim: OptimConfig {
                    lr: self.lr,
                    momentum: self.momentum,
                    weight_decay: self.weight_decay,
                    warmup_epochs: self.warmup_epochs,
                    warmup_lr: OptimConfig::default().warmup_lr,
                    epochs: self.epochs.max(1),
                },
                batch_size: Some(self.batch_size.max(1)),
                seed: self.seed,
            },
            augment: if self.augment { Augment::CropFlip } else { Augment::None },
            views: self.views.max(1),
            template: self.template.clone(),
        }
    }
}

#[derive(Default)]
pub struct TrainPanel {
    pub form: TrainForm,
}

/// A distinct colour per run number.
pub fn run_colour(number: usize) -> Color32 {
    let [r, g, b] = crate::render::colormap::CATEGORICAL[(number.saturating_sub(1)) % crate::render::colormap::CATEGORICAL.len()];
    Color32::from_rgb(r, g, b)
}

/// The series a run contributes to the plots: (plot, name, points). The plots draw exactly these, so
/// tests read the curves' data here.
pub fn series(run: &TrainRecord) -> Vec<(&'static str, String, Vec<[f64; 2]>)> {
    let e = &run.epochs;
    // Epoch k's statistics are drawn at its end, k + 1.
    let at = |f: &dyn Fn(&crate::train::coop::EpochStats) -> Option<f64>| -> Vec<[f64; 2]> {
        e.iter().filter_map(|s| f(s).map(|v| [(s.epoch + 1) as f64, v])).collect()
    };
    vec![
        ("loss", format!("{} step loss", run.label), run.steps.clone()),
        ("loss", format!("{} epoch loss", run.label), at(&|s| Some(s.loss))),
        ("accuracy", format!("{} train", run.label), at(&|s| Some(100.0 * s.train_acc))),
        ("accuracy", format!("{} val", run.label), at(&|s| s.val_acc.map(|v| 100.0 * v))),
        ("lr", format!("{} lr", run.label), at(&|s| Some(s.lr))),
    ]
}

impl TrainPanel {
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
        egui::Panel::left("train_form").resizable(true).default_size(300.0).show(ui, |ui| {
            ScrollArea::vertical().auto_shrink([false; 2]).show(ui, |ui| self.form_ui(ui, state, actions));
        });
        ScrollArea::vertical().auto_shrink([false; 2]).show(ui, |ui| {
            runs_ui(ui, state, actions);
            ui.separator();
            plots_ui(ui, &state.runs);
        });
    }

    fn form_ui(&mut self, ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
        let f = &mut self.form;
        ui.heading("CoOp");
        ui.label("Shots per class");
        ui.horizontal_wrapped(|ui| {
            for k in SHOT_CHOICES {
                let label = k.map_or("all".to_string(), |k| format!("{k}-shot"));
                if ui.selectable_value(&mut f.shots, k, label).clicked() {
                    f.epochs = default_epochs(f.shots);
                }
            }
        });
        egui::Grid::new("train_form_grid").num_columns(2).spacing([8.0, 6.0]).show(ui, |ui| {
            ui.label("Context");
            ui.horizontal(|ui| {
                ui.radio_value(&mut f.csc, false, "unified");
                ui.radio_value(&mut f.csc, true, "class-specific");
            });
            ui.end_row();
            ui.label("Class token");
            ui.horizontal(|ui| {
                for p in [ClassPosition::End, ClassPosition::Middle, ClassPosition::Front] {
                    ui.radio_value(&mut f.class_position, p, format!("{p:?}").to_lowercase());
                }
            });
            ui.end_row();
            let l = ui.label("Init phrase");
            ui.add(TextEdit::singleline(&mut f.ctx_init).hint_text("random").desired_width(150.0)).labelled_by(l.id)
                .on_hover_text("Initialise the context from a phrase, e.g. \"a photo of a\"; M is then its length.");
            ui.end_row();
            ui.label("Context tokens M");
            ui.add_enabled(f.ctx_init.trim().is_empty(), DragValue::new(&mut f.n_ctx).range(1..=64));
            ui.end_row();
            ui.label("Epochs");
            ui.horizontal(|ui| {
                ui.add(DragValue::new(&mut f.epochs).range(1..=2000));
                if ui.small_button("CoOp's").on_hover_text("50 for 1 shot, 100 for 2–4, 200 for 8 or more").clicked() {
                    f.epochs = default_epochs(f.shots);
                }
            });
            ui.end_row();
            ui.label("Learning rate");
            ui.add(DragValue::new(&mut f.lr).range(1e-6..=10.0).speed(0.0005).max_decimals(5));
            ui.end_row();
            ui.label("Batch size");
            ui.add(DragValue::new(&mut f.batch_size).range(1..=4096));
            ui.end_row();
            ui.label("Momentum");
            ui.add(DragValue::new(&mut f.momentum).range(0.0..=0.999).speed(0.01));
            ui.end_row();
            ui.label("Weight decay");
            ui.add(DragValue::new(&mut f.weight_decay).range(0.0..=1.0).speed(0.0001).max_decimals(5));
            ui.end_row();
            ui.label("Warm-up epochs");
            ui.add(DragValue::new(&mut f.warmup_epochs).range(0..=100));
            ui.end_row();
            ui.label("Augment");
            ui.horizontal(|ui| {
                ui.checkbox(&mut f.augment, "crop + flip");
                ui.add_enabled(f.augment, DragValue::new(&mut f.views).range(1..=64).suffix(" views"));
            });
            ui.end_row();
            ui.label("Seed");
            ui.add(DragValue::new(&mut f.seed).range(0..=u32::MAX as u64));
            ui.end_row();
            let l = ui.label("Baseline");
            ui.add(TextEdit::singleline(&mut f.template).desired_width(150.0)).labelled_by(l.id)
                .on_hover_text("The hand-crafted template the learned context is compared with");
            ui.end_row();
        });
        ui.add_space(8.0);
        let missing = if state.model.is_none() {
            Some("Load a model first.")
        } else if state.dataset.is_none() {
            Some("Open a dataset first.")
        } else {
            None
        };
        let accent = ui.visuals().selection.bg_fill;
        let button = egui::Button::new(RichText::new(START_BUTTON).strong().color(Color32::WHITE)).fill(accent);
        if ui.add_enabled(missing.is_none(), button).clicked() {
            actions.push(Action::StartTraining(Box::new(f.to_run())));
        }
        if let Some(why) = missing {
            ui.weak(why);
        }
    }
}

fn runs_ui(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    if state.runs.is_empty() {
        ui.weak(format!("No runs yet: set the options on the left and press {START_BUTTON}. Runs stay here so their curves can be compared."));
        return;
    }
    for run in &state.runs {
        ui.horizontal(|ui| {
            let mut visible = run.visible;
            if ui.checkbox(&mut visible, "").on_hover_text("Show in the plots").changed() {
                actions.push(Action::ToggleRunVisible(run.number));
            }
            ui.label(RichText::new(&run.label).color(run_colour(run.number)).strong());
            status_ui(ui, run, actions);
        });
    }
}

fn status_ui(ui: &mut egui::Ui, run: &TrainRecord, actions: &mut Vec<Action>) {
    let n = run.number;
    let epochs = run.run.train.optim.epochs;
    match &run.status {
        RunStatus::Preparing { stage, done, total } => {
            if ui.button("Stop").clicked() {
                actions.push(Action::StopRun(n));
            }
            ui.spinner();
            ui.label(if *total > 0 { format!("{stage} {done}/{total}") } else { format!("{stage}…") });
        }
        RunStatus::Training | RunStatus::Paused => {
            let paused = matches!(run.status, RunStatus::Paused);
            let done = run.epochs.len();
            let eta = run.epochs.last().map_or(String::new(), |e| format!(" · ETA {}", seconds(e.eta_s)));
            let speed = run.throughput().map_or(String::new(), |t| format!(" · {t:.0} img/s"));
            // Buttons first: text whose width changes every epoch would otherwise move them under the pointer.
            if paused {
                if ui.button("Resume").clicked() {
                    actions.push(Action::ResumeRun(n));
                }
            } else if ui.button("Pause").clicked() {
                actions.push(Action::PauseRun(n));
            }
            if ui.button("Stop").clicked() {
                actions.push(Action::StopRun(n));
            }
            ui.add(egui::ProgressBar::new(done as f32 / epochs.max(1) as f32).desired_width(160.0).text(format!("epoch {done}/{epochs}")));
            ui.label(format!("{}{eta}{speed}", if paused { "paused" } else { "training" }));
        }
        RunStatus::Stopped => {
            ui.label(format!("stopped after {} of {epochs} epochs", run.epochs.len()));
            if ui.button("Resume").on_hover_text("Continue from the last finished epoch").clicked() {
                actions.push(Action::ResumeRun(n));
            }
        }
        RunStatus::Finished => {
            if let Some(o) = &run.outcome {
                let m = &o.metrics;
                ui.label(format!(
                    "test {:.1}% (hand-crafted {:.1}%) · {} epochs in {}",
                    100.0 * m.test_acc,
                    100.0 * m.handcrafted_test_acc,
                    m.epochs_run,
                    seconds(m.train_seconds)
                ));
            }
        }
        RunStatus::Failed(message) => {
            ui.colored_label(ui.visuals().error_fg_color, format!("failed: {message}"));
        }
    }
}

fn seconds(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.0} h {:.0} min", (s / 3600.0).floor(), (s % 3600.0) / 60.0)
    } else if s >= 60.0 {
        format!("{:.0} min {:.0} s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!("{s:.1} s")
    }
}

fn plots_ui(ui: &mut egui::Ui, runs: &[TrainRecord]) {
    let shown: Vec<&TrainRecord> = runs.iter().filter(|r| r.visible).collect();
    let height = ((ui.available_height() - 60.0) / 2.0).clamp(160.0, 320.0);
    let plot = |id: &'static str, y: &'static str| {
        Plot::new(id)
            .height(height)
            .legend(Legend::default())
            .x_axis_label("epoch")
            .y_axis_label(y)
            .link_axis(egui::Id::unique("train_plots_x"), [true, false])
            .auto_bounds([true, true])
    };
    let draw = |p: &mut egui_plot::PlotUi<'_>, which: &str| {
        for run in &shown {
            let colour = run_colour(run.number);
            for (plot, name, points) in series(run) {
                if plot != which || points.is_empty() {
                    continue;
                }
                let faint = name.ends_with("step loss") || name.ends_with(" train");
                let line = Line::new(name, PlotPoints::from(points)).color(if faint { colour.gamma_multiply(0.45) } else { colour });
                p.line(line.width(if faint { 1.0 } else { 2.0 }));
            }
        }
    };
    ui.strong("Loss");
    plot("train_loss", "loss").show(ui, |p| draw(p, "loss"));
    ui.columns(2, |cols| {
        cols[0].strong("Accuracy (%)");
        plot("train_accuracy", "%").include_y(0.0).include_y(100.0).height(height * 0.8).show(&mut cols[0], |p| draw(p, "accuracy"));
        cols[1].strong("Learning rate");
        plot("train_lr", "lr").include_y(0.0).height(height * 0.8).show(&mut cols[1], |p| draw(p, "lr"));
    });
}
