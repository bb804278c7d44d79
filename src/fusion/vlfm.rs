//! MP-FGVC's vision-language fusion module (VLFM, METHODS §5): cross-modal attention from the visual
//! class embedding E_V over itself and the C text embeddings E_T^c, a translation block, a classifier.
//!
//! ```text
//! Q0 = q(E_V)   K0 = k(E_V)   V0 = v(E_V)   K_c = k(E_T^c)   V_c = v(E_T^c)      (c = 1..C)
//! S_i = softmax_i(Q0·K_iᵀ / √D)  over i = 0..C
//! E'_V = Σ_i S_i V_i
//! Ê_V = W2 · GELU(W1 · E'_V)          (W1: D → 4D, W2: 4D → D)
//! logits = classifier(Ê_V)            (D → C)
//! ```
//!
//! Decisions the paper leaves open, and why:
//! - **The key and value maps are shared** between the visual and the text inputs. The paper passes the
//!   multimodal sequence `[E_V, E_T]` through a 1×1 convolution, and a 1×1 convolution applies the same
//!   weights at every position of its input; the text keys/values are made "in the same way". Sharing
//!   also keeps Q0·K0 and Q0·K_c on one scale, so the softmax compares like with like. The PyTorch
//!   reference (`scripts/make_vlfm_fixtures.py`) does the same.
//! - **GELU (exact, erf)** between the two translation layers. The paper names no activation, but two
//!   linear layers without one compose to a single linear map of rank ≤ D, which would make the ×4
//!   expansion pointless; an expand-activate-reduce pair is the transformer MLP, and the paper's backbone
//!   (ViT-B/16) uses GELU there. PyTorch's `nn.GELU()` default is the erf form.
//! - Every map has a bias (a 1×1 convolution has one by default). No residual connection, no
//!   normalisation: the paper shows none.
//! - D is the width of the inputs, the joint image-text space (CLIP's projection dimension), so the maps
//!   are D → D and the attention scale is 1/√D.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use super::params::ParamLinear;
use crate::clip::layers::softmax_last_dim;
use crate::error::{Error, Result};

/// The translation block's expansion factor (the paper's 4).
pub const EXPANSION: usize = 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VlfmConfig {
    /// Width D of E_V and E_T.
    pub dim: usize,
    /// C: the number of text embeddings and of classes.
    pub num_classes: usize,
    pub expansion: usize,
    /// Seed of the initialisation.
    pub seed: u64,
}

pub struct Vlfm {
    pub config: VlfmConfig,
    pub query: ParamLinear,
    /// Shared by E_V and every E_T^c (see the module notes).
    pub key: ParamLinear,
    pub value: ParamLinear,
    /// Translation block: D → expansion·D, GELU, → D.
    pub expand: ParamLinear,
    pub reduce: ParamLinear,
    pub classifier: ParamLinear,
}

/// Everything the forward pass computes, for tests and for showing the attention.
#[derive(Debug, Clone)]
pub struct VlfmOutput {
    /// `[B, C+1]`: S_0 (the image itself) then S_1..S_C (the text embeddings).
    pub attention: Tensor,
    /// `[B, D]`: E'_V.
    pub fused: Tensor,
    /// `[B, D]`: Ê_V.
    pub refined: Tensor,
    /// `[B, C]`.
    pub logits: Tensor,
}

/// Parameter names, in the order they are saved; the same as the PyTorch reference module's state dict
/// (`trans.0` / `trans.2` are the layers of `nn.Sequential(Linear, GELU, Linear)`).
const NAMES: [&str; 6] = ["q", "k", "v", "trans.0", "trans.2", "classifier"];

impl Vlfm {
    pub fn new(config: &VlfmConfig, device: &Device) -> Result<Self> {
        Self::check(config)?;
        let (d, h, c, s) = (
            config.dim,
            config.expansion * config.dim,
            config.num_classes,
            config.seed,
        );
        Ok(Self {
            config: config.clone(),
            query: ParamLinear::new(d, d, s, "vlfm.q", device)?,
            key: ParamLinear::new(d, d, s, "vlfm.k", device)?,
            value: ParamLinear::new(d, d, s, "vlfm.v", device)?,
            expand: ParamLinear::new(d, h, s, "vlfm.trans.0", device)?,
            reduce: ParamLinear::new(h, d, s, "vlfm.trans.2", device)?,
            classifier: ParamLinear::new(d, c, s, "vlfm.classifier", device)?,
        })
    }

    fn check(config: &VlfmConfig) -> Result<()> {
        if config.dim == 0 || config.num_classes == 0 || config.expansion == 0 {
            return Err(Error::invalid(format!(
                "VLFM needs a width, classes and an expansion factor, got {config:?}"
            )));
        }
        Ok(())
    }

