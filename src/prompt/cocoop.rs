//! CoCoOp's meta-net (Zhou et al. 2022): `π(x) = W₂·ReLU(W₁·x + b₁) + b₂`, from the normalised image
//! feature (P) through P/16 hidden units to the text width (D); `π(x)` is added to every context token,
//! so each image gets its own prompts. torch's Linear layout (out × in) and default initialisation.

use candle_core::{Tensor, Var};

use crate::error::{Error, Result};
use crate::rng::Rng;

pub struct MetaNet {
    pub w1: Var,
    pub b1: Var,
    pub w2: Var,
    pub b2: Var,
}

impl MetaNet {
    /// `vis` → `vis / 16` → `ctx` with torch's default Linear initialisation (uniform ±1/√fan_in for
    /// weights and biases), seeded.
    pub fn new(vis: usize, ctx: usize, seed: u64, device: &candle_core::Device) -> Result<Self> {
        let hidden = (vis / 16).max(1);
        if ctx == 0 || vis == 0 {
            return Err(Error::invalid(
                "CoCoOp's meta-net needs non-empty image and text widths",
            ));
        }
        let mut rng = Rng::new(seed);
        let mut uniform = |shape: &[usize], fan_in: usize| -> Result<Var> {
            let n: usize = shape.iter().product();
            let bound = 1.0 / (fan_in as f64).sqrt();
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    (((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * bound)
                        as f32
                })
                .collect();
            Ok(Var::from_tensor(&Tensor::from_vec(v, shape, device)?)?)
        };
        Ok(MetaNet {
            w1: uniform(&[hidden, vis], vis)?,
            b1: uniform(&[hidden], vis)?,
            w2: uniform(&[ctx, hidden], hidden)?,
            b2: uniform(&[ctx], hidden)?,
        })
    }

    /// `π` of normalised image features `[B, P]`: `[B, D]`.
    pub fn forward(&self, f: &Tensor) -> Result<Tensor> {
        let h = f
            .matmul(&self.w1.as_tensor().t()?)?
            .broadcast_add(self.b1.as_tensor())?
            .relu()?;
        Ok(h.matmul(&self.w2.as_tensor().t()?)?
            .broadcast_add(self.b2.as_tensor())?)
    }

    pub fn vars(&self) -> [&Var; 4] {
        [&self.w1, &self.b1, &self.w2, &self.b2]
    }

    /// The parameters' current values, in [`Self::vars`] order.
    pub fn tensors(&self) -> [Tensor; 4] {
        self.vars().map(|v| v.as_tensor().detach())
    }

    /// A meta-net from stored parameters (`[H, P]`, `[H]`, `[D, H]`, `[D]`), their shapes checked.
    pub fn from_tensors([w1, b1, w2, b2]: [Tensor; 4]) -> std::result::Result<Self, String> {
        let (h, p) = w1.dims2().map_err(|e| e.to_string())?;
        let (d, h2) = w2.dims2().map_err(|e| e.to_string())?;
        if h != h2 || b1.dims() != [h] || b2.dims() != [d] || p == 0 || d == 0 {
            return Err(format!(
                "meta-net shapes do not fit together: {:?}, {:?}, {:?}, {:?}",
                w1.dims(),
                b1.dims(),
                w2.dims(),
                b2.dims()
            ));
        }
        let var = |t: Tensor| Var::from_tensor(&t).map_err(|e| e.to_string());
        Ok(MetaNet {
            w1: var(w1)?,
            b1: var(b1)?,
            w2: var(w2)?,
            b2: var(b2)?,
        })
    }

    /// `(image width P, text width D)` the net maps between.
    pub fn widths(&self) -> (usize, usize) {
        (self.w1.dims()[1], self.w2.dims()[0])
    }
}
