//! Adapters trained on cached image features, both towers frozen:
//!
//! - **CLIP-Adapter** (Gao et al. 2021): a bottleneck MLP on the image feature,
//!   `x = ReLU(ReLU(f·W₁ᵀ)·W₂ᵀ)` (W₁: P → P/4, W₂: P/4 → P, no biases), mixed back with ratio 0.2:
//!   `f' = 0.2·x + 0.8·f`, then `s·f̂'·Wᵀ` against the hand-crafted class weights.
//! - **Tip-Adapter-F** (Zhang et al. 2022): Tip-Adapter's cache keys made trainable (`f̂·Kᵀ` is a
//!   linear layer initialised with the keys), AdamW (lr 1e-3, ε 1e-4), cosine decay; α and β searched
//!   on validation again after training.
//!
//! Both train on the epoch loop ([`super::epoch_loop`]) like CoOp, one view per image per epoch.

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::epoch_loop::{EpochLoop, TrainStep, Validation};
use super::features::FeatureSet;
use super::optim::{AdamW, OptimConfig, Sgd};
use crate::clip::l2_normalize;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::train::tip_adapter::TipCache;

/// CLIP-Adapter's bottleneck and residual ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClipAdapterConfig {
    /// P / hidden width (4).
    pub reduction: usize,
    /// Weight of the adapted feature in the mix (0.2).
    pub ratio: f64,
}

impl Default for ClipAdapterConfig {
    fn default() -> Self {
        ClipAdapterConfig {
            reduction: 4,
            ratio: 0.2,
        }
    }
}

/// The feature-level model being trained.
pub enum Adapter {
    /// W₁ `[P/r, P]`, W₂ `[P, P/r]` (torch's Linear layout: out × in).
    Clip { down: Var, up: Var, ratio: f64 },
    /// Trainable keys `[N, P]`, fixed one-hot values `[N, C]`, the cache's α and β.
    TipF {
        keys: Var,
        values: Tensor,
        alpha: f64,
        beta: f64,
    },
}

