//! The Compare tab: hand-written templates one by one and as an ensemble, learned contexts and a linear
//! probe, scored on the same test split; per-class accuracy, a class's images with their top-5, and
//! the confusion matrix. Its second mode runs the base-to-novel protocol (`base_to_novel_panel`).

use egui::{Color32, Grid, ProgressBar, RichText, ScrollArea, TextEdit};

use crate::eval::zeroshot::DEFAULT_TEMPLATE;

use super::base_to_novel_panel::{BaseToNovelForm, RUN_BASE_TO_NOVEL};
use super::compare_job::{Comparison, MethodResult, ProbeShots};

use super::events::Action;
use super::state::{AppState, RunningEval};

pub const RUN_BUTTON: &str = "Run zero-shot";
/// Side of a picture in the class view.
const THUMB: f32 = 72.0;
/// Heading above the results table; tests wait for it.
pub const RESULTS_HEADING: &str = "Accuracy on the test split";

pub struct ComparePanel {
    /// As typed, blank lines included; cleaned when a run starts.
    pub templates: Vec<String>,
    pub linear_probe: bool,
    /// Feature-level baselines to fit beside the probe.
    pub tip_adapter: bool,
    pub tip_adapter_f: bool,
    pub clip_adapter: bool,
    /// The probe's (and Tip-Adapter's) training images: the learned prompts' shots by default, so the baseline is fair.
    pub probe_shots: ProbeShots,
    pub view: CompareView,
    pub mode: CompareMode,
    pub base_to_novel: BaseToNovelForm,
}

/// All classes on the test split, or base-to-novel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompareMode {
    #[default]
    AllClasses,
    BaseToNovel,
}

/// The mode buttons' labels.
pub const ALL_CLASSES_MODE: &str = "All classes";
pub const BASE_TO_NOVEL_MODE: &str = "Base-to-novel";

/// What of the results is looked at: a method's column, a class's images, the confusion matrix.
#[derive(Default)]
pub struct CompareView {
    pub method: usize,
    pub class: Option<usize>,
    pub confusion: bool,
}

impl Default for ComparePanel {
    fn default() -> Self {
        ComparePanel {
            templates: vec![DEFAULT_TEMPLATE.to_string()],
            linear_probe: false,
            tip_adapter: false,
            tip_adapter_f: false,
            clip_adapter: false,
            probe_shots: ProbeShots::SameAsLearned,
            view: CompareView::default(),
            mode: CompareMode::default(),
            base_to_novel: BaseToNovelForm::default(),
        }
    }
}

impl ComparePanel {
    /// The feature-level baselines ticked, in column order.
    pub fn adapter_methods(&self) -> Vec<crate::run::tip::AdapterMethod> {
        use crate::run::tip::AdapterMethod::*;
        [
            (self.tip_adapter, TipAdapter),
            (self.tip_adapter_f, TipAdapterF { epochs: 20 }),
            (self.clip_adapter, ClipAdapter { epochs: 200 }),
        ]
        .into_iter()
        .filter_map(|(on, m)| on.then_some(m))
        .collect()
    }

