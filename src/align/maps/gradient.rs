//! The methods that need a backward pass per text (METHODS §9), on candle's autograd over the frozen
//! tower. A zero variable is added to each attention matrix (and to the hidden state entering the last
//! block), so its gradient is the score's gradient with respect to that intermediate tensor, every
//! path through later blocks included, as PyTorch's `autograd.grad(score, [attn])` gives it. Texts are
//! batched: the image's hidden states are repeated per text and the per-text scores summed (one-hot
//! on the diagonal), one backward for all of them.
//! - Chefer relevance (hila-chefer/Transformer-MM-Explainability `CLIP_explainability.ipynb`,
//!   `interpret`): s = logit_scale · cos; over the last `chefer_blocks` blocks (the notebook's
//!   default: the last only) `R ← R + mean_h clamp₀(∂s/∂A ⊙ A) · R` from `R = I`; the map is `R[CLS,
//!   patches]`.
//! - Grad-CAM (Grad-ECLIP's `grad_cam`, Cyang-Zhao/Grad-Eclip): Z the hidden states entering the last
//!   block, s the raw cosine, `w` the mean of ∂s/∂Z over every token (class token included),
//!   `ReLU(Σ_c w_c Z_ic)` on the patches. The reference recomputes that block with a single head; this
//!   runs the block as the model does (issue 27: follow the fixed version).
//! - LeGrad (WalBouss/LeGrad `legrad/wrapper.py`, `compute_legrad_clip`): for each of the last
//!   `legrad_blocks` blocks l, `z_l` = the normalised projection of `post_layernorm` of the mean of
//!   block l's output tokens, `s_l = t̂ · z_l`, `clamp₀(∂s_l/∂A_l)` averaged over heads and query rows,
//!   its patch columns; the blocks' maps summed.

use candle_core::{DType, Module, Tensor, Var, D};

use super::{MapMethod, MapOptions, MapPass};
use crate::clip::l2_normalize;
use crate::clip::layers::softmax_last_dim;
use crate::clip::vision::VisionTower;
use crate::error::{Error, Result};

/// The tower from block `first` on, differentiable where the methods read it.
struct Traced {
    /// Grad-CAM's: the hidden states entering the last block `[B, T, D]`, plus the zero variable
    /// added to them.
    into_last: Option<(Tensor, Var)>,
    /// Per traced block: its attention `[B, H, T, T]` (values), the zero variable added to it, its
    /// output `[B, T, D]`.
    blocks: Vec<(Tensor, Var, Tensor)>,
}

/// How the last blocks are traced.
#[derive(Clone, Copy, PartialEq)]
enum Trace {
    /// A zero variable on the hidden states entering the last block too (Grad-CAM).
    IntoLast,
    /// Only the attentions' zero variables (Chefer).
    Attention,
    /// Each block from a detached copy of its input, so a score read from block l's output reaches
    /// block l's attention alone (LeGrad's per-block gradients from one backward).
    Cut,
}

fn trace(
    vision: &VisionTower,
    pass: &MapPass,
    first: usize,
    texts: usize,
    how: Trace,
) -> Result<Traced> {
    let n = vision.layers.len();
    let h = &pass.hidden[first];
    let (_, t, d) = h.dims3()?;
    let mut x = h.broadcast_as((texts, t, d))?.contiguous()?;
    let mut into_last = None;
    let mut blocks = Vec::with_capacity(n - first);
    for (l, block) in vision.layers.iter().enumerate().skip(first) {
        if how == Trace::Cut {
            x = x.detach();
        }
        if how == Trace::IntoLast && l == n - 1 {
            let var = Var::zeros((texts, t, d), DType::F32, x.device())?;
            into_last = Some((x.detach(), var.clone()));
            x = (x + var.as_tensor())?;
        }
        let att = &block.self_attn;
        // Where no gradient flows into the block's input, its attention and values are the pass's own
        // (kept by the kernels), not recomputed.
        let input_tracked = x.track_op();
        let kept = pass.attention.get(l).and_then(Option::as_ref);
        let (a, v) = match kept {
            Some(kept) if !input_tracked && pass.qkv.get(l).is_some_and(Option::is_some) => {
                let [_, _, v] = pass.heads_qkv(vision, l)?;
                let grow = |z: &Tensor| -> Result<Tensor> {
                    let (_, heads, rows, cols) = z.dims4()?;
                    Ok(z.broadcast_as((texts, heads, rows, cols))?.contiguous()?)
                };
                (grow(kept)?, grow(&v)?)
            }
            _ => {
                let [q, k, v] = att.heads_qkv(&block.layer_norm1.forward(&x)?)?;
                (softmax_last_dim(&(q.matmul(&k.t()?)? * att.scale())?)?, v)
            }
        };
        let zero = Var::zeros(a.shape(), DType::F32, a.device())?;
        let a_traced = (&a + zero.as_tensor())?;
        let y = (&x + att.merge_heads(&a_traced.matmul(&v)?)?)?;
        x = (&y + block.mlp.forward(&block.layer_norm2.forward(&y)?)?)?;
        blocks.push((a.detach(), zero, x.clone()));
    }
    Ok(Traced { into_last, blocks })
}

