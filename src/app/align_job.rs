//! The Align tab's computation, run on a worker thread: one image against one prompt (FILIP token-wise
//! similarity in token or value mode), SsVP's patch selection, and the image's top-5 classes with the
//! global feature and with SsVP's.

use std::path::PathBuf;

use candle_core::Tensor;

use crate::align::filip::align_pass;
use crate::align::pass::VisionPass;
use crate::align::ssvp::ssvp_from_pass;
use crate::align::{AlignConfig, Alignment, TextSource};
use crate::clip::preprocess::{load_image, resize_and_crop, to_chw};
use crate::clip::{l2_normalize, LoadedClip};
use crate::error::{Error, Result};
use crate::export::prompt_file::PromptFile;

/// The prompt to align.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptChoice {
    Text(String),
    /// Class `class` of a learned prompts file.
    Learned { file: PathBuf, class: usize },
}

/// Everything one alignment depends on; a change of any of it means computing again.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignRequest {
    pub image: PathBuf,
    pub prompt: PromptChoice,
    pub config: AlignConfig,
    pub k: Option<usize>,
    /// The dataset's class names and templates, for the predictions with a hand-crafted prompt.
    pub classes: Vec<String>,
    pub templates: Vec<String>,
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
}

pub fn run(clip: &LoadedClip, req: &AlignRequest) -> Result<AlignView> {
    let img = load_image(&req.image)?;
    let base = resize_and_crop(&img, &clip.preprocess);
    let (w, h) = (base.width() as usize, base.height() as usize);
    let pixels = Tensor::from_vec(to_chw(&base, &clip.preprocess), (1, 3, h, w), &clip.device)?;
    // One pass of the vision tower serves the alignment, SsVP and the global feature.
    let vision = &clip.model.vision;
    let pass = VisionPass::run(vision, &pixels)?;
    let (alignment, weights, names) = match &req.prompt {
        PromptChoice::Text(text) => {
            let a = align_pass(clip, &pass, &TextSource::Text(text), &req.config)?;
            let weights = crate::eval::zeroshot::class_weights(clip, &req.classes, &req.templates, &crate::progress::Silent)?;
            (a, weights, req.classes.clone())
        }
        PromptChoice::Learned { file, class } => {
            let f = PromptFile::load(file)?;
            let learner = f.learner(clip, file)?;
            if *class >= f.meta.class_names.len() {
                return Err(Error::invalid(format!("{}: has {} classes, no class {class}", file.display(), f.meta.class_names.len())));
            }
            let a = align_pass(clip, &pass, &TextSource::Learned { learner: &learner, class: *class }, &req.config)?;
            (a, l2_normalize(&f.class_embeds.to_device(&clip.device)?)?, f.meta.class_names.clone())
        }
    };
    let selection = ssvp_from_pass(vision, &pass, req.k)?.remove(0);
    let global = pass.pooled(vision)?;
    let ssvp_feat = Tensor::from_vec(selection.image_embeds.clone(), (1, selection.image_embeds.len()), &clip.device)?;
    let scale = clip.model.logit_scale();
    let top = |feat: &Tensor| -> Result<TopK> {
        let logits = crate::eval::zeroshot::logits(feat, &weights, scale)?.remove(0);
        let p = crate::eval::metrics::softmax(&logits);
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        Ok(order.into_iter().take(5).map(|i| (names[i].clone(), p[i])).collect())
    };
    let rgba = base.pixels().flat_map(|p| [p[0], p[1], p[2], 255]).collect();
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
    })
}
