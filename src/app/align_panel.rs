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

/// How many maps the compare grid draws at most.
pub const COMPARE_MAX: usize = 6;

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
        let samples = state.dataset.as_ref()?.folder.eval_samples();
        let sample = samples.get(self.image.min(samples.len().checked_sub(1)?))?;
        Some((sample.path.clone(), Some(sample.label)))
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
            .map_or(&[][..], |d| d.folder.eval_samples());
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

    fn view_ui(
        &mut self,
        ui: &mut egui::Ui,
        view: &AlignView,
        gpu: Option<egui_wgpu::wgpu::TextureFormat>,
        actions: &mut Vec<Action>,
    ) {
        let a = &view.alignment;
        if a.text_tokens != self.shown_tokens {
            // A new prompt opens on the word that names the object, the map a user came for; "a" is
            // rarely it.
            self.word = named_word(&a.text_tokens);
            self.shown_tokens = a.text_tokens.clone();
        }
        self.word = self.word.min(a.text_tokens.len().saturating_sub(1));
        ui.horizontal_wrapped(|ui| {
            ui.label("Word");
            for (r, token) in a.text_tokens.iter().enumerate() {
                if ui
                    .selectable_label(self.word == r, super::glyphs::displayable(token))
                    .on_hover_text(format!("Show the map of word {r}"))
                    .clicked()
                {
                    self.word = r;
                }
            }
        });
        ui.label(format!(
            "s_I {:.4} · s_T {:.4} · {} mode · kept fraction {}",
            a.s_i, a.s_t, a.mode, a.top_fraction
        ));
        if let (Some(p), Some(class)) = (view.class_prob, &view.request.class) {
            presence_ui(ui, class, p, view.global.first());
        }
        if !view.request.compare.is_empty() {
            // Compare methods replaces the main map and SsVP's: the grid is what was asked for.
            self.compare_ui(ui, view, gpu);
            ui.add_space(6.0);
            ui.columns(2, |cols| {
                top5_ui(&mut cols[0], "Top-5, global feature", &view.global);
                top5_ui(&mut cols[1], "Top-5, SsVP feature", &view.with_ssvp);
            });
            return;
        }
        let key = (view.id, self.word);
        let method_maps = (self.method != MapMethod::Token)
            .then(|| view.maps.iter().find(|(m, _)| *m == self.method))
            .flatten();
        if let Some((m, Err(why))) = method_maps {
            ui.colored_label(ui.visuals().error_fg_color, format!("{m}: {why}"));
            return;
        }
        if self
            .overlays
            .as_ref()
            .is_none_or(|(v, w, _, _)| (*v, *w) != key)
        {
            let word = match method_maps {
                Some((_, Ok(m))) => GridMap::new(&m.maps[0], m.grid),
                _ => a.word_map(self.word).and_then(|m| GridMap::new(&m, a.grid)),
            };
            let attention = GridMap::new(&view.ssvp.attention, view.ssvp.grid);
            match (word, attention) {
                (Ok(word), Ok(attention)) => {
                    let (w, s) = (
                        self.overlay_data(view, word),
                        self.overlay_data(view, attention),
                    );
                    self.overlays = Some((key.0, key.1, w, s));
                }
                (Err(e), _) | (_, Err(e)) => {
                    actions.push(Action::ShowError(format!("Alignment map: {e}")));
                    return;
                }
            }
        }
        let Some((_, _, word_map, ssvp_map)) = self.overlays.clone() else {
            return;
        };
        ui.columns(2, |cols| {
            let side = cols[0]
                .available_width()
                .min(cols[1].available_width())
                .clamp(120.0, 512.0);
            if let Some((_, Ok(MethodMaps { word_relevance: Some(words), .. }))) = method_maps {
                let line: Vec<String> = words
                    .iter()
                    .map(|(t, r)| format!("{} {:.0}%", super::glyphs::displayable(t), 100.0 * r))
                    .collect();
                cols[0].label(format!("word relevance: {}", line.join(" · ")))
                    .on_hover_text("Chefer's relevance on the text side: which words the image–text score rests on");
            }
            match method_maps {
                Some((m, _)) => cols[0].strong(format!("{m}: the whole prompt")),
                None => cols[0].strong(format!(
                    "\"{}\" (token-wise)",
                    super::glyphs::displayable(
                        a.text_tokens.get(self.word).map_or("", String::as_str)
                    ),
                )),
            };
            let word_map_lo_hi = (word_map.map.min, word_map.map.max);
            overlay_ui(
                &mut cols[0],
                1,
                &word_map,
                &self.style,
                gpu,
                &mut self.cpu_overlays,
                side,
                &[],
                "alignment map",
            );
            cols[0].weak(format!(
                "{} {:.3} … {:.3}",
                if method_maps.is_some() {
                    "map"
                } else {
                    "similarity"
                },
                word_map_lo_hi.0,
                word_map_lo_hi.1
            ));
            cols[1].strong(format!(
                "SsVP: {} of {} patches kept",
                view.ssvp.k,
                view.ssvp.attention.len()
            ));
            overlay_ui(
                &mut cols[1],
                2,
                &ssvp_map,
                &self.style,
                gpu,
                &mut self.cpu_overlays,
                side,
                &view.ssvp.indices,
                "SsVP attention",
            );
            cols[1].weak("penultimate block's class-token attention, kept patches outlined");
        });
        ui.add_space(6.0);
        ui.columns(2, |cols| {
            top5_ui(&mut cols[0], "Top-5, global feature", &view.global);
            top5_ui(&mut cols[1], "Top-5, SsVP feature", &view.with_ssvp);
        });
    }

    /// Compare methods: each asked method's map of the prompt (token-wise: the shown word's), in a
    /// row, each normalised to its own range.
    fn compare_ui(
        &mut self,
        ui: &mut egui::Ui,
        view: &AlignView,
        gpu: Option<egui_wgpu::wgpu::TextureFormat>,
    ) {
        let key = view.id * 1000 + self.word as u64;
        let word = self.word;
        let shown = |m: MapMethod| -> Option<(&MethodMaps, usize)> {
            let maps = view.maps_of(m)?;
            let target = if m.per_word() { word } else { 0 };
            (target < maps.maps.len()).then_some((maps, target))
        };
        if self
            .compare_overlays
            .as_ref()
            .is_none_or(|(k, _)| *k != key)
        {
            let overlays = view
                .request
                .compare
                .iter()
                .map(|&m| {
                    let (maps, target) = shown(m)?;
                    let map = GridMap::new(&maps.maps[target], maps.grid).ok()?;
                    Some(self.overlay_data(view, map))
                })
                .collect();
            self.compare_overlays = Some((key, overlays));
        }
        let Some((_, overlays)) = self.compare_overlays.clone() else {
            return;
        };
        ui.strong("Compare methods: the same image and text, each map on its own colour scale");
        let n = view.request.compare.len().max(1);
        ui.columns(n, |cols| {
            let side = narrowest(cols).clamp(80.0, 320.0);
            for (i, (&m, overlay)) in view.request.compare.iter().zip(&overlays).enumerate() {
                let ui = &mut cols[i];
                ui.strong(m.name()).on_hover_text(method_help(m));
                match (overlay, view.maps.iter().find(|(x, _)| *x == m)) {
                    (Some(data), _) => {
                        overlay_ui(
                            ui,
                            100 + i as u64,
                            data,
                            &self.style,
                            gpu,
                            &mut self.cpu_overlays,
                            side,
                            &[],
                            &format!("{m} map"),
                        );
                        let what = match shown(m) {
                            Some((maps, t)) if m.per_word() => {
                                format!("word \"{}\"", super::glyphs::displayable(&maps.targets[t]))
                            }
                            _ => "whole prompt".to_string(),
                        };
                        ui.weak(format!(
                            "{what} · {:.3} … {:.3}",
                            data.map.min, data.map.max
                        ));
                    }
                    (None, Some((_, Err(why)))) => {
                        ui.colored_label(ui.visuals().error_fg_color, why);
                    }
                    (None, _) => {
                        ui.weak("no map");
                    }
                }
            }
        });
    }
}

