//! The per-row kernels: matrix products through `gemm` (strided, no copies), bias, layer norm forward
//! and backward, GELU and its derivative, lane-wise reductions, row gathers.

use gemm::Parallelism;
use rayon::prelude::*;

use super::packed::{matmul_packed_raw, packed_parts, PackedB, RowsDone};
use super::profile;
use super::weights::{HeldLinear, HeldNorm};
use crate::clip::config::HiddenAct;
use crate::clip::kernels::row_chunk;

pub(super) fn threads() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// Floating-point operations of every [`matmul`] since start: what the benchmarks divide by time and
/// by the machine's GEMM peak (one relaxed add per product, nothing measurable).
pub(super) static GEMM_FLOPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `out[m×n] (+)= a[m×k] · B`, with B given row-major as `[k×n]`, or as `[n×k]` when `b_t` (then B is its
/// transpose, as for `x·Wᵀ` with torch's `[out, in]` weights). `a` and `out` have row strides `a_rs` and
/// `out_rs` (column blocks of wider buffers).
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul(
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
    let parts = band_parts(m, n);
    matmul_in_parts(out, out_rs, a, a_rs, b, b_t, (m, k, n), accumulate, parts)
}

/// [`matmul`] cut into `parts` (row bands, column bands) single-threaded tasks, not those
/// [`band_parts`] picks: what `examples/gemm_shapes` compares.
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_in_parts(
    out: &mut [f32],
    out_rs: usize,
    a: &[f32],
    a_rs: usize,
    b: &[f32],
    b_t: bool,
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
    parts: (usize, usize),
) {
    profile::timed(profile::Part::MatrixProducts, || {
        if m == 0 || n == 0 {
            return;
        }
        assert!(
            out.len() >= (m - 1) * out_rs + n,
            "matmul: output buffer too small"
        );
        // SAFETY: the assert keeps every write inside `out`.
        unsafe {
            matmul_raw(
                out.as_mut_ptr(),
                out_rs,
                a,
                a_rs,
                b,
                b_t,
                (m, k, n),
                accumulate,
                parts,
            )
        }
    })
}

/// `a[m×k] · B` (as [`matmul`]) into a new `[m×n]` buffer, which the product writes whole: no zero fill
/// first (zeroing fresh buffers was 2 % of a CoOp step, on the calling thread alone).
pub(super) fn matmul_new(
    a: &[f32],
    a_rs: usize,
    b: &[f32],
    b_t: bool,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    profile::timed(profile::Part::MatrixProducts, || {
        let mut out = Vec::with_capacity(m * n);
        // SAFETY: the buffer holds m·n values; gemm without `read_dst` writes every element of its
        // destination and reads none (its alpha is zero then), so all m·n are set before `set_len`.
        unsafe {
            matmul_raw(
                out.spare_capacity_mut().as_mut_ptr().cast(),
                n,
                a,
                a_rs,
                b,
                b_t,
                (m, k, n),
                false,
                band_parts(m, n),
            );
            out.set_len(m * n);
        }
        out
    })
}

/// How an `m`-row, `n`-column product is cut into single-threaded tasks: (row parts, column parts).
fn band_parts(m: usize, n: usize) -> (usize, usize) {
    let workers = rayon::current_num_threads();
    // How the product is cut into single-threaded tasks, (row parts, column parts):
    // - few rows (one image is 50): gemm would run on one thread and re-pack the whole weight for
    //   little work; panels of ~96 output columns instead, each packing only its slice of the weight
    //   (batch 1: 6.9 → 16.4 img/s);
    // - many rows: a band of rows a thread, each packing the weight itself. gemm's own threading
    //   shares one packed weight between threads that wait for each other at every block of k: on
    //   CoOp's narrow, deep products (617 × 2048 → 512) it ran at 131-136 GFLOP/s where row bands run
    //   at 155-160 on the same two cores (the examples' gemm_shapes, criterion's `coop_gemm`).
    if workers <= 1 {
        (1, 1)
    } else if m < 128 {
        (1, n.div_ceil(96).max(1))
    } else if m >= 128 * workers {
        (workers, 1)
    } else {
        (1, 1)
    }
}

/// [`matmul_in_parts`] into a raw destination.
///
/// # Safety
/// `out` must be valid for writes (and reads, when `accumulate`) of rows `0..m`, each `out_rs` apart
/// and `n` wide, that no one else touches during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_raw(
    out: *mut f32,
    out_rs: usize,
    a: &[f32],
    a_rs: usize,
    b: &[f32],
    b_t: bool,
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
    (row_parts, col_parts): (usize, usize),
) {
    GEMM_FLOPS.fetch_add(2 * (m * n * k) as u64, std::sync::atomic::Ordering::Relaxed);
    assert!(
        a.len() >= (m - 1) * a_rs + k && b.len() >= k * n,
        "matmul: input buffer too small"
    );
    let (b_rs, b_cs) = if b_t {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    let par = if row_parts * col_parts > 1 {
        Parallelism::None
    } else {
        threads()
    };
    let (height, width) = (m.div_ceil(row_parts), n.div_ceil(col_parts));
    let (po, pa, pb) = (SharedOut(out), a.as_ptr() as usize, b.as_ptr() as usize);
    (0..row_parts * col_parts)
        .into_par_iter()
        .for_each(move |part| {
            let po = po;
            let (m0, n0) = ((part / col_parts) * height, (part % col_parts) * width);
            let (rows, cols) = (
                height.min(m.saturating_sub(m0)),
                width.min(n.saturating_sub(n0)),
            );
            if rows == 0 || cols == 0 {
                return;
            }
            let b0 = if b_t { n0 * k } else { n0 };
            // SAFETY: the assert above keeps every index the strides reach inside the three slices;
            // the parts write disjoint blocks (rows m0.., columns n0..) of `out`.
            unsafe {
                gemm::gemm(
                    rows,
                    cols,
                    k,
                    po.0.add(m0 * out_rs + n0),
                    1,
                    out_rs as isize,
                    accumulate,
                    (pa as *const f32).add(m0 * a_rs),
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
                    par,
                )
            }
        });
}

/// `out[m×n] += aᵀ · b` for `a` `[k×m]` (row stride `a_rs`) and `b` `[k×n]` (row stride `b_rs`): a
/// weight's gradient, summed over `k` rows, from its output's gradient and its input.
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_tn(
    out: &mut [f32],
    a: &[f32],
    a_rs: usize,
    b: &[f32],
    b_rs: usize,
    m: usize,
    k: usize,
    n: usize,
) {
    profile::timed(profile::Part::MatrixProducts, || {
        if m == 0 || n == 0 || k == 0 {
            return;
        }
        GEMM_FLOPS.fetch_add(2 * (m * n * k) as u64, std::sync::atomic::Ordering::Relaxed);
        assert!(
            out.len() >= m * n && a.len() >= (k - 1) * a_rs + m && b.len() >= (k - 1) * b_rs + n,
            "matmul_tn: buffer too small"
        );
        // A weight gradient is a small output (a layer's [out, in]) summed over many rows: gemm splits its
        // threads over the output, where there is little to split. The rows are split instead, each part
        // summed on its own thread into its own buffer (a 128×128 gradient over 3,200 rows: 1 → 2 threads).
        let workers = rayon::current_num_threads();
        let parts = if workers > 1 && k >= 512 && m * n <= 1 << 20 {
            workers.min(k / 256)
        } else {
            1
        };
        if parts <= 1 {
            // SAFETY: the assert keeps every index the strides reach inside the three slices.
            unsafe { gemm_tn(out, a, a_rs, b, b_rs, m, k, n, threads()) };
            return;
        }
        let chunk = k.div_ceil(parts);
        let partial: Vec<Vec<f32>> = (0..parts)
            .into_par_iter()
            .map(|part| {
                let (k0, k1) = (part * chunk, ((part + 1) * chunk).min(k));
                let mut acc = vec![0f32; m * n];
                if k1 > k0 {
                    // SAFETY: rows k0..k1 of `a` and `b`, inside them by the assert above.
                    unsafe {
                        gemm_tn(
                            &mut acc,
                            &a[k0 * a_rs..],
                            a_rs,
                            &b[k0 * b_rs..],
                            b_rs,
                            m,
                            k1 - k0,
                            n,
                            Parallelism::None,
                        )
                    };
                }
                acc
            })
            .collect();
        for acc in partial {
            out[..m * n].iter_mut().zip(&acc).for_each(|(o, v)| *o += v);
        }
    })
}

/// `out[m×n] += aᵀ·b` through gemm (see [`matmul_tn`]).
///
/// # Safety
/// `a` must hold `(k − 1)·a_rs + m` values, `b` `(k − 1)·b_rs + n`, `out` `m·n`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_tn(
    out: &mut [f32],
    a: &[f32],
    a_rs: usize,
    b: &[f32],
    b_rs: usize,
    m: usize,
    k: usize,
    n: usize,
    par: Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        out.as_mut_ptr(),
        1,
        n as isize,
        true,
        a.as_ptr(),
        a_rs as isize,
        1,
        b.as_ptr(),
        1,
        b_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        par,
    )
}

