//! The Align tab's computation, run on a worker thread: one image against one prompt (FILIP token-wise
//! similarity in token or value mode), SsVP's patch selection, and the image's top-5 classes with the
//! global feature and with SsVP's.

use std::path::PathBuf;

use candle_core::Tensor;

use crate::align::filip::align_pass;
use crate::align::maps::{ImageMaps, MapMethod, MapOptions, MethodMaps};
use crate::align::pass::VisionPass;
use crate::align::ssvp::ssvp_from_pass;
use crate::align::{AlignConfig, Alignment, TextSource};
use crate::clip::preprocess::{load_image, resize_and_crop, to_chw};
use crate::clip::LoadedClip;
use crate::error::{Error, Result};
use crate::export::prompt_file::PromptFile;

/// The prompt to align.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptChoice {
    Text(String),
    /// Class `class` of a learned prompts file.
    Learned {
        file: PathBuf,
        class: usize,
    },
}

/// Everything one alignment depends on; a change of any of it means computing again.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignRequest {
    pub image: PathBuf,
    pub prompt: PromptChoice,
    /// The class the prompt names: its softmax probability is shown with the map, so a map of an
    /// absent object is not read as a detection.
    pub class: Option<String>,
    pub config: AlignConfig,
    pub k: Option<usize>,
    /// The class names and templates of the hand-crafted prompt (its predictions and probabilities).
    pub classes: Vec<String>,
    pub templates: Vec<String>,
    /// (label, prompts file) to show side by side with the hand-crafted prompt: the map of `class`'s
    /// word under each.
    pub side_by_side: Option<Vec<(String, PathBuf)>>,
    /// The explanation method of the main map (`Token`: the word maps of the token-wise alignment).
    pub method: MapMethod,
    /// Methods to draw side by side on the same image and text (Compare methods), in order.
    pub compare: Vec<MapMethod>,
    pub options: MapOptions,
}

impl AlignRequest {
    /// The methods whose maps the view needs besides the token-wise alignment.
    pub fn map_methods(&self) -> Vec<MapMethod> {
        let mut out: Vec<MapMethod> = Vec::new();
        for m in std::iter::once(self.method).chain(self.compare.iter().copied()) {
            if !out.contains(&m) && (m != MapMethod::Token || !self.compare.is_empty()) {
                out.push(m);
            }
        }
        out
    }
}

/// The map of the class word under one prompt, with how sure the model is of the class.
#[derive(Debug, Clone)]
pub struct ClassMap {
    /// "hand-crafted" or the prompts file's label.
    pub label: String,
    pub tokens: Vec<String>,
    /// The token whose map this is (the class name's last word).
    pub word: usize,
    pub map: Vec<f32>,
    pub grid: [usize; 2],
    /// p(class | image) over the classes of this prompt (softmax of logit_scale · cos).
    pub prob: f32,
    /// The class this prompt puts first, and its probability.
    pub best: (String, f32),
}

/// The index of the word a prompt names its object with: the last word before the closing
/// punctuation and end-of-text ("a photo of a red circle ." → "circle"), the map a user came for.
pub fn named_word(tokens: &[String]) -> usize {
    tokens
        .iter()
        .rposition(|t| {
            let t = t.trim();
            !t.is_empty() && t != "<|endoftext|>" && t.chars().any(char::is_alphanumeric)
        })
        .unwrap_or(0)
}

/// (class name, probability), best first.
pub type TopK = Vec<(String, f32)>;

pub struct AlignView {
    /// Unique per computed view, so the GPU copy of its maps is refreshed exactly when it changes.
    pub id: u64,
    pub request: AlignRequest,
    /// The model-input picture (resized, cropped), RGBA8.
    pub image: Vec<u8>,
    pub size: [u32; 2],
    pub alignment: Alignment,
    pub ssvp: crate::align::SsvpSelection,
    /// Top-5 with the global image feature and with SsVP's.
    pub global: TopK,
    pub with_ssvp: TopK,
    /// p(request.class | image) under the prompt's own class weights.
    pub class_prob: Option<f32>,
    /// The hand-crafted prompt first, then each learned file (or why that file could not be drawn).
    pub side_by_side: Vec<(String, std::result::Result<ClassMap, String>)>,
    /// Each method of [`AlignRequest::map_methods`], with its maps of the prompt or why it could not
    /// make them.
    pub maps: Vec<(MapMethod, std::result::Result<MethodMaps, String>)>,
}

impl AlignView {
    /// The maps `method` made, if it was asked for and succeeded.
    pub fn maps_of(&self, method: MapMethod) -> Option<&MethodMaps> {
        self.maps
            .iter()
            .find(|(m, _)| *m == method)
            .and_then(|(_, r)| r.as_ref().ok())
    }
}

