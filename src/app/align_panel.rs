//! The Align tab: an image with the alignment map of one prompt word drawn over it by the GPU shader
//! (click a word to switch), token / value mode, opacity and colormap; beside it SsVP's patch attention
//! with the kept patches outlined, a K slider, and the top-5 classes with and without SsVP.

use std::sync::Arc;

use egui::{Color32, RichText, Sense, Stroke};

use crate::align::{AlignConfig, AlignMode};
use crate::render::{Colormap, GridMap, HeatmapStyle};

use super::align_job::{AlignRequest, AlignView, PromptChoice};
use super::overlay::{OverlayCallback, OverlayData};
use super::state::AppState;
use super::events::Action;

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
    /// Hand-crafted text (`{}` is the image's class) or a learned prompt.
    pub learned: Option<usize>,
    pub text: String,
    pub class: usize,
    pub config: AlignConfig,
    pub k: usize,
    pub word: usize,
    pub style: HeatmapStyle,
    /// The tokens of the last prompt shown: a new prompt starts on its class word.
    shown_tokens: Vec<String>,
    /// The map uploaded to the GPU, rebuilt when the view or the word changes.
    overlays: Option<(u64, usize, Arc<OverlayData>, Arc<OverlayData>)>,
    next_overlay_id: u64,
    /// Without wgpu: the CPU-drawn picture per slot, with the content and style it was drawn for.
    cpu_overlays: CpuOverlays,
}

type CpuOverlays = std::collections::HashMap<u64, (u64, HeatmapStyle, egui::TextureHandle)>;

impl Default for AlignPanel {
    fn default() -> Self {
        AlignPanel {
            image: 0,
            learned: None,
            text: "a photo of a {}.".into(),
            class: 0,
            config: AlignConfig::default(),
            k: 0,
            word: 0,
            style: HeatmapStyle::default(),
            shown_tokens: Vec::new(),
            overlays: None,
            next_overlay_id: 1,
            cpu_overlays: CpuOverlays::new(),
        }
    }
}