/// `x · Wᵀ` for `x` `[m, k]` into a new `[m, n]` buffer, then `then` on each row: over the weight
/// packed once where it is frozen.
fn linear_product(
    x: &[f32],
    l: &HeldLinear,
    m: usize,
    k: usize,
    n: usize,
    then: RowsDone,
) -> Vec<f32> {
    match l.packed_forward() {
        Some(p) => packed_new(x, k, p, m, Some(then)),
        None => rows_done(matmul_new(x, k, l.w.data(), true, m, k, n), n, then),
    }
}

/// `then` on each row of a finished product, in parallel (where the product could not run it itself).
fn rows_done(mut out: Vec<f32>, n: usize, then: RowsDone) -> Vec<f32> {
    if n > 0 {
        profile::timed(profile::Part::Elementwise, || {
            out.par_chunks_mut(n)
                .enumerate()
                .for_each(|(r, row)| then(r, row))
        });
    }
    out
}

/// `dy · W` for `dy` `[m, out]` into a new `[m, inp]` buffer: the gradient to a linear layer's input.
pub(super) fn linear_input_grad(
    dy: &[f32],
    l: &HeldLinear,
    m: usize,
    out: usize,
    inp: usize,
) -> Vec<f32> {
    linear_input_grad_then(dy, l, m, out, inp, &|_, _| {})
}

