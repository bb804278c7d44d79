//! Where a pass's wall time goes, by kind of work: the kernels time themselves (a clock read around each
//! call, about a hundred calls a block, nothing measurable), so a benchmark can split a CoOp step into
//! matrix products, attention, element-wise passes and copies without a profiler, on any machine.
//!
//! Only the outermost timed call on a thread counts (attention's own small products count as
//! attention). Calls made from several threads at once would add up past the wall time; the towers'
//! passes call the kernels from one thread, and the kernels split the work themselves.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A kind of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// GEMM calls, their packing included, and the element-wise work done on their rows as they finish
    /// (`packed::RowsDone`).
    MatrixProducts,
    /// Scores, softmax and the weighted values, forward and backward.
    Attention,
    /// Layer norms, activations, biases, residual sums run as passes of their own.
    Elementwise,
    /// Gathers and scatters of rows, buffers filled with zeros.
    Copies,
}

const PARTS: usize = 4;

static NANOS: [AtomicU64; PARTS] = [const { AtomicU64::new(0) }; PARTS];

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, adding its wall time to `part` unless a timed call on this thread is already running.
#[inline]
pub(super) fn timed<R>(part: Part, f: impl FnOnce() -> R) -> R {
    if INSIDE.with(|c| c.replace(true)) {
        return f();
    }
    let start = Instant::now();
    let out = f();
    NANOS[part as usize].fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    INSIDE.with(|c| c.set(false));
    out
}

/// Wall time spent in each kind of work since the process started, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Breakdown {
    pub matrix_products_ms: f64,
    pub attention_ms: f64,
    pub elementwise_ms: f64,
    pub copies_ms: f64,
}

impl Breakdown {
    pub fn now() -> Self {
        let ms = |p: Part| NANOS[p as usize].load(Ordering::Relaxed) as f64 / 1e6;
        Self {
            matrix_products_ms: ms(Part::MatrixProducts),
            attention_ms: ms(Part::Attention),
            elementwise_ms: ms(Part::Elementwise),
            copies_ms: ms(Part::Copies),
        }
    }

    /// What was spent between `earlier` and `self`, divided by `n` (per step).
    pub fn since(&self, earlier: &Self, n: usize) -> Self {
        let n = n.max(1) as f64;
        Self {
            matrix_products_ms: (self.matrix_products_ms - earlier.matrix_products_ms) / n,
            attention_ms: (self.attention_ms - earlier.attention_ms) / n,
            elementwise_ms: (self.elementwise_ms - earlier.elementwise_ms) / n,
            copies_ms: (self.copies_ms - earlier.copies_ms) / n,
        }
    }

    pub fn total_ms(&self) -> f64 {
        self.matrix_products_ms + self.attention_ms + self.elementwise_ms + self.copies_ms
    }
}
