//! Both towers trained on these kernels: a forward that keeps its tape and a backward to every weight
//! (blocks, norms, projections, the stems' embeddings), for pretraining. The contrastive loss on top is
//! the caller's (FILIP's one pass on buffers, CLIP's a small candle graph); between the two, the
//! projected features and their gradients are plain buffers.
//!
//! Through candle's autograd a pretraining step cost 2.6× PyTorch's (CLIP loss, the scenes preset, 2
//! threads): every op allocates and zero-fills its output and its gradient, fresh pages fault in
//! (a fifth of the time), and element-wise ops spin on a second thread pool. Here the block's work is
//! the same GEMMs with the weight gradients as `dyᵀ·x` products, and the per-row ops in single passes.

use candle_core::{Result, Tensor};

use super::backward::{block_backward, BlockGrads, LinearGrads, NormGrads, TowerGrads};
use super::kernels::{gather, layer_norm_bwd, layer_norm_fwd, matmul, matmul_tn, scatter};
use super::weights::{Held, HeldLayer, HeldLinear, HeldNorm};
use super::{pool, run_blocks, Dims, Keep, LayerTape};
use crate::clip::kernels::{NormWeights, TowerWeights};

/// Which rows' projected features a pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readout {
    /// Every token (FILIP's token-wise loss).
    All,
    /// Each sequence's first row (the image's class token).
    First,
    /// Each sequence's last row (the caption's end-of-text token).
    Last,
}

/// What a tower's backward needs from its forward.
struct TowerTape {
    dims: Dims,
    readout: Vec<usize>,
    layers: Vec<LayerTape>,
    final_in: Vec<f32>,
    final_stats: Vec<(f32, f32)>,
}

fn readout_rows(dm: &Dims, r: Readout) -> Vec<usize> {
    match r {
        Readout::All => (0..dm.rows()).collect(),
        Readout::First => dm.start.clone(),
        Readout::Last => dm.eot_rows(),
    }
}

fn held_layers(tower: &TowerWeights) -> Result<Vec<HeldLayer<'_>>> {
    tower.blocks.iter().map(HeldLayer::new).collect()
}

/// Blocks, final norm and projection over `x` `[rows, D]` laid out as `dims`: the `readout` rows'
/// projected features `[n, proj]` and the tape.
fn tower_forward(
    tower: &TowerWeights,
    dims: Dims,
    x: Vec<f32>,
    readout: Readout,
) -> Result<(Vec<f32>, TowerTape)> {
    let layers = held_layers(tower)?;
    let (norm, proj) = (
        HeldNorm::new(&tower.final_norm)?,
        HeldLinear::new(&tower.projection)?,
    );
    let readout = readout_rows(&dims, readout);
    let (final_in, tapes) = run_blocks(&dims, &layers, tower.act, x, &readout, Keep::ForWeights);
    let (out, final_stats) = pool(&final_in, &norm, &proj, dims.d, dims.proj);
    Ok((
        out,
        TowerTape {
            dims,
            readout,
            layers: tapes,
            final_in,
            final_stats,
        },
    ))
}

