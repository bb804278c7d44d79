//! Fused ops with a backward pass for the element-wise and per-row pieces of the transformer block, on
//! the CPU and (with the `cuda` feature) the GPU. candle's autograd keeps every intermediate tensor (and
//! its gradient) until the backward pass ends; composed from primitive ops, a layer norm leaves five
//! `[N, D]` tensors behind and quick-GELU three `[N, 4D]` ones, and on the GPU each primitive is a kernel
//! launch: a layer norm was ~10 launches forward and ~20 backward. As single ops they leave one tensor
//! and take one launch each way. Used when gradients flow (CoOp on the GPU, MP-FGVC training); CPU
//! inference and CoOp go through `kernels::cpu`.

use candle_core::backend::BackendStorage;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D,
};

#[cfg(feature = "cuda")]
use super::cuda as cuda_kernels;
use super::{add_bias, contiguous_f32, rows_of};

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

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        Ok((cuda_kernels::quick_gelu(s, l)?, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&g.contiguous()?, &QuickGeluGrad)?))
    }
}

/// `∂x` of quick-GELU from `(x, ∂y)`.
struct QuickGeluGrad;

impl CustomOp2 for QuickGeluGrad {
    fn name(&self) -> &'static str {
        "promptscope-quick-gelu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (
            contiguous_f32(s1, l1, self.name())?,
            contiguous_f32(s2, l2, self.name())?,
        );
        if x.len() != g.len() {
            candle_core::bail!(
                "{}: gradient of {} elements for {}",
                self.name(),
                g.len(),
                x.len()
            );
        }
        // d/dx x·s(ax) = s + a·x·s·(1 - s), s = σ(ax).
        let dx = x
            .iter()
            .zip(g)
            .map(|(&v, &g)| {
                let s = 1.0 / (1.0 + (-1.702 * v).exp());
                g * (s + 1.702 * v * s * (1.0 - s))
            })
            .collect();
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        Ok((
            cuda_kernels::quick_gelu_bwd(s1, l1, s2, l2)?,
            l1.shape().clone(),
        ))
    }
}

/// Softmax over the last dimension.
struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "promptscope-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let (_, d) = rows_of(l);
        let mut y = vec![0f32; x.len()];
        for (row, out) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let m = if m == f32::NEG_INFINITY { 0.0 } else { m };
            let mut total = 0.0;
            for (o, &v) in out.iter_mut().zip(row) {
                *o = (v - m).exp();
                total += *o;
            }
            let inv = if total > 0.0 { 1.0 / total } else { 0.0 };
            out.iter_mut().for_each(|o| *o *= inv);
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        Ok((cuda_kernels::softmax(s, l)?, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxGrad)?))
    }
}