/// The gradient of `score` with respect to `var` (zeros where none reaches it).
fn grad_of(score: &Tensor, var: &Var) -> Result<Tensor> {
    grad_in(&score.backward()?, var)
}

/// `var`'s gradient in `grads` (zeros where none reached it).
fn grad_in(grads: &candle_core::backprop::GradStore, var: &Var) -> Result<Tensor> {
    Ok(match grads.get(var.as_tensor()) {
        Some(g) => g.clone(),
        None => var.as_tensor().zeros_like()?,
    })
}

/// Σ_b cos(a_b, t_b) over rows of `[B, P]` features.
fn diagonal_cosine(features: &Tensor, texts: &Tensor) -> Result<Tensor> {
    Ok((l2_normalize(features)? * texts)?.sum_all()?)
}

/// The maps `[B][N]` of `method` for texts whose normalised features are `texts` `[B, P]`.
pub fn maps(
    vision: &VisionTower,
    pass: &MapPass,
    texts: &Tensor,
    logit_scale: f64,
    method: MapMethod,
    opts: &MapOptions,
) -> Result<Vec<Vec<f32>>> {
    let n = vision.layers.len();
    let b = texts.dim(0)?;
    let depth = match method {
        MapMethod::Chefer => opts.chefer_blocks,
        MapMethod::Legrad => opts.legrad_blocks,
        MapMethod::Gradcam => 1,
        other => return Err(Error::invalid(format!("{other} needs no backward pass"))),
    };
    if depth == 0 || depth > n {
        return Err(Error::invalid(format!(
            "{method} over the last {depth} blocks: the vision tower has {n} (1 to {n})"
        )));
    }
    let first = n - depth;
    let how = match method {
        MapMethod::Gradcam => Trace::IntoLast,
        MapMethod::Legrad => Trace::Cut,
        _ => Trace::Attention,
    };
    let traced = trace(vision, pass, first, b, how)?;
    let pooled = |x: &Tensor| -> Result<Tensor> {
        Ok(vision.projection.forward(
            &vision
                .post_layernorm
                .forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?,
        )?)
    };
    let last = &traced.blocks.last().expect("at least one block").2;
    let patch_rows = |m: Tensor| -> Result<Vec<Vec<f32>>> {
        let t = m.dim(1)?;
        Ok(m.narrow(1, 1, t - 1)?.to_vec2()?)
    };
    match method {
        MapMethod::Chefer => {
            let score = (diagonal_cosine(&pooled(last)?, texts)? * logit_scale)?;
            let grads = score.backward()?;
            let t = last.dim(1)?;
            let eye = Tensor::eye(t, DType::F32, last.device())?;
            let mut r = eye.unsqueeze(0)?.broadcast_as((b, t, t))?.contiguous()?;
            for (a, zero, _) in &traced.blocks {
                let cam = (grad_in(&grads, zero)? * a)?.relu()?.mean(1)?;
                r = (&r + cam.matmul(&r)?)?;
            }
            patch_rows(r.narrow(1, 0, 1)?.squeeze(1)?)
        }
        MapMethod::Gradcam => {
            let (into_last, var) = traced
                .into_last
                .as_ref()
                .expect("Grad-CAM traces the last block's input");
            let g = grad_of(&diagonal_cosine(&pooled(last)?, texts)?, var)?;
            let w = g.mean_keepdim(1)?;
            let cam = into_last.broadcast_mul(&w)?.sum(D::Minus1)?.relu()?;
            patch_rows(cam)
        }
        MapMethod::Legrad => {
            // The blocks were traced cut apart, so the sum of the per-block scores has, at block l's
            // attention, the gradient of block l's own score: one backward instead of one per block.
            let mut score: Option<Tensor> = None;
            for (_, _, out) in &traced.blocks {
                let z = vision
                    .projection
                    .forward(&vision.post_layernorm.forward(&out.mean(1)?)?)?;
                let s = diagonal_cosine(&z, texts)?;
                score = Some(match score {
                    Some(sum) => (sum + s)?,
                    None => s,
                });
            }
            let grads = score.expect("at least one block").backward()?;
            let mut sum: Option<Tensor> = None;
            for (_, zero, _) in &traced.blocks {
                let m = grad_in(&grads, zero)?.relu()?.mean(1)?.mean(1)?;
                sum = Some(match sum {
                    Some(s) => (s + m)?,
                    None => m,
                });
            }
            patch_rows(sum.expect("at least one block"))
        }
        _ => unreachable!("checked above"),
    }
}

