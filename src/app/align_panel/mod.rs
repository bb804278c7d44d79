//! The Align tab: an image with the alignment map of one prompt word drawn over it by the GPU shader
//! (click a word to switch), or the prompt's map under another explanation method (the *Method*
//! picker: MaskCLIP, ClearCLIP, SCLIP, NACLIP, GEM, CLIP Surgery, rollout, Chefer, Grad-CAM, LeGrad),
//! opacity, threshold and colormap; *Compare methods* draws 2–6 methods' maps of the same image and
//! text in a grid, each on its own colour scale; beside the main map SsVP's patch
//! attention with the kept patches outlined, a K slider, and the top-5 classes with and without SsVP.
//! Side by side, the class word's map under the hand-crafted prompt and under each learned context,
//! each with the class's probability, so a map of an absent object is not read as a detection.

use std::sync::Arc;

use egui::{Color32, RichText, Sense, Stroke};

use crate::align::maps::{MapMethod, MapOptions, MethodMaps};
use crate::align::AlignConfig;
use crate::render::{Colormap, GridMap, HeatmapStyle};

use super::align_job::{named_word, AlignRequest, AlignView, ClassMap, PromptChoice};
use super::events::Action;
use super::overlay::{OverlayCallback, OverlayData};
use super::state::AppState;
use evaluate::method_help;

mod evaluate;
mod views;

/// Where the learned prompts come from: a finished run or a loaded file, by its path.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnedSource {
    pub label: String,
    pub path: std::path::PathBuf,
    pub class_names: Vec<String>,
}

pub struct AlignPanel {
    /// Index into the dataset's evaluation images.
    pub image: usize,
    /// An image file dropped or opened instead of the dataset's.
    pub image_file: Option<std::path::PathBuf>,
    /// Hand-crafted text (`{}` is the class) or a learned prompt.
    pub learned: Option<usize>,
    pub text: String,
    /// The class the prompt names, by index into the classes shown; None: the image's own class.
    pub class: Option<usize>,
    /// Show the class word's map under the hand-crafted prompt and each learned file, side by side.
    pub side_by_side: bool,
    pub config: AlignConfig,
    pub k: usize,
    pub word: usize,
    pub style: HeatmapStyle,
    /// The main map's explanation method.
    pub method: MapMethod,
    /// Compare methods: the methods drawn in a grid (2–6 of them) when `compare_on`.
    pub compare_on: bool,
    pub compare: Vec<MapMethod>,
    pub map_options: MapOptions,
    /// Evaluate maps: how many scenes, from which seed, and whether every method (else the compared).
    pub eval_count: usize,
    pub eval_seed: u64,
    pub eval_all: bool,
    /// Evaluate on the open dataset's masked images instead of generated scenes.
    pub eval_on_dataset: bool,
    /// The evaluation job the header last opened itself for.
    eval_opened_for: Option<super::events::JobId>,
    /// The compare grid's maps uploaded for a view.
    compare_overlays: Option<(u64, Vec<Option<Arc<OverlayData>>>)>,
    /// The tokens of the last prompt shown: a new prompt starts on its class word.
    shown_tokens: Vec<String>,
    /// The map uploaded to the GPU, rebuilt when the view or the word changes.
    overlays: Option<(u64, usize, Arc<OverlayData>, Arc<OverlayData>)>,
    /// The side-by-side maps uploaded for a view.
    side_overlays: Option<(u64, Vec<Option<Arc<OverlayData>>>)>,
    next_overlay_id: u64,
    /// Without wgpu: the CPU-drawn picture per slot, with the content and style it was drawn for.
    cpu_overlays: CpuOverlays,
}

type CpuOverlays = std::collections::HashMap<u64, (u64, HeatmapStyle, egui::TextureHandle)>;

/// The methods Compare methods opens with: FILIP's, a training-free one per family and a gradient one.
const COMPARE_DEFAULT: [MapMethod; 4] = [
    MapMethod::Token,
    MapMethod::MaskclipClearclip,
    MapMethod::Surgery,
    MapMethod::Chefer,
];

pub use crate::startup::COMPARE_MAX;

