//! The Train tab's runs: each one's status and buttons, and the live loss / accuracy / lr curves.

use super::*;

pub(super) fn runs_ui(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    if state.runs.is_empty() {
        ui.weak(format!("No runs yet: set the options on the left and press {START_BUTTON}. Runs stay here so their curves can be compared."));
        return;
    }
    for run in &state.runs {
        ui.horizontal_wrapped(|ui| {
            let mut visible = run.visible;
            if ui
                .checkbox(&mut visible, "")
                .on_hover_text("Show in the plots")
                .changed()
            {
                actions.push(Action::ToggleRunVisible(run.number));
            }
            ui.label(
                RichText::new(&run.label)
                    .color(run_colour(run.number))
                    .strong(),
            );
            status_ui(ui, run, actions);
        });
    }
}

pub(super) fn status_ui(ui: &mut egui::Ui, run: &TrainRecord, actions: &mut Vec<Action>) {
    let n = run.number;
    let epochs = run.run.total_epochs();
    match &run.status {
        RunStatus::Preparing { stage, done, total } => {
            if ui.button("Stop").clicked() {
                actions.push(Action::StopRun(n));
            }
            ui.spinner();
            ui.label(if *total > 0 {
                format!("{stage} {done}/{total}")
            } else {
                format!("{stage}…")
            });
        }
        RunStatus::Training | RunStatus::Paused => {
            let paused = matches!(run.status, RunStatus::Paused);
            let done = run.epochs.len();
            let eta = run
                .epochs
                .last()
                .map_or(String::new(), |e| format!(" · ETA {}", seconds(e.eta_s)));
            let speed = run
                .throughput()
                .map_or(String::new(), |t| format!(" · {t:.0} img/s"));
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
            ui.add(
                egui::ProgressBar::new(done as f32 / epochs.max(1) as f32)
                    .desired_width(160.0)
                    .text(format!("epoch {done}/{epochs}")),
            );
            ui.label(format!(
                "{}{eta}{speed}",
                if paused { "paused" } else { "training" }
            ));
        }
        RunStatus::Stopped => {
            ui.label(format!(
                "stopped after {} of {epochs} epochs",
                run.epochs.len()
            ));
            if ui
                .button("Resume")
                .on_hover_text("Continue from the last finished epoch")
                .clicked()
            {
                actions.push(Action::ResumeRun(n));
            }
        }
        RunStatus::Finished => {
            if let Some(o) = &run.outcome {
                ui.label(format!("{} in {}", o.summary, seconds(o.train_seconds)));
            }
        }
        RunStatus::Failed(message) => {
            ui.colored_label(ui.visuals().error_fg_color, format!("failed: {message}"));
        }
    }
}

pub(super) fn seconds(s: f64) -> String {
    if s >= 3600.0 {
        format!(
            "{:.0} h {:.0} min",
            (s / 3600.0).floor(),
            (s % 3600.0) / 60.0
        )
    } else if s >= 60.0 {
        format!("{:.0} min {:.0} s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!("{s:.1} s")
    }
}

pub(super) fn plots_ui(ui: &mut egui::Ui, runs: &[TrainRecord]) {
    let shown: Vec<&TrainRecord> = runs.iter().filter(|r| r.visible).collect();
    let height = ((ui.available_height() - 60.0) / 2.0).clamp(160.0, 320.0);
    // Each legend in the corner its curves leave empty (loss falls to the right, accuracy rises); the
    // narrow lr plot has none: its one curve per run has the run's colour, named in the list above.
    let plot = |id: &'static str, y: &'static str, corner: Option<Corner>| {
        let p = Plot::new(id)
            .height(height)
            .x_axis_label("epoch")
            .y_axis_label(y)
            .link_axis(egui::Id::unique("train_plots_x"), [true, false])
            .auto_bounds([true, true]);
        match corner {
            Some(c) => p.legend(Legend::default().position(c)),
            None => p,
        }
    };
    let draw = |p: &mut egui_plot::PlotUi<'_>, which: &str| {
        for run in &shown {
            let colour = run_colour(run.number);
            for (plot, name, points) in series(run) {
                if plot != which || points.is_empty() {
                    continue;
                }
                let faint = name.ends_with("step loss") || name.ends_with(" train");
                // A later stage of the same run: same colour, dashed.
                let style = if name.contains(" stage 2 ") {
                    LineStyle::dashed_dense()
                } else {
                    LineStyle::Solid
                };
                let line = Line::new(name, PlotPoints::from(points))
                    .color(if faint {
                        colour.gamma_multiply(0.45)
                    } else {
                        colour
                    })
                    .style(style);
                p.line(line.width(if faint { 1.0 } else { 2.0 }));
            }
        }
    };
    ui.strong("Loss");
    plot("train_loss", "loss", Some(Corner::RightTop)).show(ui, |p| draw(p, "loss"));
    ui.columns(2, |cols| {
        cols[0].strong("Accuracy (%)");
        plot("train_accuracy", "%", Some(Corner::RightBottom))
            .include_y(0.0)
            .include_y(100.0)
            .height(height * 0.8)
            .show(&mut cols[0], |p| draw(p, "accuracy"));
        cols[1].strong("Learning rate");
        plot("train_lr", "lr", None)
            .include_y(0.0)
            .height(height * 0.8)
            .show(&mut cols[1], |p| draw(p, "lr"));
    });
}
