//! The methods that run a second path beside the last blocks and read its tokens (METHODS §9):
//! - GEM (WalBouss/GEM `gem/gem_utils.py`): over the last six blocks, q, k and v each L2-normalised,
//!   refined once by their own self-attention, normalised again and used as self-self attention over
//!   the raw v; the three outputs averaged, `out_proj`, added to the path (no MLP). The temperature
//!   is the mean token norm of the block's `layer_norm1` output × `head_dim^-½`, one per image.
//! - CLIP Surgery (xmed-lab/CLIP_Surgery `clip/clip_surgery_model.py`): over the last six blocks,
//!   `out_proj(softmax(v vᵀ/√d) v)` added to the path (no MLP).
//!
//! Both paths start from the hidden state entering the first of those blocks and read q, k, v of the
//! original path's `layer_norm1`. Each returns every token's projected feature `[1, T, P]`, not
//! normalised; the class token (which CLIP Surgery takes from the original path) is dropped by the
//! caller and does not touch a patch's map.

use candle_core::{Module, Tensor, D};

use super::{self_attention, MapMethod, MapPass};
use crate::clip::l2_normalize;
use crate::clip::vision::VisionTower;
use crate::error::{Error, Result};

/// How many of the last blocks the second path spans (GEM's `gem_depth = 7` and CLIP Surgery's loop
/// both give the last six); a tower with fewer blocks runs it over all of them.
pub const PATH_BLOCKS: usize = 6;

pub fn features(vision: &VisionTower, pass: &MapPass, method: MapMethod) -> Result<Tensor> {
    let n = vision.layers.len();
    let first = n.saturating_sub(PATH_BLOCKS);
    let mut path = pass.hidden[first].clone();
    for i in first..n {
        let block = &vision.layers[i];
        let att = &block.self_attn;
        let [q, k, v] = pass.heads_qkv(vision, i)?;
        let mixed = match method {
            MapMethod::Gem => {
                // One temperature per image: the mean over tokens of each token's full-width norm.
                let hn = block.layer_norm1.forward(&pass.hidden[i])?;
                let norms = hn.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
                let t = norms.mean_all()?.to_scalar::<f32>()? as f64 * att.scale();
                let mut sum: Option<Tensor> = None;
                for z in [&v, &k, &q] {
                    let z = l2_normalize(z)?;
                    let z = self_attention(&z, t, None)?.matmul(&z)?;
                    let z = l2_normalize(&z)?;
                    let o = self_attention(&z, t, None)?.matmul(&v)?;
                    sum = Some(match sum {
                        Some(s) => (s + o)?,
                        None => o,
                    });
                }
                (sum.expect("three branches") / 3.0)?
            }
            MapMethod::Surgery => self_attention(&v, att.scale(), None)?.matmul(&v)?,
            other => {
                return Err(Error::invalid(format!(
                    "{other} does not run a parallel path"
                )))
            }
        };
        path = (path + att.merge_heads(&mixed)?)?;
    }
    Ok(vision.project_tokens(&path)?)
}
