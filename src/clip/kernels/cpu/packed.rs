//! Frozen weights packed once into the panels gemm's micro-kernels read, and the product over them.
//!
//! `gemm::gemm` packs its operands on every call. With a band of rows a thread (how the kernels split
//! CoOp's 501-row products), each thread packed the whole weight itself: a CoOp step packed the text
//! tower's 151 MB of weights four times (two threads, forward and backward). A frozen weight is packed
//! here once, in the layout gemm's own micro-kernel reads (panels of `MR` output columns, `k` deep), and
//! both threads read the same panels. The activations are read in place, as gemm itself reads an
//! operand that is contiguous along k on x86.
//!
//! The micro-kernels are gemm's (`gemm-f32`, AVX2+FMA or AVX-512), so the arithmetic per output element
//! is the same sequence of fused multiply-adds over the same blocks of `k`.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::kernels::SharedOut;

/// gemm's micro-kernel signature (`gemm_common::microkernel::MicroKernelFn<f32>`): `m × n` of the
/// destination (m ≤ MR rows of the packed weight's panel, n ≤ NR activation rows) over `k`.
type MicroKernel = unsafe fn(
    usize,
    usize,
    usize,
    *mut f32,
    *const f32,
    *const f32,
    isize,
    isize,
    isize,
    isize,
    isize,
    f32,
    f32,
    u8,
    bool,
    bool,
    bool,
    *const f32,
);

/// Activation rows a micro-kernel call covers (gemm's `NR` for f32 on x86).
const NR: usize = 6;

/// The micro-kernels this CPU runs: `table[p - 1][r - 1]` covers `p` vectors of output columns and `r`
/// activation rows.
#[derive(Clone, Copy)]
struct Kernels {
    table: &'static [[MicroKernel; NR]],
    lanes: usize,
}

impl Kernels {
    /// Output columns a panel holds.
    fn mr(self) -> usize {
        self.table.len() * self.lanes
    }
}

/// The widest micro-kernels this CPU has, picked as gemm picks them (AVX-512F with the `avx512`
/// feature, else AVX2+FMA); `None` elsewhere, where the products stay on `gemm::gemm`.
fn kernels() -> Option<Kernels> {
    static PICKED: OnceLock<Option<Kernels>> = OnceLock::new();
    *PICKED.get_or_init(|| available().first().copied())
}

/// Every micro-kernel set this CPU can run, widest first.
fn available() -> Vec<Kernels> {
    #[allow(unused_mut)]
    let mut sets = Vec::new();
    #[cfg(all(feature = "avx512", target_arch = "x86_64"))]
    if std::arch::is_x86_feature_detected!("avx512f") {
        sets.push(Kernels {
            table: &gemm_f32::microkernel::avx512f::f32::UKR,
            lanes: 16,
        });
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        sets.push(Kernels {
            table: &gemm_f32::microkernel::fma::f32::UKR,
            lanes: 8,
        });
    }
    sets
}

/// A `[k×n]` right-hand operand in the micro-kernels' layout: panel `p` holds output columns
/// `p·MR ..` as `k` runs of `MR` values (zeros past `n`), panels one after another.
pub(crate) struct PackedB {
    k: usize,
    n: usize,
    mr: usize,
    kernels: Kernels,
    /// Over-allocated so that the panels start on a cache line (`start`): an AVX-512 load that
    /// straddles two lines costs two.
    buf: Vec<f32>,
    start: usize,
}

impl PackedB {
    /// Packs B given row-major as `[k×n]`, or as `[n×k]` when `b_t` (a torch `[out, in]` weight for
    /// `x·Wᵀ`). `None` when this CPU has no micro-kernel here.
    pub(crate) fn new(b: &[f32], b_t: bool, k: usize, n: usize) -> Option<Self> {
        Some(Self::with(kernels()?, b, b_t, k, n))
    }

