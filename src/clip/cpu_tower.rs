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
//! `VisionTower::forward`) to float rounding, as `tests/shared_prefix.rs` and `tests/clip_parity.rs` check.

use std::ops::Deref;
use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::config::HiddenAct;
use super::layers::{EncoderLayer, LayerNorm, Linear};
use super::text::TextTower;
use super::vision::VisionTower;

/// A weight tensor's f32 data, borrowed from candle's storage for as long as the guard lives.
struct Held<'t> {
    guard: Box<dyn Deref<Target = Storage> + Sync + 't>,
    start: usize,
    len: usize,
}

impl<'t> Held<'t> {
    fn new(t: &'t Tensor) -> Result<Self> {
        let (guard, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("cpu_tower: weight is not contiguous") };
        match &*guard {
            Storage::Cpu(CpuStorage::F32(v)) if end <= v.len() => {}
            _ => candle_core::bail!("cpu_tower: weights must be f32 on the CPU"),
        }
        Ok(Self { guard: Box::new(guard), start, len: end - start })
    }

    fn data(&self) -> &[f32] {
        match &**self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.start + self.len],
            _ => unreachable!("checked in Held::new"),
        }
    }
}

struct HeldLinear<'t> {
    w: Held<'t>,
    b: Option<Held<'t>>,
}

impl<'t> HeldLinear<'t> {
    fn new(l: &'t Linear) -> Result<Self> {
        Ok(Self { w: Held::new(l.weight())?, b: l.bias().map(Held::new).transpose()? })
    }
}

struct HeldNorm<'t> {
    w: Held<'t>,
    b: Held<'t>,
    eps: f32,
}

impl<'t> HeldNorm<'t> {
    fn new(n: &'t LayerNorm) -> Result<Self> {
        Ok(Self { w: Held::new(n.weight())?, b: Held::new(n.bias())?, eps: n.eps() as f32 })
    }
}

struct HeldLayer<'t> {
    ln1: HeldNorm<'t>,
    q: HeldLinear<'t>,
    k: HeldLinear<'t>,
    v: HeldLinear<'t>,
    o: HeldLinear<'t>,
    ln2: HeldNorm<'t>,
    fc1: HeldLinear<'t>,
    fc2: HeldLinear<'t>,
}

impl<'t> HeldLayer<'t> {
    fn new(l: &'t EncoderLayer) -> Result<Self> {
        let a = &l.self_attn;
        Ok(Self {
            ln1: HeldNorm::new(&l.layer_norm1)?,
            q: HeldLinear::new(a.q_proj())?,
            k: HeldLinear::new(a.k_proj())?,
            v: HeldLinear::new(a.v_proj())?,
            o: HeldLinear::new(a.out_proj())?,
            ln2: HeldNorm::new(&l.layer_norm2)?,
            fc1: HeldLinear::new(l.mlp.fc1())?,
            fc2: HeldLinear::new(l.mlp.fc2())?,
        })
    }
}

/// The tower's weights, borrowed for one forward or backward pass.
struct HeldTower<'t> {
    pos: Held<'t>,
    layers: Vec<HeldLayer<'t>>,
    final_norm: HeldNorm<'t>,
    proj: HeldLinear<'t>,
}

impl<'t> HeldTower<'t> {
    fn new(t: &'t TextTower) -> Result<Self> {
        Ok(Self {
            pos: Held::new(&t.position_embedding)?,
            layers: t.layers.iter().map(HeldLayer::new).collect::<Result<_>>()?,
            final_norm: HeldNorm::new(&t.final_layer_norm)?,
            proj: HeldLinear::new(&t.projection)?,
        })
    }
}

/// `PROMPTSCOPE_CANDLE_OPS=1` turns these kernels off (everything then runs as candle ops): for
/// benchmarking one against the other.
fn runs_here(weights: &Tensor, act: HiddenAct) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var_os("PROMPTSCOPE_CANDLE_OPS").is_some_and(|v| v == "1"));
    !off && weights.device().is_cpu() && weights.dtype() == DType::F32 && matches!(act, HiddenAct::QuickGelu | HiddenAct::Gelu)
}

/// Whether these kernels can run `tower`: f32 on the CPU with an activation they implement.
pub fn supports(tower: &TextTower) -> bool {
    runs_here(&tower.token_embedding, tower.config.hidden_act)
}

/// As [`supports`], for the vision tower.
pub fn supports_vision(tower: &VisionTower) -> bool {
    runs_here(&tower.patch_weight, tower.config.hidden_act)
}