impl AlignPanel {
    /// What the current choices ask the worker to compute; None without a model or images.
    pub fn request(&self, state: &AppState, sources: &[LearnedSource], templates: &[String]) -> Option<AlignRequest> {
        let (model, ds) = (state.model.as_ref()?, state.dataset.as_ref()?);
        let samples = ds.folder.eval_samples();
        let sample = samples.get(self.image.min(samples.len().checked_sub(1)?))?;
        let n = model.clip.model.vision.config.num_patches();
        let prompt = match self.learned.and_then(|i| sources.get(i)) {
            Some(src) => PromptChoice::Learned { file: src.path.clone(), class: self.class.min(src.class_names.len().saturating_sub(1)) },
            None => PromptChoice::Text(crate::eval::zeroshot::fill(&self.text, &ds.folder.class_names[sample.label])),
        };
        Some(AlignRequest {
            image: sample.path.clone(),
            prompt,
            config: self.config,
            k: Some(if self.k == 0 { crate::align::ssvp::default_k(n) } else { self.k.min(n) }),
            classes: ds.folder.class_names.clone(),
            templates: templates.to_vec(),
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
        let (Some(model), Some(ds)) = (&state.model, &state.dataset) else {
            ui.weak("Load a model and open a dataset to see which image patches each word of a prompt aligns with.");
            return;
        };
        let samples = ds.folder.eval_samples();
        if samples.is_empty() {
            ui.weak("The dataset has no images to show.");
            return;
        }
        self.image = self.image.min(samples.len() - 1);
        let n = model.clip.model.vision.config.num_patches();
        if self.k == 0 {
            self.k = crate::align::ssvp::default_k(n);
        }
        self.controls_ui(ui, ds, samples, sources, n);
        ui.separator();
        match &state.align {
            Some(view) => self.view_ui(ui, view, gpu, actions),
            None if state.aligning.is_some() => {
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
        ds: &super::events::OpenedDataset,
        samples: &[crate::data::Sample],
        sources: &[LearnedSource],
        n: usize,
    ) {
        ui.horizontal(|ui| {
            ui.label("Image");
            if ui.button("Previous").on_hover_text("Previous image").clicked() {
                self.image = self.image.checked_sub(1).unwrap_or(samples.len() - 1);
            }
            if ui.button("Next").on_hover_text("Next image").clicked() {
                self.image = (self.image + 1) % samples.len();
            }
            let s = &samples[self.image];
            let name = s.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            ui.label(format!("{} / {} · {} · {name}", self.image + 1, samples.len(), ds.folder.class_names[s.label]));
        });
        ui.horizontal(|ui| {
            ui.label("Prompt");
            ui.radio_value(&mut self.learned, None, "hand-crafted");
            for (i, src) in sources.iter().enumerate() {
                ui.radio_value(&mut self.learned, Some(i), &src.label);
            }
        });
        match self.learned.and_then(|i| sources.get(i)) {
            None => {
                ui.horizontal(|ui| {
                    let l = ui.label("Text");
                    ui.text_edit_singleline(&mut self.text).labelled_by(l.id).on_hover_text("{} is replaced by the image's class");
                });
            }
            Some(src) => {
                ui.horizontal(|ui| {
                    egui::ComboBox::from_label("Class")
                        .selected_text(src.class_names.get(self.class).cloned().unwrap_or_default())
                        .show_ui(ui, |ui| {
                            for (i, c) in src.class_names.iter().enumerate() {
                                ui.selectable_value(&mut self.class, i, c);
                            }
                        });
                });
            }
        }
        ui.horizontal(|ui| {
            ui.label("Mode");
            ui.radio_value(&mut self.config.mode, AlignMode::Token, "token").on_hover_text("FILIP: the model's output tokens");
            ui.radio_value(&mut self.config.mode, AlignMode::Value, "value").on_hover_text("MaskCLIP: the last block's value path");
            ui.separator();
            let l = ui.label("Opacity");
            ui.add(egui::Slider::new(&mut self.style.opacity, 0.0..=1.0).fixed_decimals(2)).labelled_by(l.id);
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
    }

    fn view_ui(&mut self, ui: &mut egui::Ui, view: &AlignView, gpu: Option<egui_wgpu::wgpu::TextureFormat>, actions: &mut Vec<Action>) {
        let a = &view.alignment;
        if a.text_tokens != self.shown_tokens {
            // A new prompt opens on the word that names the object (the last before the closing
            // punctuation and end-of-text), the map a user came for; "a" is rarely it.
            let named = a.text_tokens.iter().rposition(|t| {
                let t = t.trim();
                !t.is_empty() && t != "<|endoftext|>" && t.chars().any(char::is_alphanumeric)
            });
            self.word = named.unwrap_or(0);
            self.shown_tokens = a.text_tokens.clone();
        }
        self.word = self.word.min(a.text_tokens.len().saturating_sub(1));
        ui.horizontal_wrapped(|ui| {
            ui.label("Word");
            for (r, token) in a.text_tokens.iter().enumerate() {
                if ui.selectable_label(self.word == r, token).on_hover_text(format!("Show the map of word {r}")).clicked() {
                    self.word = r;
                }
            }
        });
        ui.label(format!("s_I {:.4} · s_T {:.4} · {} mode · kept fraction {}", a.s_i, a.s_t, a.mode, a.top_fraction));
        let key = (view.id, self.word);
        if self.overlays.as_ref().is_none_or(|(v, w, _, _)| (*v, *w) != key) {
            let word = a.word_map(self.word).and_then(|m| GridMap::new(&m, a.grid));
            let attention = GridMap::new(&view.ssvp.attention, view.ssvp.grid);
            match (word, attention) {
                (Ok(word), Ok(attention)) => {
                    let mut data = |map| {
                        self.next_overlay_id += 1;
                        Arc::new(OverlayData { id: self.next_overlay_id, image: view.image.clone(), size: view.size, map })
                    };
                    let (w, s) = (data(word), data(attention));
                    self.overlays = Some((key.0, key.1, w, s));
                }
                (Err(e), _) | (_, Err(e)) => {
                    actions.push(Action::ShowError(format!("Alignment map: {e}")));
                    return;
                }
            }
        }
        let Some((_, _, word_map, ssvp_map)) = self.overlays.clone() else { return };
        ui.columns(2, |cols| {
            let side = cols[0].available_width().min(cols[1].available_width()).clamp(120.0, 512.0);
            cols[0].strong(format!("\"{}\" ({} mode)", a.text_tokens.get(self.word).cloned().unwrap_or_default(), a.mode));
            let word_map_lo_hi = (word_map.map.min, word_map.map.max);
            overlay_ui(&mut cols[0], 1, &word_map, &self.style, gpu, &mut self.cpu_overlays, side, &[], "alignment map");
            cols[0].weak(format!("similarity {:.3} … {:.3}", word_map_lo_hi.0, word_map_lo_hi.1));
            cols[1].strong(format!("SsVP: {} of {} patches kept", view.ssvp.k, view.ssvp.attention.len()));
            overlay_ui(&mut cols[1], 2, &ssvp_map, &self.style, gpu, &mut self.cpu_overlays, side, &view.ssvp.indices, "SsVP attention");
            cols[1].weak("penultimate block's class-token attention, kept patches outlined");
        });
        ui.add_space(6.0);
        ui.columns(2, |cols| {
            top5_ui(&mut cols[0], "Top-5, global feature", &view.global);
            top5_ui(&mut cols[1], "Top-5, SsVP feature", &view.with_ssvp);
        });
    }
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
            let callback = OverlayCallback { slot, format, data: data.clone(), style: *style };
            ui.painter().add(egui_wgpu::Callback::new_paint_callback(rect, callback));
        }
        None => {
            // No wgpu renderer (e.g. the glow backend): the same picture from the CPU.
            if cpu.get(&slot).is_none_or(|(id, s, _)| (*id, s) != (data.id, style)) {
                let base = image::RgbaImage::from_raw(w, h, data.image.clone()).map(|i| image::DynamicImage::ImageRgba8(i).to_rgb8());
                if let Some(Ok(img)) = base.map(|b| crate::render::heatmap::overlay(&b, &data.map, style)) {
                    let pixels: Vec<u8> = img.pixels().flat_map(|p| [p[0], p[1], p[2], 255]).collect();
                    let colour = egui::ColorImage::from_rgba_unmultiplied([w as usize, h as usize], &pixels);
                    let tex = ui.ctx().load_texture(format!("overlay-{slot}"), colour, egui::TextureOptions::LINEAR);
                    cpu.insert(slot, (data.id, *style, tex));
                }
            }
            if let Some((_, _, tex)) = cpu.get(&slot) {
                ui.painter().image(tex.id(), rect, egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)), Color32::WHITE);
            }
        }
    }
    let [gh, gw] = data.map.grid;
    let cell = egui::vec2(rect.width() / gw as f32, rect.height() / gh as f32);
    for &p in outlined {
        let (r, c) = (p / gw, p % gw);
        let min = rect.min + egui::vec2(c as f32 * cell.x, r as f32 * cell.y);
        ui.painter().rect_stroke(egui::Rect::from_min_size(min, cell).shrink(1.0), 0.0, Stroke::new(2.0, Color32::from_rgb(255, 80, 40)), egui::StrokeKind::Inside);
    }
}

fn top5_ui(ui: &mut egui::Ui, title: &str, top: &[(String, f32)]) {
    ui.strong(title);
    egui::Grid::new(title).striped(true).num_columns(2).show(ui, |ui| {
        for (name, p) in top {
            ui.label(name);
            ui.label(RichText::new(format!("{:.1}%", 100.0 * p)).monospace());
            ui.end_row();
        }
    });
}
