//! Attention of chosen query rows: causal text over a shared prefix and per-sequence blocks, or the
//! read-out rows of whole blocks (an image's class token), forward and backward.
//!
//! CoOp's prompts share a prefix of P rows (start token and context) that every one of the C·L
//! continuation rows attends to: most of the attention's work is those C·L × P scores, their values and,
//! backward, the prefix keys' and values' gradients summed over every query. Per row and key that was
//! a dot product at a time (a twelfth of a CoOp step); here the prefix part is one matrix product a head
//! each way, and only a row's own few keys go key by key.

use rayon::prelude::*;

use super::attention::{key_ranges, sequence_blocks, strided_gemm, Strided};
use super::kernels::{add_scaled, dot, with_avx2, SharedOut};
use super::Dims;

/// The query rows' q vectors and their row stride: `qkv` itself when every row is a query, else a
/// gathered copy `[Q, D]`.
fn query_rows<'a>(
    dm: &Dims,
    qkv: &'a [f32],
    queries: &[usize],
    gathered: &'a mut Vec<f32>,
) -> (&'a [f32], usize) {
    let d = dm.d;
    if queries.len() == dm.rows() {
        return (qkv, 3 * d);
    }
    *gathered = queries
        .iter()
        .flat_map(|&r| &qkv[r * 3 * d..][..d])
        .copied()
        .collect();
    (gathered, d)
}

/// Attention of the query rows `queries` (ascending) over their keys (see [`key_ranges`]): the
/// per-head output `[Q, D]` and the probabilities `[Q, heads, keys]`, a row's prefix keys in the first
/// P columns (a prefix row's later rows 0) and its own keys after them.
pub(super) fn forward(dm: &Dims, qkv: &[f32], queries: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let (d, hd, kw, heads, p) = (dm.d, dm.hd(), dm.keys(), dm.heads, dm.p);
    let (nq, pw) = (queries.len(), heads * kw);
    let scale = (hd as f32).powf(-0.5);
    let mut out = vec![0f32; nq * d];
    let mut probs = vec![0f32; nq * pw];
    let mut gathered = Vec::new();
    let (qs, q_rs) = query_rows(dm, qkv, queries, &mut gathered);
    if p > 0 {
        // S[i, j] = scale · q_i · k_j for every query and prefix key j, a product a head.
        let dst = SharedOut(probs.as_mut_ptr());
        (0..heads).into_par_iter().for_each(move |h| {
            let dst = dst;
            // SAFETY: head h writes columns h·kw..h·kw+P of every row of `probs`, which no other head
            // touches; the reads are rows of `qs` and the prefix rows of `qkv`, head h's columns.
            unsafe {
                strided_gemm(
                    (nq, p, hd),
                    dst.0.add(h * kw),
                    pw,
                    false,
                    Strided::rows(qs[h * hd..].as_ptr(), q_rs),
                    Strided::cols(qkv[d + h * hd..].as_ptr(), 3 * d),
                    scale,
                )
            }
        });
    }
    out.par_chunks_mut(d)
        .zip(probs.par_chunks_mut(pw))
        .zip(queries.par_iter())
        .for_each(|((out, probs), &r)| {
            with_avx2(|| {
                let (pre, own) = key_ranges(dm, r);
                for h in 0..heads {
                    let q = &qkv[r * 3 * d + h * hd..][..hd];
                    let row = &mut probs[h * kw..][..p + own.len()];
                    // A prefix row sees the prefix only up to itself.
                    row[pre.end..p].fill(f32::NEG_INFINITY);
                    for (s, key) in row[p..].iter_mut().zip(own.clone()) {
                        *s = dot(q, &qkv[key * 3 * d + d + h * hd..][..hd]) * scale;
                    }
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for v in row.iter_mut() {
                        *v = (*v - max).exp();
                        sum += *v;
                    }
                    row.iter_mut().for_each(|v| *v /= sum);
                    let o = &mut out[h * hd..][..hd];
                    for (&pk, key) in row[p..].iter().zip(own.clone()) {
                        add_scaled(o, &qkv[key * 3 * d + 2 * d + h * hd..][..hd], pk);
                    }
                }
            })
        });
    if p > 0 {
        // out_h += P[:, prefix] · V_prefix, a product a head.
        let dst = SharedOut(out.as_mut_ptr());
        let probs = &probs;
        (0..heads).into_par_iter().for_each(move |h| {
            let dst = dst;
            // SAFETY: head h writes its own columns of `out`; reads stay in `probs` and `qkv`.
            unsafe {
                strided_gemm(
                    (nq, hd, p),
                    dst.0.add(h * hd),
                    d,
                    true,
                    Strided::rows(probs[h * kw..].as_ptr(), pw),
                    Strided::rows(qkv[2 * d + h * hd..].as_ptr(), 3 * d),
                    1.0,
                )
            }
        });
    }
    (out, probs)
}