/// Pooled, projected image features `[B, proj]` (transformers' `get_image_features`) of pixels
/// `[B, C, H, W]`: the patch embedding through candle, the blocks here, the last block on the class
/// tokens alone.
pub fn vision_pooled(tower: &VisionTower, pixels: &Tensor) -> Result<Tensor> {
    vision_pooled_from(tower, &tower.embed(pixels)?, 0)
}

/// The pooled feature of hidden states `[B, T, D]` (class token first) entering block `from`: blocks
/// `from..`, the last on the class tokens alone, then `post_layernorm` and the projection. SsVP re-runs
/// the last block this way on the class token and its kept patches.
pub fn vision_pooled_from(tower: &VisionTower, hidden: &Tensor, from: usize) -> Result<Tensor> {
    let (b, t, d) = hidden.dims3()?;
    let cfg = &tower.config;
    let layers: Vec<HeldLayer> = tower.layers.get(from..).unwrap_or(&[]).iter().map(HeldLayer::new).collect::<Result<_>>()?;
    let (post, proj) = (HeldNorm::new(&tower.post_layernorm)?, HeldLinear::new(&tower.projection)?);
    let proj_dim = tower.projection.weight().dim(0)?;
    let dm = Dims::blocks(0, vec![t; b], false, d, cfg.num_attention_heads, cfg.intermediate_size, proj_dim);
    let cls = dm.start.clone();
    let (x, _) = run_blocks(&dm, &layers, cfg.hidden_act, hidden.flatten_all()?.to_vec1()?, &cls, false);
    let (pooled, _) = pool(&x, &post, &proj, d, proj_dim);
    Tensor::from_vec(pooled, (b, proj_dim), hidden.device())
}

/// Runs `layers` over every row of `x`, the last one only for the `readout` rows (ascending) the pooled
/// feature reads; returns those rows' outputs `[readout, D]` and, with `keep`, each block's tape.
fn run_blocks(dm: &Dims, layers: &[HeldLayer], act: HiddenAct, mut x: Vec<f32>, readout: &[usize], keep: bool) -> (Vec<f32>, Vec<LayerTape>) {
    let all: Vec<usize> = (0..dm.rows()).collect();
    let mut tapes = Vec::new();
    for (li, l) in layers.iter().enumerate() {
        let queries = if li + 1 == layers.len() { readout } else { &all };
        let (x_out, tape) = block_forward(dm, l, act, x, queries, keep);
        tapes.extend(tape);
        x = x_out;
    }
    let x = if layers.is_empty() { gather(&x, readout, dm.d) } else { x };
    (x, tapes)
}

/// The final layer norm and projection of the read-out rows `x` `[n, D]`: `[n, proj]` and the norm's
/// statistics (for the backward).
fn pool(x: &[f32], norm: &HeldNorm, proj: &HeldLinear, d: usize, proj_dim: usize) -> (Vec<f32>, Vec<(f32, f32)>) {
    let n = x.len() / d;
    let mut normed = vec![0f32; n * d];
    let stats = layer_norm_fwd(x, norm, d, &mut normed);
    let mut pooled = vec![0f32; n * proj_dim];
    linear(&mut pooled, proj_dim, &normed, proj, n, d, proj_dim, false);
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
    fn blocks(p: usize, len: Vec<usize>, causal: bool, d: usize, heads: usize, inter: usize, proj: usize) -> Self {
        let mut start = Vec::with_capacity(len.len());
        let mut class_of = Vec::new();
        let mut next = p;
        for (c, &l) in len.iter().enumerate() {
            start.push(next);
            class_of.extend(std::iter::repeat_n(c as u32, l));
            next += l;
        }
        Self { p, d, heads, inter, proj, start, len, class_of, causal }
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
        self.start.iter().zip(&self.len).map(|(s, l)| s + l - 1).collect()
    }
}

/// What the backward pass needs from one layer's forward.
struct LayerTape {
    x_in: Vec<f32>,
    stats1: Vec<(f32, f32)>,
    qkv: Vec<f32>,
    probs: Vec<f32>,
    x_mid: Vec<f32>,
    stats2: Vec<(f32, f32)>,
    pre_act: Vec<f32>,
}

/// Everything the backward pass needs, kept from the forward.
pub struct Tape {
    dims: Dims,
    rest_len: usize,
    layers: Vec<LayerTape>,
    final_in: Vec<f32>,
    final_stats: Vec<(f32, f32)>,
}