    /// The templates a run would use: trimmed, blanks dropped.
    pub fn cleaned_templates(&self) -> Vec<String> {
        self.templates
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// What Ctrl+Enter runs in this tab.
    pub fn run_action(&self) -> Option<Action> {
        match self.mode {
            CompareMode::AllClasses => Some(Action::RunZeroShot(self.cleaned_templates())),
            CompareMode::BaseToNovel => self
                .base_to_novel
                .request(self.cleaned_templates().first())
                .ok()
                .map(Action::RunBaseToNovel),
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
        super::fit_visible_width(ui);
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.mode, CompareMode::AllClasses, ALL_CLASSES_MODE)
                .on_hover_text("Every method on the test split of all classes");
            ui.selectable_value(&mut self.mode, CompareMode::BaseToNovel, BASE_TO_NOVEL_MODE)
                .on_hover_text(
                    "CoCoOp's protocol: learn on half the classes, score on both halves",
                );
        });
        if self.mode == CompareMode::BaseToNovel {
            return self.base_to_novel_ui(ui, state, actions);
        }
        ui.label("Prompt templates. {} is replaced by the class name; several templates are averaged (CLIP's prompt ensemble).");
        ui.add_space(4.0);
        self.templates_ui(ui);
        ui.add_space(6.0);
        learned_ui(ui, state, actions);
        ui.add_space(8.0);
        self.run_ui(ui, state, actions);
        ui.add_space(8.0);
        ui.separator();
        match &state.report {
            Some(report) => report_ui(ui, report, &mut self.view, state, actions),
            None if state.jobs.evaluation().is_some() => {}
            None if state.last_run_cancelled => {
                ui.weak("The last run was cancelled.");
            }
            None => {
                ui.weak(format!(
                    "No results yet: press {RUN_BUTTON} to see the accuracy overall and per class."
                ));
            }
        }
    }

    fn base_to_novel_ui(&mut self, ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
        ui.label("Zero-shot template ({} is the class name); the first one is used.");
        ui.add_space(4.0);
        self.templates_ui(ui);
        ui.add_space(6.0);
        let templates = self.cleaned_templates();
        let missing = super::base_to_novel_panel::missing(state);
        self.base_to_novel.ui(
            ui,
            templates.first(),
            missing,
            state.jobs.evaluation().is_some(),
            actions,
        );
        if let Some(running) = state.jobs.evaluation() {
            progress_ui(ui, running, actions);
        }
        ui.add_space(8.0);
        ui.separator();
        match &state.base_to_novel {
            Some(report) => super::base_to_novel_panel::report_ui(ui, report),
            None if state.jobs.evaluation().is_some() => {}
            None if state.last_run_cancelled => {
                ui.weak("The last run was cancelled.");
            }
            None if state.sweep.is_some() => {}
            None => {
                ui.weak(format!("No results yet: press {RUN_BASE_TO_NOVEL} to train the methods on the base classes."));
            }
        }
        super::base_to_novel_panel::sweep_ui(ui, state, actions);
    }

    fn templates_ui(&mut self, ui: &mut egui::Ui) {
        let mut remove = None;
        let removable = self.templates.len() > 1;
        for (i, template) in self.templates.iter_mut().enumerate() {
            ui.horizontal(|ui| {
                let label = ui.label(format!("Template {}", i + 1));
                ui.add(
                    TextEdit::singleline(template)
                        .hint_text(DEFAULT_TEMPLATE)
                        .desired_width(ui.available_width() - 90.0),
                )
                .labelled_by(label.id);
                let button = ui
                    .add_enabled(removable, egui::Button::new("Remove"))
                    .on_hover_text(format!("Remove template {}", i + 1));
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
        ui.horizontal_wrapped(|ui| {
            let can_run = missing.is_none() && state.jobs.evaluation().is_none();
            let accent = ui.visuals().selection.bg_fill;
            let button = egui::Button::new(RichText::new(RUN_BUTTON).strong().color(Color32::WHITE)).fill(accent);
            if ui.add_enabled(can_run, button).clicked() {
                actions.push(Action::RunZeroShot(templates));
            }
            ui.checkbox(&mut self.linear_probe, "linear probe").on_hover_text("Also fit a logistic regression on the train split's features");
            ui.checkbox(&mut self.tip_adapter, "Tip-Adapter").on_hover_text(
                "Training-free Tip-Adapter: a cache of the K-shot features (10 augmented views each) added to the first template's zero-shot \
                 logits. α and β are searched on the validation split (Tip-Adapter's published ImageNet script searches them on test).",
            );
            ui.checkbox(&mut self.tip_adapter_f, "Tip-Adapter-F").on_hover_text("Tip-Adapter with its cache keys trained (AdamW, 20 epochs); α and β searched on validation after");
            ui.checkbox(&mut self.clip_adapter, "CLIP-Adapter").on_hover_text("A bottleneck MLP on the image feature (reduction 4, residual ratio 0.2), trained 200 epochs with CoOp's SGD recipe");
            ui.add_enabled_ui(self.linear_probe || !self.adapter_methods().is_empty(), |ui| {
                egui::ComboBox::from_id_salt("probe_shots").selected_text(self.probe_shots.label()).show_ui(ui, |ui| {
                    for choice in ProbeShots::CHOICES {
                        ui.selectable_value(&mut self.probe_shots, choice, choice.label());
                    }
                })
                .response
                .on_hover_text("The probe's training images: the same K shots (and seed) as the learned prompts is the fair comparison");
            });
            match (missing, &state.dataset) {
                (Some(why), _) => {
                    ui.weak(why);
                }
                (None, Some(_)) => {
                    let learned = state.prompts.len();
                    ui.weak(format!(
                        "on the test split{}",
                        if learned > 0 { format!(", with {learned} learned prompt file{}", if learned == 1 { "" } else { "s" }) } else { String::new() }
                    ));
                }
                (None, None) => {}
            }
        });
        if let Some(running) = state.jobs.evaluation() {
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
        ui.add(
            ProgressBar::new(running.fraction())
                .desired_width(ui.available_width() - 80.0)
                .text(text)
                .animate(true),
        );
        if ui
            .add_enabled(!running.cancel_requested(), egui::Button::new("Cancel"))
            .clicked()
        {
            actions.push(Action::CancelZeroShot);
        }
    });
}

fn report_ui(
    ui: &mut egui::Ui,
    report: &Comparison,
    view: &mut CompareView,
    state: &AppState,
    actions: &mut Vec<Action>,
) {
    ui.heading(RESULTS_HEADING);
    let images = report.methods.first().map_or(0, |m| m.eval.total);
    let n = report.methods.len();
    ui.weak(format!(
        "{} ({images} images) · {} · {n} method{}",
        report.split,
        report.model,
        if n == 1 { "" } else { "s" }
    ));
    ui.add_space(4.0);
    view.method = view.method.min(report.methods.len().saturating_sub(1));
    let error = ui.visuals().error_fg_color;
    ScrollArea::horizontal()
        .id_salt("compare_table")
        .show(ui, |ui| {
            Grid::new("compare_per_class")
                .striped(true)
                .num_columns(1 + report.methods.len() + report.rejected.len())
                .min_col_width(80.0)
                .show(ui, |ui| {
                    ui.strong("class");
                    for (i, m) in report.methods.iter().enumerate() {
                        ui.selectable_value(&mut view.method, i, RichText::new(&m.name).strong())
                            .on_hover_text("Show this method's images and confusion matrix");
                    }
                    for r in &report.rejected {
                        ui.label(RichText::new(&r.name).strong().strikethrough())
                            .on_hover_text(&r.reason);
                    }
                    ui.end_row();
                    ui.strong("overall");
                    for m in &report.methods {
                        accuracy_bar(ui, m.eval.accuracy, m.eval.total);
                    }
                    for r in &report.rejected {
                        ui.colored_label(error, "not compared")
                            .on_hover_text(&r.reason);
                    }
                    ui.end_row();
                    for (c, name) in report.classes.iter().enumerate() {
                        let selected = view.class == Some(c);
                        if ui
                            .selectable_label(selected, name)
                            .on_hover_text("Show this class's images")
                            .clicked()
                        {
                            view.class = if selected { None } else { Some(c) };
                        }
                        for m in &report.methods {
                            let pc = &m.eval.per_class[c];
                            accuracy_bar(ui, pc.accuracy, pc.total);
                        }
                        ui.end_row();
                    }
                });
        });
    for r in &report.rejected {
        ui.colored_label(error, format!("{} not compared: {}", r.name, r.reason));
    }
    let Some(method) = report.methods.get(view.method) else {
        return;
    };
    ui.add_space(6.0);
    ui.horizontal(|ui| {
        ui.strong(format!(
            "{}: {} / {} correct",
            method.name, method.eval.correct, method.eval.total
        ));
        ui.checkbox(&mut view.confusion, "confusion matrix");
    });
    if view.confusion {
        confusion_ui(ui, &report.classes, &method.eval.confusion);
    }
    if let Some(c) = view.class {
        class_images_ui(ui, report, method, c, state, actions);
    }
}

/// The learned prompts files that join the comparison, each with what makes it unusable here (checked
/// against the model and dataset loaded now), and Reload / Unload.
fn learned_ui(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    if state.prompts.is_empty() {
        ui.weak("Learned prompts join the comparison when a run finishes or a file is loaded (Export tab).");
        return;
    }
    ui.strong("Learned prompts");
    for p in &state.prompts {
        ui.horizontal(|ui| {
            if ui
                .add_enabled(!state.jobs.loading_prompts(), egui::Button::new("Reload"))
                .on_hover_text(format!("Read {} again", p.label))
                .clicked()
            {
                actions.push(Action::ReloadPrompts(p.path.clone()));
            }
            if ui
                .button("Unload")
                .on_hover_text(format!("Remove {} from the comparison", p.label))
                .clicked()
            {
                actions.push(Action::UnloadPrompts(p.path.clone()));
            }
            ui.label(&p.label)
                .on_hover_text(p.path.display().to_string());
            // Last in the row and truncated (all of it on hover): a long class list would otherwise widen
            // the tab past the window.
            let model = state
                .model
                .as_ref()
                .map(|m| (m.clip.id.as_str(), m.fingerprint.as_str()));
            let classes = state
                .dataset
                .as_ref()
                .map(|d| d.folder.class_names.as_slice());
            let (text, colour) = match p.problem(model, classes) {
                Some(why) => (why, ui.visuals().error_fg_color),
                None => {
                    let shots = p
                        .meta
                        .shots
                        .map_or("all images".to_string(), |k| format!("{k}-shot"));
                    (
                        format!("{} classes · {shots}", p.meta.class_names.len()),
                        ui.visuals().weak_text_color(),
                    )
                }
            };
            ui.add(egui::Label::new(RichText::new(&text).color(colour)).truncate())
                .on_hover_text(text);
        });
    }
}

/// Counts of true (rows) against predicted (columns) classes, shaded by their share of the row.
fn confusion_ui(ui: &mut egui::Ui, classes: &[String], confusion: &[Vec<usize>]) {
    ScrollArea::both()
        .id_salt("confusion")
        .max_height(320.0)
        .show(ui, |ui| {
            Grid::new("confusion_matrix")
                .num_columns(1 + classes.len())
                .spacing([2.0, 2.0])
                .show(ui, |ui| {
                    ui.weak("true \\ predicted");
                    for c in classes {
                        ui.label(RichText::new(c).small());
                    }
                    ui.end_row();
                    for (t, row) in confusion.iter().enumerate() {
                        ui.label(RichText::new(&classes[t]).small());
                        let total: usize = row.iter().sum();
                        for (p, &n) in row.iter().enumerate() {
                            let share = if total == 0 {
                                0.0
                            } else {
                                n as f32 / total as f32
                            };
                            let base = if t == p {
                                Color32::from_rgb(40, 160, 80)
                            } else {
                                Color32::from_rgb(200, 60, 50)
                            };
                            let fill = if n == 0 {
                                Color32::TRANSPARENT
                            } else {
                                base.gamma_multiply(0.25 + 0.75 * share)
                            };
                            egui::Frame::new()
                                .fill(fill)
                                .inner_margin(4)
                                .show(ui, |ui| {
                                    ui.set_min_width(36.0);
                                    ui.label(n.to_string());
                                });
                        }
                        ui.end_row();
                    }
                });
        });
}

/// The class's test images under one method: the picture, correct / wrong and the top-5 with
/// probabilities.
fn class_images_ui(
    ui: &mut egui::Ui,
    report: &Comparison,
    method: &MethodResult,
    class: usize,
    state: &AppState,
    actions: &mut Vec<Action>,
) {
    ui.add_space(4.0);
    ui.strong(format!(
        "{}: images and top-5 predictions",
        report.classes[class]
    ));
    let shown: Vec<_> = method
        .eval
        .predictions
        .iter()
        .filter(|p| p.label == class)
        .collect();
    let missing: Vec<std::path::PathBuf> = shown
        .iter()
        .map(|p| std::path::PathBuf::from(&p.path))
        .filter(|p| state.wants_image(p))
        .collect();
    if !missing.is_empty() {
        actions.push(Action::WantImages(missing));
    }
    ScrollArea::vertical()
        .id_salt("class_images")
        .max_height(360.0)
        .show(ui, |ui| {
            Grid::new("class_images_grid")
                .striped(true)
                .num_columns(4)
                .show(ui, |ui| {
                    for p in shown {
                        let ok = p.predicted == p.label;
                        let side = egui::vec2(THUMB, THUMB);
                        match state.images.get(std::path::Path::new(&p.path)) {
                            Some(Some(texture)) => {
                                let frame = if ok {
                                    Color32::from_rgb(40, 170, 80)
                                } else {
                                    ui.visuals().error_fg_color
                                };
                                egui::Frame::new()
                                    .stroke(egui::Stroke::new(2.0, frame))
                                    .show(ui, |ui| {
                                        ui.add(
                                            egui::Image::new(texture)
                                                .fit_to_exact_size(side)
                                                .alt_text(&p.path),
                                        );
                                    });
                            }
                            Some(None) => {
                                ui.weak("unreadable");
                            }
                            None => {
                                ui.add_sized(side, egui::Spinner::new());
                            }
                        }
                        let mark = if ok {
                            RichText::new("correct").color(Color32::from_rgb(40, 170, 80))
                        } else {
                            RichText::new("wrong").color(ui.visuals().error_fg_color)
                        };
                        ui.label(mark.strong());
                        let file = std::path::Path::new(&p.path)
                            .file_name()
                            .map(|f| f.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        ui.label(file).on_hover_text(&p.path);
                        let top: Vec<String> = p
                            .top5
                            .iter()
                            .map(|(c, pr)| format!("{} {:.0}%", report.classes[*c], 100.0 * pr))
                            .collect();
                        ui.label(top.join(" · "));
                        ui.end_row();
                    }
                });
        });
}

/// A bar with the percentage on it. egui's `ProgressBar` always paints a rounded stub, which reads as
/// a few percent where the accuracy is zero.
fn accuracy_bar(ui: &mut egui::Ui, accuracy: f64, total: usize) {
    let text = if total == 0 {
        "no images".to_string()
    } else {
        format!("{:.1}%", 100.0 * accuracy)
    };
    let size = egui::vec2(180.0, ui.spacing().interact_size.y * 0.9);
    let (rect, response) = ui.allocate_exact_size(size, egui::Sense::hover());
    response.widget_info(|| {
        let mut info =
            egui::WidgetInfo::labeled(egui::Role::ProgressIndicator, ui.is_enabled(), &text);
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
        let filled = egui::Rect::from_min_size(
            rect.min,
            egui::vec2(
                rect.width() * accuracy.clamp(0.0, 1.0) as f32,
                rect.height(),
            ),
        );
        painter.rect_filled(filled, 3.0, visuals.selection.bg_fill);
    }
    let font = egui::TextStyle::Body.resolve(ui.style());
    painter.text(
        rect.left_center() + egui::vec2(6.0, 0.0),
        egui::Align2::LEFT_CENTER,
        text,
        font,
        visuals.strong_text_color(),
    );
}