/// Receives one own key's gradient contributions: (key row, head, q, dout, ds, p).
type KvSink<'a> = dyn FnMut(usize, usize, &[f32], &[f32], f32, f32) + 'a;

/// One query row's backward for all heads. `probs` `[heads, keys]` and `dout` `[D]` are the row's;
/// `ds` (`[heads, keys]`, or empty without a prefix) holds `dP = dout·vᵀ` of its prefix keys on entry
/// and their `dS` on return. Adds the own keys' part of its query gradient to `dq` `[D]` and hands each
/// own key's contributions to `add_kv(key, head, q, dout, ds, p)` (dk += ds·q, dv += p·dout).
#[allow(clippy::too_many_arguments)]
fn row_backward(
    dm: &Dims,
    qkv: &[f32],
    probs: &[f32],
    dout: &[f32],
    r: usize,
    ds: &mut [f32],
    dq: &mut [f32],
    dp_own: &mut Vec<f32>,
    add_kv: &mut KvSink,
) {
    let (d, hd, kw, p) = (dm.d, dm.hd(), dm.keys(), dm.p);
    let scale = (hd as f32).powf(-0.5);
    let (pre, own) = key_ranges(dm, r);
    with_avx2(|| {
        for h in 0..dm.heads {
            let pr = &probs[h * kw..][..p + own.len()];
            let go = &dout[h * hd..][..hd];
            dp_own.clear();
            dp_own.extend(
                own.clone()
                    .map(|key| dot(go, &qkv[key * 3 * d + 2 * d + h * hd..][..hd])),
            );
            let mut inner = dot(&pr[p..], dp_own);
            if p > 0 {
                let dsp = &mut ds[h * kw..][..p];
                inner += dot(&pr[..pre.end], &dsp[..pre.end]);
                dsp.iter_mut()
                    .zip(&pr[..p])
                    .for_each(|(g, &pk)| *g = pk * (*g - inner) * scale);
            }
            let q = &qkv[r * 3 * d + h * hd..][..hd];
            for ((&pk, &dpk), key) in pr[p..].iter().zip(dp_own.iter()).zip(own.clone()) {
                let g = pk * (dpk - inner) * scale;
                add_scaled(
                    &mut dq[h * hd..][..hd],
                    &qkv[key * 3 * d + d + h * hd..][..hd],
                    g,
                );
                add_kv(key, h, q, go, g, pk);
            }
        }
    })
}

