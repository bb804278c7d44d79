//! The Align tab's *Evaluate maps*: the pointing game of the chosen methods as a cancellable job, and
//! its table.

use super::*;

impl AlignPanel {
    /// The methods Evaluate maps scores: every one, or the compared ones (else the picked one).
    pub fn eval_methods(&self) -> Vec<MapMethod> {
        if self.eval_all {
            MapMethod::ALL.to_vec()
        } else if self.compare_on && !self.compare.is_empty() {
            self.compare.clone()
        } else {
            vec![self.method]
        }
    }

    /// Evaluate maps: the pointing game of the methods on generated scenes, as a cancellable job with
    /// progress, then the table method × hit rate × ms per map.
    pub(super) fn evaluate_ui(
        &mut self,
        ui: &mut egui::Ui,
        state: &AppState,
        actions: &mut Vec<Action>,
    ) {
        // Opens by itself when an evaluation starts (one asked at start-up included), once per job.
        let job = state.jobs.maps_evaluation_job();
        let open = (job.is_some() && job != self.eval_opened_for).then_some(true);
        if job.is_some() {
            self.eval_opened_for = job;
        }
        egui::CollapsingHeader::new("Evaluate maps")
            .open(open)
            .show(ui, |ui| {
                ui.weak("The pointing game: for every object of captioned scenes drawn at the model's size, does the map of its shape word (or of its whole prompt) peak on it? The same as `promptscope pointing --methods`.");
                let root = state.dataset.as_ref().map(|d| d.folder.root.clone());
                ui.horizontal_wrapped(|ui| {
                    ui.radio_value(&mut self.eval_on_dataset, false, "generated scenes");
                    ui.add_enabled(
                        root.is_some(),
                        egui::RadioButton::new(self.eval_on_dataset, "the open dataset's masked images"),
                    )
                    .on_hover_text("Images with NAME.mask.png beside them (white on the object); the prompt is \"a photo of a {class}.\"")
                    .clicked()
                    .then(|| self.eval_on_dataset = true);
                });
                ui.horizontal_wrapped(|ui| {
                    let l = ui.label("Scenes");
                    ui.add(egui::DragValue::new(&mut self.eval_count).range(1..=5000))
                        .labelled_by(l.id);
                    let l = ui.label("seed");
                    ui.add(egui::DragValue::new(&mut self.eval_seed)).labelled_by(l.id);
                    ui.checkbox(&mut self.eval_all, "all methods")
                        .on_hover_text("Untick to score only the compared methods (or the picked one)");
                    match state.jobs.maps_evaluation() {
                        Some(run) => {
                            let frac = if run.total > 0 {
                                run.done as f32 / run.total as f32
                            } else {
                                0.0
                            };
                            ui.add(
                                egui::ProgressBar::new(frac)
                                    .desired_width(160.0)
                                    .text(format!("{} {}/{}", run.stage, run.done, run.total)),
                            );
                            if ui.button("Cancel evaluation").clicked() {
                                actions.push(Action::CancelMapsEval);
                            }
                        }
                        None => {
                            if ui
                                .button("Evaluate maps")
                                .on_hover_text("Play the pointing game of the methods on generated scenes")
                                .clicked()
                            {
                                actions.push(Action::EvaluateMaps(
                                    crate::app::maps_eval_job::MapsEvalRequest {
                                        methods: self.eval_methods(),
                                        count: self.eval_count,
                                        seed: self.eval_seed,
                                        masked: root.clone().filter(|_| self.eval_on_dataset),
                                    },
                                ));
                            }
                        }
                    }
                });
                if let Some(r) = &state.maps_eval {
                    ui.label(format!(
                        "{} scenes, {} objects; peak within {:.1} px of the object (strict: the peak patch at least a quarter on it)",
                        r.scenes, r.objects, r.tolerance_px
                    ));
                    egui::Grid::new("maps eval").striped(true).num_columns(4).show(ui, |ui| {
                        for h in ["method", "pointing", "strict", "ms per map"] {
                            ui.strong(h);
                        }
                        ui.end_row();
                        ui.label("random patch");
                        ui.label(format!("{:.1}%", 100.0 * r.point_chance));
                        ui.label(format!("{:.1}%", 100.0 * r.chance));
                        ui.label("–");
                        ui.end_row();
                        for m in &r.methods {
                            ui.label(m.method.name()).on_hover_text(method_help(m.method));
                            ui.label(RichText::new(format!("{:.1}%", 100.0 * m.point_rate)).monospace());
                            ui.label(RichText::new(format!("{:.1}%", 100.0 * m.hit_rate)).monospace());
                            ui.label(RichText::new(format!("{:.2}", m.ms_per_map)).monospace());
                            ui.end_row();
                        }
                    });
                }
            });
    }
}

/// One line on what a method is, for its tooltip.
pub(super) fn method_help(m: MapMethod) -> &'static str {
    match m {
        MapMethod::Token => "FILIP token-wise: each word's cosine with each output patch token",
        MapMethod::Maskclip => {
            "MaskCLIP (official): the last block's value path, residual and MLP kept"
        }
        MapMethod::MaskclipClearclip => {
            "MaskCLIP as ClearCLIP runs it: the value path alone (the former value mode)"
        }
        MapMethod::Clearclip => "ClearCLIP: q–q attention in the last block, no residual, no MLP",
        MapMethod::Sclip => "SCLIP: q–q plus k–k attention in the last block",
        MapMethod::Naclip => {
            "NACLIP: k–k attention plus a Gaussian neighbourhood, no residual, no MLP"
        }
        MapMethod::Gem => "GEM: self-self attention path over the last six blocks",
        MapMethod::Surgery => {
            "CLIP Surgery: v–v path over the last six blocks, the empty text removed"
        }
        MapMethod::Rollout => "Attention rollout: the same for every text (a prior, not a pointer)",
        MapMethod::Chefer => "Chefer: attention weighted by its gradient (one backward per text)",
        MapMethod::Gradcam => {
            "Grad-CAM on the tokens entering the last block (one backward per text)"
        }
        MapMethod::Legrad => "LeGrad: each last block's score gradient on its own attention",
    }
}