    fn with(kernels: Kernels, b: &[f32], b_t: bool, k: usize, n: usize) -> Self {
        assert!(
            b.len() >= k * n,
            "PackedB: weight has fewer than k·n values"
        );
        let mr = kernels.mr();
        let panel = mr * k;
        let len = n.div_ceil(mr) * panel;
        let mut buf = vec![0f32; len + 16];
        let start = buf.as_ptr().align_offset(64).min(16);
        buf[start..start + len]
            .par_chunks_mut(panel)
            .enumerate()
            .for_each(|(p, dst)| {
                let (j0, cols) = (p * mr, mr.min(n - p * mr));
                if b_t {
                    // column j of B is row j of W: read each row once, scatter it down the panel
                    for c in 0..cols {
                        let row = &b[(j0 + c) * k..][..k];
                        for (kk, &v) in row.iter().enumerate() {
                            dst[kk * mr + c] = v;
                        }
                    }
                } else {
                    for (kk, run) in dst.chunks_exact_mut(mr).enumerate() {
                        run[..cols].copy_from_slice(&b[kk * n + j0..][..cols]);
                    }
                }
            });
        Self {
            k,
            n,
            mr,
            kernels,
            buf,
            start,
        }
    }

    pub(crate) fn k(&self) -> usize {
        self.k
    }

    pub(crate) fn n(&self) -> usize {
        self.n
    }

    pub(crate) fn panels(&self) -> usize {
        self.n.div_ceil(self.mr)
    }

    fn panel(&self, p: usize) -> *const f32 {
        self.buf[self.start + p * self.mr * self.k..].as_ptr()
    }
}

/// A frozen linear layer's weight (`[out, in]`) packed for the micro-kernels, each way made on first use
/// and kept: forward (`x·Wᵀ`) and backward (`dy·W`, the gradient to its input). Only weights that no
/// optimiser changes get one (`Linear::kernel_weights`): a packed copy of a trained weight would go stale.
/// It costs the weight's size again per direction used.
#[derive(Default)]
pub struct PackedLinear {
    forward: OnceLock<Option<PackedB>>,
    backward: OnceLock<Option<PackedB>>,
}

impl std::fmt::Debug for PackedLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedLinear")
            .field("forward", &self.forward.get().is_some_and(Option::is_some))
            .field(
                "backward",
                &self.backward.get().is_some_and(Option::is_some),
            )
            .finish()
    }
}

impl PackedLinear {
    /// `Wᵀ` (`[in×out]`) packed, from `w`, the `[out, in]` weight this was made for.
    pub(crate) fn forward(&self, w: &[f32], out: usize, inp: usize) -> Option<&PackedB> {
        self.forward
            .get_or_init(|| PackedB::new(w, true, inp, out))
            .as_ref()
            .filter(|p| (p.k, p.n) == (inp, out))
    }

    /// `W` (`[out×in]`) packed.
    pub(crate) fn backward(&self, w: &[f32], out: usize, inp: usize) -> Option<&PackedB> {
        self.backward
            .get_or_init(|| PackedB::new(w, false, out, inp))
            .as_ref()
            .filter(|p| (p.k, p.n) == (out, inp))
    }
}

/// How an `m`-row product over `panels` packed panels is cut into single-threaded tasks: a band of rows
/// a thread when there are rows enough, else the panels shared out (every thread reads all the rows).
pub(crate) fn packed_parts(m: usize, panels: usize) -> (usize, usize) {
    let workers = rayon::current_num_threads();
    if workers <= 1 {
        (1, 1)
    } else if m >= 64 * workers {
        (workers, 1)
    } else {
        (1, workers.min(panels))
    }
}

/// Element-wise work on a product's finished rows: `f(row, values)` runs once per output row, with its
/// `n` values final, on the thread that finished it, while they are still in its cache. A bias, an
/// activation, a residual or a layer norm as a pass of its own is one more fork-join over the threads and
/// one more read of every row: 10 % of a CoOp step. Folded onto the products, the step went from 331 to
/// 321 ms (C = 100, AVX-512, four interleaved pairs) and 3.87 to 3.76 s (C = 1000, two pairs).
pub(crate) type RowsDone<'a> = &'a (dyn Fn(usize, &mut [f32]) + Sync);

