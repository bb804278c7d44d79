//! Both towers' transformer blocks as explicit CPU kernels, and for the text tower a hand-written
//! backward to its input embeddings: CoOp's hot loop, and the bulk of feature extraction.
//!
//! Through candle's autograd the text tower's maths cost about three times its matrix work: every op
//! allocates and zero-fills its gradient before adding to it, the matmul backward also computes the
//! frozen weights' gradients, element-wise ops run on a second thread pool that spins against the
//! matmul's, and the short attention (a continuation sees ~20 keys) is a dozen tiny tensor ops per layer.
//! Here one buffer holds every row (a shared prefix's P rows, then each sequence's rows), the per-row
//! work (layer norms, linears, GELU, residuals) runs once over all of them, the attention is a loop per
//! row and head, and the backward computes only what reaches the embeddings. The last block runs its
//! queries, output projection and MLP only on the rows the pooled feature reads (end-of-text tokens,
//! class tokens). Values and gradients equal candle's path (`TextTower::forward_prefixed_autograd`,
//! `VisionTower::forward`) to float rounding, as `tests/integration/shared_prefix.rs` and `tests/integration/clip_parity.rs` check.

mod attention;
mod backward;
mod kernels;
mod packed;
mod profile;
mod row_attention;
mod text;
mod train;
mod weights;

use candle_core::{DType, Result, Tensor};

use self::attention::attention_fwd;
use self::kernels::{
    gather, gelu_in_place, gelu_into, layer_norm_fwd, layer_norm_row, linear_new, linear_residual,
    linear_residual_then, linear_then, SharedOut,
};
use self::profile::Part;
use self::weights::{HeldLayer, HeldLinear, HeldNorm};
use super::TowerWeights;
use crate::clip::config::HiddenAct;

pub use self::backward::{BlockGrads, LinearGrads, NormGrads, TowerGrads};
pub use self::packed::PackedLinear;
pub use self::profile::Breakdown;
pub use self::text::forward_prefixed;
pub use self::train::{
    text_backward, text_forward, vision_backward, vision_forward, Readout, TextGrads, TextPass,
    TokenGrad, VisionGrads, VisionPass, VisionStem,
};

/// `out[m×n] (+)= a[m×k] · B` (B `[k×n]`, or `[n×k]` when `b_t`) through the kernels' GEMM: for
/// benchmarks that measure the machine's peak the way the towers reach it.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32(
    out: &mut [f32],
    out_rs: usize,
    a: &[f32],
    a_rs: usize,
    b: &[f32],
    b_t: bool,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    kernels::matmul(out, out_rs, a, a_rs, b, b_t, m, k, n, accumulate)
}

/// [`gemm_f32`] (row-major `a` and `out`, no accumulate) cut into `parts` single-threaded tasks (row
/// bands, column bands) instead of the kernels' own choice: for comparing the cuts.
pub fn gemm_f32_in_parts(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    b_t: bool,
    (m, k, n): (usize, usize, usize),
    parts: (usize, usize),
) {
    kernels::matmul_in_parts(out, n, a, k, b, b_t, (m, k, n), false, parts)
}

/// `out[m×n] += aᵀ·b` (`a` `[k×m]`, `b` `[k×n]`, row strides `a_rs`, `b_rs`): the weight-gradient
/// product of the kernels' backward, for its benchmark.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32_tn(
    out: &mut [f32],
    a: &[f32],
    a_rs: usize,
    b: &[f32],
    b_rs: usize,
    m: usize,
    k: usize,
    n: usize,
) {
    kernels::matmul_tn(out, a, a_rs, b, b_rs, m, k, n)
}

/// The CoOp step's kernels on their own, for `benches/suite.rs` (`coop_kernels`).
#[doc(hidden)]
pub mod bench_hooks {
    use super::{row_attention, Dims};

    /// quick-GELU of `xs` into a new buffer, as the forward keeps its input for the backward.
    pub fn quick_gelu(xs: &[f32]) -> Vec<f32> {
        super::kernels::gelu_new(crate::clip::config::HiddenAct::QuickGelu, xs)
    }

    /// Causal attention over a `p`-row prefix and sequences of `lens` rows (every row a query), width
    /// `d` in `heads` heads, on `qkv` `[rows, 3d]`; with `dout`, also its backward. Returns the output.
    pub fn prefix_attention(
        p: usize,
        lens: &[usize],
        d: usize,
        heads: usize,
        qkv: &[f32],
        dout: Option<&[f32]>,
    ) -> Vec<f32> {
        let eot: Vec<usize> = lens.iter().map(|l| p + l - 1).collect();
        let dm = Dims::text(p, &eot, d, heads, 4 * d, d);
        let all: Vec<usize> = (0..dm.rows()).collect();
        let (out, probs) = row_attention::forward(&dm, qkv, &all);
        match dout {
            Some(g) => row_attention::backward(&dm, qkv, &probs, g, &all),
            None => out,
        }
    }

