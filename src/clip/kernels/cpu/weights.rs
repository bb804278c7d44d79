//! The towers' weights as f32 slices borrowed from candle's storage for one pass (no copies).

use std::ops::Deref;

use candle_core::{CpuStorage, Result, Storage, Tensor};

use super::packed::{PackedB, PackedLinear};
use crate::clip::kernels::{BlockWeights, LinearWeights, NormWeights, TowerWeights};

/// A weight tensor's f32 data, borrowed from candle's storage for as long as the guard lives.
pub(super) struct Held<'t> {
    guard: Box<dyn Deref<Target = Storage> + Sync + 't>,
    start: usize,
    len: usize,
}

impl<'t> Held<'t> {
    pub(super) fn new(t: &'t Tensor) -> Result<Self> {
        let (guard, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("cpu kernels: weight is not contiguous")
        };
        match &*guard {
            Storage::Cpu(CpuStorage::F32(v)) if end <= v.len() => {}
            _ => candle_core::bail!("cpu kernels: weights must be f32 on the CPU"),
        }
        Ok(Self {
            guard: Box::new(guard),
            start,
            len: end - start,
        })
    }

    pub(super) fn data(&self) -> &[f32] {
        match &**self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.start + self.len],
            _ => unreachable!("checked in Held::new"),
        }
    }
}

pub(super) struct HeldLinear<'t> {
    pub(super) w: Held<'t>,
    pub(super) b: Option<Held<'t>>,
    packed: Option<&'t PackedLinear>,
    /// `[out, in]` of `w`.
    dims: (usize, usize),
}

impl<'t> HeldLinear<'t> {
    pub(super) fn new(l: &'t LinearWeights) -> Result<Self> {
        Ok(Self {
            w: Held::new(&l.weight)?,
            b: l.bias.as_ref().map(Held::new).transpose()?,
            packed: l.packed.as_deref(),
            dims: l.weight.dims2()?,
        })
    }

    /// `Wᵀ` packed for `x·Wᵀ`, where the weight is frozen and this CPU has the micro-kernels.
    pub(super) fn packed_forward(&self) -> Option<&'t PackedB> {
        let (out, inp) = self.dims;
        self.packed?.forward(self.w.data(), out, inp)
    }

    /// `W` packed for `dy·W`.
    pub(super) fn packed_backward(&self) -> Option<&'t PackedB> {
        let (out, inp) = self.dims;
        self.packed?.backward(self.w.data(), out, inp)
    }
}

pub(super) struct HeldNorm<'t> {
    pub(super) w: Held<'t>,
    pub(super) b: Held<'t>,
    pub(super) eps: f32,
}

impl<'t> HeldNorm<'t> {
    pub(super) fn new(n: &'t NormWeights) -> Result<Self> {
        Ok(Self {
            w: Held::new(&n.weight)?,
            b: Held::new(&n.bias)?,
            eps: n.eps as f32,
        })
    }
}

pub(super) struct HeldLayer<'t> {
    pub(super) ln1: HeldNorm<'t>,
    pub(super) qkv: HeldLinear<'t>,
    pub(super) o: HeldLinear<'t>,
    pub(super) ln2: HeldNorm<'t>,
    pub(super) fc1: HeldLinear<'t>,
    pub(super) fc2: HeldLinear<'t>,
}

impl<'t> HeldLayer<'t> {
    pub(super) fn new(l: &'t BlockWeights) -> Result<Self> {
        Ok(Self {
            ln1: HeldNorm::new(&l.ln1)?,
            qkv: HeldLinear::new(&l.qkv)?,
            o: HeldLinear::new(&l.o)?,
            ln2: HeldNorm::new(&l.ln2)?,
            fc1: HeldLinear::new(&l.fc1)?,
            fc2: HeldLinear::new(&l.fc2)?,
        })
    }
}

/// The tower's weights, borrowed for one forward or backward pass.
pub(super) struct HeldTower<'t> {
    pub(super) pos: Held<'t>,
    pub(super) layers: Vec<HeldLayer<'t>>,
    pub(super) final_norm: HeldNorm<'t>,
    pub(super) proj: HeldLinear<'t>,
}

impl<'t> HeldTower<'t> {
    pub(super) fn new(t: &'t TowerWeights) -> Result<Self> {
        let Some(pos) = &t.positions else {
            candle_core::bail!("cpu kernels: the text tower's position embeddings are missing")
        };
        Ok(Self {
            pos: Held::new(pos)?,
            layers: t.blocks.iter().map(HeldLayer::new).collect::<Result<_>>()?,
            final_norm: HeldNorm::new(&t.final_norm)?,
            proj: HeldLinear::new(&t.projection)?,
        })
    }
}