impl Default for AlignPanel {
    fn default() -> Self {
        AlignPanel {
            image: 0,
            image_file: None,
            learned: None,
            text: "a photo of a {}.".into(),
            class: None,
            side_by_side: false,
            config: AlignConfig::default(),
            k: 0,
            word: 0,
            style: HeatmapStyle::default(),
            method: MapMethod::Token,
            compare_on: false,
            compare: COMPARE_DEFAULT.to_vec(),
            map_options: MapOptions::default(),
            eval_count: 200,
            eval_seed: 1000,
            eval_all: true,
            eval_on_dataset: false,
            eval_opened_for: None,
            compare_overlays: None,
            shown_tokens: Vec::new(),
            overlays: None,
            side_overlays: None,
            next_overlay_id: 1,
            cpu_overlays: CpuOverlays::new(),
        }
    }
}

impl AlignPanel {
    /// The classes prompts can name: the dataset's, else (an image dropped without a dataset) the first
    /// learned file's.
    fn classes<'a>(state: &'a AppState, sources: &'a [LearnedSource]) -> &'a [String] {
        match (&state.dataset, sources.first()) {
            (Some(ds), _) => &ds.folder.class_names,
            (None, Some(src)) => &src.class_names,
            (None, None) => &[],
        }
    }

    /// The image shown and its class, if it has one: a dropped file, else the dataset's current image.
    fn current_image(&self, state: &AppState) -> Option<(std::path::PathBuf, Option<usize>)> {
        if let Some(file) = &self.image_file {
            return Some((file.clone(), None));
        }
        let samples = &state.dataset.as_ref()?.test;
        let sample = samples.get(self.image.min(samples.len().checked_sub(1)?))?;
        Some((sample.path.clone(), Some(sample.label)))
    }

    /// The request to send now: the current choices' when neither shown, nor under way, nor failed
    /// (a failed one waits for the user: Retry, or another choice).
    pub fn new_request(&self, state: &AppState, sources: &[LearnedSource]) -> Option<AlignRequest> {
        let req = self.request(state, sources)?;
        let shown = state.align.as_ref().map(|v| &v.request);
        let failed = state.align_failed.as_ref().map(|(r, _)| r);
        let fresh = shown != Some(&req) && state.jobs.aligning().is_none() && failed != Some(&req);
        fresh.then_some(req)
    }