    /// A frozen weight packed once, as a frozen linear layer keeps it (`None` where this CPU has no
    /// micro-kernel for it).
    pub struct PackedWeight(super::packed::PackedB);

    impl PackedWeight {
        /// B `[k×n]`, or `[n×k]` when `b_t` (a torch `[out, in]` weight for `x·Wᵀ`).
        pub fn new(b: &[f32], b_t: bool, k: usize, n: usize) -> Option<Self> {
            super::packed::PackedB::new(b, b_t, k, n).map(Self)
        }

        /// `a[m×k] · B` into a new buffer, split over the threads as the towers split it.
        pub fn product(&self, a: &[f32], m: usize) -> Vec<f32> {
            super::kernels::packed_new(a, self.0.k(), &self.0, m, None)
        }

        /// The product and quick-GELU of it (a CoOp forward's fc1): with `fused`, the activation runs
        /// on each row as the product finishes it (as the towers run it), else in a pass after.
        pub fn product_quick_gelu(&self, a: &[f32], m: usize, fused: bool) -> (Vec<f32>, Vec<f32>) {
            use super::kernels::{gelu_into, gelu_new, packed_new, SharedOut};
            let act = crate::clip::config::HiddenAct::QuickGelu;
            if !fused {
                let pre = packed_new(a, self.0.k(), &self.0, m, None);
                let post = gelu_new(act, &pre);
                return (pre, post);
            }
            let n = self.0.n();
            let mut post: Vec<f32> = Vec::with_capacity(m * n);
            let ps = SharedOut(post.spare_capacity_mut().as_mut_ptr());
            let pre = packed_new(
                a,
                self.0.k(),
                &self.0,
                m,
                // SAFETY: row r of post's m·n spare values, written once.
                Some(&|r, row| gelu_into(act, unsafe { ps.row(r * n, n) }, row)),
            );
            // SAFETY: every row was written as the product finished it.
            unsafe { post.set_len(m * n) };
            (pre, post)
        }
    }
}

/// Floating-point operations of the kernels' matrix products since the process started.
pub fn gemm_flops() -> u64 {
    kernels::GEMM_FLOPS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether these kernels can run a tower whose weights are like `weights` with activation `act`: what
/// [`trains_here`] asks, and frozen weights: the inference passes compute no weight gradients, so a
/// tower being trained goes through [`train`]'s passes or candle's ops.
pub fn runs_here(weights: &Tensor, act: HiddenAct) -> bool {
    trains_here(weights, act) && !weights.track_op()
}

/// Whether [`train`]'s passes can train a tower whose weights are like `weights` with activation `act`:
/// f32 on the CPU with an activation the kernels implement, and `PROMPTSCOPE_CANDLE_OPS` unset.
pub fn trains_here(weights: &Tensor, act: HiddenAct) -> bool {
    !super::candle_ops_forced()
        && weights.device().is_cpu()
        && weights.dtype() == DType::F32
        && matches!(act, HiddenAct::QuickGelu | HiddenAct::Gelu)
}

/// The pooled feature of hidden states `[B, T, D]` (class token first) entering block `from`: blocks
/// `from..`, the last on the class tokens alone, then `post_layernorm` and the projection. SsVP re-runs
/// the last block this way on the class token and its kept patches.
pub fn vision_pooled_from(tower: &TowerWeights, hidden: &Tensor, from: usize) -> Result<Tensor> {
    let (b, t, d) = hidden.dims3()?;
    let layers: Vec<HeldLayer> = tower
        .blocks
        .get(from..)
        .unwrap_or(&[])
        .iter()
        .map(HeldLayer::new)
        .collect::<Result<_>>()?;
    let (post, proj) = (
        HeldNorm::new(&tower.final_norm)?,
        HeldLinear::new(&tower.projection)?,
    );
    let proj_dim = tower.projection_dim()?;
    let dm = Dims::blocks(
        0,
        vec![t; b],
        false,
        d,
        tower.heads,
        tower.intermediate,
        proj_dim,
    );
    let cls = dm.start.clone();
    let (x, _) = run_blocks(
        &dm,
        &layers,
        tower.act,
        hidden.flatten_all()?.to_vec1()?,
        &cls,
        Keep::Nothing,
    );
    let (pooled, _) = pool(&x, &post, &proj, d, proj_dim);
    Tensor::from_vec(pooled, (b, proj_dim), hidden.device())
}

/// What [`vision_hidden_states`] keeps of each block's attention besides its output.
pub struct KeptAttention {
    /// The attention probabilities `[B, H, T, T]`.
    pub probs: Tensor,
    /// q, k and v before the heads split (biases included, q not scaled) `[B, T, 3·D]`.
    pub qkv: Tensor,
}

/// The hidden states entering every block, then the final ones (`L + 1` tensors `[B, T, D]`), from
/// `x0` entering block 0, and the attention of every block from `keep_from` on (None before it), from
/// the same pass: what the explanation maps read (`align::maps::MapPass`).
pub fn vision_hidden_states(
    tower: &TowerWeights,
    x0: &Tensor,
    keep_from: usize,
) -> Result<(Vec<Tensor>, Vec<Option<KeptAttention>>)> {
    let (b, t, d) = x0.dims3()?;
    let layers: Vec<HeldLayer> = tower
        .blocks
        .iter()
        .map(HeldLayer::new)
        .collect::<Result<_>>()?;
    let dm = Dims::blocks(
        0,
        vec![t; b],
        false,
        d,
        tower.heads,
        tower.intermediate,
        tower.projection_dim()?,
    );
    let all: Vec<usize> = (0..dm.rows()).collect();
    let mut x = x0.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![x0.clone()];
    let mut attention = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        let keep = if i >= keep_from {
            Keep::ForInputs
        } else {
            Keep::Nothing
        };
        let (y, tape) = block_forward(&dm, l, tower.act, x, &all, keep);
        out.push(Tensor::from_vec(y.clone(), (b, t, d), x0.device())?);
        attention.push(match tape {
            Some(tape) => {
                // The kernel keeps them per query row, `[B·T, H, T]`.
                let probs = Tensor::from_vec(tape.probs, (b, t, tower.heads, t), x0.device())?;
                Some(KeptAttention {
                    probs: probs.transpose(1, 2)?.contiguous()?,
                    qkv: Tensor::from_vec(tape.qkv, (b, t, 3 * d), x0.device())?,
                })
            }
            None => None,
        });
        x = y;
    }
    Ok((out, attention))
}