pub fn run(clip: &LoadedClip, req: &AlignRequest) -> Result<AlignView> {
    let img = load_image(&req.image)?;
    let base = resize_and_crop(&img, &clip.preprocess);
    let (w, h) = (base.width() as usize, base.height() as usize);
    let pixels = Tensor::from_vec(to_chw(&base, &clip.preprocess), (1, 3, h, w), &clip.device)?;
    // One pass of the vision tower serves the alignment, SsVP and the global feature.
    let vision = &clip.model()?.vision;
    let pass = VisionPass::run(vision, &pixels)?;
    let global = pass.pooled(vision)?;
    let scale = clip.logit_scale();
    let probs = |feat: &Tensor, weights: &Tensor| -> Result<Vec<f32>> {
        Ok(crate::eval::metrics::softmax(
            &crate::eval::zeroshot::logits(feat, weights, scale)?.remove(0),
        ))
    };
    // The hand-crafted prompt's class weights, computed once for the main view and the side by side.
    let needs_hand = matches!(req.prompt, PromptChoice::Text(_)) || req.side_by_side.is_some();
    let hand_weights = if needs_hand && !req.classes.is_empty() {
        Some(crate::eval::zeroshot::class_weights(
            clip,
            &req.classes,
            &req.templates,
            &crate::progress::Silent,
        )?)
    } else {
        None
    };
    let (alignment, weights, names) = match &req.prompt {
        PromptChoice::Text(text) => (
            align_pass(clip, &pass, &TextSource::Text(text), &req.config)?,
            hand_weights.clone(),
            req.classes.clone(),
        ),
        PromptChoice::Learned { file, class } => {
            let (learner, weights, names) = learned(clip, file, &global)?;
            if *class >= names.len() {
                return Err(Error::invalid(format!(
                    "{}: has {} classes, no class {class}",
                    file.display(),
                    names.len()
                )));
            }
            let a = align_pass(
                clip,
                &pass,
                &TextSource::Learned {
                    learner: &learner,
                    class: *class,
                },
                &req.config,
            )?;
            (a, Some(weights), names)
        }
    };
    let selection = ssvp_from_pass(vision, &pass, req.k)?.remove(0);
    let ssvp_feat = Tensor::from_vec(
        selection.image_embeds.clone(),
        (1, selection.image_embeds.len()),
        &clip.device,
    )?;
    let top = |feat: &Tensor| -> Result<TopK> {
        let Some(weights) = &weights else {
            return Ok(Vec::new());
        };
        let p = probs(feat, weights)?;
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        Ok(order
            .into_iter()
            .take(5)
            .map(|i| (names[i].clone(), p[i]))
            .collect())
    };
    let class_prob = match (
        &weights,
        req.class
            .as_ref()
            .and_then(|c| names.iter().position(|n| n == c)),
    ) {
        (Some(w), Some(i)) => Some(probs(&global, w)?[i]),
        _ => None,
    };
    // Side by side: the class word's map under the hand-crafted prompt and under each learned context,
    // from the same vision pass.
    let mut side_by_side = Vec::new();
    if let (Some(files), Some(class)) = (&req.side_by_side, &req.class) {
        let class_map = |label: String,
                         source: TextSource<'_>,
                         weights: &Tensor,
                         names: &[String]|
         -> Result<ClassMap> {
            let a = align_pass(clip, &pass, &source, &req.config)?;
            let word = named_word(&a.text_tokens);
            let p = probs(&global, weights)?;
            let i = names.iter().position(|n| n == class).unwrap_or(0);
            let best = (0..p.len())
                .max_by(|&a, &b| p[a].total_cmp(&p[b]))
                .unwrap_or(0);
            Ok(ClassMap {
                label,
                word,
                map: a.word_map(word)?,
                grid: a.grid,
                tokens: a.text_tokens,
                prob: p[i],
                best: (names[best].clone(), p[best]),
            })
        };
        let template = req
            .templates
            .first()
            .cloned()
            .unwrap_or_else(|| crate::eval::zeroshot::DEFAULT_TEMPLATE.into());
        let hand = match &hand_weights {
            Some(w) => class_map(
                "hand-crafted".into(),
                TextSource::Text(&crate::eval::zeroshot::fill(&template, class)),
                w,
                &req.classes,
            )
            .map_err(|e| e.to_string()),
            None => Err("no class names to score the hand-crafted prompt with".into()),
        };
        side_by_side.push((format!("\"{template}\""), hand));
        for (label, file) in files {
            let one = (|| -> Result<ClassMap> {
                let (learner, weights, names) = learned(clip, file, &global)?;
                let c = names.iter().position(|n| n == class).ok_or_else(|| {
                    Error::bad_file(
                        file,
                        format!(
                            "has no class '{class}' (it was trained on {})",
                            names.join(", ")
                        ),
                        "choose one of its classes",
                    )
                })?;
                class_map(
                    label.clone(),
                    TextSource::Learned {
                        learner: &learner,
                        class: c,
                    },
                    &weights,
                    &names,
                )
            })();
            side_by_side.push((label.clone(), one.map_err(|e| e.to_string())));
        }
    }
    let methods = req.map_methods();
    let maps = if methods.is_empty() {
        Vec::new()
    } else {
        match &req.prompt {
            PromptChoice::Text(text) => {
                match ImageMaps::with_options(clip, &pixels, &methods, req.options)
                    .and_then(|image| image.maps(text))
                {
                    Ok(maps) => maps.into_iter().map(|m| (m.method, Ok(m))).collect(),
                    Err(e) => methods.iter().map(|&m| (m, Err(e.to_string()))).collect(),
                }
            }
            PromptChoice::Learned { .. } => methods
                .iter()
                .map(|&m| {
                    (
                        m,
                        Err(format!(
                            "{m} maps a hand-crafted text; a learned prompt is mapped token-wise"
                        )),
                    )
                })
                .collect(),
        }
    };
    let rgba = base
        .pixels()
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    Ok(AlignView {
        id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        request: req.clone(),
        image: rgba,
        size: [w as u32, h as u32],
        global: top(&global)?,
        with_ssvp: top(&ssvp_feat)?,
        alignment,
        ssvp: selection,
        class_prob,
        side_by_side,
        maps,
    })
}

/// A prompts file's learner (checked against the model) as it scores the image with global feature
/// `global` (a CoCoOp context shifted by the image's π(x)), its class weights and class names.
fn learned(
    clip: &LoadedClip,
    file: &std::path::Path,
    global: &Tensor,
) -> Result<(crate::prompt::coop::PromptLearner, Tensor, Vec<String>)> {
    let f = PromptFile::load(file)?;
    let (learner, weights) = f.learner_for_image(clip, file, global)?;
    Ok((learner, weights, f.meta.class_names))
}