/// `∂x` of the softmax from `(y, ∂y)`: `y · (∂y - Σ ∂y·y)` per row.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "promptscope-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (
            contiguous_f32(s1, l1, self.name())?,
            contiguous_f32(s2, l2, self.name())?,
        );
        let (_, d) = rows_of(l1);
        if y.len() != g.len() {
            candle_core::bail!(
                "{}: gradient of {} elements for {}",
                self.name(),
                g.len(),
                y.len()
            );
        }
        let mut dx = vec![0f32; y.len()];
        for ((yr, gr), out) in y
            .chunks_exact(d)
            .zip(g.chunks_exact(d))
            .zip(dx.chunks_exact_mut(d))
        {
            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
            for ((o, &yv), &gv) in out.iter_mut().zip(yr).zip(gr) {
                *o = yv * (gv - dot);
            }
        }
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        Ok((
            cuda_kernels::softmax_bwd(s1, l1, s2, l2)?,
            l1.shape().clone(),
        ))
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

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let b = contiguous_f32(s3, l3, self.name())?;
        let d = w.len();
        if d == 0 || x.len() % d != 0 || b.len() != d {
            candle_core::bail!("{}: shape mismatch", self.name());
        }
        let mut y = vec![0f32; x.len()];
        for (row, out) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
            let (mean, rstd) = row_stats(row, self.eps);
            for i in 0..d {
                out[i] = ((f64::from(row[i]) - mean) * rstd) as f32 * w[i] + b[i];
            }
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        Ok((
            cuda_kernels::layer_norm(s1, l1, s2, l2, s3, l3, self.eps as f32)?,
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let dx = x.apply_op3_no_bwd(w, &g, &LayerNormGrad { eps: self.eps })?;
        let rows = g.elem_count() / w.elem_count();
        let flat = |t: &Tensor| t.reshape((rows, w.elem_count()));
        // Weight and bias gradients only where they are trained (MP-FGVC's vision blocks): composed.
        let dw = if w.track_op() {
            let d = x.dim(D::Minus1)? as f64;
            let centred = x.broadcast_sub(&(x.sum_keepdim(D::Minus1)? / d)?)?;
            let rstd = ((centred.sqr()?.sum_keepdim(D::Minus1)? / d)? + self.eps)?
                .sqrt()?
                .recip()?;
            Some(flat(&(&g * centred.broadcast_mul(&rstd)?)?)?.sum(0)?)
        } else {
            None
        };
        let db = if b.track_op() {
            Some(flat(&g)?.sum(0)?)
        } else {
            None
        };
        Ok((Some(dx), dw, db))
    }
}

/// Mean and 1/std of one row, in f64 (both layer-norm passes).
fn row_stats(row: &[f32], eps: f64) -> (f64, f64) {
    let d = row.len() as f64;
    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / d;
    let var = row
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / d;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `∂x` of the layer norm from `(x, weight, ∂y)`: `rstd · (g·w - mean(g·w) - x̂ · mean(g·w·x̂))`.
struct LayerNormGrad {
    eps: f64,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "promptscope-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let g = contiguous_f32(s3, l3, self.name())?;
        let d = w.len();
        if d == 0 || x.len() % d != 0 || g.len() != x.len() {
            candle_core::bail!("{}: shape mismatch", self.name());
        }
        let mut dx = vec![0f32; x.len()];
        for ((xr, gr), out) in x
            .chunks_exact(d)
            .zip(g.chunks_exact(d))
            .zip(dx.chunks_exact_mut(d))
        {
            let (mean, rstd) = row_stats(xr, self.eps);
            let (mut sg, mut sgx) = (0f64, 0f64);
            for i in 0..d {
                let gw = f64::from(gr[i]) * f64::from(w[i]);
                sg += gw;
                sgx += gw * (f64::from(xr[i]) - mean) * rstd;
            }
            let (sg, sgx) = (sg / d as f64, sgx / d as f64);
            for i in 0..d {
                let xh = (f64::from(xr[i]) - mean) * rstd;
                out[i] = (rstd * (f64::from(gr[i]) * f64::from(w[i]) - sg - xh * sgx)) as f32;
            }
        }
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        Ok((
            cuda_kernels::layer_norm_bwd(s1, l1, s2, l2, s3, l3, self.eps as f32)?,
            l1.shape().clone(),
        ))
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

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
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
        add_bias(&mut y, out, b);
        Ok((CpuStorage::F32(y), Shape::from((rows, out))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (rows, inp) = xl.shape().dims2()?;
        let (out, w_in) = wl.shape().dims2()?;
        if w_in != inp || bl.shape().elem_count() != out {
            candle_core::bail!(
                "{}: input width {inp} vs weight {out}×{w_in}, bias {}",
                self.name(),
                bl.shape().elem_count()
            );
        }
        Ok((
            cuda_kernels::linear(xs, xl, ws, wl, bs, bl)?,
            Shape::from((rows, out)),
        ))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        Ok((Some(g.matmul(w)?), None, None))
    }
}

/// `x · Wᵀ + b` over 2-D `x`, as one node whose backward skips the weights' gradients, when the weights
/// are frozen and gradients flow through `x` (on the GPU, whenever the weights are frozen); `None`
/// otherwise (the caller composes it).
pub fn frozen_linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    // On the GPU also where no gradient flows: candle's broadcast add of the bias indexes every element
    // through the broadcast strides, and was a fifth of the image tower's GPU time (ours: 1/10 of that).
    let wanted = x.track_op() || !x.device().is_cpu();
    if wanted && !w.track_op() && !b.track_op() && usable(x) && usable(w) && usable(b) {
        Ok(Some(x.contiguous()?.apply_op3(
            &w.contiguous()?,
            &b.contiguous()?,
            FrozenLinear,
        )?))
    } else {
        Ok(None)
    }
}

/// Whether the fused ops run on `x`'s device and dtype (f32 on the CPU, or on CUDA once the kernels
/// compiled).
fn usable(x: &Tensor) -> bool {
    if x.dtype() != DType::F32 {
        return false;
    }
    match x.device() {
        candle_core::Device::Cpu => true,
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(_) => cuda_kernels::available(),
        _ => false,
    }
}

/// Quick-GELU as one op (one autograd node), else composed from primitives.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    if usable(x) {
        x.contiguous()?.apply_op1(QuickGelu)
    } else {
        x.mul(&candle_nn::ops::sigmoid(&(x * 1.702)?)?)
    }
}

