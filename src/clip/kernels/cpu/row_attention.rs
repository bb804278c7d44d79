//! Attention of chosen query rows: causal text over a shared prefix and per-sequence blocks, or the
//! read-out rows of whole blocks (an image's class token), forward and backward.
//!
//! CoOp's prompts share a prefix of P rows (start token and context) that every one of the C·L
//! continuation rows attends to: most of the attention's work is those C·L × P scores, their values and,
//! backward, the prefix keys' and values' gradients summed over every query. Per row and key that was
//! a dot product at a time (a twelfth of a CoOp step); here the prefix part is one matrix product a head
//! each way, and only a row's own few keys go key by key.

use rayon::prelude::*;

use super::attention::{key_ranges, strided_gemm, Strided};
use super::kernels::{add_scaled, dot, with_avx2};
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

/// A task's share of the queries: indices `i0..i1` of `queries`, and the rows of `qkv` whose
/// gradients it alone writes, `r0..r1` (its sequences' rows; a prefix chunk's are the prefix rows).
#[derive(Debug, Clone, Copy)]
struct Chunk {
    i0: usize,
    i1: usize,
    r0: usize,
    r1: usize,
}

/// Cuts `queries` (ascending) into chunks of whole sequences: the prefix rows' queries first, then
/// runs of sequences of about `Q / (4·threads)` queries (16 to 256), enough tasks to balance the
/// threads and few enough rows for the cache.
fn chunks(dm: &Dims, queries: &[usize]) -> Vec<Chunk> {
    let nq = queries.len();
    let target = (nq / (4 * rayon::current_num_threads().max(1))).clamp(16, 256);
    let mut out = Vec::new();
    let n_prefix = queries.partition_point(|&r| r < dm.p);
    if n_prefix > 0 {
        out.push(Chunk {
            i0: 0,
            i1: n_prefix,
            r0: 0,
            r1: dm.p,
        });
    }
    let mut i0 = n_prefix;
    let mut c0 = 0;
    for c in 0..dm.classes() {
        let end = dm.start[c] + dm.len[c];
        let i1 = queries.partition_point(|&r| r < end);
        if i1 - i0 >= target || c + 1 == dm.classes() {
            if i1 > i0 {
                out.push(Chunk {
                    i0,
                    i1,
                    r0: dm.start[c0],
                    r1: end,
                });
            }
            i0 = i1;
            c0 = c + 1;
        }
    }
    out
}

/// Splits `buf` (rows of `width`) into the chunks' row ranges `range(chunk)`, in order.
fn split_rows<'a>(
    mut buf: &'a mut [f32],
    chunks: &[Chunk],
    width: usize,
    range: impl Fn(&Chunk) -> (usize, usize),
) -> Vec<&'a mut [f32]> {
    let mut at = 0;
    let mut parts = Vec::with_capacity(chunks.len());
    for c in chunks {
        let (r0, r1) = range(c);
        let (_, rest) = std::mem::take(&mut buf).split_at_mut((r0 - at) * width);
        let (part, rest) = rest.split_at_mut((r1 - r0) * width);
        parts.push(part);
        buf = rest;
        at = r1;
    }
    parts
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
    let chunks = chunks(dm, queries);
    let by_query = |c: &Chunk| (c.i0, c.i1);
    split_rows(&mut out, &chunks, d, by_query)
        .into_par_iter()
        .zip(split_rows(&mut probs, &chunks, pw, by_query))
        .zip(chunks.par_iter())
        .for_each(|((out, probs), c)| {
            let n = c.i1 - c.i0;
            for h in (0..heads).filter(|_| p > 0) {
                // S[i, j] = scale · q_i · k_j for the chunk's queries and every prefix key j.
                // SAFETY: the chunk's rows of `probs`, head h's first P columns; reads inside `qs`
                // and the prefix rows of `qkv`.
                unsafe {
                    strided_gemm(
                        (n, p, hd),
                        probs[h * kw..].as_mut_ptr(),
                        pw,
                        false,
                        Strided::rows(qs[c.i0 * q_rs + h * hd..].as_ptr(), q_rs),
                        Strided::cols(qkv[d + h * hd..].as_ptr(), 3 * d),
                        scale,
                    )
                }
            }
            for ((out, probs), &r) in out
                .chunks_mut(d)
                .zip(probs.chunks_mut(pw))
                .zip(&queries[c.i0..c.i1])
            {
                with_avx2(|| softmax_row(dm, qkv, r, out, probs, scale));
            }
            for h in (0..heads).filter(|_| p > 0) {
                // out_h += P[:, prefix] · V_prefix.
                // SAFETY: the chunk's rows of `out`, head h's columns; reads inside `probs` and `qkv`.
                unsafe {
                    strided_gemm(
                        (n, hd, p),
                        out[h * hd..].as_mut_ptr(),
                        d,
                        true,
                        Strided::rows(probs[h * kw..].as_ptr(), pw),
                        Strided::rows(qkv[2 * d + h * hd..].as_ptr(), 3 * d),
                        1.0,
                    )
                }
            }
        });
    (out, probs)
}

