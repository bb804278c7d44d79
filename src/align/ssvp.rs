//! SsVP, MP-FGVC's parameter-free subcategory-specific vision prompt (METHODS §5): the penultimate
//! block's attention from the class token to each patch, summed over heads, picks the top-K patches; the
//! last block then sees only `[CLS] + those K tokens` and the image feature is its class token, pooled as
//! usual. The kept tokens are hidden states, so their position embedding is already in them: dropping
//! the others needs no re-indexing.

use candle_core::{IndexOp, Tensor};
use serde::Serialize;

use super::pass::VisionPass;
use crate::clip::vision::VisionTower;
use crate::error::{Error, Result};

/// One image's selection.
#[derive(Debug, Clone, Serialize)]
pub struct SsvpSelection {
    pub k: usize,
    /// Patch grid `[h, w]`.
    pub grid: [usize; 2],
    /// Kept patch indices, 0..N-1 in row-major grid order, ascending.
    pub indices: Vec<usize>,
    /// The class-token attention (summed over heads) of each kept patch, in `indices` order.
    pub scores: Vec<f32>,
    /// The same attention for every patch (the map the app draws under the selection).
    pub attention: Vec<f32>,
    /// The image feature from `[CLS] + kept tokens` (projected, not normalised).
    pub image_embeds: Vec<f32>,
}

/// SsVP's default K: a quarter of the patches, at least one.
pub fn default_k(num_patches: usize) -> usize {
    (num_patches / 4).max(1)
}

pub fn check_k(k: usize, num_patches: usize) -> Result<()> {
    if k == 0 || k > num_patches {
        return Err(Error::invalid(format!(
            "SsVP keeps K = {k} patches, but the image has {num_patches} patches: choose K between 1 and {num_patches} (default {})",
            default_k(num_patches)
        )));
    }
    Ok(())
}

/// The `k` highest scores' indices, ascending (ties: the lower index wins).
pub fn top_k_indices(scores: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept = order[..k.min(scores.len())].to_vec();
    kept.sort_unstable();
    kept
}

/// SsVP on a batch of preprocessed images `[B, 3, H, W]`; `k` = None uses [`default_k`].
pub fn ssvp(vision: &VisionTower, pixels: &Tensor, k: Option<usize>) -> Result<Vec<SsvpSelection>> {
    let n = vision.config.num_patches();
    // Checked before the tower runs, so a bad K costs nothing.
    check_k(k.unwrap_or_else(|| default_k(n)), n)?;
    ssvp_from_pass(vision, &VisionPass::run(vision, pixels)?, k)
}

/// SsVP from a pass already run (shared with the other methods when comparing on a split).
pub fn ssvp_from_pass(
    vision: &VisionTower,
    pass: &VisionPass,
    k: Option<usize>,
) -> Result<Vec<SsvpSelection>> {
    let n = vision.config.num_patches();
    let k = k.unwrap_or_else(|| default_k(n));
    check_k(k, n)?;
    let probs = pass.penultimate_attention.as_ref().ok_or_else(|| {
        Error::invalid(format!(
            "SsVP reads the penultimate block's attention, but this vision tower has {} block",
            vision.layers.len()
        ))
    })?;
    // [B, heads, T, T] → the class token's row over the patches, summed over heads: [B, N].
    let cls_row = probs.i((.., .., 0, 1..))?.sum(1)?;
    let attention: Vec<Vec<f32>> = cls_row.to_vec2()?;
    let b = attention.len();
    let g = vision.config.grid();
    let mut picked = Vec::with_capacity(b);
    let mut kept_hidden = Vec::with_capacity(b);
    for (i, att) in attention.iter().enumerate() {
        let idx = top_k_indices(att, k);
        // Token 0 is the class token; patch p is token p + 1.
        let rows: Vec<u32> = std::iter::once(0)
            .chain(idx.iter().map(|&p| p as u32 + 1))
            .collect();
        let rows = Tensor::new(rows.as_slice(), pass.into_last.device())?;
        kept_hidden.push(pass.into_last.get(i)?.index_select(&rows, 0)?);
        picked.push(idx);
    }
    let x = Tensor::stack(&kept_hidden, 0)?;
    if vision.layers.is_empty() {
        return Err(Error::invalid("the vision tower has no blocks"));
    }
    let pooled = vision.pooled_from(&x, vision.layers.len() - 1)?;
    let feats: Vec<Vec<f32>> = pooled.to_vec2()?;
    Ok(picked
        .into_iter()
        .zip(attention)
        .zip(feats)
        .map(|((indices, attention), image_embeds)| SsvpSelection {
            k,
            grid: [g, g],
            scores: indices.iter().map(|&p| attention[p]).collect(),
            indices,
            attention,
            image_embeds,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_ascending_and_ties_keep_the_lower_index() {
        assert_eq!(top_k_indices(&[0.1, 0.9, 0.3, 0.9, 0.5], 3), vec![1, 3, 4]);
        assert_eq!(top_k_indices(&[0.2, 0.2, 0.2], 2), vec![0, 1]);
        assert_eq!(top_k_indices(&[0.5], 1), vec![0]);
    }

    #[test]
    fn k_is_checked() {
        assert_eq!(default_k(49), 12);
        assert_eq!(default_k(196), 49);
        assert_eq!(default_k(3), 1);
        assert!(check_k(0, 49).is_err());
        assert!(check_k(50, 49)
            .unwrap_err()
            .to_string()
            .contains("49 patches"));
        assert!(check_k(49, 49).is_ok());
    }
}
