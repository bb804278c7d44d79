//! Trainable linear maps for the fusion modules (VLFM's maps, stage 1's linear head): weight and bias as
//! `Var`s, initialised the way PyTorch's `nn.Linear` is (uniform in ±1/√in for both) but from our own
//! deterministic generator, so a seed gives the same numbers on every machine.

use candle_core::{Device, Module, Tensor, Var};

use crate::clip::layers::Linear;
use crate::error::{Error, Result};
use crate::rng::Rng;

pub struct ParamLinear {
    /// `[out, in]`, as `nn.Linear` stores it.
    pub weight: Var,
    /// `[out]`.
    pub bias: Var,
}

/// `n` values uniform in `[-bound, bound)` from the stream named by `(seed, name)`: each tensor gets its
/// own stream, so adding a parameter never changes another's initialisation.
pub fn uniform_init(n: usize, bound: f32, seed: u64, name: &str) -> Vec<f32> {
    let tag = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut rng = Rng::new(Rng::new(seed ^ tag).next_u64());
    (0..n)
        .map(|_| ((rng.next_u64() >> 40) as f32 * (2.0 / 16_777_216.0) - 1.0) * bound)
        .collect()
}

impl ParamLinear {
    /// A freshly initialised `in_dim → out_dim` map; `name` picks its random stream.
    pub fn new(
        in_dim: usize,
        out_dim: usize,
        seed: u64,
        name: &str,
        device: &Device,
    ) -> Result<Self> {
        let bound = 1.0 / (in_dim.max(1) as f32).sqrt();
        let w = Tensor::from_vec(
            uniform_init(out_dim * in_dim, bound, seed, &format!("{name}.weight")),
            (out_dim, in_dim),
            device,
        )?;
        let b = Tensor::from_vec(
            uniform_init(out_dim, bound, seed, &format!("{name}.bias")),
            out_dim,
            device,
        )?;
        Ok(Self {
            weight: Var::from_tensor(&w)?,
            bias: Var::from_tensor(&b)?,
        })
    }

    /// From saved tensors, checking their shapes (a file for other dimensions is refused, not broadcast).
    pub fn from_tensors(
        weight: &Tensor,
        bias: &Tensor,
        in_dim: usize,
        out_dim: usize,
        name: &str,
        device: &Device,
    ) -> Result<Self> {
        if weight.dims() != [out_dim, in_dim] || bias.dims() != [out_dim] {
            return Err(Error::invalid(format!(
                "{name}: weight {:?} and bias {:?}, expected [{out_dim}, {in_dim}] and [{out_dim}]",
                weight.dims(),
                bias.dims()
            )));
        }
        let f32 = candle_core::DType::F32;
        Ok(Self {
            weight: Var::from_tensor(&weight.to_dtype(f32)?.to_device(device)?)?,
            bias: Var::from_tensor(&bias.to_dtype(f32)?.to_device(device)?)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(Linear::from_parts(
            self.weight.as_tensor().clone(),
            Some(self.bias.as_tensor().clone()),
        )
        .forward(x)?)
    }

    /// `(name.weight, var), (name.bias, var)`: how the map is saved and which `Var`s an optimiser updates.
    pub fn named_vars(&self, name: &str) -> Vec<(String, Var)> {
        vec![
            (format!("{name}.weight"), self.weight.clone()),
            (format!("{name}.bias"), self.bias.clone()),
        ]
    }
}
