//! Tip-Adapter (Zhang et al. 2022), training-free: a key–value cache of the K-shot training features
//! (keys: each image's features averaged over its augmented views, normalised; values: one-hot labels)
//! added to CLIP's zero-shot logits,
//!
//! `logits = s·f·Wᵀ + α·exp(−β(1 − f·F_cacheᵀ))·L`,
//!
//! with `s` the model's logit scale (100 for OpenAI's CLIP, the constant Tip-Adapter writes). α and β are
//! searched on the **validation** split: Tip-Adapter's published ImageNet script searches them on the test
//! set, which flatters it; here the test split is only ever scored.

use candle_core::{DType, Tensor, D};
use serde::Serialize;

use super::features::FeatureSet;
use crate::clip::l2_normalize;
use crate::error::{Error, Result};

/// The cache: normalised keys `[N, P]` and one-hot values `[N, C]`.
pub struct TipCache {
    pub keys: Tensor,
    pub values: Tensor,
}

/// Tip-Adapter's grid (its configs' `search_scale: [7, 3]`, `search_step: [200, 20]`): β in
/// 0.1 … 7 over 200 steps, α in 0.1 … 3 over 20 steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SearchGrid {
    pub beta_max: f64,
    pub beta_steps: usize,
    pub alpha_max: f64,
    pub alpha_steps: usize,
}

impl Default for SearchGrid {
    fn default() -> Self {
        SearchGrid {
            beta_max: 7.0,
            beta_steps: 200,
            alpha_max: 3.0,
            alpha_steps: 20,
        }
    }
}

impl SearchGrid {
    /// Tip-Adapter's lists: `i·(max − 0.1)/steps + 0.1` for i in 0..steps.
    fn values(max: f64, steps: usize) -> Vec<f64> {
        (0..steps)
            .map(|i| i as f64 * (max - 0.1) / steps as f64 + 0.1)
            .collect()
    }
    pub fn betas(&self) -> Vec<f64> {
        Self::values(self.beta_max, self.beta_steps)
    }
    pub fn alphas(&self) -> Vec<f64> {
        Self::values(self.alpha_max, self.alpha_steps)
    }
}

impl TipCache {
    /// The cache of a training set (views of an image are consecutive rows), `classes` wide.
    pub fn build(train: &FeatureSet, classes: usize) -> Result<Self> {
        let views = train.views_per_image.max(1);
        let n = train.num_images();
        if n == 0 {
            return Err(Error::invalid(
                "Tip-Adapter needs at least one training image per class",
            ));
        }
        let p = train.feats.dim(1)?;
        // Mean over the augmented views, then normalised (Tip-Adapter's build_cache_model).
        let keys = l2_normalize(&train.feats.reshape((n, views, p))?.mean(1)?)?;
        let labels: Vec<u32> = train.image_labels().into_iter().map(|l| l as u32).collect();
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(Error::invalid(format!(
                "label {bad} in the cache of a {classes}-class set"
            )));
        }
        let values = one_hot(&labels, classes, train.feats.device())?;
        Ok(TipCache { keys, values })
    }

    /// Tip-Adapter's logits of image features `[B, P]` (normalised here) against normalised class
    /// weights `[C, P]`.
    pub fn logits(
        &self,
        feats: &Tensor,
        weights: &Tensor,
        scale: f64,
        alpha: f64,
        beta: f64,
    ) -> Result<Tensor> {
        let f = l2_normalize(feats)?;
        let clip_logits = (f.matmul(&weights.t()?)? * scale)?;
        Ok((clip_logits
            + (self
                .affinity(&f)?
                .affine(beta, -beta)?
                .exp()?
                .matmul(&self.values)?
                * alpha)?)?)
    }

    /// `f·F_cacheᵀ` of normalised features (computed once for the whole search grid).
    fn affinity(&self, f: &Tensor) -> Result<Tensor> {
        Ok(f.matmul(&self.keys.t()?)?)
    }

    /// The (α, β) of `grid` with the best accuracy on `val` (first best in grid order, β outer as in
    /// Tip-Adapter's search), and that accuracy.
    pub fn search(
        &self,
        val: &FeatureSet,
        weights: &Tensor,
        scale: f64,
        grid: &SearchGrid,
    ) -> Result<Searched> {
        if val.labels.is_empty() {
            return Err(Error::invalid("Tip-Adapter searches α and β on the validation split, which is empty: add val/ images or use more shots"));
        }
        let f = l2_normalize(&val.first_views()?)?;
        let clip_logits = (f.matmul(&weights.t()?)? * scale)?;
        let affinity = self.affinity(&f)?;
        let labels: Vec<u32> = val.image_labels().into_iter().map(|l| l as u32).collect();
        let labels = Tensor::new(labels.as_slice(), f.device())?;
        let mut best = Searched {
            alpha: 1.0,
            beta: 1.0,
            val_acc: -1.0,
        };
        for beta in grid.betas() {
            let cache = affinity.affine(beta, -beta)?.exp()?.matmul(&self.values)?;
            for alpha in grid.alphas() {
                let logits = (&clip_logits + (&cache * alpha)?)?;
                let right = logits
                    .argmax(D::Minus1)?
                    .eq(&labels)?
                    .to_dtype(DType::F32)?
                    .mean_all()?
                    .to_scalar::<f32>()?;
                if f64::from(right) > best.val_acc {
                    best = Searched {
                        alpha,
                        beta,
                        val_acc: f64::from(right),
                    };
                }
            }
        }
        Ok(best)
    }
}

