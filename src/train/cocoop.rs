//! CoCoOp's scoring on cached image features (its training is CoOp's `Trainer` with a meta-net): each
//! image's logits come from its own prompts (`ctx + π(x)`), so the text tower runs once per image
//! (through the shared-prefix path: every class prompt of an image starts with the same tokens). That
//! per-image text pass is CoCoOp's cost against CoOp, whose class prompts serve the whole batch.

use candle_core::Tensor;

use super::features::FeatureSet;
use crate::clip::l2_normalize;
use crate::clip::text::TextTower;
use crate::error::Result;
use crate::prompt::cocoop::MetaNet;
use crate::prompt::coop::PromptLearner;

/// Logits `[B, C]` of image features `[B, P]` (normalised here), each image against its own prompts.
pub fn logits(
    text: &TextTower,
    learner: &PromptLearner,
    meta: &MetaNet,
    scale: f32,
    feats: &Tensor,
) -> Result<Tensor> {
    let f = l2_normalize(feats)?;
    let shift = meta.forward(&f)?;
    let rows: Vec<Tensor> = (0..f.dim(0)?)
        .map(|i| -> Result<Tensor> {
            let w = l2_normalize(&learner.text_features_shifted(text, &shift.get(i)?)?)?;
            Ok((f.get(i)?.unsqueeze(0)?.matmul(&w.t()?)? * f64::from(scale))?)
        })
        .collect::<Result<_>>()?;
    Ok(Tensor::cat(&rows, 0)?)
}

/// [`logits`] without gradients, 64 images at a time (each runs the text tower over every class, and
/// a graph kept for all of them would hold every image's activations).
pub fn logits_detached(
    text: &TextTower,
    learner: &PromptLearner,
    meta: &MetaNet,
    scale: f32,
    feats: &Tensor,
) -> Result<Tensor> {
    let n = feats.dim(0)?;
    let chunks: Vec<Tensor> = (0..n)
        .step_by(64)
        .map(|start| {
            Ok(logits(
                text,
                learner,
                meta,
                scale,
                &feats.narrow(0, start, 64.min(n - start))?,
            )?
            .detach())
        })
        .collect::<Result<_>>()?;
    if chunks.is_empty() {
        return Ok(Tensor::zeros(
            (0, learner.num_classes()),
            candle_core::DType::F32,
            feats.device(),
        )?);
    }
    Ok(Tensor::cat(&chunks, 0)?)
}

/// Accuracy on a set (first view of each image).
pub fn accuracy(
    text: &TextTower,
    learner: &PromptLearner,
    meta: &MetaNet,
    scale: f32,
    set: &FeatureSet,
) -> Result<f64> {
    if set.num_images() == 0 {
        return Ok(0.0);
    }
    set.accuracy_of(&logits_detached(
        text,
        learner,
        meta,
        scale,
        &set.first_views()?,
    )?)
}