/// Runs `layers` over every row of `x`, the last one only for the `readout` rows (ascending) the pooled
/// feature reads; returns those rows' outputs `[readout, D]` and, unless `keep` is `Keep::Nothing`, each
/// block's tape.
fn run_blocks(
    dm: &Dims,
    layers: &[HeldLayer],
    act: HiddenAct,
    mut x: Vec<f32>,
    readout: &[usize],
    keep: Keep,
) -> (Vec<f32>, Vec<LayerTape>) {
    let all: Vec<usize> = (0..dm.rows()).collect();
    let mut tapes = Vec::new();
    for (li, l) in layers.iter().enumerate() {
        let queries = if li + 1 == layers.len() {
            readout
        } else {
            &all
        };
        let (x_out, tape) = block_forward(dm, l, act, x, queries, keep);
        tapes.extend(tape);
        x = x_out;
    }
    let x = if layers.is_empty() {
        gather(&x, readout, dm.d)
    } else {
        x
    };
    (x, tapes)
}

/// The final layer norm and projection of the read-out rows `x` `[n, D]`: `[n, proj]` and the norm's
/// statistics (for the backward).
fn pool(
    x: &[f32],
    norm: &HeldNorm,
    proj: &HeldLinear,
    d: usize,
    proj_dim: usize,
) -> (Vec<f32>, Vec<(f32, f32)>) {
    let n = x.len() / d;
    let mut normed = vec![0f32; n * d];
    let stats = layer_norm_fwd(x, norm, d, &mut normed);
    let pooled = linear_new(&normed, proj, n, d, proj_dim);
    (pooled, stats)
}

/// Sizes and row layout of one pass: P prefix rows, then each class's rows up to and including its
/// end-of-text token (classes differ in length; nothing is padded).
#[derive(Debug, Clone)]
struct Dims {
    p: usize,
    d: usize,
    heads: usize,
    inter: usize,
    proj: usize,
    /// First row of each class.
    start: Vec<usize>,
    /// Rows of each class (its end-of-text position + 1 − P).
    len: Vec<usize>,
    /// The class of each continuation row (row − P).
    class_of: Vec<u32>,
    /// Text: each row sees the rows before it. Images: each row sees its whole block.
    causal: bool,
}

impl Dims {
    /// Causal text: a P-row prefix, then each sequence up to its end-of-text position `eot`.
    fn text(p: usize, eot: &[usize], d: usize, heads: usize, inter: usize, proj: usize) -> Self {
        let len: Vec<usize> = eot.iter().map(|&e| e + 1 - p).collect();
        Self::blocks(p, len, true, d, heads, inter, proj)
    }