/// Adds one key's contributions to its `[dk | dv]` row (`2D` wide).
#[allow(clippy::too_many_arguments)]
#[inline]
fn add_kv_row(
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
/// of the query rows `queries` (ascending, as in [`forward`]).
pub(super) fn backward(
    dm: &Dims,
    qkv: &[f32],
    probs: &[f32],
    dout: &[f32],
    queries: &[usize],
) -> Vec<f32> {
    let (d, hd, kw, heads, p) = (dm.d, dm.hd(), dm.keys(), dm.heads, dm.p);
    let (nq, pw) = (queries.len(), heads * kw);
    let mut dqkv = vec![0f32; dm.rows() * 3 * d];
    let mut ds = vec![0f32; if p > 0 { nq * pw } else { 0 }];
    if p > 0 {
        // dP[i, j] = dout_i · v_j for every query and prefix key j, a product a head.
        let dst = SharedOut(ds.as_mut_ptr());
        (0..heads).into_par_iter().for_each(move |h| {
            let dst = dst;
            // SAFETY: head h writes columns h·kw..h·kw+P of every row of `ds` alone.
            unsafe {
                strided_gemm(
                    (nq, p, hd),
                    dst.0.add(h * kw),
                    pw,
                    false,
                    Strided::rows(dout[h * hd..].as_ptr(), d),
                    Strided::cols(qkv[2 * d + h * hd..].as_ptr(), 3 * d),
                    1.0,
                )
            }
        });
    }
    {
        let (dpre, dcont) = dqkv.split_at_mut(p * 3 * d);
        // The continuations, a sequence a task: its own keys' gradients are its rows alone.
        let n_prefix_queries = queries.partition_point(|&r| r < p);
        let (ds_pre, ds_cont) = ds.split_at_mut(if p > 0 { n_prefix_queries * pw } else { 0 });
        let ds_cont = SharedOut(ds_cont.as_mut_ptr());
        sequence_blocks(dm, dcont, queries)
            .into_par_iter()
            .for_each_init(Vec::new, move |dp_own, (first, block, qi)| {
                let ds_cont = ds_cont;
                let mut dq = vec![0f32; d];
                for i in qi {
                    let r = queries[i];
                    let ds_row: &mut [f32] = if p > 0 {
                        // SAFETY: row i of `ds` (after the prefix queries' rows) belongs to the
                        // task that owns query i.
                        unsafe {
                            std::slice::from_raw_parts_mut(
                                ds_cont.0.add((i - n_prefix_queries) * pw),
                                pw,
                            )
                        }
                    } else {
                        &mut []
                    };
                    dq.fill(0.0);
                    row_backward(
                        dm,
                        qkv,
                        &probs[i * pw..][..pw],
                        &dout[i * d..][..d],
                        r,
                        ds_row,
                        &mut dq,
                        dp_own,
                        &mut |key, h, q, go, g, pk| {
                            let row = &mut block[(key - first) * 3 * d + d..][..2 * d];
                            add_kv_row(row, d, hd, h, q, go, g, pk);
                        },
                    );
                    block[(r - first) * 3 * d..][..d]
                        .iter_mut()
                        .zip(&dq)
                        .for_each(|(a, b)| *a += b);
                }
            });
        // Prefix queries see prefix keys only: their whole gradient comes from the products below.
        let mut dp_own = Vec::new();
        for (i, &r) in queries.iter().enumerate().take(n_prefix_queries) {
            row_backward(
                dm,
                qkv,
                &probs[i * pw..][..pw],
                &dout[i * d..][..d],
                r,
                if p > 0 {
                    &mut ds_pre[i * pw..][..pw]
                } else {
                    &mut []
                },
                &mut dpre[r * 3 * d..][..d],
                &mut dp_own,
                &mut |_, _, _, _, _, _| unreachable!("a prefix row has no own keys"),
            );
        }
    }
    if p > 0 {
        prefix_products(dm, qkv, probs, dout, queries, &ds, &mut dqkv);
    }
    dqkv
}

/// The prefix keys' part of the backward, a head a task: `dq += dS·K_prefix` for every query,
/// `dk_prefix += dSᵀ·Q` and `dv_prefix += Pᵀ·dout` summed over every query.
fn prefix_products(
    dm: &Dims,
    qkv: &[f32],
    probs: &[f32],
    dout: &[f32],
    queries: &[usize],
    ds: &[f32],
    dqkv: &mut [f32],
) {
    let (d, hd, kw, heads, p) = (dm.d, dm.hd(), dm.keys(), dm.heads, dm.p);
    let (nq, pw) = (queries.len(), heads * kw);
    let mut gathered = Vec::new();
    let (qs, q_rs) = query_rows(dm, qkv, queries, &mut gathered);
    let every_row = queries.len() == dm.rows();
    // Query rows that are not every row get their dq in a buffer, added to their rows after.
    let mut dq_buf = vec![0f32; if every_row { 0 } else { nq * d }];
    let (dq_dst, dq_rs) = if every_row {
        (SharedOut(dqkv.as_mut_ptr()), 3 * d)
    } else {
        (SharedOut(dq_buf.as_mut_ptr()), d)
    };
    let kv_dst = SharedOut(dqkv.as_mut_ptr());
    (0..heads).into_par_iter().for_each(move |h| {
        let (dq_dst, kv_dst) = (dq_dst, kv_dst);
        let ds_h = Strided::rows(ds[h * kw..].as_ptr(), pw);
        let ds_h_t = Strided {
            ptr: ds[h * kw..].as_ptr(),
            rs: 1,
            cs: pw,
        };
        let p_h_t = Strided {
            ptr: probs[h * kw..].as_ptr(),
            rs: 1,
            cs: pw,
        };
        // SAFETY: head h writes only its own columns (of dq for the query rows, of dk and dv for the
        // prefix rows); every read stays inside `ds`, `probs`, `dout`, `qs` and `qkv` by their strides.
        unsafe {
            strided_gemm(
                (nq, hd, p),
                dq_dst.0.add(h * hd),
                dq_rs,
                true,
                ds_h,
                Strided::rows(qkv[d + h * hd..].as_ptr(), 3 * d),
                1.0,
            );
            strided_gemm(
                (p, hd, nq),
                kv_dst.0.add(d + h * hd),
                3 * d,
                true,
                ds_h_t,
                Strided::rows(qs[h * hd..].as_ptr(), q_rs),
                1.0,
            );
            strided_gemm(
                (p, hd, nq),
                kv_dst.0.add(2 * d + h * hd),
                3 * d,
                true,
                p_h_t,
                Strided::rows(dout[h * hd..].as_ptr(), d),
                1.0,
            );
        }
    });
    if !every_row {
        for (g, &r) in dq_buf.chunks(d).zip(queries) {
            dqkv[r * 3 * d..][..d]
                .iter_mut()
                .zip(g)
                .for_each(|(a, b)| *a += b);
        }
    }
}
