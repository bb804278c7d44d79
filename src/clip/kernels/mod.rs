//! The compute kernels below the model code: the CPU transformer blocks with a hand-written backward
//! (`cpu`), fused ops with a backward for candle's autograd (`fused`) and their CUDA versions (`cuda`,
//! `fused_kernels.cu`). They take tensors and plain weight views ([`TowerWeights`]), never the model's
//! types: `clip::layers`, `clip::text` and `clip::vision` call them, not the other way round.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod fused;

use candle_core::{CpuStorage, Layout, Result, Tensor};
use rayon::prelude::*;

use super::config::HiddenAct;

/// `PROMPTSCOPE_CANDLE_OPS=1` turns our kernels off (everything then runs as candle ops): for
/// benchmarking one against the other.
pub(crate) fn candle_ops_forced() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var_os("PROMPTSCOPE_CANDLE_OPS").is_some_and(|v| v == "1"))
}

/// `rows × d` of a layout whose last dimension is `d` (the per-row ops' view of any shape).
pub(crate) fn rows_of(l: &Layout) -> (usize, usize) {
    let d = l.shape().dims().last().copied().unwrap_or(1).max(1);
    (l.shape().elem_count() / d, d)
}

/// The f32 data of a contiguous CPU storage, or an error naming `what`.
pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{what}: only f32 is supported"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: input must be contiguous"),
    }
}

/// Rows of `width` at a time, enough of them per task to be worth a thread.
pub(crate) fn row_chunk(width: usize) -> usize {
    (16384 / width.max(1)).max(1)
}

/// `y[r, ..bias.len()] += bias` for every row `r` of width `y_rs`, rows in parallel.
pub(crate) fn add_bias(y: &mut [f32], y_rs: usize, bias: &[f32]) {
    y.par_chunks_mut(y_rs * row_chunk(y_rs)).for_each(|block| {
        for row in block.chunks_mut(y_rs) {
            row[..bias.len()]
                .iter_mut()
                .zip(bias)
                .for_each(|(v, b)| *v += b);
        }
    });
}

/// A linear layer's weights (`[out, in]`, optional bias) as the kernels read them.
#[derive(Debug, Clone)]
pub struct LinearWeights {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// The weight packed for the CPU micro-kernels, made on first use: only for frozen weights, whose
    /// values never change under it.
    pub packed: Option<std::sync::Arc<cpu::PackedLinear>>,
}

/// A layer norm's weights.
#[derive(Debug, Clone)]
pub struct NormWeights {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

/// One pre-LN transformer block (`CLIPEncoderLayer`).
#[derive(Debug, Clone)]
pub struct BlockWeights {
    pub ln1: NormWeights,
    /// q, k and v stacked (`[3D, D]`, `[3D]`): one product where three would each re-read the input.
    pub qkv: LinearWeights,
    pub o: LinearWeights,
    pub ln2: NormWeights,
    pub fc1: LinearWeights,
    pub fc2: LinearWeights,
}

/// A tower's blocks, final norm and projection, and the sizes the kernels need (candle tensors: a clone
/// shares the storage, nothing is copied).
#[derive(Debug, Clone)]
pub struct TowerWeights {
    /// The text tower's position embeddings (the continuation rows' positions are added in the kernels).
    pub positions: Option<Tensor>,
    pub blocks: Vec<BlockWeights>,
    /// `final_layer_norm` (text) or `post_layernorm` (vision).
    pub final_norm: NormWeights,
    pub projection: LinearWeights,
    pub act: HiddenAct,
    pub heads: usize,
    pub intermediate: usize,
}

impl TowerWeights {
    pub fn projection_dim(&self) -> Result<usize> {
        self.projection.weight.dim(0)
    }
}
