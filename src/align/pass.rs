//! One run of the vision tower that keeps everything alignment needs, so that comparing methods on a
//! split (global feature, token-wise scores, SsVP) costs one forward pass per image, not three.

use candle_core::Tensor;

use crate::clip::vision::VisionTower;
use crate::error::{Error, Result};

/// The vision tower's internals for a batch `[B, 3, H, W]`.
#[derive(Debug, Clone)]
pub struct VisionPass {
    /// Hidden states `[B, N+1, D]` entering the last block (value-path features and SsVP start here).
    pub into_last: Tensor,
    /// Final hidden states `[B, N+1, D]` (token-mode features and the pooled feature come from here).
    pub last: Tensor,
    /// Attention probabilities `[B, heads, N+1, N+1]` of the penultimate block; None for a tower with a
    /// single block (SsVP then has no penultimate block to read).
    pub penultimate_attention: Option<Tensor>,
}

impl VisionPass {
    pub fn run(vision: &VisionTower, pixels: &Tensor) -> Result<Self> {
        let n = vision.layers.len();
        if n == 0 {
            return Err(Error::invalid("the vision tower has no blocks"));
        }
        let mut x = vision.embed(pixels)?;
        let mut attention = None;
        if n >= 2 {
            x = vision.run_blocks(&x, 0, n - 2)?;
            let (y, probs) = vision.layers[n - 2].forward(&x, None, true)?;
            x = y;
            attention = probs;
        }
        let last = vision.layers[n - 1].forward(&x, None, false)?.0;
        Ok(Self {
            into_last: x,
            last,
            penultimate_attention: attention,
        })
    }

    /// transformers' `get_image_features` (projected, not normalised), `[B, P]`.
    pub fn pooled(&self, vision: &VisionTower) -> Result<Tensor> {
        Ok(vision.pool(&self.last)?)
    }
}