/// [`linear_input_grad`], then `then` on each row while it is in cache.
pub(super) fn linear_input_grad_then(
    dy: &[f32],
    l: &HeldLinear,
    m: usize,
    out: usize,
    inp: usize,
    then: RowsDone,
) -> Vec<f32> {
    match l.packed_backward() {
        Some(p) => packed_new(dy, out, p, m, Some(then)),
        None => rows_done(
            matmul_new(dy, out, l.w.data(), false, m, out, inp),
            inp,
            then,
        ),
    }
}

/// `a[m×k] · B` over a packed B into a new `[m×n]` buffer (written whole, as [`matmul_new`]), then
/// `then` on each row.
pub(super) fn packed_new(
    a: &[f32],
    a_rs: usize,
    b: &PackedB,
    m: usize,
    then: Option<RowsDone>,
) -> Vec<f32> {
    let (k, n) = (b.k(), b.n());
    if m == 0 || n == 0 || k == 0 {
        let out = vec![0f32; m * n];
        return match then {
            Some(f) => rows_done(out, n, f),
            None => out,
        };
    }
    // Element-wise work run on the product's rows counts as the product's (it overlaps it).
    profile::timed(profile::Part::MatrixProducts, || {
        GEMM_FLOPS.fetch_add(2 * (m * n * k) as u64, std::sync::atomic::Ordering::Relaxed);
        let mut out = Vec::with_capacity(m * n);
        // SAFETY: the buffer holds m·n values; the first block of k overwrites every element of every
        // panel's columns (k > 0), so all m·n are set before `set_len` and before `then` reads a row.
        unsafe {
            matmul_packed_raw(
                out.spare_capacity_mut().as_mut_ptr().cast(),
                n,
                a,
                a_rs,
                b,
                m,
                false,
                packed_parts(m, b.panels()),
                then,
            );
            out.set_len(m * n);
        }
        out
    })
}

/// `x · Wᵀ + b` for `x` `[m, k]` into a new `[m, n]` buffer.
pub(super) fn linear_new(x: &[f32], l: &HeldLinear, m: usize, k: usize, n: usize) -> Vec<f32> {
    linear_then(x, l, m, k, n, |_, _| {})
}