impl Adapter {
    /// CLIP-Adapter with torch's default Linear initialisation (uniform ±1/√fan_in), seeded.
    pub fn clip(
        p: usize,
        cfg: ClipAdapterConfig,
        seed: u64,
        device: &candle_core::Device,
    ) -> Result<Self> {
        if cfg.reduction == 0 || p / cfg.reduction == 0 || !(0.0..=1.0).contains(&cfg.ratio) {
            return Err(Error::invalid(format!(
                "CLIP-Adapter needs a reduction in 1..={p} and a ratio in 0..=1 (got {} and {})",
                cfg.reduction, cfg.ratio
            )));
        }
        let hidden = p / cfg.reduction;
        let mut rng = Rng::new(seed);
        let mut uniform = |n: usize, fan_in: usize| -> Vec<f32> {
            let bound = 1.0 / (fan_in as f64).sqrt();
            // 53 random bits → a uniform in [0, 1).
            (0..n)
                .map(|_| {
                    (((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * bound)
                        as f32
                })
                .collect()
        };
        let down = Var::from_tensor(&Tensor::from_vec(
            uniform(hidden * p, p),
            (hidden, p),
            device,
        )?)?;
        let up = Var::from_tensor(&Tensor::from_vec(
            uniform(p * hidden, hidden),
            (p, hidden),
            device,
        )?)?;
        Ok(Adapter::Clip {
            down,
            up,
            ratio: cfg.ratio,
        })
    }

    /// Tip-Adapter-F, starting from Tip-Adapter's cache.
    pub fn tip_f(cache: &TipCache, alpha: f64, beta: f64) -> Result<Self> {
        Ok(Adapter::TipF {
            keys: Var::from_tensor(&cache.keys)?,
            values: cache.values.clone(),
            alpha,
            beta,
        })
    }

    pub fn vars(&self) -> Vec<&Var> {
        match self {
            Adapter::Clip { down, up, .. } => vec![down, up],
            Adapter::TipF { keys, .. } => vec![keys],
        }
    }

    /// Logits of image features `[B, P]` against normalised class weights `[C, P]` at logit scale `s`.
    pub fn logits(&self, feats: &Tensor, weights: &Tensor, scale: f64) -> Result<Tensor> {
        match self {
            Adapter::Clip { down, up, ratio } => {
                let x = feats
                    .matmul(&down.as_tensor().t()?)?
                    .relu()?
                    .matmul(&up.as_tensor().t()?)?
                    .relu()?;
                let mixed = ((x * *ratio)? + (feats * (1.0 - ratio))?)?;
                Ok((l2_normalize(&mixed)?.matmul(&weights.t()?)? * scale)?)
            }
            Adapter::TipF {
                keys,
                values,
                alpha,
                beta,
            } => {
                let f = l2_normalize(feats)?;
                let affinity = f.matmul(&keys.as_tensor().t()?)?;
                let cache = affinity.affine(*beta, -*beta)?.exp()?.matmul(values)?;
                Ok(((f.matmul(&weights.t()?)? * scale)? + (cache * *alpha)?)?)
            }
        }
    }
}

/// How an adapter is optimised: CLIP-Adapter as CoOp (SGD with momentum), Tip-Adapter-F with AdamW.
enum Optimizers {
    Sgd(Vec<Sgd>),
    AdamW(Vec<AdamW>),
}

/// One adapter training on a feature set: the [`TrainStep`] the epoch loop drives.
pub struct AdapterTrainer<'a> {
    pub adapter: Adapter,
    pub weights: Tensor,
    pub scale: f64,
    train: &'a FeatureSet,
    val: Option<&'a FeatureSet>,
    opt: Optimizers,
    pub state: EpochLoop,
}

impl<'a> AdapterTrainer<'a> {
    /// `weights`: the hand-crafted prompt's normalised class weights; `optim.momentum` and
    /// `weight_decay` configure SGD for CLIP-Adapter, `weight_decay` AdamW for Tip-Adapter-F.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        adapter: Adapter,
        weights: Tensor,
        scale: f64,
        train: &'a FeatureSet,
        val: Option<&'a FeatureSet>,
        optim: OptimConfig,
        batch_size: Option<usize>,
        seed: u64,
    ) -> Self {
        let opt = match &adapter {
            Adapter::Clip { .. } => Optimizers::Sgd(
                adapter
                    .vars()
                    .iter()
                    .map(|_| Sgd::new(optim.momentum, optim.weight_decay))
                    .collect(),
            ),
            Adapter::TipF { .. } => {
                Optimizers::AdamW(vec![AdamW::new(optim.weight_decay).with_eps(TIP_F_EPS)])
            }
        };
        let state = EpochLoop::new(optim, batch_size, seed);
        AdapterTrainer {
            adapter,
            weights,
            scale,
            train,
            val,
            opt,
            state,
        }
    }

    /// Accuracy of the current adapter on a set (first view of each image).
    pub fn accuracy(&self, set: &FeatureSet) -> Result<f64> {
        if set.num_images() == 0 {
            return Ok(0.0);
        }
        set.accuracy_of(
            &self
                .adapter
                .logits(&set.first_views()?, &self.weights, self.scale)?,
        )
    }
}

/// Tip-Adapter-F's AdamW ε.
pub const TIP_F_EPS: f64 = 1e-4;

impl TrainStep for AdapterTrainer<'_> {
    fn state(&mut self) -> &mut EpochLoop {
        &mut self.state
    }

    fn step(&mut self, rows: &[usize], lr: f64) -> Result<(f64, usize)> {
        let (feats, labels) = super::epoch_loop::batch(self.train, rows)?;
        let (loss, correct) = super::epoch_loop::cross_entropy(
            &self.adapter.logits(&feats, &self.weights, self.scale)?,
            &labels,
        )?;
        let grads = loss.backward()?;
        let vars = self.adapter.vars();
        for (i, v) in vars.iter().enumerate() {
            let g = grads
                .get(v.as_tensor())
                .ok_or_else(|| Error::invalid("no gradient reached the adapter"))?;
            match &mut self.opt {
                Optimizers::Sgd(o) => o[i].step(v, g, lr)?,
                Optimizers::AdamW(o) => o[i].step(v, g, lr)?,
            }
        }
        Ok((f64::from(loss.to_scalar::<f32>()?), correct))
    }

    fn validate(&mut self) -> Result<Validation> {
        Ok(Validation::acc(match self.val {
            Some(v) if !v.labels.is_empty() => Some(self.accuracy(v)?),
            _ => None,
        }))
    }
}
