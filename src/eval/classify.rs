//! Top-k classes of single images against class weights (a prompts file's or hand-crafted ones).

use std::path::PathBuf;

use candle_core::Tensor;

use crate::clip::LoadedClip;
use crate::error::Result;
use crate::progress::Progress;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ImagePrediction {
    pub path: PathBuf,
    /// (class, softmax probability), best first.
    pub top: Vec<(String, f32)>,
}

/// Each image's `k` most likely classes under normalised class `weights` `[C, P]`, as zero-shot scores
/// them (logit_scale · cos, softmax over the classes).
pub fn top_k(clip: &LoadedClip, weights: &Tensor, names: &[String], images: &[PathBuf], k: usize, progress: &dyn Progress) -> Result<Vec<ImagePrediction>> {
    let feats = crate::clip::encode::image_features(clip, images, 32, progress)?;
    let logits = super::zeroshot::logits(&feats, weights, clip.model.logit_scale())?;
    Ok(images
        .iter()
        .zip(logits)
        .map(|(path, row)| {
            let p = super::metrics::softmax(&row);
            let mut order: Vec<usize> = (0..p.len()).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            ImagePrediction { path: path.clone(), top: order.into_iter().take(k).map(|i| (names[i].clone(), p[i])).collect() }
        })
        .collect())
}