/// `x · Wᵀ + b`, then `then(row, values)` on each row while it is still in cache.
pub(super) fn linear_then(
    x: &[f32],
    l: &HeldLinear,
    m: usize,
    k: usize,
    n: usize,
    then: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let bias = l.b.as_ref().map(|b| b.data());
    linear_product(x, l, m, k, n, &|r, row: &mut [f32]| {
        if let Some(b) = bias {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
        then(r, row)
    })
}

/// `residual + x · Wᵀ + b` for `x` `[m, k]` and `residual` `[m, n]`: the residual and bias go onto each
/// row as the product finishes it. gemm accumulating into the residual (read back at every block of k)
/// ran CoOp's deep fc2 product (2048 → 512) at 126 GFLOP/s where writing it fresh runs at 149.
pub(super) fn linear_residual(
    residual: &[f32],
    x: &[f32],
    l: &HeldLinear,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    linear_residual_then(|r| &residual[r * n..][..n], x, l, m, k, n, |_, _| {})
}

/// [`linear_residual`] with output row `r`'s residual at `residual(r)`, then `then` on each row.
pub(super) fn linear_residual_then<'a>(
    residual: impl Fn(usize) -> &'a [f32] + Sync,
    x: &[f32],
    l: &HeldLinear,
    m: usize,
    k: usize,
    n: usize,
    then: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let bias = l.b.as_ref().map(|b| b.data());
    linear_product(x, l, m, k, n, &|r, o: &mut [f32]| {
        let res = residual(r);
        match bias {
            Some(b) => o
                .iter_mut()
                .zip(res)
                .zip(b)
                .for_each(|((o, r), b)| *o += r + b),
            None => o.iter_mut().zip(res).for_each(|(o, r)| *o += r),
        }
        then(r, o)
    })
}

/// One row's layer norm into `out`: its (mean, 1/std).
#[inline]
pub(super) fn layer_norm_row(x: &[f32], n: &HeldNorm, out: &mut [f32]) -> (f32, f32) {
    let (w, b, d) = (n.w.data(), n.b.data(), x.len());
    let mean = lanes_sum(x, x, |v, _| v) / d as f32;
    let var = lanes_sum(x, x, |v, _| (v - mean) * (v - mean)) / d as f32;
    let rstd = (1.0 / (f64::from(var) + f64::from(n.eps)).sqrt()) as f32;
    for i in 0..d {
        out[i] = (x[i] - mean) * rstd * w[i] + b[i];
    }
    (mean, rstd)
}

/// One row's `dx += ∂LN/∂x · dy`, from the forward's `(mean, 1/std)`.
#[inline]
pub(super) fn layer_norm_bwd_row(
    dy: &[f32],
    x: &[f32],
    (mean, rstd): (f32, f32),
    n: &HeldNorm,
    dx: &mut [f32],
) {
    let d = x.len();
    let gw: Vec<f32> = dy.iter().zip(n.w.data()).map(|(g, w)| g * w).collect();
    let sum_g = lanes_sum(&gw, &gw, |g, _| g);
    let sum_gx = lanes_sum(&gw, x, |g, x| g * (x - mean)) * rstd;
    let (mean_g, mean_gx) = (sum_g / d as f32, sum_gx / d as f32);
    for i in 0..d {
        let xhat = (x[i] - mean) * rstd;
        dx[i] += rstd * (gw[i] - mean_g - xhat * mean_gx);
    }
}

pub(super) fn layer_norm_fwd(
    x: &[f32],
    n: &HeldNorm,
    d: usize,
    out: &mut [f32],
) -> Vec<(f32, f32)> {
    profile::timed(profile::Part::Elementwise, || {
        let mut stats = vec![(0f32, 0f32); x.len() / d];
        let rows = row_chunk(d);
        out.par_chunks_mut(d * rows)
            .zip(x.par_chunks(d * rows))
            .zip(stats.par_chunks_mut(rows))
            .for_each(|((out, x), stats)| {
                for ((o, x), st) in out.chunks_mut(d).zip(x.chunks(d)).zip(stats.iter_mut()) {
                    *st = layer_norm_row(x, n, o);
                }
            });
        stats
    })
}

