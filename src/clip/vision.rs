//! CLIP's vision tower (`CLIPVisionTransformer`) with the internals that FILIP and SsVP need: per-token
//! outputs, one block's attention probabilities and the hidden states entering a block. Blocks stay
//! public and callable one by one.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::VisionConfig;
use super::kernels::{cpu, TowerWeights};
use super::layers::{load_layers, tower_weights, EncoderLayer, LayerNorm, Linear};

#[derive(Debug, Clone)]
pub struct VisionTower {
    /// The patch convolution's weight as a matrix `[D, C·P·P]` (the conv has stride = kernel and no bias,
    /// so it is one matmul over unfolded patches).
    pub patch_weight: Tensor,
    pub class_embedding: Tensor,
    pub position_embedding: Tensor,
    pub pre_layrnorm: LayerNorm,
    pub layers: Vec<EncoderLayer>,
    pub post_layernorm: LayerNorm,
    pub projection: Linear,
    pub config: VisionConfig,
}

/// Which internals to return besides the pooled feature.
#[derive(Debug, Clone, Copy, Default)]
pub struct VisionRequest {
    /// Every token through `post_layernorm` and `visual_projection`.
    pub tokens: bool,
    /// Attention probabilities `[B, heads, N+1, N+1]` of this block (0-based).
    pub attention_of: Option<usize>,
    /// Hidden states `[B, N+1, D]` entering this block (0-based; `num_layers` = the final output).
    pub hidden_into: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct VisionOutput {
    /// `[B, projection_dim]`, not normalised (transformers' `get_image_features`).
    pub pooled: Tensor,
    /// `[B, N+1, projection_dim]`, class token first.
    pub tokens: Option<Tensor>,
    pub attention: Option<Tensor>,
    pub hidden: Option<Tensor>,
}

impl VisionTower {
    /// The weights as the kernels read them (tensor handles: nothing is copied).
    pub fn kernel_weights(&self) -> Result<TowerWeights> {
        let c = &self.config;
        tower_weights(
            None,
            &self.layers,
            &self.post_layernorm,
            &self.projection,
            c.hidden_act,
            c.num_attention_heads,
            c.intermediate_size,
        )
    }
}

impl VisionTower {
    pub fn load(cfg: &VisionConfig, projection_dim: usize, vb: VarBuilder) -> Result<Self> {
        let v = vb.pp("vision_model");
        let emb = v.pp("embeddings");
        let (d, p, c) = (cfg.hidden_size, cfg.patch_size, cfg.num_channels);
        let patch = emb.pp("patch_embedding").get((d, c, p, p), "weight")?;
        Ok(Self {
            patch_weight: patch.reshape((d, c * p * p))?,
            class_embedding: emb.get(d, "class_embedding")?,
            position_embedding: emb
                .pp("position_embedding")
                .get((cfg.num_patches() + 1, d), "weight")?,
            pre_layrnorm: LayerNorm::load(d, cfg.layer_norm_eps, v.pp("pre_layrnorm"))?,
            layers: load_layers(
                cfg.num_hidden_layers,
                d,
                cfg.intermediate_size,
                cfg.num_attention_heads,
                cfg.hidden_act,
                cfg.layer_norm_eps,
                v.pp("encoder").pp("layers"),
            )?,
            post_layernorm: LayerNorm::load(d, cfg.layer_norm_eps, v.pp("post_layernorm"))?,
            projection: Linear::load(d, projection_dim, false, vb.pp("visual_projection"))?,
            config: cfg.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        self.patch_weight.device()
    }

    /// Pixels `[B, C, H, W]` → the hidden states entering block 0, `[B, N+1, D]`.
    pub fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixels.dims4()?;
        let cfg = &self.config;
        if c != cfg.num_channels || h != cfg.image_size || w != cfg.image_size {
            candle_core::bail!(
                "pixels of shape [{b}, {c}, {h}, {w}] but the model takes [B, {}, {s}, {s}]",
                cfg.num_channels,
                s = cfg.image_size
            );
        }
        let (p, g, d) = (cfg.patch_size, cfg.grid(), cfg.hidden_size);
        let patches = pixels
            .reshape(vec![b, c, g, p, g, p])?
            .permute(vec![0, 2, 4, 1, 3, 5])?
            .contiguous()?
            .reshape((b * g * g, c * p * p))?;
        let patches = patches
            .matmul(&self.patch_weight.t()?)?
            .reshape((b, g * g, d))?;
        let cls = self
            .class_embedding
            .reshape((1, 1, d))?
            .broadcast_as((b, 1, d))?;
        let x = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.position_embedding)?;
        self.pre_layrnorm.forward(&x)
    }

    /// Runs blocks `from..to` on `x`.
    pub fn run_blocks(&self, x: &Tensor, from: usize, to: usize) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers[from..to] {
            x = layer.forward(&x, None, false)?.0;
        }
        Ok(x)
    }

    /// The pooled feature of hidden states `[B, T, D]` entering block `from`: blocks `from..`, the last
    /// one on the class token alone (nothing else of it is read), then `post_layernorm` and the
    /// projection. Equal to [`Self::pool`] of the full forward pass. On the CPU, the kernels of `kernels::cpu`.
    pub fn pooled_from(&self, hidden: &Tensor, from: usize) -> Result<Tensor> {
        if cpu::runs_here(&self.patch_weight, self.config.hidden_act) {
            return cpu::vision_pooled_from(&self.kernel_weights()?, hidden, from);
        }
        let n = self.layers.len();
        if from >= n {
            return self.pool(hidden);
        }
        let x = self.run_blocks(hidden, from, n - 1)?;
        self.pool(&self.layers[n - 1].forward_first_token(&x)?)
    }

    /// The pooled feature from a final hidden state `[B, T, D]` (class token first).
    pub fn pool(&self, hidden: &Tensor) -> Result<Tensor> {
        let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        self.projection
            .forward(&self.post_layernorm.forward(&cls.contiguous()?)?)
    }

    /// Every token of a final hidden state through `post_layernorm` and `visual_projection`.
    pub fn project_tokens(&self, hidden: &Tensor) -> Result<Tensor> {
        self.projection
            .forward(&self.post_layernorm.forward(hidden)?)
    }

    pub fn forward(&self, pixels: &Tensor, req: VisionRequest) -> Result<VisionOutput> {
        let n = self.layers.len();
        if let Some(i) = req.attention_of.filter(|&i| i >= n) {
            candle_core::bail!("block {i} requested but the vision tower has {n} blocks");
        }
        if let Some(i) = req.hidden_into.filter(|&i| i > n) {
            candle_core::bail!(
                "hidden states into block {i} requested but the vision tower has {n} blocks"
            );
        }
        let mut x = self.embed(pixels)?;
        let mut attention = None;
        let mut hidden = None;
        for (i, layer) in self.layers.iter().enumerate() {
            if req.hidden_into == Some(i) {
                hidden = Some(x.clone());
            }
            let (y, probs) = layer.forward(&x, None, req.attention_of == Some(i))?;
            if probs.is_some() {
                attention = probs;
            }
            x = y;
        }
        if req.hidden_into == Some(n) {
            hidden = Some(x.clone());
        }
        let pooled = self.pool(&x)?;
        let tokens = if req.tokens {
            Some(self.project_tokens(&x)?)
        } else {
            None
        };
        Ok(VisionOutput {
            pooled,
            tokens,
            attention,
            hidden,
        })
    }
}
