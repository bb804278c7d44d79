//! Fused CPU kernels with a backward pass for the two element-wise pieces of the transformer block that
//! dominate training memory. candle's autograd keeps every intermediate tensor (and its gradient) until
//! the backward pass ends; composed from primitive ops, a layer norm leaves five `[N, D]` tensors behind
//! and quick-GELU three `[N, 4D]` ones. As single ops they leave one each. Used when gradients flow
//! (CoOp and MP-FGVC training) on the CPU; inference uses candle's own fused kernels.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor, D};

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

/// `x · σ(1.702 x)`.
struct QuickGelu;

impl CustomOp1 for QuickGelu {
    fn name(&self) -> &'static str {
        "promptscope-quick-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let y: Vec<f32> = x.iter().map(|&v| v / (1.0 + (-1.702 * v).exp())).collect();
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        // d/dx x·s(ax) = s + a·x·s·(1 - s), s = σ(ax).
        let s = candle_nn::ops::sigmoid(&(x * 1.702)?)?;
        let ds = (&s + ((x * 1.702)? * &s)?.mul(&(1.0 - &s)?)?)?;
        Ok(Some(g.mul(&ds)?))
    }
}

/// Layer norm over the last dimension with affine weight and bias.
struct LayerNormOp {
    eps: f64,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "promptscope-layer-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let b = contiguous_f32(s3, l3, self.name())?;
        let d = w.len();
        if d == 0 || x.len() % d != 0 || b.len() != d {
            candle_core::bail!("{}: shape mismatch", self.name());
        }
        let mut y = vec![0f32; x.len()];
        for (row, out) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / d as f64;
            let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / d as f64;
            let rstd = 1.0 / (var + self.eps).sqrt();
            for i in 0..d {
                out[i] = ((f64::from(row[i]) - mean) * rstd) as f32 * w[i] + b[i];
            }
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = x.dim(D::Minus1)? as f64;
        let centred = x.broadcast_sub(&(x.sum_keepdim(D::Minus1)? / d)?)?;
        let rstd = ((centred.sqr()?.sum_keepdim(D::Minus1)? / d)? + self.eps)?.sqrt()?.recip()?;
        let xhat = centred.broadcast_mul(&rstd)?;
        let gw = g.broadcast_mul(w)?;
        let mean_gw = (gw.sum_keepdim(D::Minus1)? / d)?;
        let mean_gwx = ((&gw * &xhat)?.sum_keepdim(D::Minus1)? / d)?;
        let dx = gw.broadcast_sub(&mean_gw)?.sub(&xhat.broadcast_mul(&mean_gwx)?)?.broadcast_mul(&rstd)?;
        let rows = g.elem_count() / w.elem_count();
        let flat = |t: &Tensor| t.reshape((rows, w.elem_count()));
        let dw = if w.track_op() { Some(flat(&(g * &xhat)?)?.sum(0)?) } else { None };
        let db = if b.track_op() { Some(flat(g)?.sum(0)?) } else { None };
        Ok((Some(dx), dw, db))
    }
}

/// `x · Wᵀ + b` for a frozen `W` `[out, in]` and `b` `[out]`, `x` `[rows, in]`. candle's matmul backward
/// always computes the right operand's gradient too, a product as large as the forward one, even for
/// weights nothing will read; through the frozen text tower that was a third of CoOp's matrix work.
/// This op's backward computes only `∂x = g · W`.
struct FrozenLinear;

impl CustomOp3 for FrozenLinear {
    fn name(&self) -> &'static str {
        "promptscope-frozen-linear"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout, bs: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, inp) = xl.shape().dims2()?;
        let (out, w_in) = wl.shape().dims2()?;
        if w_in != inp {
            candle_core::bail!("{}: input width {inp} vs weight {out}×{w_in}", self.name());
        }
        let y = xs.matmul(ws, (1, rows, out, inp), xl, &wl.transpose(0, 1)?)?;
        let mut y = match y {
            CpuStorage::F32(v) => v,
            _ => candle_core::bail!("{}: only f32 is supported", self.name()),
        };
        let b = contiguous_f32(bs, bl, self.name())?;
        if b.len() != out {
            candle_core::bail!("{}: bias of {} for {out} outputs", self.name(), b.len());
        }
        super::cpu_tower::add_bias(&mut y, out, b);
        Ok((CpuStorage::F32(y), Shape::from((rows, out))))
    }

    fn bwd(&self, _x: &Tensor, w: &Tensor, _b: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        Ok((Some(g.matmul(w)?), None, None))
    }
}