fn threads() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `out[m×n] (+)= a[m×k] · B`, with B given row-major as `[k×n]`, or as `[n×k]` when `b_t` (then B is its
/// transpose, as for `x·Wᵀ` with torch's `[out, in]` weights). `a` and `out` have row strides `a_rs` and
/// `out_rs` (column blocks of wider buffers).
#[allow(clippy::too_many_arguments)]
fn matmul(out: &mut [f32], out_rs: usize, a: &[f32], a_rs: usize, b: &[f32], b_t: bool, m: usize, k: usize, n: usize, accumulate: bool) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(out.len() >= (m - 1) * out_rs + n && a.len() >= (m - 1) * a_rs + k && b.len() >= k * n, "matmul: buffer too small");
    let (b_rs, b_cs) = if b_t { (1, k as isize) } else { (n as isize, 1) };
    let workers = rayon::current_num_threads();
    // Few rows (one image is 50): gemm then runs on one thread and re-packs the whole weight from memory,
    // so split the output's columns over the threads ourselves, each packing only its share.
    let split = if m < 128 && workers > 1 && n >= 64 * workers { workers } else { 1 };
    let width = n.div_ceil(split);
    let (po, pa, pb) = (SharedOut(out.as_mut_ptr()), a.as_ptr() as usize, b.as_ptr() as usize);
    (0..split).into_par_iter().for_each(move |part| {
        let po = po;
        let n0 = part * width;
        let cols = width.min(n - n0);
        let b0 = if b_t { n0 * k } else { n0 };
        // SAFETY: the assert above keeps every index the strides reach inside the three slices; the
        // parts write disjoint column ranges n0..n0+cols of `out`.
        unsafe {
            gemm::gemm(
                m,
                cols,
                k,
                po.0.add(n0),
                1,
                out_rs as isize,
                accumulate,
                pa as *const f32,
                1,
                a_rs as isize,
                (pb as *const f32).add(b0),
                b_cs,
                b_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                if split > 1 { Parallelism::None } else { threads() },
            )
        }
    });
}

/// Rows of `width` at a time, enough of them per task to be worth a thread.
fn row_chunk(width: usize) -> usize {
    (16384 / width.max(1)).max(1)
}

