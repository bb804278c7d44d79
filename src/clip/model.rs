//! The two towers and the learned temperature of a CLIP checkpoint (`CLIPModel`).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::config::ClipConfig;
use super::text::TextTower;
use super::vision::VisionTower;

#[derive(Debug, Clone)]
pub struct ClipModel {
    pub config: ClipConfig,
    pub text: TextTower,
    pub vision: VisionTower,
    /// `logit_scale` as stored (a log); scores use its exponential.
    pub logit_scale_log: f32,
}

impl ClipModel {
    pub fn load(config: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        let text = TextTower::load(&config.text_config, config.projection_dim, vb.clone())?;
        let vision = VisionTower::load(&config.vision_config, config.projection_dim, vb.clone())?;
        let logit_scale_log = vb.get((), "logit_scale")?.to_scalar::<f32>()?;
        Ok(Self {
            config: config.clone(),
            text,
            vision,
            logit_scale_log,
        })
    }

    /// `exp(logit_scale)`, ≈100 for OpenAI's weights.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale_log.exp()
    }

    /// transformers' `get_text_features`: projected, not normalised.
    pub fn text_features(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        self.text.forward_ids_auto(ids)
    }

    /// transformers' `get_image_features`: projected, not normalised.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        self.vision.pooled_from(&self.vision.embed(pixels)?, 0)
    }
}

/// Rows divided by their L2 norm.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    x.broadcast_div(&x.sqr()?.sum_keepdim(candle_core::D::Minus1)?.sqrt()?)
}