/// `x · Wᵀ + b` over 2-D `x`, as one node whose backward skips the weights' gradients, when the weights
/// are frozen and gradients flow through `x` on the CPU; `None` otherwise (the caller composes it).
pub fn frozen_linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    if x.track_op() && !w.track_op() && !b.track_op() && usable(x) && usable(w) && usable(b) {
        Ok(Some(x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, FrozenLinear)?))
    } else {
        Ok(None)
    }
}

fn usable(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Quick-GELU as one autograd node on the CPU, else composed from primitives.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    if usable(x) {
        x.contiguous()?.apply_op1(QuickGelu)
    } else {
        x.mul(&candle_nn::ops::sigmoid(&(x * 1.702)?)?)
    }
}

/// Differentiable layer norm as one autograd node on the CPU, else `None` (the caller composes it).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    if usable(x) && usable(w) && usable(b) {
        Ok(Some(x.contiguous()?.apply_op3(w, b, LayerNormOp { eps })?))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn grads_match(f_fused: impl Fn(&Tensor) -> Result<Tensor>, f_ref: impl Fn(&Tensor) -> Result<Tensor>) {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.5, (5, 7), &Device::Cpu).unwrap()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (5, 7), &Device::Cpu).unwrap();
        let run = |f: &dyn Fn(&Tensor) -> Result<Tensor>| {
            let y = f(x.as_tensor()).unwrap();
            let g = (&y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            (y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap())
        };
        let (y1, g1) = run(&f_fused);
        let (y2, g2) = run(&f_ref);
        for (a, b) in y1.iter().zip(&y2).chain(g1.iter().zip(&g2)) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn frozen_linear_matches_matmul_values_and_input_gradients() {
        let w = Tensor::randn(0f32, 0.3, (7, 7), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 0.3, 7, &Device::Cpu).unwrap();
        grads_match(|x| Ok(frozen_linear(x, &w, &b)?.expect("tracked cpu f32")), |x| x.matmul(&w.t()?)?.broadcast_add(&b));
        let constant = Tensor::ones((2, 7), DType::F32, &Device::Cpu).unwrap();
        assert!(frozen_linear(&constant, &w, &b).unwrap().is_none(), "no gradient flows: the plain path is as fast");
    }

    #[test]
    fn quick_gelu_matches_composed_ops() {
        grads_match(quick_gelu, |x| x.mul(&candle_nn::ops::sigmoid(&(x * 1.702)?)?));
    }

    #[test]
    fn layer_norm_matches_composed_ops_values_and_gradients() {
        let w = Tensor::randn(1f32, 0.2, 7, &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 0.2, 7, &Device::Cpu).unwrap();
        let eps = 1e-5;
        grads_match(
            |x| Ok(layer_norm(x, &w, &b, eps)?.expect("cpu f32")),
            |x| {
                let c = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
                let v = c.sqr()?.mean_keepdim(D::Minus1)?;
                c.broadcast_div(&(v + eps)?.sqrt()?)?.broadcast_mul(&w)?.broadcast_add(&b)
            },
        );
    }

    #[test]
    fn layer_norm_weight_gradients_when_trained() {
        let x = Tensor::randn(0f32, 1.0, (4, 6), &Device::Cpu).unwrap();
        let w = Var::from_tensor(&Tensor::ones(6, DType::F32, &Device::Cpu).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::zeros(6, DType::F32, &Device::Cpu).unwrap()).unwrap();
        let y = layer_norm(&x, w.as_tensor(), b.as_tensor(), 1e-5).unwrap().unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let db: Vec<f32> = g.get(b.as_tensor()).unwrap().to_vec1().unwrap();
        assert!(db.iter().all(|v| (v - 4.0).abs() < 1e-6), "{db:?}");
        assert!(g.get(w.as_tensor()).is_some());
    }
}
