//! Compare's base-to-novel mode (CoCoOp's protocol): which methods, shots and seeds; the table of base,
//! novel and harmonic-mean accuracy (mean ± std over seeds, each seed on hover).

use egui::{Color32, DragValue, Grid, RichText};

use crate::run::base_to_novel::{Method, MethodName, Report};
use crate::run::sweep::{Collected, ShotsTable};

use super::compare_job::BaseToNovelRequest;
use super::events::Action;
use super::state::AppState;

pub const RUN_BASE_TO_NOVEL: &str = "Run base-to-novel";
/// Heading above the table; tests wait for it.
pub const B2N_HEADING: &str = "Base-to-novel accuracy";
pub const OPEN_SWEEP: &str = "Open sweep results…";

/// What each method's recipe is, in [`MethodName::ALL`] order.
const HELP: [&str; 6] = [
    "CoOp's recipe for the shots: M = 16 random context, SGD 0.002, batch 32",
    "CoOp plus λ = 8 times the pull of each class weight towards the template's",
    "\"a photo of a\" context plus the meta-net's per-image shift; 10 epochs, batch 1 (slow: one text pass per image)",
    "Training-free cache of the base shots (10 views); α, β searched on validation. Its cache holds no novel class, so it is zero-shot there",
    "Tip-Adapter with its cache keys trained 20 epochs; zero-shot on novel classes for the same reason",
    "A residual MLP on the image feature, 200 epochs; it applies to novel classes too",
];

pub struct BaseToNovelForm {
    /// Ticked methods, in [`MethodName::ALL`] order.
    pub methods: [bool; 6],
    /// K per base class.
    pub shots: usize,
    /// Seeds 1..=n.
    pub seeds: u64,
}

impl Default for BaseToNovelForm {
    fn default() -> Self {
        BaseToNovelForm {
            methods: [true, true, false, true, false, false],
            shots: 16,
            seeds: 3,
        }
    }
}

impl BaseToNovelForm {
    /// The request for the ticked methods with their papers' recipes, or why there is none.
    pub fn request(&self, template: Option<&String>) -> Result<BaseToNovelRequest, String> {
        let template = template.ok_or("Write a template for the zero-shot row.")?;
        let methods: Vec<Method> = MethodName::ALL
            .into_iter()
            .zip(self.methods)
            .filter(|(_, on)| *on)
            .map(|(name, _)| {
                Method::recipe(
                    name,
                    Some(self.shots),
                    template,
                    super::compare_job::SPLIT_SEED,
                )
            })
            .collect::<crate::Result<_>>()
            .map_err(|e| e.to_string())?;
        if methods.is_empty() {
            return Err("Tick at least one method.".into());
        }
        Ok(BaseToNovelRequest {
            template: template.clone(),
            methods,
            seeds: (1..=self.seeds.max(1)).collect(),
        })
    }

    /// The settings row and the Run button; `missing` says why nothing can run now.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        template: Option<&String>,
        missing: Option<&str>,
        busy: bool,
        actions: &mut Vec<Action>,
    ) {
        ui.weak(
            "The sorted classes split in two: methods learn on the first half (base) only, then are scored on the base test images \
             and, with the other half's names, on the novel ones; H is their harmonic mean. The first template gives the zero-shot row.",
        );
        ui.horizontal_wrapped(|ui| {
            for ((name, help), on) in MethodName::ALL
                .iter()
                .zip(HELP)
                .zip(self.methods.iter_mut())
            {
                let label = name.label();
                ui.checkbox(on, label).on_hover_text(help);
            }
        });
        let request = self.request(template);
        ui.horizontal_wrapped(|ui| {
            let l = ui.label("Shots per base class");
            ui.add(DragValue::new(&mut self.shots).range(1..=64))
                .labelled_by(l.id);
            let l = ui.label("Seeds");
            ui.add(DragValue::new(&mut self.seeds).range(1..=10))
                .labelled_by(l.id)
                .on_hover_text("Seeds 1, 2, … n: mean ± std over them");
            let why = missing
                .map(str::to_string)
                .or_else(|| request.as_ref().err().cloned());
            let accent = ui.visuals().selection.bg_fill;
            let button = egui::Button::new(
                RichText::new(RUN_BASE_TO_NOVEL)
                    .strong()
                    .color(Color32::WHITE),
            )
            .fill(accent);
            if ui.add_enabled(why.is_none() && !busy, button).clicked() {
                if let Ok(req) = request {
                    actions.push(Action::RunBaseToNovel(req));
                }
            }
            if let Some(why) = why {
                ui.weak(why);
            }
        });
    }
}

/// The table: a row per method, base / novel / H as mean ± std, each seed's numbers on hover.
pub fn report_ui(ui: &mut egui::Ui, report: &Report) {
    ui.heading(B2N_HEADING);
    table_ui(ui, report, "base_to_novel_table");
}

