//! Attention over a shared prefix and per-sequence blocks (causal text) or whole blocks (images), and
//! the causal backward.

use gemm::Parallelism;
use rayon::prelude::*;

use super::kernels::{add_scaled, dot, SharedOut};
use super::Dims;

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

/// Causal attention of the query rows `queries` (ascending) over their keys (see [`key_ranges`]);
/// returns the per-head output `[Q, D]` and the probabilities `[Q, heads, keys]`.
pub(super) fn attention_fwd(dm: &Dims, qkv: &[f32], queries: &[usize]) -> (Vec<f32>, Vec<f32>) {
    if !dm.causal && dm.p == 0 && queries.len() == dm.rows() {
        return attention_fwd_blocks(dm, qkv);
    }
    let (d, hd, kw) = (dm.d, dm.hd(), dm.keys());
    let scale = (hd as f32).powf(-0.5);
    let mut out = vec![0f32; queries.len() * d];
    let mut probs = vec![0f32; queries.len() * dm.heads * kw];
    out.par_chunks_mut(d)
        .zip(probs.par_chunks_mut(dm.heads * kw))
        .zip(queries.par_iter())
        .for_each(|((out, probs), &r)| {
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

/// Receives one key's gradient contributions: (key row, head, q, dout, ds, p).
type KvSink<'a> = dyn FnMut(usize, usize, &[f32], &[f32], f32, f32) + 'a;

/// One query row's attention backward for all heads: `probs` `[heads, keys]` and `dout` `[D]` are the
/// row's; adds its query gradient to `dq` `[D]` and hands each key's contributions to
/// `add_kv(key, head, q, dout, ds, p)` (dk += ds·q, dv += p·dout).
pub(super) fn attention_row_bwd(
    dm: &Dims,
    qkv: &[f32],
    probs: &[f32],
    dout: &[f32],
    r: usize,
    dq: &mut [f32],
    add_kv: &mut KvSink,
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
            add_scaled(
                &mut dq[h * hd..][..hd],
                &qkv[key * 3 * d + d + h * hd..][..hd],
                ds,
            );
            add_kv(key, h, q, go, ds, pk);
        }
    }
}

/// Adds one key's contributions to its `[dk | dv]` row (`2D` wide).
#[allow(clippy::too_many_arguments)]
pub(super) fn add_kv_row(
    kv: &mut [f32],
    d: usize,
    hd: usize,
    h: usize,
    q: &[f32],
    go: &[f32],
    ds: f32,
    pk: f32,
) {
    add_scaled(&mut kv[h * hd..][..hd], q, ds);
    add_scaled(&mut kv[d + h * hd..][..hd], go, pk);
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
    if !dm.causal {
        return attention_bwd_full(dm, qkv, probs, dout, queries);
    }
    // Below, a row's own keys are the rows before it in its block.
    let (d, hd, p, pw) = (dm.d, dm.hd(), dm.p, dm.heads * dm.keys());
    let mut dqkv = vec![0f32; dm.rows() * 3 * d];
    let (dpre, dcont) = dqkv.split_at_mut(p * 3 * d);
    // Continuations in parallel, one class per task: its own keys are written by it alone, the shared
    // prefix keys are summed in a per-task buffer and reduced after.
    let mut prefix_kv = sequence_blocks(dm, dcont, queries)
        .into_par_iter()
        .fold(
            || vec![0f32; p * 2 * d],
            |mut acc, (first, block, qi)| {
                for i in qi {
                    let r = queries[i];
                    let (before, rest) = block.split_at_mut((r - first) * 3 * d);
                    let (dq, kv) = rest[..3 * d].split_at_mut(d);
                    attention_row_bwd(
                        dm,
                        qkv,
                        &probs[i * pw..][..pw],
                        &dout[i * d..][..d],
                        r,
                        dq,
                        &mut |key, h, q, go, ds, pk| {
                            let row = if key < p {
                                &mut acc[key * 2 * d..][..2 * d]
                            } else if key == r {
                                &mut *kv
                            } else {
                                &mut before[(key - first) * 3 * d + d..][..2 * d]
                            };
                            add_kv_row(row, d, hd, h, q, go, ds, pk);
                        },
                    );
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
        attention_row_bwd(
            dm,
            qkv,
            &probs[i * pw..][..pw],
            &dout[i * d..][..d],
            r,
            dq,
            &mut |key, h, q, go, ds, pk| {
                add_kv_row(
                    &mut prefix_kv[key * 2 * d..][..2 * d],
                    d,
                    hd,
                    h,
                    q,
                    go,
                    ds,
                    pk,
                )
            },
        );
    }
    for key in 0..p {
        dpre[key * 3 * d + d..][..2 * d]
            .iter_mut()
            .zip(&prefix_kv[key * 2 * d..][..2 * d])
            .for_each(|(a, b)| *a += b);
    }
    dqkv
}

/// The `[dq | dk | dv]` rows of each sequence (`rows`: every continuation row, `3D` wide), with its first
/// row and the range of `queries` (ascending) that fall in it: one task's share of the backward.
fn sequence_blocks<'a>(
    dm: &Dims,
    mut rows: &'a mut [f32],
    queries: &[usize],
) -> Vec<(usize, &'a mut [f32], std::ops::Range<usize>)> {
    let mut blocks = Vec::with_capacity(dm.classes());
    for (c, &len) in dm.len.iter().enumerate() {
        let (block, rest) = std::mem::take(&mut rows).split_at_mut(len * 3 * dm.d);
        let lo = queries.partition_point(|&r| r < dm.start[c]);
        let hi = queries.partition_point(|&r| r < dm.start[c] + len);
        blocks.push((dm.start[c], block, lo..hi));
        rows = rest;
    }
    blocks
}

/// [`attention_bwd`] for blocks whose rows see their whole block (images) and no prefix: one task per
/// block, which alone writes its rows' gradients.
fn attention_bwd_full(
    dm: &Dims,
    qkv: &[f32],
    probs: &[f32],
    dout: &[f32],
    queries: &[usize],
) -> Vec<f32> {
    assert_eq!(dm.p, 0, "full-block attention has no shared prefix");
    if queries.len() == dm.rows() {
        return attention_bwd_blocks(dm, qkv, probs, dout);
    }
    let (d, hd, pw) = (dm.d, dm.hd(), dm.heads * dm.keys());
    let mut dqkv = vec![0f32; dm.rows() * 3 * d];
    sequence_blocks(dm, &mut dqkv, queries)
        .into_par_iter()
        .for_each(|(first, block, qi)| {
            let mut dq = vec![0f32; d];
            for i in qi {
                let r = queries[i];
                dq.iter_mut().for_each(|v| *v = 0.0);
                attention_row_bwd(
                    dm,
                    qkv,
                    &probs[i * pw..][..pw],
                    &dout[i * d..][..d],
                    r,
                    &mut dq,
                    &mut |key, h, q, go, ds, pk| {
                        add_kv_row(
                            &mut block[(key - first) * 3 * d + d..][..2 * d],
                            d,
                            hd,
                            h,
                            q,
                            go,
                            ds,
                            pk,
                        )
                    },
                );
                block[(r - first) * 3 * d..][..d]
                    .iter_mut()
                    .zip(&dq)
                    .for_each(|(a, b)| *a += b);
            }
        });
    dqkv
}

/// `dst[m×n] = lhs[m×k] · rhs[k×n]` on one thread, every operand strided (`*_cs` along columns,
/// `*_rs` along rows).
#[allow(clippy::too_many_arguments)]
unsafe fn small_gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_cs: usize,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_cs: usize,
    rhs_rs: usize,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        Parallelism::None,
    )
}

/// [`attention_bwd_full`] with every row a query, as matrix products per block and head (the backward
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
                small_gemm(
                    len,
                    len,
                    hd,
                    ds.as_mut_ptr(),
                    len,
                    go,
                    1,
                    d,
                    qkv[col + 2 * d..].as_ptr(),
                    qrs,
                    1,
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
                small_gemm(
                    len,
                    hd,
                    len,
                    dst,
                    qrs,
                    ds.as_ptr(),
                    1,
                    len,
                    qkv[col + d..].as_ptr(),
                    1,
                    qrs,
                );
                small_gemm(
                    len,
                    hd,
                    len,
                    dst.add(d),
                    qrs,
                    ds.as_ptr(),
                    len,
                    1,
                    qkv[col..].as_ptr(),
                    1,
                    qrs,
                );
                small_gemm(len, hd, len, dst.add(2 * d), qrs, p0, prs, 1, go, 1, d);
            }
        });
    dqkv
}