/// A gradient from a loss that reads a tower's tokens somewhere other than its projected output
/// (a head beside the contrastive loss).
#[derive(Debug, Clone, Copy)]
pub enum TokenGrad<'a> {
    /// Of the read-out rows after the final norm, before the projection ([`VisionPass::normed`]).
    Normed(&'a [f32]),
    /// Of the hidden states entering block `block` `[rows, D]` ([`VisionPass::block_input`]).
    BlockInput { block: usize, grad: &'a [f32] },
}

/// The gradient of the tower's input rows `[rows, D]` and of its weights from `dout` `[n, proj]`,
/// plus `extra` where given.
fn tower_backward(
    tower: &TowerWeights,
    tape: &TowerTape,
    dout: &[f32],
    extra: Option<TokenGrad<'_>>,
) -> Result<(Vec<f32>, TowerGrads)> {
    let layers = held_layers(tower)?;
    let (norm, proj) = (
        HeldNorm::new(&tower.final_norm)?,
        HeldLinear::new(&tower.projection)?,
    );
    let dm = &tape.dims;
    let (d, n) = (dm.d, tape.readout.len());
    let mut grads = TowerGrads {
        blocks: layers.iter().map(|l| BlockGrads::zeros(l, d)).collect(),
        final_norm: NormGrads::zeros(d),
        projection: LinearGrads::zeros(&proj),
    };
    let mut normed = vec![0f32; n * d];
    layer_norm_fwd(&tape.final_in, &norm, d, &mut normed);
    grads.projection.add(dout, dm.proj, &normed, n, dm.proj);
    let mut dnormed = vec![0f32; n * d];
    matmul(
        &mut dnormed,
        d,
        dout,
        dm.proj,
        proj.w.data(),
        false,
        n,
        dm.proj,
        d,
        false,
    );
    if let Some(TokenGrad::Normed(extra)) = extra {
        if extra.len() != dnormed.len() {
            candle_core::bail!(
                "cpu kernels: a gradient of {} values for {n} normed rows of {d}",
                extra.len()
            );
        }
        dnormed.iter_mut().zip(extra).for_each(|(a, g)| *a += g);
    }
    grads
        .final_norm
        .add(&dnormed, &tape.final_in, &tape.final_stats, d);
    let mut dx = vec![0f32; n * d];
    layer_norm_bwd(
        &dnormed,
        &tape.final_in,
        &tape.final_stats,
        &norm,
        d,
        &mut dx,
    );
    if layers.is_empty() && n != dm.rows() {
        dx = scatter(&dx, &tape.readout, dm.rows(), d);
    }
    let all: Vec<usize> = (0..dm.rows()).collect();
    let last = layers.len();
    let into_block = match extra {
        Some(TokenGrad::BlockInput { block, grad }) => {
            if block >= last || grad.len() != dm.rows() * d {
                candle_core::bail!(
                    "cpu kernels: a gradient of {} values into block {block} of {last} ({} rows of {d})",
                    grad.len(),
                    dm.rows()
                );
            }
            Some((block, grad))
        }
        _ => None,
    };
    for (li, (l, t)) in layers.iter().zip(&tape.layers).enumerate().rev() {
        let queries: &[usize] = if li + 1 == last { &tape.readout } else { &all };
        dx = block_backward(
            dm,
            l,
            tower.act,
            t,
            queries,
            dx,
            Some(&mut grads.blocks[li]),
        );
        if let Some((_, grad)) = into_block.filter(|&(b, _)| b == li) {
            dx.iter_mut().zip(grad).for_each(|(a, g)| *a += g);
        }
    }
    Ok((dx, grads))
}

/// The vision tower's stem: the patch convolution (stride = kernel, no bias) as a matrix `[D, C·P·P]`,
/// the class and position embeddings and `pre_layrnorm`.
#[derive(Debug, Clone)]
pub struct VisionStem {
    pub patch: Tensor,
    pub class: Tensor,
    pub positions: Tensor,
    pub pre_norm: NormWeights,
    pub patch_size: usize,
    pub channels: usize,
    pub image_size: usize,
}

/// A vision forward kept for its backward.
pub struct VisionPass {
    tape: TowerTape,
    patches: Vec<f32>,
    embedded: Vec<f32>,
    pre_stats: Vec<(f32, f32)>,
    batch: usize,
}

impl VisionPass {
    /// Tokens per image (class token first).
    pub fn tokens(&self) -> usize {
        self.tape.dims.len.first().copied().unwrap_or(0)
    }

    /// The read-out rows after `post_layernorm`, before the projection `[n, D]`: what a head that
    /// must not train the shared projection reads.
    pub fn normed(&self, tower: &TowerWeights) -> Result<Vec<f32>> {
        let d = self.tape.dims.d;
        let mut normed = vec![0f32; self.tape.final_in.len()];
        layer_norm_fwd(
            &self.tape.final_in,
            &HeldNorm::new(&tower.final_norm)?,
            d,
            &mut normed,
        );
        Ok(normed)
    }

    /// The hidden states entering block `block` `[rows, D]` (block 0: the stem's output), where the
    /// tape holds them.
    pub fn block_input(&self, block: usize) -> Option<&[f32]> {
        self.tape.layers.get(block).map(|t| t.x_in.as_slice())
    }
}

/// The vision stem's and tower's weight gradients, laid out as the weights.
#[derive(Debug, Clone)]
pub struct VisionGrads {
    pub patch: Vec<f32>,
    pub class: Vec<f32>,
    pub positions: Vec<f32>,
    pub pre_norm: NormGrads,
    pub tower: TowerGrads,
}

/// Pixels `[B, C, S, S]` through the stem and the tower: the `readout` rows' projected features
/// (`All`: `[B·T, proj]`, image-major, class token first; `First`: `[B, proj]`) and the pass.
pub fn vision_forward(
    stem: &VisionStem,
    tower: &TowerWeights,
    pixels: &[f32],
    batch: usize,
    readout: Readout,
) -> Result<(Vec<f32>, VisionPass)> {
    let (c, s, p) = (stem.channels, stem.image_size, stem.patch_size);
    if p == 0 || s % p != 0 || pixels.len() != batch * c * s * s {
        candle_core::bail!(
            "cpu kernels: {} pixel values for {batch} images of {c}×{s}×{s} with {p}-px patches",
            pixels.len()
        );
    }
    let (g, cpp) = (s / p, c * p * p);
    let (n_patch, t) = (g * g, g * g + 1);
    // Unfolded patches, each (channel, row, column) as the convolution's weight is laid out.
    let mut patches = vec![0f32; batch * n_patch * cpp];
    for (i, row) in patches.chunks_mut(cpp).enumerate() {
        let (b, gy, gx) = (i / n_patch, (i % n_patch) / g, i % g);
        for ch in 0..c {
            for py in 0..p {
                let src = ((b * c + ch) * s + gy * p + py) * s + gx * p;
                row[(ch * p + py) * p..][..p].copy_from_slice(&pixels[src..][..p]);
            }
        }
    }
    let d = stem.pre_norm.weight.dim(0)?;
    let (w, cls, pos) = (
        Held::new(&stem.patch)?,
        Held::new(&stem.class)?,
        Held::new(&stem.positions)?,
    );
    let mut embedded = vec![0f32; batch * t * d];
    for b in 0..batch {
        let img = &mut embedded[b * t * d..][..t * d];
        img[..d].copy_from_slice(cls.data());
        matmul(
            &mut img[d..],
            d,
            &patches[b * n_patch * cpp..],
            cpp,
            w.data(),
            true,
            n_patch,
            cpp,
            d,
            false,
        );
        img.iter_mut().zip(pos.data()).for_each(|(x, q)| *x += q);
    }
    let pre = HeldNorm::new(&stem.pre_norm)?;
    let mut x = vec![0f32; embedded.len()];
    let pre_stats = layer_norm_fwd(&embedded, &pre, d, &mut x);
    let dims = Dims::blocks(
        0,
        vec![t; batch],
        false,
        d,
        tower.heads,
        tower.intermediate,
        tower.projection_dim()?,
    );
    let (out, tape) = tower_forward(tower, dims, x, readout)?;
    Ok((
        out,
        VisionPass {
            tape,
            patches,
            embedded,
            pre_stats,
            batch,
        },
    ))
}

/// Every vision weight's gradient from `dout`, the gradient of what [`vision_forward`] returned, plus
/// `extra` where given.
pub fn vision_backward(
    stem: &VisionStem,
    tower: &TowerWeights,
    pass: &VisionPass,
    dout: &[f32],
    extra: Option<TokenGrad<'_>>,
) -> Result<VisionGrads> {
    let (dx, tower_grads) = tower_backward(tower, &pass.tape, dout, extra)?;
    let dm = &pass.tape.dims;
    let (d, t, b) = (dm.d, pass.tokens(), pass.batch);
    let pre = HeldNorm::new(&stem.pre_norm)?;
    let mut pre_norm = NormGrads::zeros(d);
    pre_norm.add(&dx, &pass.embedded, &pass.pre_stats, d);
    let mut de = vec![0f32; dx.len()];
    layer_norm_bwd(&dx, &pass.embedded, &pass.pre_stats, &pre, d, &mut de);
    let mut class = vec![0f32; d];
    let mut positions = vec![0f32; t * d];
    for img in de.chunks(t * d) {
        class.iter_mut().zip(&img[..d]).for_each(|(a, g)| *a += g);
        positions.iter_mut().zip(img).for_each(|(a, g)| *a += g);
    }
    let patch_rows: Vec<usize> = (0..b)
        .flat_map(|i| (1..t).map(move |j| i * t + j))
        .collect();
    let dpatch = gather(&de, &patch_rows, d);
    let cpp = stem.channels * stem.patch_size * stem.patch_size;
    let mut patch = vec![0f32; d * cpp];
    matmul_tn(
        &mut patch,
        &dpatch,
        d,
        &pass.patches,
        cpp,
        d,
        patch_rows.len(),
        cpp,
    );
    Ok(VisionGrads {
        patch,
        class,
        positions,
        pre_norm,
        tower: tower_grads,
    })
}

/// A text forward kept for its backward.
pub struct TextPass {
    tape: TowerTape,
    ids: Vec<u32>,
}

impl TextPass {
    /// The packed row of caption `b`'s token `j` (`j` ≤ its end-of-text position) in an `All` readout.
    pub fn row(&self, b: usize, j: usize) -> usize {
        self.tape.dims.start[b] + j
    }
}

/// The text stem's and tower's weight gradients; `token` is dense over the vocabulary, as torch's.
#[derive(Debug, Clone)]
pub struct TextGrads {
    pub token: Vec<f32>,
    pub positions: Vec<f32>,
    pub tower: TowerGrads,
}

/// Captions' ids (each read up to its end-of-text position `eot[b]`) through the token and position
/// embeddings (`tower.positions`) and the causal tower: the `readout` rows' projected features (`All`:
/// packed, see [`TextPass::row`]; `Last`: `[B, proj]`) and the pass.
pub fn text_forward(
    token_embedding: &Tensor,
    tower: &TowerWeights,
    ids: &[Vec<u32>],
    eot: &[usize],
    readout: Readout,
) -> Result<(Vec<f32>, TextPass)> {
    let Some(positions) = &tower.positions else {
        candle_core::bail!("cpu kernels: the text tower's position embeddings are missing")
    };
    let (vocab, d) = token_embedding.dims2()?;
    let n_pos = positions.dim(0)?;
    let (tok, pos) = (Held::new(token_embedding)?, Held::new(positions)?);
    if ids.len() != eot.len() {
        candle_core::bail!(
            "cpu kernels: {} captions but {} end-of-text positions",
            ids.len(),
            eot.len()
        );
    }
    let mut flat = Vec::new();
    for (row, &e) in ids.iter().zip(eot) {
        if e >= row.len() || e >= n_pos {
            candle_core::bail!("cpu kernels: end-of-text position {e} outside a caption of {} tokens ({n_pos} positions)", row.len());
        }
        if let Some(&bad) = row[..=e].iter().find(|&&id| id as usize >= vocab) {
            candle_core::bail!("cpu kernels: token id {bad} outside the vocabulary of {vocab}");
        }
        flat.extend_from_slice(&row[..=e]);
    }
    let dims = Dims::text(
        0,
        eot,
        d,
        tower.heads,
        tower.intermediate,
        tower.projection_dim()?,
    );
    let mut x = vec![0f32; flat.len() * d];
    for (&start, &len) in dims.start.iter().zip(&dims.len) {
        for j in 0..len {
            let id = flat[start + j] as usize;
            x[(start + j) * d..][..d]
                .iter_mut()
                .zip(&tok.data()[id * d..][..d])
                .zip(&pos.data()[j * d..][..d])
                .for_each(|((x, e), q)| *x = e + q);
        }
    }
    let (out, tape) = tower_forward(tower, dims, x, readout)?;
    Ok((out, TextPass { tape, ids: flat }))
}

/// Every text weight's gradient from `dout`, the gradient of what [`text_forward`] returned.
pub fn text_backward(
    token_embedding: &Tensor,
    tower: &TowerWeights,
    pass: &TextPass,
    dout: &[f32],
) -> Result<TextGrads> {
    let (dx, tower_grads) = tower_backward(tower, &pass.tape, dout, None)?;
    let dm = &pass.tape.dims;
    let d = dm.d;
    let mut token = vec![0f32; token_embedding.elem_count()];
    let n_pos = tower.positions.as_ref().map_or(Ok(0), |p| p.dim(0))?;
    let mut positions = vec![0f32; n_pos * d];
    for (&start, &len) in dm.start.iter().zip(&dm.len) {
        for j in 0..len {
            let g = &dx[(start + j) * d..][..d];
            let id = pass.ids[start + j] as usize;
            token[id * d..][..d]
                .iter_mut()
                .zip(g)
                .for_each(|(a, g)| *a += g);
            positions[j * d..][..d]
                .iter_mut()
                .zip(g)
                .for_each(|(a, g)| *a += g);
        }
    }
    Ok(TextGrads {
        token,
        positions,
        tower: tower_grads,
    })
}
