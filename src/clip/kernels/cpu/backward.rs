//! One transformer block's backward: the gradient of its input rows from its output rows' gradient
//! and, when training the block itself (pretraining), of its weights. CoOp's text tower asks only for
//! the first; `train` for both.

use super::attention::attention_bwd;
use super::kernels::{
    gelu_grad_in_place, gelu_slice, layer_norm_bwd_row, layer_norm_fwd, linear_input_grad,
    linear_input_grad_then, matmul_tn, scatter, SharedOut,
};
use super::profile;
use super::weights::{HeldLayer, HeldLinear, HeldNorm};
use super::{Dims, LayerTape};
use crate::clip::config::HiddenAct;

/// A linear layer's gradients, laid out as its weights (`[out, in]`, `[out]`).
#[derive(Debug, Clone, Default)]
pub struct LinearGrads {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

/// A layer norm's gain and bias gradients.
#[derive(Debug, Clone, Default)]
pub struct NormGrads {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// One block's weight gradients, as [`super::super::BlockWeights`].
#[derive(Debug, Clone, Default)]
pub struct BlockGrads {
    pub ln1: NormGrads,
    /// q, k and v stacked, as the weights' `qkv`.
    pub qkv: LinearGrads,
    pub o: LinearGrads,
    pub ln2: NormGrads,
    pub fc1: LinearGrads,
    pub fc2: LinearGrads,
}

/// A tower's weight gradients, as [`super::super::TowerWeights`] (its blocks, final norm, projection).
#[derive(Debug, Clone, Default)]
pub struct TowerGrads {
    pub blocks: Vec<BlockGrads>,
    pub final_norm: NormGrads,
    pub projection: LinearGrads,
}

impl LinearGrads {
    pub(super) fn zeros(l: &HeldLinear) -> Self {
        Self {
            weight: vec![0f32; l.w.data().len()],
            bias: l.b.as_ref().map(|b| vec![0f32; b.data().len()]),
        }
    }

    /// `dW += dyᵀ·x`, `db += Σ dy` for output gradients `dy` `[rows, out]` (row stride `dy_rs`) and
    /// inputs `x` `[rows, in]`.
    pub(super) fn add(&mut self, dy: &[f32], dy_rs: usize, x: &[f32], rows: usize, out: usize) {
        if rows == 0 {
            return;
        }
        let inp = self.weight.len() / out;
        matmul_tn(&mut self.weight, dy, dy_rs, x, inp, out, rows, inp);
        if let Some(b) = &mut self.bias {
            for row in dy.chunks(dy_rs).take(rows) {
                b.iter_mut().zip(&row[..out]).for_each(|(b, g)| *b += g);
            }
        }
    }
}

impl NormGrads {
    pub(super) fn zeros(d: usize) -> Self {
        Self {
            weight: vec![0f32; d],
            bias: vec![0f32; d],
        }
    }