    #[allow(clippy::too_many_arguments)]
    fn blocks(
        p: usize,
        len: Vec<usize>,
        causal: bool,
        d: usize,
        heads: usize,
        inter: usize,
        proj: usize,
    ) -> Self {
        let mut start = Vec::with_capacity(len.len());
        let mut class_of = Vec::new();
        let mut next = p;
        for (c, &l) in len.iter().enumerate() {
            start.push(next);
            class_of.extend(std::iter::repeat_n(c as u32, l));
            next += l;
        }
        Self {
            p,
            d,
            heads,
            inter,
            proj,
            start,
            len,
            class_of,
            causal,
        }
    }
    fn classes(&self) -> usize {
        self.len.len()
    }
    fn rows(&self) -> usize {
        self.p + self.class_of.len()
    }
    fn hd(&self) -> usize {
        self.d / self.heads
    }
    /// Attention probabilities kept per query row and head: P prefix keys and up to the longest class.
    fn keys(&self) -> usize {
        self.p + self.len.iter().copied().max().unwrap_or(0)
    }
    /// Each class's end-of-text row (the last of its rows).
    fn eot_rows(&self) -> Vec<usize> {
        self.start
            .iter()
            .zip(&self.len)
            .map(|(s, l)| s + l - 1)
            .collect()
    }
}

/// What a forward keeps for a backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Nothing,
    /// What the gradient of the input needs (CoOp).
    ForInputs,
    /// Also the activations the weight gradients need (pretraining).
    ForWeights,
}

/// What the backward pass needs from one layer's forward.
struct LayerTape {
    x_in: Vec<f32>,
    stats1: Vec<(f32, f32)>,
    qkv: Vec<f32>,
    probs: Vec<f32>,
    /// The attention's output `[Q, D]` (the output projection's input, for its weight gradient).
    att: Vec<f32>,
    x_mid: Vec<f32>,
    stats2: Vec<(f32, f32)>,
    pre_act: Vec<f32>,
    /// The activation's output (`Keep::ForWeights`: fc2's weight gradient reads it).
    post_act: Option<Vec<f32>>,
}

/// One pre-LN block (`CLIPEncoderLayer`): every row feeds the keys and values, `queries` (ascending) are
/// the rows whose outputs are computed, `[Q, D]`; with `keep`, what its backward needs.
fn block_forward(
    dm: &Dims,
    l: &HeldLayer,
    act: HiddenAct,
    x: Vec<f32>,
    queries: &[usize],
    keep: Keep,
) -> (Vec<f32>, Option<LayerTape>) {
    let (d, rows, q, inter) = (dm.d, dm.rows(), queries.len(), dm.inter);
    let mut h = vec![0f32; rows * d];
    let stats1 = layer_norm_fwd(&x, &l.ln1, d, &mut h);
    let qkv = linear_new(&h, &l.qkv, rows, d, 3 * d);
    let (att, probs) = profile::timed(Part::Attention, || attention_fwd(dm, &qkv, queries));
    // The output projection's rows get the residual, the bias and the second layer norm as they finish.
    h.truncate(q * d);
    let mut stats2 = vec![(0f32, 0f32); q];
    let (hs, ss) = (SharedOut(h.as_mut_ptr()), SharedOut(stats2.as_mut_ptr()));
    let residual = |r: usize| {
        let at = if q == rows { r } else { queries[r] };
        &x[at * d..][..d]
    };
    let x_mid = linear_residual_then(residual, &att, &l.o, q, d, d, |r, row| {
        // SAFETY: row r of h and stats2 (q rows each), each written by the one task that finished it.
        unsafe { ss.row(r, 1)[0] = layer_norm_row(row, &l.ln2, hs.row(r * d, d)) }
    });
    // fc1's rows get the activation as they finish: into a buffer of its own when the backward needs
    // the pre-activation, else over it.
    let mut u: Vec<f32> = Vec::with_capacity(if keep != Keep::Nothing { q * inter } else { 0 });
    let us = SharedOut(u.spare_capacity_mut().as_mut_ptr());
    let mut pre_act = linear_then(&h, &l.fc1, q, d, inter, |r, row| {
        if keep != Keep::Nothing {
            // SAFETY: row r of u's q·inter spare values, written once by the task that finished it.
            gelu_into(act, unsafe { us.row(r * inter, inter) }, row)
        } else {
            gelu_in_place(act, row)
        }
    });
    let u = if keep != Keep::Nothing {
        // SAFETY: every one of the q rows was written above.
        unsafe { u.set_len(q * inter) };
        u
    } else {
        std::mem::take(&mut pre_act)
    };
    let x_out = linear_residual(&x_mid, &u, &l.fc2, q, inter, d);
    let tape = (keep != Keep::Nothing).then(|| LayerTape {
        x_in: x,
        stats1,
        qkv,
        probs,
        att,
        x_mid,
        stats2,
        pre_act,
        post_act: (keep == Keep::ForWeights).then_some(u),
    });
    (x_out, tape)
}