/// One query row `r`: its own keys' scores (the prefix's are in `probs` already), the softmax over
/// both, and its own keys' values into `out`.
#[inline]
fn softmax_row(dm: &Dims, qkv: &[f32], r: usize, out: &mut [f32], probs: &mut [f32], scale: f32) {
    let (d, hd, kw, p) = (dm.d, dm.hd(), dm.keys(), dm.p);
    let (pre, own) = key_ranges(dm, r);
    for h in 0..dm.heads {
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
    let mut gathered = Vec::new();
    let (qs, q_rs) = query_rows(dm, qkv, queries, &mut gathered);
    let chunks = chunks(dm, queries);
    let ds_parts: Vec<&mut [f32]> = if p > 0 {
        split_rows(&mut ds, &chunks, pw, |c| (c.i0, c.i1))
    } else {
        chunks.iter().map(|_| Default::default()).collect()
    };
    // Each chunk returns its part of the prefix keys' and values' gradients, `[P, 2D]`, summed after.
    let prefix_kv: Vec<Vec<f32>> = split_rows(&mut dqkv, &chunks, 3 * d, |c| (c.r0, c.r1))
        .into_par_iter()
        .zip(ds_parts)
        .zip(chunks.par_iter())
        .map(|((rows, ds), c)| {
            let n = c.i1 - c.i0;
            let mut kv = vec![0f32; if p > 0 { p * 2 * d } else { 0 }];
            for h in (0..heads).filter(|_| p > 0) {
                // dP[i, j] = dout_i · v_j for the chunk's queries and every prefix key j.
                // SAFETY: the chunk's rows of `ds`, head h's first P columns.
                unsafe {
                    strided_gemm(
                        (n, p, hd),
                        ds[h * kw..].as_mut_ptr(),
                        pw,
                        false,
                        Strided::rows(dout[c.i0 * d + h * hd..].as_ptr(), d),
                        Strided::cols(qkv[2 * d + h * hd..].as_ptr(), 3 * d),
                        1.0,
                    )
                }
            }
            let (mut dq, mut dp_own) = (vec![0f32; d], Vec::new());
            for (j, &r) in queries[c.i0..c.i1].iter().enumerate() {
                let i = c.i0 + j;
                let ds_row: &mut [f32] = if p > 0 {
                    &mut ds[j * pw..][..pw]
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
                    &mut dp_own,
                    &mut |key, h, q, go, g, pk| {
                        let row = &mut rows[(key - c.r0) * 3 * d + d..][..2 * d];
                        add_kv_row(row, d, hd, h, q, go, g, pk);
                    },
                );
                rows[(r - c.r0) * 3 * d..][..d]
                    .iter_mut()
                    .zip(&dq)
                    .for_each(|(a, b)| *a += b);
            }
            if p > 0 {
                prefix_products(
                    dm,
                    qkv,
                    (qs, q_rs),
                    probs,
                    dout,
                    queries,
                    c,
                    ds,
                    rows,
                    &mut kv,
                );
            }
            kv
        })
        .collect();
    for kv in prefix_kv.iter().filter(|kv| !kv.is_empty()) {
        for key in 0..p {
            dqkv[key * 3 * d + d..][..2 * d]
                .iter_mut()
                .zip(&kv[key * 2 * d..][..2 * d])
                .for_each(|(a, b)| *a += b);
        }
    }
    dqkv
}

/// One chunk's prefix-key part of the backward, a head at a time: `dq += dS·K_prefix` for its queries
/// (into `rows`, its rows of dqkv), and into `kv` (`[P, 2D]`) `dk_prefix += dSᵀ·Q` and
/// `dv_prefix += Pᵀ·dout` summed over its queries. `ds` is the chunk's rows of dS.
#[allow(clippy::too_many_arguments)]
fn prefix_products(
    dm: &Dims,
    qkv: &[f32],
    (qs, q_rs): (&[f32], usize),
    probs: &[f32],
    dout: &[f32],
    queries: &[usize],
    c: &Chunk,
    ds: &[f32],
    rows: &mut [f32],
    kv: &mut [f32],
) {
    let (d, hd, kw, heads, p) = (dm.d, dm.hd(), dm.keys(), dm.heads, dm.p);
    let (n, pw) = (c.i1 - c.i0, heads * kw);
    // When every row is a query, the chunk's queries are its rows in order, and dq goes straight into
    // them; otherwise into a buffer, added to the query rows after.
    let every_row = queries.len() == dm.rows();
    let mut dq_buf = vec![0f32; if every_row { 0 } else { n * d }];
    for h in 0..heads {
        let (dq_dst, dq_rs) = if every_row {
            (rows[h * hd..].as_mut_ptr(), 3 * d)
        } else {
            (dq_buf[h * hd..].as_mut_ptr(), d)
        };
        let (ds_t, p_t) = (
            Strided {
                ptr: ds[h * kw..].as_ptr(),
                rs: 1,
                cs: pw,
            },
            Strided {
                ptr: probs[c.i0 * pw + h * kw..].as_ptr(),
                rs: 1,
                cs: pw,
            },
        );
        // SAFETY: the writes stay in the chunk's own `rows` (or `dq_buf`) and `kv`, head h's columns;
        // the reads stay inside the chunk's rows of `ds`, `probs`, `dout` and `qs`, and the prefix rows
        // of `qkv`.
        unsafe {
            strided_gemm(
                (n, hd, p),
                dq_dst,
                dq_rs,
                true,
                Strided::rows(ds[h * kw..].as_ptr(), pw),
                Strided::rows(qkv[d + h * hd..].as_ptr(), 3 * d),
                1.0,
            );
            strided_gemm(
                (p, hd, n),
                kv[h * hd..].as_mut_ptr(),
                2 * d,
                true,
                ds_t,
                Strided::rows(qs[c.i0 * q_rs + h * hd..].as_ptr(), q_rs),
                1.0,
            );
            strided_gemm(
                (p, hd, n),
                kv[d + h * hd..].as_mut_ptr(),
                2 * d,
                true,
                p_t,
                Strided::rows(dout[c.i0 * d + h * hd..].as_ptr(), d),
                1.0,
            );
        }
    }
    for (g, &r) in dq_buf.chunks(d).zip(&queries[c.i0..c.i1]) {
        rows[(r - c.r0) * 3 * d..][..d]
            .iter_mut()
            .zip(g)
            .for_each(|(a, b)| *a += b);
    }
}