/// Differentiable softmax over the last dimension as one autograd node, else `None` (the caller
/// composes it).
pub fn softmax_last_dim(x: &Tensor) -> Result<Option<Tensor>> {
    if usable(x) {
        Ok(Some(x.contiguous()?.apply_op1(SoftmaxLastDim)?))
    } else {
        Ok(None)
    }
}

/// Differentiable layer norm as one autograd node, else `None` (the caller composes it).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    if usable(x) && usable(w) && usable(b) {
        Ok(Some(x.contiguous()?.apply_op3(
            w,
            b,
            LayerNormOp { eps },
        )?))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn grads_match(
        f_fused: impl Fn(&Tensor) -> Result<Tensor>,
        f_ref: impl Fn(&Tensor) -> Result<Tensor>,
    ) {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.5, (5, 7), &Device::Cpu).unwrap()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (5, 7), &Device::Cpu).unwrap();
        let run = |f: &dyn Fn(&Tensor) -> Result<Tensor>| {
            let y = f(x.as_tensor()).unwrap();
            let g = (&y * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (
                y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                g.get(x.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            )
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
        grads_match(
            |x| Ok(frozen_linear(x, &w, &b)?.expect("tracked cpu f32")),
            |x| x.matmul(&w.t()?)?.broadcast_add(&b),
        );
        let constant = Tensor::ones((2, 7), DType::F32, &Device::Cpu).unwrap();
        assert!(
            frozen_linear(&constant, &w, &b).unwrap().is_none(),
            "no gradient flows: the plain path is as fast"
        );
    }

    #[test]
    fn quick_gelu_matches_composed_ops() {
        grads_match(quick_gelu, |x| {
            x.mul(&candle_nn::ops::sigmoid(&(x * 1.702)?)?)
        });
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
                c.broadcast_div(&(v + eps)?.sqrt()?)?
                    .broadcast_mul(&w)?
                    .broadcast_add(&b)
            },
        );
    }

    #[test]
    fn layer_norm_weight_gradients_when_trained() {
        let x = Tensor::randn(0f32, 1.0, (4, 6), &Device::Cpu).unwrap();
        let w = Var::from_tensor(&Tensor::ones(6, DType::F32, &Device::Cpu).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::zeros(6, DType::F32, &Device::Cpu).unwrap()).unwrap();
        let y = layer_norm(&x, w.as_tensor(), b.as_tensor(), 1e-5)
            .unwrap()
            .unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let db: Vec<f32> = g.get(b.as_tensor()).unwrap().to_vec1().unwrap();
        assert!(db.iter().all(|v| (v - 4.0).abs() < 1e-6), "{db:?}");
        assert!(g.get(w.as_tensor()).is_some());
    }
}