fn table_ui(ui: &mut egui::Ui, report: &Report, id: impl std::hash::Hash + std::fmt::Debug) {
    let shots = report.shots.map_or("all".to_string(), |k| k.to_string());
    ui.weak(format!(
        "base ({}): {} · novel ({}): {} · {shots} shots per base class · accuracy % (mean ± std over seeds)",
        report.base_classes.len(),
        report.base_classes.join(", "),
        report.novel_classes.len(),
        report.novel_classes.join(", ")
    ));
    ui.add_space(4.0);
    Grid::new(id)
        .striped(true)
        .num_columns(4)
        .min_col_width(90.0)
        .show(ui, |ui| {
            for h in ["method", "base", "novel", "H"] {
                ui.strong(h);
            }
            ui.end_row();
            let cell = |m: f64, s: f64| format!("{:.1} ± {:.1}", 100.0 * m, 100.0 * s);
            for r in &report.rows {
                let seeds: Vec<String> = r
                    .seeds
                    .iter()
                    .map(|(seed, b)| {
                        format!(
                            "seed {seed}: base {:.1}, novel {:.1}, H {:.1}",
                            100.0 * b.base,
                            100.0 * b.novel,
                            100.0 * b.harmonic
                        )
                    })
                    .collect();
                ui.label(&r.method).on_hover_text(seeds.join("\n"));
                ui.label(cell(r.mean.base, r.std.base));
                ui.label(cell(r.mean.novel, r.std.novel));
                ui.label(RichText::new(cell(r.mean.harmonic, r.std.harmonic)).strong());
                ui.end_row();
            }
        });
}

/// The button that opens a sweep's results, and its tables: one per model, dataset and shots, merged as
/// `sweep collect` merges them (no model or dataset needs to be loaded).
pub fn sweep_ui(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    ui.add_space(8.0);
    ui.horizontal_wrapped(|ui| {
        if ui
            .button(OPEN_SWEEP)
            .on_hover_text("A manifest written by `promptscope sweep plan`, its tasks run on a cluster (`sweep slurm|ray|k8s`)")
            .clicked()
        {
            actions.push(Action::Browse(super::events::PickTarget::Sweep));
        }
        if let Some((manifest, collected)) = &state.sweep {
            let n = match collected {
                Collected::BaseToNovel(t) => t.len(),
                Collected::FewShot(t) => t.len(),
            };
            ui.weak(format!("{}: {n} tables", manifest.display()));
        }
    });
    let name = |p: &std::path::Path| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let title = |ui: &mut egui::Ui, model: &str, data: &std::path::Path| {
        ui.add_space(6.0);
        ui.strong(format!(
            "{} on {}",
            name(std::path::Path::new(model)),
            name(data)
        ))
        .on_hover_text(format!("{model}\n{}", data.display()));
    };
    match &state.sweep {
        None => {}
        Some((_, Collected::BaseToNovel(tables))) => {
            for (i, t) in tables.iter().enumerate() {
                title(ui, &t.model, &t.data);
                table_ui(ui, &t.report, ("sweep_table", i));
            }
        }
        Some((_, Collected::FewShot(tables))) => {
            for (i, t) in tables.iter().enumerate() {
                title(ui, &t.model, &t.data);
                shots_ui(ui, t, i);
            }
        }
    }
}

/// A few-shot sweep's table: test accuracy % (mean ± std over seeds), a row per method, a column per
/// shots value, the template's zero-shot accuracy below.
fn shots_ui(ui: &mut egui::Ui, t: &ShotsTable, i: usize) {
    let mut shots: Vec<Option<usize>> = Vec::new();
    let mut methods: Vec<&str> = Vec::new();
    for r in &t.rows {
        if !shots.contains(&r.shots) {
            shots.push(r.shots);
        }
        if !methods.contains(&r.method.as_str()) {
            methods.push(&r.method);
        }
    }
    Grid::new(("sweep_shots", i))
        .striped(true)
        .num_columns(shots.len() + 1)
        .show(ui, |ui| {
            ui.strong("method");
            for k in &shots {
                ui.strong(k.map_or("all shots".to_string(), |k| format!("{k}-shot")));
            }
            ui.end_row();
            for m in &methods {
                ui.label(*m);
                for k in &shots {
                    match t.rows.iter().find(|r| r.method == *m && r.shots == *k) {
                        Some(r) => {
                            ui.label(format!("{:.1} ± {:.1}", 100.0 * r.mean, 100.0 * r.std))
                        }
                        None => ui.label("–"),
                    };
                }
                ui.end_row();
            }
        });
    for (template, acc) in &t.zero_shot {
        ui.weak(format!("zero-shot \"{template}\": {:.1} %", 100.0 * acc));
    }
}

/// Whether the app can run base-to-novel now, and if not why.
pub fn missing(state: &AppState) -> Option<&'static str> {
    match (&state.model, &state.dataset) {
        (None, _) => Some("Load a model first."),
        (_, None) => Some("Open a dataset first."),
        (_, Some(d)) if d.folder.num_classes() < 2 => {
            Some("Base-to-novel needs at least two classes.")
        }
        _ => None,
    }
}