    /// `dγ += Σ dy ⊙ x̂`, `dβ += Σ dy` over rows of width `d`, `x̂` from `x` and the forward's statistics.
    pub(super) fn add(&mut self, dy: &[f32], x: &[f32], stats: &[(f32, f32)], d: usize) {
        let (gw, gb) = (&mut self.weight, &mut self.bias);
        for ((dy, x), &(mean, rstd)) in dy.chunks(d).zip(x.chunks(d)).zip(stats) {
            for i in 0..d {
                gw[i] += dy[i] * (x[i] - mean) * rstd;
                gb[i] += dy[i];
            }
        }
    }
}

impl BlockGrads {
    pub(super) fn zeros(l: &HeldLayer, d: usize) -> Self {
        Self {
            ln1: NormGrads::zeros(d),
            qkv: LinearGrads::zeros(&l.qkv),
            o: LinearGrads::zeros(&l.o),
            ln2: NormGrads::zeros(d),
            fc1: LinearGrads::zeros(&l.fc1),
            fc2: LinearGrads::zeros(&l.fc2),
        }
    }
}

/// `norm(x)` again from the forward's statistics (a weight gradient needs the normalised input, which
/// the forward does not keep: recomputing it is one pass over the rows).
fn renorm(x: &[f32], n: &HeldNorm, d: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    layer_norm_fwd(x, n, d, &mut out);
    out
}

/// The gradient of the block's input rows `[rows, D]` from `dx` `[Q, D]`, the gradient of its outputs at
/// `queries` (ascending; every row, or the read-out rows of a last block). With `grads`, adds the
/// block's weight gradients to them.
pub(super) fn block_backward(
    dm: &Dims,
    l: &HeldLayer,
    act: HiddenAct,
    t: &LayerTape,
    queries: &[usize],
    mut dx: Vec<f32>,
    mut grads: Option<&mut BlockGrads>,
) -> Vec<f32> {
    let (d, rows, q, inter) = (dm.d, dm.rows(), queries.len(), dm.inter);
    // MLP: x_out = x_mid + fc2(gelu(fc1(ln2(x_mid)))), on the query rows.
    // fc2's input gradient gets the activation's derivative as its rows finish.
    let pre_act = &t.pre_act;
    let da = linear_input_grad_then(&dx, &l.fc2, q, d, inter, &|r, row| {
        gelu_grad_in_place(act, row, &pre_act[r * inter..][..inter])
    });
    if let Some(g) = grads.as_deref_mut() {
        let recomputed;
        let u = match &t.post_act {
            Some(u) => u,
            None => {
                let mut u = t.pre_act.clone();
                gelu_slice(act, &mut u);
                recomputed = u;
                &recomputed
            }
        };
        g.fc2.add(&dx, d, u, q, d);
    }
    // fc1's input gradient goes through the second layer norm into dx as its rows finish.
    let dxs = SharedOut(dx.as_mut_ptr());
    let dh = linear_input_grad_then(&da, &l.fc1, q, inter, d, &|r, row| {
        // SAFETY: row r of dx (q rows), touched only by the task that finished row r.
        let dx = unsafe { dxs.row(r * d, d) };
        layer_norm_bwd_row(row, &t.x_mid[r * d..][..d], t.stats2[r], &l.ln2, dx)
    });
    if let Some(g) = grads.as_deref_mut() {
        g.fc1
            .add(&da, inter, &renorm(&t.x_mid, &l.ln2, d), q, inter);
        g.ln2.add(&dh, &t.x_mid, &t.stats2, d);
    }
    drop(da);
    // Attention: x_mid = x_in + out_proj(attn(ln1(x_in))); its keys and values come from every row.
    let datt = linear_input_grad(&dx, &l.o, q, d, d);
    if let Some(g) = grads.as_deref_mut() {
        g.o.add(&dx, d, &t.att, q, d);
    }
    let dqkv = profile::timed(profile::Part::Attention, || {
        attention_bwd(dm, &t.qkv, &t.probs, &datt, queries)
    });
    drop(datt);
    if q != rows {
        dx = scatter(&dx, queries, rows, d);
    }
    // The qkv input gradient goes through the first layer norm into dx as its rows finish.
    let dxs = SharedOut(dx.as_mut_ptr());
    let dh = linear_input_grad_then(&dqkv, &l.qkv, rows, 3 * d, d, &|r, row| {
        // SAFETY: row r of dx (every row), touched only by the task that finished row r.
        let dx = unsafe { dxs.row(r * d, d) };
        layer_norm_bwd_row(row, &t.x_in[r * d..][..d], t.stats1[r], &l.ln1, dx)
    });
    if let Some(g) = grads {
        g.qkv
            .add(&dqkv, 3 * d, &renorm(&t.x_in, &l.ln1, d), rows, 3 * d);
        g.ln1.add(&dh, &t.x_in, &t.stats1, d);
    }
    dx
}