/// `out[m×n] (+)= a[m×k] · B` over a packed B, cut into `(row parts, panel parts)` single-threaded
/// tasks, then `then` on every output row.
///
/// # Safety
/// `out` must be valid for writes (and reads, when `accumulate`) of rows `0..m`, each `out_rs` apart
/// and `b.n()` wide, that no one else touches during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul_packed_raw(
    out: *mut f32,
    out_rs: usize,
    a: &[f32],
    a_rs: usize,
    b: &PackedB,
    m: usize,
    accumulate: bool,
    (row_parts, panel_parts): (usize, usize),
    then: Option<RowsDone>,
) {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        a.len() >= (m - 1) * a_rs + k,
        "matmul_packed: input buffer too small"
    );
    let po = SharedOut(out);
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                std::ptr::write_bytes(out.add(r * out_rs), 0, n);
            }
        }
        if let Some(f) = then {
            // SAFETY: rows 0..m of `out`, valid and untouched by others (the caller's contract).
            (0..m).for_each(|r| f(r, unsafe { po.row(r * out_rs, n) }));
        }
        return;
    }
    let (height, width) = (m.div_ceil(row_parts), b.panels().div_ceil(panel_parts));
    // A task holding whole rows finishes them itself; panel tasks leave them to one pass after.
    let (inside, after) = if panel_parts == 1 {
        (then, None)
    } else {
        (None, then)
    };
    (0..row_parts * panel_parts)
        .into_par_iter()
        .for_each(move |part| {
            let po = po;
            let (r0, p0) = ((part / panel_parts) * height, (part % panel_parts) * width);
            let (r1, p1) = ((r0 + height).min(m), (p0 + width).min(b.panels()));
            if r0 < r1 && p0 < p1 {
                // SAFETY: the tasks write disjoint blocks (rows r0..r1, panels p0..p1) of `out`.
                unsafe {
                    task(
                        po.0,
                        out_rs,
                        a,
                        a_rs,
                        b,
                        (r0, r1),
                        (p0, p1),
                        accumulate,
                        inside,
                    )
                }
            }
        });
    if let Some(f) = after {
        (0..m).into_par_iter().for_each(move |r| {
            let po = po;
            // SAFETY: each row once, written whole by the product above.
            f(r, unsafe { po.row(r * out_rs, n) })
        });
    }
}

/// One thread's block: rows `r0..r1` of the output, the columns of panels `p0..p1`. The loops are
/// gemm's: blocks of k (`kc`) outside, then `mc` output columns at a time (their panels' block stays in
/// L2) against `NR` activation rows at a time. The activation rows are read where they are, as gemm does
/// on x86 for an operand contiguous along k: packing them was a scalar transpose at about one value a
/// cycle, 5 % of a CoOp step's CPU time on AVX-512 (`perf`).
#[allow(clippy::too_many_arguments)]
unsafe fn task(
    out: *mut f32,
    out_rs: usize,
    a: &[f32],
    a_rs: usize,
    b: &PackedB,
    (r0, r1): (usize, usize),
    (p0, p1): (usize, usize),
    accumulate: bool,
    then: Option<RowsDone>,
) {
    let (k, mr) = (b.k, b.mr);
    // gemm's own blocking for this shape (its frame: m = output columns, n = rows).
    let params = gemm_common::cache::kernel_params((p1 - p0) * mr, r1 - r0, k, mr, NR, 4);
    let kc = params.kc.clamp(1, k);
    let nc = if params.nc == 0 {
        r1 - r0
    } else {
        params.nc.max(NR)
    };

    let mc_panels = (params.mc / mr).max(1);
    let mut rb = r0;
    while rb < r1 {
        let re = (rb + nc).min(r1);
        let mut k0 = 0;
        while k0 < k {
            let kb = kc.min(k - k0);
            let status = u8::from(accumulate || k0 > 0);
            let mut pb = p0;
            while pb < p1 {
                let pe = (pb + mc_panels).min(p1);
                block(
                    out,
                    out_rs,
                    a,
                    a_rs,
                    b,
                    (rb, re),
                    (pb, pe),
                    (k0, kb),
                    status,
                );
                pb = pe;
            }
            k0 += kb;
        }
        if let Some(f) = then {
            // Finishing each run of NR rows inside the last block of k instead measured the same in
            // the step (322 against 321 ms) and 2 % slower alone (criterion's `coop_fused`).
            for r in rb..re {
                // SAFETY: row r is this task's (whole rows: one panel part) and final.
                f(r, std::slice::from_raw_parts_mut(out.add(r * out_rs), b.n));
            }
        }
        rb = re;
    }
}