    /// From tensors named as [`Vlfm::named_vars`] names them (`q.weight`, ..., without a prefix).
    pub fn from_tensors(
        config: &VlfmConfig,
        tensors: &HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        Self::check(config)?;
        let (d, h, c) = (
            config.dim,
            config.expansion * config.dim,
            config.num_classes,
        );
        let get = |name: &str, i: usize, o: usize| -> Result<ParamLinear> {
            let t = |k: &str| {
                tensors
                    .get(&format!("{name}.{k}"))
                    .ok_or_else(|| Error::invalid(format!("VLFM tensor '{name}.{k}' is missing")))
            };
            ParamLinear::from_tensors(t("weight")?, t("bias")?, i, o, name, device)
        };
        Ok(Self {
            config: config.clone(),
            query: get(NAMES[0], d, d)?,
            key: get(NAMES[1], d, d)?,
            value: get(NAMES[2], d, d)?,
            expand: get(NAMES[3], d, h)?,
            reduce: get(NAMES[4], h, d)?,
            classifier: get(NAMES[5], d, c)?,
        })
    }

    /// Every parameter with its saved name, in a fixed order (the optimiser keeps one state per entry).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let maps = [
            &self.query,
            &self.key,
            &self.value,
            &self.expand,
            &self.reduce,
            &self.classifier,
        ];
        NAMES
            .iter()
            .zip(maps)
            .flat_map(|(n, m)| m.named_vars(n))
            .collect()
    }

    /// `e_v`: `[B, D]` visual class embeddings; `e_t`: `[C, D]` text embeddings (shared by the batch).
    pub fn forward(&self, e_v: &Tensor, e_t: &Tensor) -> Result<VlfmOutput> {
        let (d, c) = (self.config.dim, self.config.num_classes);
        let (_, dv) = e_v.dims2()?;
        let (ct, dt) = e_t.dims2()?;
        if dv != d || dt != d || ct != c {
            return Err(Error::invalid(format!(
                "VLFM of width {d} over {c} classes got image embeddings of width {dv} and {ct} text embeddings of width {dt}"
            )));
        }
        let scale = 1.0 / (d as f64).sqrt();
        let q0 = self.query.forward(e_v)?;
        let k0 = self.key.forward(e_v)?;
        let v0 = self.value.forward(e_v)?;
        let kt = self.key.forward(e_t)?;
        let vt = self.value.forward(e_t)?;
        // Scores of each image against itself [B, 1] and against the C text keys [B, C].
        let s0 = (&q0 * &k0)?.sum_keepdim(D::Minus1)?;
        let st = q0.matmul(&kt.t()?)?;
        let attention = softmax_last_dim(&(Tensor::cat(&[&s0, &st], 1)? * scale)?)?;
        let a0 = attention.narrow(1, 0, 1)?;
        let at = attention.narrow(1, 1, c)?;
        let fused = (a0.broadcast_mul(&v0)? + at.matmul(&vt)?)?;
        let refined = self
            .reduce
            .forward(&self.expand.forward(&fused)?.gelu_erf()?)?;
        let logits = self.classifier.forward(&refined)?;
        Ok(VlfmOutput {
            attention,
            fused,
            refined,
            logits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_rows_sum_to_one_and_saving_round_trips() {
        let dev = Device::Cpu;
        let cfg = VlfmConfig {
            dim: 6,
            num_classes: 3,
            expansion: EXPANSION,
            seed: 4,
        };
        let m = Vlfm::new(&cfg, &dev).unwrap();
        let ev = Tensor::from_vec(
            (0..12).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(),
            (2, 6),
            &dev,
        )
        .unwrap();
        let et = Tensor::from_vec(
            (0..18).map(|i| (i as f32 * 0.11).cos()).collect::<Vec<_>>(),
            (3, 6),
            &dev,
        )
        .unwrap();
        let out = m.forward(&ev, &et).unwrap();
        assert_eq!(out.attention.dims(), [2, 4]);
        assert_eq!(out.logits.dims(), [2, 3]);
        let sums: Vec<f32> = out.attention.sum(1).unwrap().to_vec1().unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-6), "{sums:?}");

        let saved: HashMap<String, Tensor> = m
            .named_vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        assert_eq!(saved.len(), 12);
        let back = Vlfm::from_tensors(&cfg, &saved, &dev).unwrap();
        let again = back.forward(&ev, &et).unwrap();
        let diff = (out.logits - again.logits)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
        // The same seed initialises the same module; another seed another.
        let same = Vlfm::new(&cfg, &dev)
            .unwrap()
            .query
            .weight
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(
            same,
            m.query
                .weight
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
        let other = Vlfm::new(
            &VlfmConfig {
                seed: 5,
                ..cfg.clone()
            },
            &dev,
        )
        .unwrap();
        assert_ne!(
            same,
            other
                .query
                .weight
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );

        let wrong = Tensor::zeros((2, 6), candle_core::DType::F32, &dev).unwrap();
        assert!(m
            .forward(&ev, &wrong)
            .unwrap_err()
            .to_string()
            .contains("2 text embeddings"));
    }
}
