//! Attention over a shared prefix and per-sequence blocks (causal text) or whole blocks (images), and
//! the causal backward.

use gemm::Parallelism;
use rayon::prelude::*;

use super::kernels::{dot, SharedOut};
use super::{row_attention, Dims};

/// The rows row `r` attends to, as two ranges: prefix rows, then its own class's rows.
pub(super) fn key_ranges(dm: &Dims, r: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    if r < dm.p {
        (0..if dm.causal { r + 1 } else { dm.p }, 0..0)
    } else {
        let c = dm.class_of[r - dm.p] as usize;
        let own = dm.start[c];
        (
            0..dm.p,
            own..if dm.causal { r + 1 } else { own + dm.len[c] },
        )
    }
}

/// Attention of the query rows `queries` (ascending) over their keys (see [`key_ranges`]); returns the
/// per-head output `[Q, D]` and the probabilities `[Q, heads, keys]`.
pub(super) fn attention_fwd(dm: &Dims, qkv: &[f32], queries: &[usize]) -> (Vec<f32>, Vec<f32>) {
    if !dm.causal && dm.p == 0 && queries.len() == dm.rows() {
        return attention_fwd_blocks(dm, qkv);
    }
    row_attention::forward(dm, qkv, queries)
}

/// [`attention_fwd`] for whole blocks (images: every token sees its block's tokens), all rows as
/// queries: per block and head, `Q·Kᵀ` and `P·V` as small matrix products (an image's 50 tokens × 64
/// dimensions per head is enough for the GEMM micro-kernels, where per-key loops were 11 % of the tower).
pub(super) fn attention_fwd_blocks(dm: &Dims, qkv: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (d, hd, kw, heads) = (dm.d, dm.hd(), dm.keys(), dm.heads);
    let scale = (hd as f32).powf(-0.5);
    let rows = dm.rows();
    let mut out = vec![0f32; rows * d];
    let mut probs = vec![0f32; rows * heads * kw];
    let (po, pp) = (SharedOut(out.as_mut_ptr()), SharedOut(probs.as_mut_ptr()));
    (0..dm.classes() * heads)
        .into_par_iter()
        .for_each(move |task| {
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
                gemm::gemm(
                    len,
                    len,
                    hd,
                    p0,
                    1,
                    prs,
                    false,
                    q,
                    1,
                    qrs,
                    k,
                    qrs,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
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
                gemm::gemm(
                    len,
                    hd,
                    len,
                    o0,
                    1,
                    d as isize,
                    false,
                    p0,
                    1,
                    prs,
                    v,
                    1,
                    qrs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        });
    (out, probs)
}

/// Gradients of q, k and v (`[R, 3D]`, as `qkv`) from the attention output's gradient `dout` `[Q, D]`
/// of the query rows `queries` (ascending, as in the forward).
pub(super) fn attention_bwd(
    dm: &Dims,
    qkv: &[f32],
    probs: &[f32],
    dout: &[f32],
    queries: &[usize],
) -> Vec<f32> {
    if !dm.causal && dm.p == 0 && queries.len() == dm.rows() {
        return attention_bwd_blocks(dm, qkv, probs, dout);
    }
    row_attention::backward(dm, qkv, probs, dout, queries)
}

/// A matrix operand in memory: element (i, j) at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(super) struct Strided {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

impl Strided {
    /// Row-major rows `rs` apart.
    pub fn rows(ptr: *const f32, rs: usize) -> Self {
        Self { ptr, rs, cs: 1 }
    }
    /// The transpose of row-major rows `cs` apart.
    pub fn cols(ptr: *const f32, cs: usize) -> Self {
        Self { ptr, rs: 1, cs }
    }
}

/// `dst[m×n] (+)= scale · lhs[m×k] · rhs[k×n]` on one thread, `dst` row-major with rows `dst_rs` apart.
///
/// # Safety
/// Every element the sizes and strides reach must lie inside the operands' buffers, and no other
/// thread may touch the elements of `dst` it writes.
pub(super) unsafe fn strided_gemm(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Strided,
    rhs: Strided,
    scale: f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs.ptr,
        lhs.cs as isize,
        lhs.rs as isize,
        rhs.ptr,
        rhs.cs as isize,
        rhs.rs as isize,
        1.0,
        scale,
        false,
        false,
        false,
        Parallelism::None,
    )
}

/// [`attention_bwd`] for whole blocks with every row a query, as matrix products per block and head (the backward
/// of [`attention_fwd_blocks`]): `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))·scale`, `dQ = dS·K`,
/// `dK = dSᵀ·Q`, `dV = Pᵀ·dO`. Per query and key loops were a seventh of a pretraining step.
fn attention_bwd_blocks(dm: &Dims, qkv: &[f32], probs: &[f32], dout: &[f32]) -> Vec<f32> {
    let (d, hd, kw, heads) = (dm.d, dm.hd(), dm.keys(), dm.heads);
    let scale = (hd as f32).powf(-0.5);
    let mut dqkv = vec![0f32; dm.rows() * 3 * d];
    let out = SharedOut(dqkv.as_mut_ptr());
    let (prs, qrs) = (heads * kw, 3 * d);
    (0..dm.classes() * heads)
        .into_par_iter()
        .for_each_init(Vec::new, move |ds, task| {
            let out = out;
            let (c, h) = (task / heads, task % heads);
            let (start, len) = (dm.start[c], dm.len[c]);
            let col = start * 3 * d + h * hd;
            let p0 = probs[(start * heads + h) * kw..].as_ptr();
            let go = dout[start * d + h * hd..].as_ptr();
            ds.clear();
            ds.resize(len * len, 0f32);
            // SAFETY: block c's rows of head h only: reads stay inside `qkv`, `probs` and `dout` by the
            // strides of the forward; the writes (columns of head h in rows start..start+len of each of
            // dq, dk, dv) belong to this task alone.
            unsafe {
                strided_gemm(
                    (len, len, hd),
                    ds.as_mut_ptr(),
                    len,
                    false,
                    Strided {
                        ptr: go,
                        rs: d,
                        cs: 1,
                    },
                    Strided {
                        ptr: qkv[col + 2 * d..].as_ptr(),
                        rs: 1,
                        cs: qrs,
                    },
                    1.0,
                );
                for i in 0..len {
                    let p = std::slice::from_raw_parts(p0.add(i * prs), len);
                    let row = &mut ds[i * len..][..len];
                    let inner = dot(p, row);
                    row.iter_mut()
                        .zip(p)
                        .for_each(|(g, &pk)| *g = pk * (*g - inner) * scale);
                }
                let dst = out.0.add(col);
                strided_gemm(
                    (len, hd, len),
                    dst,
                    qrs,
                    false,
                    Strided {
                        ptr: ds.as_ptr(),
                        rs: len,
                        cs: 1,
                    },
                    Strided {
                        ptr: qkv[col + d..].as_ptr(),
                        rs: qrs,
                        cs: 1,
                    },
                    1.0,
                );
                strided_gemm(
                    (len, hd, len),
                    dst.add(d),
                    qrs,
                    false,
                    Strided {
                        ptr: ds.as_ptr(),
                        rs: 1,
                        cs: len,
                    },
                    Strided {
                        ptr: qkv[col..].as_ptr(),
                        rs: qrs,
                        cs: 1,
                    },
                    1.0,
                );
                strided_gemm(
                    (len, hd, len),
                    dst.add(2 * d),
                    qrs,
                    false,
                    Strided {
                        ptr: p0,
                        rs: 1,
                        cs: prs,
                    },
                    Strided {
                        ptr: go,
                        rs: d,
                        cs: 1,
                    },
                    1.0,
                );
            }
        });
    dqkv
}
