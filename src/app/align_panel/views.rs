//! The Align tab's pictures: the main map with SsVP beside it, the methods compared in a row, and the
//! class word's map side by side under each prompt.

use super::*;

impl AlignPanel {
    pub(super) fn view_ui(
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
                    .selectable_label(self.word == r, crate::app::glyphs::displayable(token))
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
                    .map(|(t, r)| format!("{} {:.0}%", crate::app::glyphs::displayable(t), 100.0 * r))
                    .collect();
                cols[0].label(format!("word relevance: {}", line.join(" · ")))
                    .on_hover_text("Chefer's relevance on the text side: which words the image–text score rests on");
            }
            match method_maps {
                Some((m, _)) => cols[0].strong(format!("{m}: the whole prompt")),
                None => cols[0].strong(format!(
                    "\"{}\" (token-wise)",
                    crate::app::glyphs::displayable(
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
    pub(super) fn compare_ui(
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
                                format!(
                                    "word \"{}\"",
                                    crate::app::glyphs::displayable(&maps.targets[t])
                                )
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

    /// `map` over the view's picture, with a fresh id (the GPU copy is keyed by it).
    pub(super) fn overlay_data(&mut self, view: &AlignView, map: GridMap) -> Arc<OverlayData> {
        self.next_overlay_id += 1;
        Arc::new(OverlayData {
            id: self.next_overlay_id,
            image: view.image.clone(),
            size: view.size,
            map,
        })
    }
}

/// The width of the narrowest of a row's columns: the side each map in the row gets.
pub(super) fn narrowest(cols: &[egui::Ui]) -> f32 {
    cols.iter()
        .map(|c| c.available_width())
        .fold(f32::INFINITY, f32::min)
}

impl AlignPanel {
    /// The class word's map under each prompt, in a row, each with p(class) under that prompt.
    pub(super) fn side_by_side_ui(
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
        crate::app::glyphs::displayable(m.tokens.get(m.word).map_or("", String::as_str)),
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