/// `dx += ∂LN/∂x · dy`.
pub(super) fn layer_norm_bwd(
    dy: &[f32],
    x: &[f32],
    stats: &[(f32, f32)],
    n: &HeldNorm,
    d: usize,
    dx: &mut [f32],
) {
    profile::timed(profile::Part::Elementwise, || {
        let rows = row_chunk(d);
        dx.par_chunks_mut(d * rows)
            .zip(dy.par_chunks(d * rows))
            .zip(x.par_chunks(d * rows))
            .zip(stats.par_chunks(rows))
            .for_each(|(((dx, dy), x), stats)| {
                for (((dx, dy), x), &st) in dx
                    .chunks_mut(d)
                    .zip(dy.chunks(d))
                    .zip(x.chunks(d))
                    .zip(stats)
                {
                    layer_norm_bwd_row(dy, x, st, n, dx);
                }
            });
    })
}

/// `e^x` to about 2 ulp (Cephes' `expf`: 2ⁿ by the exponent bits times a degree-6 polynomial on the
/// remainder), without branches, so a loop over a slice vectorises; libm's `expf` is a call per element
/// (a twentieth of a CoOp step went to it through the activations).
#[inline(always)]
fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    let x = x.clamp(-87.3, 88.3);
    let n = (x * LOG2E + 0.5).floor();
    let r = (x - n * 0.693_359_4) - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let p = p * (r * r) + r + 1.0;
    // SAFETY: `n` is a whole number in [-126, 128] (x is clamped above), so it converts exactly; `as i32`
    // would saturate instead, which does not vectorise (eight scalar conversions per vector: the
    // activation ran at half speed).
    let n = unsafe { n.to_int_unchecked::<i32>() };
    p * f32::from_bits(((n + 127) << 23) as u32)
}

#[inline(always)]
fn quick_gelu(a: f32) -> f32 {
    a / (1.0 + exp_fast(-1.702 * a))
}

#[inline(always)]
fn quick_gelu_grad(a: f32) -> f32 {
    let s = 1.0 / (1.0 + exp_fast(-1.702 * a));
    s + 1.702 * a * s * (1.0 - s)
}

/// `x ← act(x)` over a slice, in parallel, vectorised where the CPU has AVX2.
pub(super) fn gelu_slice(act: HiddenAct, xs: &mut [f32]) {
    profile::timed(profile::Part::Elementwise, || {
        xs.par_chunks_mut(16384)
            .for_each(|xs| gelu_in_place(act, xs));
    })
}

/// `act(x)` into a new buffer (the backward keeps `x`).
pub(super) fn gelu_new(act: HiddenAct, xs: &[f32]) -> Vec<f32> {
    profile::timed(profile::Part::Elementwise, || {
        let mut out = Vec::with_capacity(xs.len());
        out.spare_capacity_mut()
            .par_chunks_mut(16384)
            .zip(xs.par_chunks(16384))
            .for_each(|(out, xs)| gelu_into(act, out, xs));
        // SAFETY: every chunk of the spare capacity was written above, and it holds xs.len() values.
        unsafe { out.set_len(xs.len()) };
        out
    })
}

/// `x ← act(x)` on one thread.
#[inline]
pub(super) fn gelu_in_place(act: HiddenAct, xs: &mut [f32]) {
    match act {
        HiddenAct::QuickGelu => simd_map(xs, &[], |a, _| quick_gelu(a)),
        _ => xs.iter_mut().for_each(|v| *v = gelu(act, *v)),
    }
}

/// `out ← act(xs)` into uninitialised memory, on one thread.
#[inline]
pub(super) fn gelu_into(act: HiddenAct, out: &mut [std::mem::MaybeUninit<f32>], xs: &[f32]) {
    match act {
        HiddenAct::QuickGelu => simd_map_into(out, xs, quick_gelu),
        _ => out.iter_mut().zip(xs).for_each(|(o, &x)| {
            o.write(gelu(act, x));
        }),
    }
}

/// `g ← g · act'(a)` on one thread.
#[inline]
pub(super) fn gelu_grad_in_place(act: HiddenAct, g: &mut [f32], a: &[f32]) {
    match act {
        HiddenAct::QuickGelu => simd_map(g, a, |g, a| g * quick_gelu_grad(a)),
        _ => g
            .iter_mut()
            .zip(a)
            .for_each(|(g, &a)| *g *= gelu_grad(act, a)),
    }
}