    /// What the current choices ask the worker to compute; None without a model or an image.
    pub fn request(&self, state: &AppState, sources: &[LearnedSource]) -> Option<AlignRequest> {
        let model = state.model.as_ref()?;
        let (image, label) = self.current_image(state)?;
        let classes = Self::classes(state, sources);
        // A chosen class that the classes no longer have (another dataset) falls back to the image's.
        let class = self
            .class
            .filter(|&c| c < classes.len())
            .or(label)
            .and_then(|c| classes.get(c))
            .cloned();
        let n = model.clip.model().ok()?.vision.config.num_patches();
        let prompt = match self.learned.and_then(|i| sources.get(i)) {
            Some(src) => {
                let c = class
                    .as_ref()
                    .and_then(|c| src.class_names.iter().position(|n| n == c))
                    .unwrap_or(0);
                PromptChoice::Learned {
                    file: src.path.clone(),
                    class: c,
                }
            }
            None => PromptChoice::Text(class.as_ref().map_or_else(
                || self.text.replace("{}", "").trim().to_string(),
                |c| crate::eval::zeroshot::fill(&self.text, c),
            )),
        };
        let side_by_side =
            (self.side_by_side && !sources.is_empty() && class.is_some()).then(|| {
                sources
                    .iter()
                    .map(|s| (s.label.clone(), s.path.clone()))
                    .collect()
            });
        Some(AlignRequest {
            image,
            prompt,
            class,
            config: self.config,
            k: Some(if self.k == 0 {
                crate::align::ssvp::default_k(n)
            } else {
                self.k.min(n)
            }),
            classes: classes.to_vec(),
            // The Align tab's own text is the template of the hand-crafted prompt's class weights, so its
            // top-5 and probabilities are those of the prompt whose map is shown.
            templates: vec![self.text.clone()],
            side_by_side,
            method: self.method,
            compare: if self.compare_on {
                self.compare.clone()
            } else {
                Vec::new()
            },
            options: self.map_options,
        })
    }

    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        state: &AppState,
        sources: &[LearnedSource],
        gpu: Option<egui_wgpu::wgpu::TextureFormat>,
        actions: &mut Vec<Action>,
    ) {
        let Some(model) = &state.model else {
            ui.weak("Load a model and open a dataset (or drop an image here) to see which image patches each word of a prompt aligns with.");
            return;
        };
        super::fit_visible_width(ui);
        let samples = state
            .dataset
            .as_ref()
            .map_or(&[][..], |d| d.test.as_slice());
        if samples.is_empty() && self.image_file.is_none() {
            ui.weak(
                "Open a dataset with images, or drop an image file onto the window, to align it.",
            );
            return;
        }
        self.image = self.image.min(samples.len().saturating_sub(1));
        let Ok(clip) = model.clip.model() else {
            ui.weak(format!("{} is a {} model: the maps need CLIP's token-level access. Load a CLIP or FILIP model to align words with patches.", model.clip.id, model.clip.family().name()));
            return;
        };
        let n = clip.vision.config.num_patches();
        if self.k == 0 {
            self.k = crate::align::ssvp::default_k(n);
        }
        self.controls_ui(ui, state, samples, sources, n, actions);
        self.evaluate_ui(ui, state, actions);
        ui.separator();
        if let Some((req, why)) = &state.align_failed {
            if self.request(state, sources).as_ref() == Some(req) {
                ui.colored_label(
                    ui.visuals().error_fg_color,
                    format!("Could not align {}: {why}", req.image.display()),
                );
                if ui
                    .button("Retry")
                    .on_hover_text("Try this alignment again")
                    .clicked()
                {
                    actions.push(Action::RetryAlign);
                }
                return;
            }
        }
        match &state.align {
            Some(view) if self.side_by_side && !view.side_by_side.is_empty() => {
                self.side_by_side_ui(ui, view, gpu)
            }
            Some(view) => self.view_ui(ui, view, gpu, actions),
            None if state.jobs.aligning().is_some() => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("aligning…");
                });
            }
            None => {
                ui.weak("Nothing aligned yet.");
            }
        }
    }

    fn controls_ui(
        &mut self,
        ui: &mut egui::Ui,
        state: &AppState,
        samples: &[crate::data::Sample],
        sources: &[LearnedSource],
        n: usize,
        actions: &mut Vec<Action>,
    ) {
        let classes = Self::classes(state, sources);
        ui.horizontal(|ui| {
            ui.label("Image");
            match &self.image_file {
                Some(file) => {
                    let name = file
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    ui.label(RichText::new(format!("dropped: {name}")).strong())
                        .on_hover_text(file.display().to_string());
                    if !samples.is_empty()
                        && ui
                            .button("Dataset images")
                            .on_hover_text("Back to the dataset's images")
                            .clicked()
                    {
                        self.image_file = None;
                    }
                }
                None => {
                    if ui
                        .button("Previous")
                        .on_hover_text("Previous image")
                        .clicked()
                    {
                        self.image = self.image.checked_sub(1).unwrap_or(samples.len() - 1);
                    }
                    if ui.button("Next").on_hover_text("Next image").clicked() {
                        self.image = (self.image + 1) % samples.len();
                    }
                    let s = &samples[self.image];
                    let name = s
                        .path
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    ui.label(format!(
                        "{} / {} · {} · {name}",
                        self.image + 1,
                        samples.len(),
                        classes.get(s.label).map_or("", String::as_str)
                    ));
                }
            }
            if ui
                .button("Open image…")
                .on_hover_text("Align an image file (or drop one onto the window)")
                .clicked()
            {
                actions.push(Action::Browse(super::events::PickTarget::Image));
            }
        });
        ui.horizontal(|ui| {
            ui.label("Prompt");
            ui.radio_value(&mut self.learned, None, "hand-crafted");
            for (i, src) in sources.iter().enumerate() {
                ui.radio_value(&mut self.learned, Some(i), &src.label);
            }
            ui.separator();
            ui.add_enabled(!sources.is_empty(), egui::Checkbox::new(&mut self.side_by_side, "side by side"))
                .on_hover_text("The class word's map under the hand-crafted prompt and under each learned context, for the same image");
        });
        ui.horizontal(|ui| {
            if self.learned.is_none() || self.side_by_side {
                let l = ui.label("Text");
                ui.text_edit_singleline(&mut self.text)
                    .labelled_by(l.id)
                    .on_hover_text("{} is replaced by the class");
            }
            let image_class = if self.image_file.is_none() {
                samples.get(self.image).map(|s| s.label)
            } else {
                None
            };
            let shown = |c: Option<usize>| match (c, image_class) {
                (None, Some(l)) => format!(
                    "the image's ({})",
                    classes.get(l).map_or("", String::as_str)
                ),
                (None, None) => classes
                    .first()
                    .cloned()
                    .map_or("none".into(), |c| format!("{c} (first)")),
                (Some(c), _) => classes.get(c).cloned().unwrap_or_default(),
            };
            egui::ComboBox::from_label("Class")
                .selected_text(shown(self.class))
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.class, None, shown(None));
                    for (i, c) in classes.iter().enumerate() {
                        ui.selectable_value(&mut self.class, Some(i), c);
                    }
                });
        });
        // Wraps rather than widening the tab past the window (the maps below size to the tab's width).
        ui.horizontal_wrapped(|ui| {
            let l = ui.label("Method");
            egui::ComboBox::from_id_salt("map method")
                .selected_text(self.method.name())
                .show_ui(ui, |ui| {
                    for m in MapMethod::ALL {
                        let why = state.model.as_ref().and_then(|l| m.unavailable(&l.clip));
                        let r = ui.add_enabled(
                            why.is_none(),
                            egui::Button::selectable(self.method == m, m.name()),
                        );
                        let r = match &why {
                            Some(why) => r.on_disabled_hover_text(why),
                            None => r.on_hover_text(method_help(m)),
                        };
                        if r.clicked() {
                            self.method = m;
                        }
                    }
                })
                .response
                .labelled_by(l.id);
            ui.checkbox(&mut self.compare_on, "Compare methods")
                .on_hover_text("The same image and text under several methods, side by side, each on its own colour scale");
            ui.separator();
            let l = ui.label("Opacity");
            ui.add(egui::Slider::new(&mut self.style.opacity, 0.0..=1.0).fixed_decimals(2)).labelled_by(l.id);
            let l = ui.label("Threshold");
            ui.add(egui::Slider::new(&mut self.style.threshold, 0.0..=1.0).fixed_decimals(2))
                .labelled_by(l.id)
                .on_hover_text("Colour only where the map is at least this share of its range; the rest shows the image");
            egui::ComboBox::from_label("colormap").selected_text(self.style.colormap.name()).show_ui(ui, |ui| {
                for c in Colormap::ALL {
                    ui.selectable_value(&mut self.style.colormap, c, c.name());
                }
            });
            ui.checkbox(&mut self.style.grid_lines, "grid");
            ui.separator();
            let l = ui.label("SsVP K");
            ui.add(egui::Slider::new(&mut self.k, 1..=n.max(1))).labelled_by(l.id);
        });
        if self.compare_on {
            ui.horizontal_wrapped(|ui| {
                ui.label(format!("Compare (up to {COMPARE_MAX})"));
                for m in MapMethod::ALL {
                    let on = self.compare.contains(&m);
                    let room = on || self.compare.len() < COMPARE_MAX;
                    let why = state.model.as_ref().and_then(|l| m.unavailable(&l.clip));
                    let mut checked = on;
                    let r = ui.add_enabled(
                        room && why.is_none(),
                        egui::Checkbox::new(&mut checked, m.name()),
                    );
                    let r = match why {
                        Some(why) => r.on_disabled_hover_text(why),
                        None if !room => {
                            r.on_disabled_hover_text(format!("At most {COMPARE_MAX} maps at once"))
                        }
                        None => r.on_hover_text(method_help(m)),
                    };
                    if r.changed() {
                        if checked {
                            self.compare.push(m);
                        } else {
                            self.compare.retain(|&x| x != m);
                        }
                    }
                }
            });
        }
    }
}
