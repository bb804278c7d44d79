//! Attention rollout (Abnar & Zuidema 2020, as hila-chefer/Transformer-Explainability's
//! `compute_rollout_attention` runs it): each block's attention averaged over heads, the identity added
//! for the residual and the rows renormalised (`½(Ā + I)`), multiplied from the first block to the
//! last (later blocks on the left); the map is the class token's row over the patches. It does not
//! depend on the text: the word-independent prior the other maps must beat.

use candle_core::{Tensor, D};

use crate::error::{Error, Result};

/// The rollout map over the patches from every block's attention `[1, H, T, T]`, first block first.
pub fn rollout(attention: &[Tensor]) -> Result<Vec<f32>> {
    let first = attention
        .first()
        .ok_or_else(|| Error::invalid("rollout needs every block's attention"))?;
    let t = first.dim(D::Minus1)?;
    let eye = Tensor::eye(t, first.dtype(), first.device())?;
    let mut joint: Option<Tensor> = None;
    for a in attention {
        let mean = a.squeeze(0)?.mean(0)?;
        let m = (mean + &eye)?;
        let m = m.broadcast_div(&m.sum_keepdim(D::Minus1)?)?;
        joint = Some(match joint {
            Some(j) => m.matmul(&j)?,
            None => m,
        });
    }
    let joint = joint.expect("at least one block");
    Ok(joint.get(0)?.narrow(0, 1, t - 1)?.to_vec1()?)
}