/// Chefer's relevance of each word of `ids` (start token to end-of-text) to the image–text score, on
/// the text tower: over its last `blocks` blocks `R ← R + mean_h clamp₀(∂s/∂A ⊙ A) · R` (the causal
/// attention as the tower runs it), then the end-of-text row over the words between the start token and
/// the end-of-text token, divided by its sum (the notebook's `show_heatmap_on_text`). `image`: the
/// image's pooled feature `[P]`, normalised.
pub fn text_relevance(
    text: &crate::clip::text::TextTower,
    ids: &[u32],
    image: &Tensor,
    logit_scale: f64,
    blocks: usize,
) -> Result<Vec<f32>> {
    let n = text.layers.len();
    if blocks == 0 || blocks > n {
        return Err(Error::invalid(format!(
            "Chefer's word relevance over the last {blocks} blocks: the text tower has {n} (1 to {n})"
        )));
    }
    let (emb, eot) = text.embed_batch(&[ids.to_vec()])?;
    let eot = eot[0];
    if eot < 2 {
        return Err(Error::invalid(
            "the prompt has no words between its start and end tokens",
        ));
    }
    let len = eot + 1;
    let mut x = emb
        .narrow(1, 0, len)?
        .broadcast_add(&text.position_embedding.narrow(0, 0, len)?)?;
    let mask = crate::clip::layers::causal_mask(len, x.device())?;
    let first = n - blocks;
    let mut traced = Vec::with_capacity(blocks);
    for (l, block) in text.layers.iter().enumerate() {
        if l < first {
            x = block.forward(&x, Some(&mask), false)?.0;
            continue;
        }
        let att = &block.self_attn;
        let [q, k, v] = att.heads_qkv(&block.layer_norm1.forward(&x)?)?;
        let a = softmax_last_dim(&(q.matmul(&k.t()?)? * att.scale())?.broadcast_add(&mask)?)?;
        let zero = Var::zeros(a.shape(), DType::F32, a.device())?;
        let y = (&x + att.merge_heads(&(&a + zero.as_tensor())?.matmul(&v)?)?)?;
        x = (&y + block.mlp.forward(&block.layer_norm2.forward(&y)?)?)?;
        traced.push((a.detach(), zero));
    }
    let pooled = text.projection.forward(
        &text
            .final_layer_norm
            .forward(&x.narrow(1, eot, 1)?.squeeze(1)?)?,
    )?;
    let score = ((l2_normalize(&pooled)?.squeeze(0)? * image)?.sum_all()? * logit_scale)?;
    let grads = score.backward()?;
    let mut r = Tensor::eye(len, DType::F32, x.device())?;
    for (a, zero) in &traced {
        let cam = (grad_in(&grads, zero)? * a)?.relu()?.mean(1)?.squeeze(0)?;
        r = (&r + cam.matmul(&r)?)?;
    }
    let row: Vec<f32> = r.get(eot)?.narrow(0, 1, eot - 1)?.to_vec1()?;
    let sum: f32 = row.iter().sum();
    Ok(row.iter().map(|v| v / sum).collect())
}