fn add_bias(y: &mut [f32], y_rs: usize, bias: &[f32]) {
    y.par_chunks_mut(y_rs * row_chunk(y_rs)).for_each(|block| {
        for row in block.chunks_mut(y_rs) {
            row[..bias.len()].iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
    });
}

/// `out[:, ..n] (+)= x · Wᵀ + b` for `x` `[m, k]` (row stride k).
fn linear(out: &mut [f32], out_rs: usize, x: &[f32], l: &HeldLinear, m: usize, k: usize, n: usize, accumulate: bool) {
    matmul(out, out_rs, x, k, l.w.data(), true, m, k, n, accumulate);
    if let Some(b) = &l.b {
        add_bias(out, out_rs, b.data());
    }
}

fn layer_norm_fwd(x: &[f32], n: &HeldNorm, d: usize, out: &mut [f32]) -> Vec<(f32, f32)> {
    let (w, b, eps) = (n.w.data(), n.b.data(), f64::from(n.eps));
    let mut stats = vec![(0f32, 0f32); x.len() / d];
    let rows = row_chunk(d);
    out.par_chunks_mut(d * rows).zip(x.par_chunks(d * rows)).zip(stats.par_chunks_mut(rows)).for_each(|((out, x), stats)| {
        for ((o, x), st) in out.chunks_mut(d).zip(x.chunks(d)).zip(stats.iter_mut()) {
            let mean = lanes_sum(x, x, |v, _| v) / d as f32;
            let var = lanes_sum(x, x, |v, _| (v - mean) * (v - mean)) / d as f32;
            let rstd = (1.0 / (f64::from(var) + eps).sqrt()) as f32;
            for i in 0..d {
                o[i] = (x[i] - mean) * rstd * w[i] + b[i];
            }
            *st = (mean, rstd);
        }
    });
    stats
}

/// `dx += ∂LN/∂x · dy`.
fn layer_norm_bwd(dy: &[f32], x: &[f32], stats: &[(f32, f32)], n: &HeldNorm, d: usize, dx: &mut [f32]) {
    let w = n.w.data();
    let rows = row_chunk(d);
    dx.par_chunks_mut(d * rows).zip(dy.par_chunks(d * rows)).zip(x.par_chunks(d * rows)).zip(stats.par_chunks(rows)).for_each(
        |(((dx, dy), x), stats)| {
            for (((dx, dy), x), &(mean, rstd)) in dx.chunks_mut(d).zip(dy.chunks(d)).zip(x.chunks(d)).zip(stats) {
                let gw: Vec<f32> = dy.iter().zip(w).map(|(g, w)| g * w).collect();
                let sum_g = lanes_sum(&gw, &gw, |g, _| g);
                let sum_gx = lanes_sum(&gw, x, |g, x| g * (x - mean)) * rstd;
                let (mean_g, mean_gx) = (sum_g / d as f32, sum_gx / d as f32);
                for i in 0..d {
                    let xhat = (x[i] - mean) * rstd;
                    dx[i] += rstd * (gw[i] - mean_g - xhat * mean_gx);
                }
            }
        },
    );
}

fn gelu(act: HiddenAct, a: f32) -> f32 {
    match act {
        HiddenAct::QuickGelu => a / (1.0 + (-1.702 * a).exp()),
        _ => 0.5 * a * (1.0 + candle_core::cpu::erf::erf_f32(a * std::f32::consts::FRAC_1_SQRT_2)),
    }
}

fn gelu_grad(act: HiddenAct, a: f32) -> f32 {
    match act {
        HiddenAct::QuickGelu => {
            let s = 1.0 / (1.0 + (-1.702 * a).exp());
            s + 1.702 * a * s * (1.0 - s)
        }
        _ => {
            let cdf = 0.5 * (1.0 + candle_core::cpu::erf::erf_f32(a * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * a * a).exp() / (2.0 * std::f32::consts::PI).sqrt();
            cdf + a * pdf
        }
    }
}

/// Sum of `f(a[i], b[i])` in 16 independent lanes: a plain running sum is one long chain of dependent
/// additions the compiler may not reorder, four times slower on these 64- to 3072-wide rows.
fn lanes_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| f(x, y)).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += f(x[i], y[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    lanes_sum(a, b, |x, y| x * y)
}

/// The rows row `r` attends to, as two ranges: prefix rows, then its own class's rows.
fn key_ranges(dm: &Dims, r: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    if r < dm.p {
        (0..if dm.causal { r + 1 } else { dm.p }, 0..0)
    } else {
        let c = dm.class_of[r - dm.p] as usize;
        let own = dm.start[c];
        (0..dm.p, own..if dm.causal { r + 1 } else { own + dm.len[c] })
    }
}

/// Causal attention of the query rows `queries` (ascending) over their keys (see [`key_ranges`]);
/// returns the per-head output `[Q, D]` and the probabilities `[Q, heads, keys]`.
fn attention_fwd(dm: &Dims, qkv: &[f32], queries: &[usize]) -> (Vec<f32>, Vec<f32>) {
    if !dm.causal && dm.p == 0 && queries.len() == dm.rows() {
        return attention_fwd_blocks(dm, qkv);
    }
    let (d, hd, kw) = (dm.d, dm.hd(), dm.keys());
    let scale = (hd as f32).powf(-0.5);
    let mut out = vec![0f32; queries.len() * d];
    let mut probs = vec![0f32; queries.len() * dm.heads * kw];
    out.par_chunks_mut(d).zip(probs.par_chunks_mut(dm.heads * kw)).zip(queries.par_iter()).for_each(|((out, probs), &r)| {
        let (pre, own) = key_ranges(dm, r);
        let keys: Vec<usize> = pre.chain(own).collect();
        for h in 0..dm.heads {
            let q = &qkv[r * 3 * d + h * hd..][..hd];
            let p = &mut probs[h * kw..][..keys.len()];
            for (pk, &key) in p.iter_mut().zip(&keys) {
                *pk = dot(q, &qkv[key * 3 * d + d + h * hd..][..hd]) * scale;
            }
            let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for v in p.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            let o = &mut out[h * hd..][..hd];
            for (pk, &key) in p.iter_mut().zip(&keys) {
                *pk /= sum;
                add_scaled(o, &qkv[key * 3 * d + 2 * d + h * hd..][..hd], *pk);
            }
        }
    });
    (out, probs)
}

/// A pointer that tasks writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: only used by tasks that write disjoint elements (`attention_fwd_blocks`, `matmul`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// [`attention_fwd`] for whole blocks (images: every token sees its block's tokens), all rows as
/// queries: per block and head, `Q·Kᵀ` and `P·V` as small matrix products (an image's 50 tokens × 64
/// dimensions per head is enough for the GEMM micro-kernels, where per-key loops were 11 % of the tower).
fn attention_fwd_blocks(dm: &Dims, qkv: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (d, hd, kw, heads) = (dm.d, dm.hd(), dm.keys(), dm.heads);
    let scale = (hd as f32).powf(-0.5);
    let rows = dm.rows();
    let mut out = vec![0f32; rows * d];
    let mut probs = vec![0f32; rows * heads * kw];
    let (po, pp) = (SharedOut(out.as_mut_ptr()), SharedOut(probs.as_mut_ptr()));
    (0..dm.classes() * heads).into_par_iter().for_each(move |task| {
        let (po, pp) = (po, pp);
        let (c, h) = (task / heads, task % heads);
        let (start, len) = (dm.start[c], dm.len[c]);
        let q = qkv[start * 3 * d + h * hd..].as_ptr();
        let k = qkv[start * 3 * d + d + h * hd..].as_ptr();
        let v = qkv[start * 3 * d + 2 * d + h * hd..].as_ptr();
        let (prs, qrs) = ((heads * kw) as isize, (3 * d) as isize);
        // SAFETY: block c's rows of head h: scores at probs[(r·heads + h)·kw ..+ len] and outputs at
        // out[r·d + h·hd ..+ hd] for r in start..start+len, which no other task touches; the strides keep
        // every read inside `qkv` (rows start..start+len, columns of head h).
        unsafe {
            let p0 = pp.0.add((start * heads + h) * kw);
            gemm::gemm(len, len, hd, p0, 1, prs, false, q, 1, qrs, k, qrs, 1, 0.0, scale, false, false, false, Parallelism::None);
            for i in 0..len {
                let row = std::slice::from_raw_parts_mut(p0.offset(i as isize * prs), len);
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for x in row.iter_mut() {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                row.iter_mut().for_each(|x| *x /= sum);
            }
            let o0 = po.0.add(start * d + h * hd);
            gemm::gemm(len, hd, len, o0, 1, d as isize, false, p0, 1, prs, v, 1, qrs, 0.0, 1.0, false, false, false, Parallelism::None);
        }
    });
    (out, probs)
}

fn add_scaled(acc: &mut [f32], x: &[f32], scale: f32) {
    acc.iter_mut().zip(x).for_each(|(a, b)| *a += scale * b);
}

/// One query row's attention backward for all heads: `probs` `[heads, keys]` and `dout` `[D]` are the
/// row's; adds its query gradient to `dq` `[D]` and hands each key's contributions to
/// `add_kv(key, head, q, dout, ds, p)` (dk += ds·q, dv += p·dout).
fn attention_row_bwd(
    dm: &Dims,
    qkv: &[f32],
    probs: &[f32],
    dout: &[f32],
    r: usize,
    dq: &mut [f32],
    add_kv: &mut dyn FnMut(usize, usize, &[f32], &[f32], f32, f32),
) {
    let (d, hd, kw) = (dm.d, dm.hd(), dm.keys());
    let scale = (hd as f32).powf(-0.5);
    let (pre, own) = key_ranges(dm, r);
    let keys: Vec<usize> = pre.chain(own).collect();
    let mut dp = vec![0f32; keys.len()];
    for h in 0..dm.heads {
        let pr = &probs[h * kw..][..keys.len()];
        let go = &dout[h * hd..][..hd];
        for (dpk, &key) in dp.iter_mut().zip(&keys) {
            *dpk = dot(go, &qkv[key * 3 * d + 2 * d + h * hd..][..hd]);
        }
        let inner = dot(pr, &dp);
        let q = &qkv[r * 3 * d + h * hd..][..hd];
        for ((&pk, &dpk), &key) in pr.iter().zip(&dp).zip(&keys) {
            let ds = pk * (dpk - inner) * scale;
            add_scaled(&mut dq[h * hd..][..hd], &qkv[key * 3 * d + d + h * hd..][..hd], ds);
            add_kv(key, h, q, go, ds, pk);
        }
    }
}

/// Adds one key's contributions to its `[dk | dv]` row (`2D` wide).
#[allow(clippy::too_many_arguments)]
fn add_kv_row(kv: &mut [f32], d: usize, hd: usize, h: usize, q: &[f32], go: &[f32], ds: f32, pk: f32) {
    add_scaled(&mut kv[h * hd..][..hd], q, ds);
    add_scaled(&mut kv[d + h * hd..][..hd], go, pk);
}

/// Gradients of q, k and v (`[R, 3D]`, as `qkv`) from the attention output's gradient `dout` `[Q, D]`
/// of the query rows `queries` (ascending, as in the forward).
fn attention_bwd(dm: &Dims, qkv: &[f32], probs: &[f32], dout: &[f32], queries: &[usize]) -> Vec<f32> {
    // Below, a row's own keys are the rows before it in its block.
    assert!(dm.causal, "the attention backward is written for causal (text) blocks");
    let (d, hd, p, pw) = (dm.d, dm.hd(), dm.p, dm.heads * dm.keys());
    let mut dqkv = vec![0f32; dm.rows() * 3 * d];
    let (dpre, mut dcont) = dqkv.split_at_mut(p * 3 * d);
    // Continuations in parallel, one class per task: its own keys are written by it alone, the shared
    // prefix keys are summed in a per-task buffer and reduced after.
    let mut blocks = Vec::with_capacity(dm.classes());
    for (c, &len) in dm.len.iter().enumerate() {
        let (block, rest) = std::mem::take(&mut dcont).split_at_mut(len * 3 * d);
        let lo = queries.partition_point(|&r| r < dm.start[c]);
        let hi = queries.partition_point(|&r| r < dm.start[c] + len);
        blocks.push((dm.start[c], block, lo..hi));
        dcont = rest;
    }
    let mut prefix_kv = blocks
        .into_par_iter()
        .fold(
            || vec![0f32; p * 2 * d],
            |mut acc, (first, block, qi)| {
                for i in qi {
                    let r = queries[i];
                    let (before, rest) = block.split_at_mut((r - first) * 3 * d);
                    let (dq, kv) = rest[..3 * d].split_at_mut(d);
                    attention_row_bwd(dm, qkv, &probs[i * pw..][..pw], &dout[i * d..][..d], r, dq, &mut |key, h, q, go, ds, pk| {
                        let row = if key < p {
                            &mut acc[key * 2 * d..][..2 * d]
                        } else if key == r {
                            &mut *kv
                        } else {
                            &mut before[(key - first) * 3 * d + d..][..2 * d]
                        };
                        add_kv_row(row, d, hd, h, q, go, ds, pk);
                    });
                }
                acc
            },
        )
        .reduce(
            || vec![0f32; p * 2 * d],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    // Prefix queries attend only to prefix rows (a few rows: serial).
    for (i, &r) in queries.iter().enumerate().take_while(|(_, &r)| r < p) {
        let dq = &mut dpre[r * 3 * d..][..d];
        attention_row_bwd(dm, qkv, &probs[i * pw..][..pw], &dout[i * d..][..d], r, dq, &mut |key, h, q, go, ds, pk| {
            add_kv_row(&mut prefix_kv[key * 2 * d..][..2 * d], d, hd, h, q, go, ds, pk)
        });
    }
    for key in 0..p {
        dpre[key * 3 * d + d..][..2 * d].iter_mut().zip(&prefix_kv[key * 2 * d..][..2 * d]).for_each(|(a, b)| *a += b);
    }
    dqkv
}

/// `out[i] = x[rows[i]]` for rows of width `d`.
fn gather(x: &[f32], rows: &[usize], d: usize) -> Vec<f32> {
    rows.iter().flat_map(|&r| &x[r * d..][..d]).copied().collect()
}

/// One pre-LN block (`CLIPEncoderLayer`): every row feeds the keys and values, `queries` (ascending) are
/// the rows whose outputs are computed, `[Q, D]`; with `keep`, what its backward needs.
fn block_forward(dm: &Dims, l: &HeldLayer, act: HiddenAct, x: Vec<f32>, queries: &[usize], keep: bool) -> (Vec<f32>, Option<LayerTape>) {
    let (d, rows, q) = (dm.d, dm.rows(), queries.len());
    let mut h = vec![0f32; rows * d];
    let stats1 = layer_norm_fwd(&x, &l.ln1, d, &mut h);
    let mut qkv = vec![0f32; rows * 3 * d];
    for (i, w) in [&l.q, &l.k, &l.v].into_iter().enumerate() {
        linear(&mut qkv[i * d..], 3 * d, &h, w, rows, d, d, false);
    }
    let (att, probs) = attention_fwd(dm, &qkv, queries);
    let mut x_mid = if q == rows { x.clone() } else { gather(&x, queries, d) };
    linear(&mut x_mid, d, &att, &l.o, q, d, d, true);
    h.truncate(q * d);
    let stats2 = layer_norm_fwd(&x_mid, &l.ln2, d, &mut h);
    let mut pre_act = vec![0f32; q * dm.inter];
    linear(&mut pre_act, dm.inter, &h, &l.fc1, q, d, dm.inter, false);
    let mut u = vec![0f32; q * dm.inter];
    u.par_chunks_mut(16384).zip(pre_act.par_chunks(16384)).for_each(|(u, a)| u.iter_mut().zip(a).for_each(|(u, &a)| *u = gelu(act, a)));
    let mut x_out = x_mid.clone();
    linear(&mut x_out, d, &u, &l.fc2, q, dm.inter, d, true);
    let tape = keep.then(|| LayerTape { x_in: x, stats1, qkv, probs, x_mid, stats2, pre_act });
    (x_out, tape)
}

/// Runs the tower over `prefix` `[P, D]` and `rest` (C rows of `rest_len` token embeddings, of which
/// each class uses those up to its end-of-text token). Returns the pooled, projected features
/// `[C, proj]` and, when `keep_tape`, what the backward pass needs. The last layer runs its queries,
/// output projection and MLP on the end-of-text rows alone: nothing else reaches the pooled features.
fn forward(tower: &TextTower, prefix: &[f32], rest: &[f32], rest_len: usize, eot: &[usize], keep_tape: bool) -> Result<(Vec<f32>, Option<Tape>)> {
    let cfg = &tower.config;
    let d = cfg.hidden_size;
    let p = prefix.len() / d;
    let dm = Dims::text(p, eot, d, cfg.num_attention_heads, cfg.intermediate_size, tower.projection.weight().dim(0)?);
    let held = HeldTower::new(tower)?;
    let pos = held.pos.data();
    let rows = dm.rows();
    let mut x = vec![0f32; rows * d];
    for (i, row) in x[..p * d].chunks_mut(d).enumerate() {
        row.iter_mut().zip(&prefix[i * d..][..d]).zip(&pos[i * d..][..d]).for_each(|((x, e), q)| *x = e + q);
    }
    for (c, (&start, &len)) in dm.start.iter().zip(&dm.len).enumerate() {
        for j in 0..len {
            let (dst, src, at) = ((start + j) * d, (c * rest_len + j) * d, (p + j) * d);
            x[dst..][..d].iter_mut().zip(&rest[src..][..d]).zip(&pos[at..][..d]).for_each(|((x, e), q)| *x = e + q);
        }
    }
    let (final_in, tapes) = run_blocks(&dm, &held.layers, cfg.hidden_act, x, &dm.eot_rows(), keep_tape);
    let (pooled, final_stats) = pool(&final_in, &held.final_norm, &held.proj, d, dm.proj);
    let tape = keep_tape.then_some(Tape { dims: dm, rest_len, layers: tapes, final_in, final_stats });
    Ok((pooled, tape))
}

/// `out[rows[i]] += x[i]` into a zeroed `[n, d]`.
fn scatter(x: &[f32], rows: &[usize], n: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * d];
    for (i, &r) in rows.iter().enumerate() {
        out[r * d..][..d].iter_mut().zip(&x[i * d..][..d]).for_each(|(a, b)| *a += b);
    }
    out
}

/// Gradients of the prefix `[P, D]` and of `rest` `[C, rest_len, D]` from `dpooled` `[C, proj]`.
fn backward(tower: &TextTower, tape: &Tape, dpooled: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
    let held = HeldTower::new(tower)?;
    let dm = &tape.dims;
    let (d, rows, act, c) = (dm.d, dm.rows(), tower.config.hidden_act, dm.classes());
    let mut dnormed = vec![0f32; c * d];
    matmul(&mut dnormed, d, dpooled, dm.proj, held.proj.w.data(), false, c, dm.proj, d, false);
    let mut dx = vec![0f32; c * d];
    layer_norm_bwd(&dnormed, &tape.final_in, &tape.final_stats, &held.final_norm, d, &mut dx);
    let all: Vec<usize> = (0..rows).collect();
    let eot_rows = dm.eot_rows();
    if held.layers.is_empty() {
        dx = scatter(&dx, &eot_rows, rows, d);
    }
    let n_layers = held.layers.len();
    for (li, (l, t)) in held.layers.iter().zip(&tape.layers).enumerate().rev() {
        let queries: &[usize] = if li + 1 == n_layers { &eot_rows } else { &all };
        let q = queries.len();
        // MLP: x_out = x_mid + fc2(gelu(fc1(ln2(x_mid)))), on the query rows.
        let mut da = vec![0f32; q * dm.inter];
        matmul(&mut da, dm.inter, &dx, d, l.fc2.w.data(), false, q, d, dm.inter, false);
        da.par_chunks_mut(16384).zip(t.pre_act.par_chunks(16384)).for_each(|(g, a)| g.iter_mut().zip(a).for_each(|(g, &a)| *g *= gelu_grad(act, a)));
        let mut dh = vec![0f32; q * d];
        matmul(&mut dh, d, &da, dm.inter, l.fc1.w.data(), false, q, dm.inter, d, false);
        layer_norm_bwd(&dh, &t.x_mid, &t.stats2, &l.ln2, d, &mut dx);
        // Attention: x_mid = x_in + out_proj(attn(ln1(x_in))); its keys and values come from every row.
        let mut datt = vec![0f32; q * d];
        matmul(&mut datt, d, &dx, d, l.o.w.data(), false, q, d, d, false);
        let dqkv = attention_bwd(dm, &t.qkv, &t.probs, &datt, queries);
        let mut dh = vec![0f32; rows * d];
        for (i, w) in [&l.q, &l.k, &l.v].into_iter().enumerate() {
            matmul(&mut dh, d, &dqkv[i * d..], 3 * d, w.w.data(), false, rows, d, d, i > 0);
        }
        if q != rows {
            dx = scatter(&dx, queries, rows, d);
        }
        layer_norm_bwd(&dh, &t.x_in, &t.stats1, &l.ln1, d, &mut dx);
    }
    let mut drest = vec![0f32; c * tape.rest_len * d];
    for (ci, (&start, &len)) in dm.start.iter().zip(&dm.len).enumerate() {
        drest[ci * tape.rest_len * d..][..len * d].copy_from_slice(&dx[start * d..][..len * d]);
    }
    dx.truncate(dm.p * d);
    Ok((dx, drest))
}

fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("cpu_tower: inputs must be contiguous f32"),
    }
}

/// The tower as one autograd node over (prefix, rest): forward and backward are this module's kernels.
struct PrefixedTower {
    tower: TextTower,
    eot: Vec<usize>,
    tape: Mutex<Option<Tape>>,
}

impl CustomOp2 for PrefixedTower {
    fn name(&self) -> &'static str {
        "promptscope-text-tower"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, rest_len, _) = l2.shape().dims3()?;
        let (pooled, tape) = forward(&self.tower, cpu_f32(s1, l1)?, cpu_f32(s2, l2)?, rest_len, &self.eot, true)?;
        *self.tape.lock().expect("tape lock") = tape;
        let proj = pooled.len() / self.eot.len();
        Ok((CpuStorage::F32(pooled), Shape::from((self.eot.len(), proj))))
    }

    fn bwd(&self, prefix: &Tensor, rest: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let guard = self.tape.lock().expect("tape lock");
        let Some(tape) = guard.as_ref() else { candle_core::bail!("cpu_tower: backward without a forward") };
        let g: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        let (dprefix, drest) = backward(&self.tower, tape, &g)?;
        Ok((Some(Tensor::from_vec(dprefix, prefix.shape(), prefix.device())?), Some(Tensor::from_vec(drest, rest.shape(), rest.device())?)))
    }
}

/// Pooled features `[C, proj]` of a `[1, P, D]` prefix and `[C, S, D]` continuations (see
/// `TextTower::forward_prefixed`, whose checks the caller has made), through this module's kernels:
/// differentiable with respect to both inputs.
pub fn forward_prefixed(tower: &TextTower, prefix: &Tensor, rest: &Tensor, eot: &[usize]) -> Result<Tensor> {
    let (prefix, rest) = (prefix.contiguous()?, rest.contiguous()?);
    if prefix.track_op() || rest.track_op() {
        return prefix.apply_op2(&rest, PrefixedTower { tower: tower.clone(), eot: eot.to_vec(), tape: Mutex::new(None) });
    }
    let a: Vec<f32> = prefix.flatten_all()?.to_vec1()?;
    let b: Vec<f32> = rest.flatten_all()?.to_vec1()?;
    let (pooled, _) = forward(tower, &a, &b, rest.dim(1)?, eot, false)?;
    Tensor::from_vec(pooled, (eot.len(), tower.projection.weight().dim(0)?), prefix.device())
}