/// The chosen (α, β) and their validation accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Searched {
    pub alpha: f64,
    pub beta: f64,
    pub val_acc: f64,
}

fn one_hot(labels: &[u32], classes: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mut v = vec![0f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        v[i * classes + l as usize] = 1.0;
    }
    Ok(Tensor::from_vec(v, (labels.len(), classes), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_cache_averages_views_and_recovers_its_own_training_images() {
        // Two classes, two images each, two views each: the cache alone (large α, β) labels a training
        // image's own features with its class.
        let d = Device::Cpu;
        let rows: Vec<f32> = vec![
            1.0, 0.1, 0.0, 0.9, 0.0, 0.1, // image 0 (class 0), two views
            0.8, 0.0, 0.2, 1.0, 0.2, 0.0, // image 1 (class 0)
            0.0, 1.0, 0.1, 0.1, 0.9, 0.0, // image 2 (class 1)
            0.0, 0.1, 1.0, 0.0, 0.0, 0.9, // image 3 (class 1)
        ];
        let train = FeatureSet {
            feats: Tensor::from_vec(rows, (8, 3), &d).unwrap(),
            labels: vec![0, 0, 0, 0, 1, 1, 1, 1],
            views_per_image: 2,
        };
        let cache = TipCache::build(&train, 2).unwrap();
        assert_eq!(cache.keys.dims(), &[4, 3]);
        let k0: Vec<f32> = cache.keys.get(0).unwrap().to_vec1().unwrap();
        let mean = [0.95f32, 0.05, 0.05];
        let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            k0.iter()
                .zip(mean)
                .all(|(a, b)| (a - b / norm).abs() < 1e-6),
            "{k0:?}"
        );
        // Class weights that know nothing (equal for both classes): the cache decides.
        let w = l2_normalize(
            &Tensor::from_vec(vec![1f32, 1.0, 1.0, 1.0, 1.0, 1.0], (2, 3), &d).unwrap(),
        )
        .unwrap();
        let logits = cache.logits(&cache.keys, &w, 1.0, 10.0, 5.0).unwrap();
        let pred: Vec<u32> = logits.argmax(D::Minus1).unwrap().to_vec1().unwrap();
        assert_eq!(pred, vec![0, 0, 1, 1]);
        // The search prefers a positive cache weight over none on such a set.
        let s = cache
            .search(&train, &w, 1.0, &SearchGrid::default())
            .unwrap();
        assert_eq!(s.val_acc, 1.0);
        assert!(TipCache::build(
            &FeatureSet {
                feats: Tensor::zeros((0, 3), DType::F32, &d).unwrap(),
                labels: vec![],
                views_per_image: 1
            },
            2
        )
        .is_err());
    }
}
