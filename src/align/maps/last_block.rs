//! The methods that replace the last block's attention and read its output tokens (METHODS §9), each
//! as its reference code runs it (the commit each follows is in `scripts/maps_reference.py`):
//! - MaskCLIP (chongzhou96/MaskCLIP `mmseg/models/backbones/vit.py`): the value path `out_proj(v)`,
//!   then the residual and the MLP as the block has them;
//! - the ClearCLIP-era MaskCLIP (mc-lan/ClearCLIP, identity attention, `ignore_residual`): `out_proj(v)`;
//! - ClearCLIP (`custom_attn`, `model_type='ClearCLIP'`): `out_proj(softmax(q qᵀ/√d) v)`;
//! - SCLIP (wangf3014/SCLIP `clip/model.py`): `softmax(q qᵀ/√d) + softmax(k kᵀ/√d)` (summed), with the
//!   residual and the MLP;
//! - NACLIP (sinahmr/NACLIP, `arch='reduced'`): `softmax(k kᵀ/√d + Ω) v`, Ω a Gaussian over the grid
//!   distance (σ = 5 patches, 0 on the class token's row and column), no residual, no MLP.
//!
//! Each returns every token's projected feature `[1, T, P]` (class token first), not normalised.

use candle_core::{Module, Tensor};

use super::{self_attention, MapMethod, MapPass};
use crate::clip::vision::VisionTower;
use crate::error::{Error, Result};

/// NACLIP's neighbourhood width, in patches (its `gaussian_std` default).
pub const NACLIP_SIGMA: f64 = 5.0;

pub fn features(vision: &VisionTower, pass: &MapPass, method: MapMethod) -> Result<Tensor> {
    let n = vision.layers.len();
    let block = &vision.layers[n - 1];
    let x = &pass.hidden[n - 1];
    let att = &block.self_attn;
    let y = block.layer_norm1.forward(x)?;
    let [q, k, v] = att.heads_qkv(&y)?;
    let s = att.scale();
    // The attention output each method puts in place of the block's, and whether the block's residual
    // and MLP follow it.
    let (out, whole_block) = match method {
        MapMethod::Maskclip => (att.value_path(&y)?, true),
        MapMethod::MaskclipClearclip => (att.value_path(&y)?, false),
        MapMethod::Clearclip => (
            att.merge_heads(&self_attention(&q, s, None)?.matmul(&v)?)?,
            false,
        ),
        MapMethod::Sclip => {
            let a = (self_attention(&q, s, None)? + self_attention(&k, s, None)?)?;
            (att.merge_heads(&a.matmul(&v)?)?, true)
        }
        MapMethod::Naclip => {
            let grid = vision.config.grid();
            let omega = neighbourhood(grid, NACLIP_SIGMA, x.device())?;
            let a = self_attention(&k, s, Some(&omega))?;
            (att.merge_heads(&a.matmul(&v)?)?, false)
        }
        other => {
            return Err(Error::invalid(format!(
                "{other} does not replace the last block's attention"
            )))
        }
    };
    let h = if whole_block {
        let h = (x + out)?;
        (&h + block.mlp.forward(&block.layer_norm2.forward(&h)?)?)?
    } else {
        out
    };
    Ok(vision.project_tokens(&h)?)
}

/// NACLIP's Ω `[T, T]`: `exp(−|p − p'|² / 2σ²)` between the patches of a `grid × grid` layout (row
/// major), the class token's row and column 0.
pub fn neighbourhood(grid: usize, sigma: f64, device: &candle_core::Device) -> Result<Tensor> {
    let t = grid * grid + 1;
    let mut omega = vec![0f32; t * t];
    for a in 0..grid * grid {
        for b in 0..grid * grid {
            let (dy, dx) = (
                (a / grid) as f64 - (b / grid) as f64,
                (a % grid) as f64 - (b % grid) as f64,
            );
            omega[(a + 1) * t + b + 1] =
                (-(dy * dy + dx * dx) / (2.0 * sigma * sigma)).exp() as f32;
        }
    }
    Ok(Tensor::from_vec(omega, (t, t), device)?)
}
