//! Single-image inference: the top-k classes of each image with their probabilities, from normalised
//! class weights (hand-crafted templates through `zeroshot::class_weights`) scored as zero-shot scores
//! (softmax of logit_scale · cos), or from any scorer of image features (a prompts file's
//! `LearnedScorer`, whose CoCoOp prompts are per image).

use std::path::PathBuf;

use candle_core::Tensor;
use serde::Serialize;

use super::metrics::softmax;
use super::zeroshot::logits_tensor;
use crate::clip::encode::{image_features, BATCH};
use crate::clip::LoadedClip;
use crate::error::{Error, Result};
use crate::progress::Progress;

/// One image's best classes, best first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImagePrediction {
    pub path: PathBuf,
    /// (class name, probability over all classes).
    pub top: Vec<(String, f32)>,
}

/// The `k` most probable of `names` (the rows of `weights`, `[C, P]`, normalised) for each image, in
/// `images` order. An image that cannot be read is an error naming it.
pub fn top_k(
    clip: &LoadedClip,
    weights: &Tensor,
    names: &[String],
    images: &[PathBuf],
    k: usize,
    progress: &dyn Progress,
) -> Result<Vec<ImagePrediction>> {
    let rows = weights.dim(0)?;
    if rows != names.len() {
        return Err(Error::invalid(format!(
            "{rows} class weights for {} class names",
            names.len()
        )));
    }
    let scale = clip.logit_scale();
    top_k_by(
        clip,
        &|feats| logits_tensor(feats, weights, scale),
        names,
        images,
        k,
        progress,
    )
}

/// [`top_k`] with the logits `[N, C]` of the images' features `[N, P]` (not normalised) from `score`.
pub fn top_k_by(
    clip: &LoadedClip,
    score: &dyn Fn(&Tensor) -> Result<Tensor>,
    names: &[String],
    images: &[PathBuf],
    k: usize,
    progress: &dyn Progress,
) -> Result<Vec<ImagePrediction>> {
    if k == 0 {
        return Err(Error::invalid("--top-k must be at least 1"));
    }
    let feats = image_features(clip, images, BATCH, progress)?;
    let logits: Vec<Vec<f32>> = score(&feats)?.to_vec2()?;
    if logits.first().is_some_and(|r| r.len() != names.len()) {
        return Err(Error::invalid(format!(
            "{} class scores for {} class names",
            logits[0].len(),
            names.len()
        )));
    }
    Ok(images
        .iter()
        .zip(&logits)
        .map(|(path, row)| {
            let probs = softmax(row);
            let mut order: Vec<usize> = (0..row.len()).collect();
            // Ties keep class order, as `metrics::evaluate` ranks them.
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let top = order
                .into_iter()
                .take(k)
                .map(|c| (names[c].clone(), probs[c]))
                .collect();
            ImagePrediction {
                path: path.clone(),
                top,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clip::{l2_normalize, ClipConfig, HiddenAct};
    use crate::progress::Silent;

    #[test]
    fn top_k_ranks_like_zero_shot_and_names_a_bad_image() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m");
        crate::clip::synth::write_model_folder(
            &ClipConfig::tiny(HiddenAct::QuickGelu, 1e-5),
            &model,
        )
        .unwrap();
        let clip = crate::clip::load::load_dir(&model, "tiny", &candle_core::Device::Cpu).unwrap();
        let data = dir.path().join("d");
        crate::data::synth::write_dataset(&data, 4, 2, None, 0).unwrap();
        let ds = crate::data::DatasetFolder::open(&data).unwrap();
        let images: Vec<PathBuf> = ds.all.iter().map(|s| s.path.clone()).take(3).collect();
        let w = super::super::zeroshot::class_weights(
            &clip,
            &ds.class_names,
            &["a photo of a {}.".into()],
            &Silent,
        )
        .unwrap();
        let got = top_k(&clip, &w, &ds.class_names, &images, 3, &Silent).unwrap();
        assert_eq!(got.len(), 3);
        let feats = l2_normalize(&image_features(&clip, &images, 1, &Silent).unwrap()).unwrap();
        let scores: Vec<Vec<f32>> = feats.matmul(&w.t().unwrap()).unwrap().to_vec2().unwrap();
        for (p, row) in got.iter().zip(&scores) {
            assert_eq!(p.top.len(), 3);
            let best = (0..row.len())
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap();
            assert_eq!(p.top[0].0, ds.class_names[best]);
            assert!(p.top.windows(2).all(|w| w[0].1 >= w[1].1));
            let sum: f32 = p.top.iter().map(|t| t.1).sum();
            assert!(sum > 0.0 && sum <= 1.0 + 1e-6, "{sum}");
        }
        // k past the class count gives every class, summing to 1.
        let all = top_k(&clip, &w, &ds.class_names, &images[..1], 10, &Silent).unwrap();
        assert_eq!(all[0].top.len(), 4);
        assert!((all[0].top.iter().map(|t| t.1).sum::<f32>() - 1.0).abs() < 1e-5);

        let bad = dir.path().join("broken.png");
        std::fs::write(&bad, b"not a png").unwrap();
        let err = top_k(
            &clip,
            &w,
            &ds.class_names,
            &[images[0].clone(), bad],
            1,
            &Silent,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("broken.png"), "{err}");
        assert!(top_k(&clip, &w, &ds.class_names, &images, 0, &Silent).is_err());
    }
}