/// The micro-kernel over every `NR` rows of `r0..r1` and every panel `pb..pe`, one block of k.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    out: *mut f32,
    out_rs: usize,
    a: &[f32],
    a_rs: usize,
    b: &PackedB,
    (r0, r1): (usize, usize),
    (pb, pe): (usize, usize),
    (k0, kb): (usize, usize),
    status: u8,
) {
    let (n, mr, kernels) = (b.n, b.mr, b.kernels);
    for run in 0..(r1 - r0).div_ceil(NR) {
        let nrows = NR.min(r1 - r0 - run * NR);
        let rhs = a.as_ptr().add((r0 + run * NR) * a_rs + k0);
        let dst_row = out.add((r0 + run * NR) * out_rs);
        for p in pb..pe {
            let cols = mr.min(n - p * mr);
            let lhs = b.panel(p).add(k0 * mr);
            let f = kernels.table[cols.div_ceil(kernels.lanes) - 1][nrows - 1];
            f(
                cols,
                nrows,
                kb,
                dst_row.add(p * mr),
                lhs,
                rhs,
                out_rs as isize,
                1,
                mr as isize,
                1,
                a_rs as isize,
                1.0,
                1.0,
                status,
                false,
                false,
                false,
                lhs,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], b_t: bool, m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for kk in 0..k {
                    let w = if b_t { b[j * k + kk] } else { b[kk * n + j] };
                    out[i * n + j] += a[i * k + kk] as f64 * w as f64;
                }
            }
        }
        out.into_iter().map(|v| v as f32).collect()
    }

    /// Every edge the panels have: rows not a multiple of NR, columns not a multiple of the panel or of
    /// a vector, k across several blocks, both operand layouts, every split, accumulating or not,
    /// input rows wider than k (the kernels read them in place), and a row epilogue that must see each
    /// row once, final.
    #[test]
    fn packed_products_equal_a_plain_sum_at_every_edge() {
        // every set this CPU has: an AVX-512 machine checks the AVX2+FMA panels too
        for kernels in available() {
            check_every_edge(kernels);
        }
    }

    fn check_every_edge(kernels: Kernels) {
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 3, 5),
            (13, 700, 37),
            (50, 64, 130),
            (301, 1100, 97),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7919) % 13) as f32 * 0.1 - 0.6)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 104729) % 11) as f32 * 0.1 - 0.5)
                .collect();
            // the same rows 5 columns apart, the gap poisoned
            let a_rs = k + 5;
            let mut wide = vec![f32::NAN; m * a_rs];
            for (w, r) in wide.chunks_mut(a_rs).zip(a.chunks(k)) {
                w[..k].copy_from_slice(r);
            }
            for b_t in [false, true] {
                let want = naive(&a, &b, b_t, m, k, n);
                let packed = PackedB::with(kernels, &b, b_t, k, n);
                for ((rows, a_rs), parts) in [(&a, k), (&wide, a_rs)]
                    .into_iter()
                    .flat_map(|rows| [(1, 1), (2, 1), (1, 3), (3, 2)].map(|p| (rows, p)))
                {
                    for (accumulate, then) in [(false, false), (true, false), (false, true)] {
                        let mut out = vec![1f32; m * n];
                        // the epilogue keeps what it saw of each row and doubles it
                        let seen = std::sync::Mutex::new(vec![None; m]);
                        let double = |r: usize, row: &mut [f32]| {
                            let prev = seen.lock().unwrap()[r].replace(row.to_vec());
                            assert!(prev.is_none(), "row {r} finished twice");
                            row.iter_mut().for_each(|v| *v *= 2.0);
                        };
                        unsafe {
                            matmul_packed_raw(
                                out.as_mut_ptr(),
                                n,
                                rows,
                                a_rs,
                                &packed,
                                m,
                                accumulate,
                                parts,
                                then.then_some(&double as RowsDone),
                            )
                        };
                        let bias = if accumulate { 1.0 } else { 0.0 };
                        let scale = if then { 2.0 } else { 1.0 };
                        let seen = seen.into_inner().unwrap();
                        for (i, (o, w)) in out.iter().zip(&want).enumerate() {
                            let w = w + bias;
                            assert!(
                                (o - scale * w).abs() <= 1e-4 * scale * (1.0 + w.abs()),
                                "{}-lane {m}x{k}x{n} a_rs={a_rs} b_t={b_t} {parts:?} acc={accumulate} then={then}: [{i}] {o} vs {}",
                                kernels.lanes,
                                scale * w
                            );
                            if then {
                                let v = seen[i / n].as_ref().expect("a row never finished")[i % n];
                                assert!(
                                    (v - w).abs() <= 1e-4 * (1.0 + w.abs()),
                                    "{m}x{k}x{n} {parts:?}: row {} seen unfinished: [{}] {v} vs {w}",
                                    i / n,
                                    i % n
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