/// Runs `f` compiled a second time for AVX2+FMA where the CPU has them: the crate is built for baseline
/// x86-64, where loops vectorise only 4 wide and without FMA. `f` and what it inlines get the wider code,
/// so it should call `#[inline]` helpers.
#[inline(always)]
pub(super) fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has the features the function was compiled for.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// `x[i] ← f(x[i], y[i])` (`y` empty: `f(x[i], 0)`), on AVX2 where the CPU has it.
#[inline(always)]
fn simd_map(x: &mut [f32], y: &[f32], f: impl Fn(f32, f32) -> f32 + Copy) {
    with_avx2(|| {
        if y.is_empty() {
            x.iter_mut().for_each(|v| *v = f(*v, 0.0));
        } else {
            x.iter_mut().zip(y).for_each(|(v, &w)| *v = f(*v, w));
        }
    })
}

/// `out[i] ← f(x[i])` into uninitialised memory, on AVX2 where the CPU has it.
#[inline(always)]
fn simd_map_into(out: &mut [std::mem::MaybeUninit<f32>], x: &[f32], f: impl Fn(f32) -> f32 + Copy) {
    with_avx2(|| {
        out.iter_mut().zip(x).for_each(|(o, &v)| {
            o.write(f(v));
        })
    })
}

pub(super) fn gelu(act: HiddenAct, a: f32) -> f32 {
    match act {
        HiddenAct::QuickGelu => a / (1.0 + (-1.702 * a).exp()),
        _ => 0.5 * a * (1.0 + candle_core::cpu::erf::erf_f32(a * std::f32::consts::FRAC_1_SQRT_2)),
    }
}

pub(super) fn gelu_grad(act: HiddenAct, a: f32) -> f32 {
    match act {
        HiddenAct::QuickGelu => {
            let s = 1.0 / (1.0 + (-1.702 * a).exp());
            s + 1.702 * a * s * (1.0 - s)
        }
        _ => {
            let cdf =
                0.5 * (1.0 + candle_core::cpu::erf::erf_f32(a * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * a * a).exp() / (2.0 * std::f32::consts::PI).sqrt();
            cdf + a * pdf
        }
    }
}

/// Sum of `f(a[i], b[i])` in 16 independent lanes: a plain running sum is one long chain of dependent
/// additions the compiler may not reorder, four times slower on these 64- to 3072-wide rows.
#[inline]
pub(super) fn lanes_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| f(x, y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += f(x[i], y[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    lanes_sum(a, b, |x, y| x * y)
}

/// A pointer that tasks writing disjoint parts of one buffer may share.
pub(super) struct SharedOut<T = f32>(pub(super) *mut T);

impl<T> Clone for SharedOut<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SharedOut<T> {}

// SAFETY: only used by tasks that write disjoint elements (attention, products, their row epilogues).
unsafe impl<T: Send> Send for SharedOut<T> {}

unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// The `len` values from `offset` on.
    ///
    /// # Safety
    /// They must lie inside the buffer, and no one else may touch them while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn row(&self, offset: usize, len: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(offset), len)
    }
}

#[inline]
pub(super) fn add_scaled(acc: &mut [f32], x: &[f32], scale: f32) {
    acc.iter_mut().zip(x).for_each(|(a, b)| *a += scale * b);
}

/// `out[i] = x[rows[i]]` for rows of width `d`.
pub(super) fn gather(x: &[f32], rows: &[usize], d: usize) -> Vec<f32> {
    profile::timed(profile::Part::Copies, || {
        rows.iter()
            .flat_map(|&r| &x[r * d..][..d])
            .copied()
            .collect()
    })
}

/// `out[rows[i]] += x[i]` into a zeroed `[n, d]`.
pub(super) fn scatter(x: &[f32], rows: &[usize], n: usize, d: usize) -> Vec<f32> {
    profile::timed(profile::Part::Copies, || {
        let mut out = vec![0f32; n * d];
        for (i, &r) in rows.iter().enumerate() {
            out[r * d..][..d]
                .iter_mut()
                .zip(&x[i * d..][..d])
                .for_each(|(a, b)| *a += b);
        }
        out
    })
}