impl AlignPanel {
    /// `map` over the view's picture, with a fresh id (the GPU copy is keyed by it).
    fn overlay_data(&mut self, view: &AlignView, map: GridMap) -> Arc<OverlayData> {
        self.next_overlay_id += 1;
        Arc::new(OverlayData {
            id: self.next_overlay_id,
            image: view.image.clone(),
            size: view.size,
            map,
        })
    }

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
    fn evaluate_ui(&mut self, ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
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
                                    super::maps_eval_job::MapsEvalRequest {
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

/// The width of the narrowest of a row's columns: the side each map in the row gets.
fn narrowest(cols: &[egui::Ui]) -> f32 {
    cols.iter()
        .map(|c| c.available_width())
        .fold(f32::INFINITY, f32::min)
}

/// One line on what a method is, for its tooltip.
fn method_help(m: MapMethod) -> &'static str {
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

impl AlignPanel {
    /// The class word's map under each prompt, in a row, each with p(class) under that prompt.
    fn side_by_side_ui(
        &mut self,
        ui: &mut egui::Ui,
        view: &AlignView,
        gpu: Option<egui_wgpu::wgpu::TextureFormat>,
    ) {
        if self
            .side_overlays
            .as_ref()
            .is_none_or(|(id, _)| *id != view.id)
        {
            let maps = view
                .side_by_side
                .iter()
                .map(|(_, m)| {
                    let m = m.as_ref().ok()?;
                    let map = GridMap::new(&m.map, m.grid).ok()?;
                    Some(self.overlay_data(view, map))
                })
                .collect();
            self.side_overlays = Some((view.id, maps));
        }
        let Some((_, overlays)) = self.side_overlays.clone() else {
            return;
        };
        let class = view.request.class.clone().unwrap_or_default();
        ui.strong(format!(
            "\"{class}\": the class word's map under each prompt ({} mode)",
            view.alignment.mode
        ));
        let n = view.side_by_side.len().max(1);
        ui.columns(n, |cols| {
            let side = narrowest(cols).clamp(120.0, 400.0);
            for (i, ((label, result), overlay)) in
                view.side_by_side.iter().zip(&overlays).enumerate()
            {
                let ui = &mut cols[i];
                ui.strong(label);
                match (result, overlay) {
                    (Ok(m), Some(data)) => {
                        overlay_ui(
                            ui,
                            10 + i as u64,
                            data,
                            &self.style,
                            gpu,
                            &mut self.cpu_overlays,
                            side,
                            &[],
                            &format!("{label} map"),
                        );
                        class_map_caption(ui, m, &class);
                    }
                    (Err(why), _) => {
                        ui.colored_label(ui.visuals().error_fg_color, why);
                    }
                    (Ok(_), None) => {
                        ui.colored_label(ui.visuals().error_fg_color, "the map could not be drawn");
                    }
                }
            }
        });
    }
}

/// Below a side-by-side map: which word it is, p(class), and a warning when the model does not see the
/// class here.
fn class_map_caption(ui: &mut egui::Ui, m: &ClassMap, class: &str) {
    ui.weak(format!(
        "word \"{}\" · similarity {:.3} … {:.3}",
        super::glyphs::displayable(m.tokens.get(m.word).map_or("", String::as_str)),
        min(&m.map),
        max(&m.map)
    ));
    presence_ui(ui, class, m.prob, Some(&m.best));
}

/// p(class | image) beside a map. A map always has a brightest patch; when the model gives the class
/// little probability, that patch is where the word fits best, not a detection.
fn presence_ui(ui: &mut egui::Ui, class: &str, p: f32, best: Option<&(String, f32)>) {
    let text = format!("p({class}) = {:.1}%", 100.0 * p);
    match best.filter(|(b, _)| b != class) {
        None => {
            ui.label(
                RichText::new(text)
                    .strong()
                    .color(Color32::from_rgb(40, 170, 80)),
            );
        }
        Some((b, pb)) => {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!(
                    "{text}: the model sees {b} ({:.0}%), so this map is not a detection",
                    100.0 * pb
                ),
            );
        }
    }
}

fn min(v: &[f32]) -> f32 {
    v.iter().copied().fold(f32::INFINITY, f32::min)
}

fn max(v: &[f32]) -> f32 {
    v.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// The image with `data`'s map over it, drawn by the GPU shader when there is a wgpu renderer, else by
/// the CPU overlay as a texture (redrawn only when the map or the style changes); `outlined` patches
/// get a box.
#[allow(clippy::too_many_arguments)]
fn overlay_ui(
    ui: &mut egui::Ui,
    slot: u64,
    data: &Arc<OverlayData>,
    style: &HeatmapStyle,
    gpu: Option<egui_wgpu::wgpu::TextureFormat>,
    cpu: &mut CpuOverlays,
    side: f32,
    outlined: &[usize],
    what: &str,
) {
    let [w, h] = data.size;
    let size = egui::vec2(side, side * h as f32 / w.max(1) as f32);
    let (rect, response) = ui.allocate_exact_size(size, Sense::hover());
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, what));
    match gpu {
        Some(format) => {
            let callback = OverlayCallback {
                slot,
                format,
                data: data.clone(),
                style: *style,
            };
            ui.painter()
                .add(egui_wgpu::Callback::new_paint_callback(rect, callback));
        }
        None => {
            // No wgpu renderer (e.g. the glow backend): the same picture from the CPU.
            if cpu
                .get(&slot)
                .is_none_or(|(id, s, _)| (*id, s) != (data.id, style))
            {
                let base = image::RgbaImage::from_raw(w, h, data.image.clone())
                    .map(|i| image::DynamicImage::ImageRgba8(i).to_rgb8());
                if let Some(Ok(img)) =
                    base.map(|b| crate::render::heatmap::overlay(&b, &data.map, style))
                {
                    let pixels: Vec<u8> =
                        img.pixels().flat_map(|p| [p[0], p[1], p[2], 255]).collect();
                    let colour =
                        egui::ColorImage::from_rgba_unmultiplied([w as usize, h as usize], &pixels);
                    let tex = ui.ctx().load_texture(
                        format!("overlay-{slot}"),
                        colour,
                        egui::TextureOptions::LINEAR,
                    );
                    cpu.insert(slot, (data.id, *style, tex));
                }
            }
            if let Some((_, _, tex)) = cpu.get(&slot) {
                ui.painter().image(
                    tex.id(),
                    rect,
                    egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
                    Color32::WHITE,
                );
            }
        }
    }
    let [gh, gw] = data.map.grid;
    let cell = egui::vec2(rect.width() / gw as f32, rect.height() / gh as f32);
    for &p in outlined {
        let (r, c) = (p / gw, p % gw);
        let min = rect.min + egui::vec2(c as f32 * cell.x, r as f32 * cell.y);
        ui.painter().rect_stroke(
            egui::Rect::from_min_size(min, cell).shrink(1.0),
            0.0,
            Stroke::new(2.0, Color32::from_rgb(255, 80, 40)),
            egui::StrokeKind::Inside,
        );
    }
}

fn top5_ui(ui: &mut egui::Ui, title: &str, top: &[(String, f32)]) {
    ui.strong(title);
    egui::Grid::new(title)
        .striped(true)
        .num_columns(2)
        .show(ui, |ui| {
            for (name, p) in top {
                ui.label(name);
                ui.label(RichText::new(format!("{:.1}%", 100.0 * p)).monospace());
                ui.end_row();
            }
        });
}
