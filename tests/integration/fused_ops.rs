//! The fused ops (`clip::kernels::fused`) against the same maths composed from candle's primitives: values and
//! gradients, on the test device (the CPU, or the GPU with `PROMPTSCOPE_TEST_DEVICE=cuda`, where they
//! are the NVRTC kernels of `fused_kernels.cu`). Shapes as in the towers: rows wider than a warp,
//! row counts that are not a multiple of the rows per block, a causally masked softmax.

use crate::common;

use candle_core::{DType, Device, Result, Tensor, Var, D};
use promptscope::clip::kernels::fused;

/// Fused vs composed, relative to the largest value: worst 2.6e-7 on the AVX-512 kernels, 5.7e-7 on AVX2+FMA (random inputs each run; ≥ 17× margin).
const BOUND: f64 = 1e-5;

/// Relative max difference of `y = f(x)` and of `∂(Σ y·probe)/∂x` (and of the extra parameters'
/// gradients) between the fused and the composed version.
fn compare(
    what: &str,
    shape: (usize, usize),
    extra: &[Var],
    fused: &dyn Fn(&Tensor) -> Result<Tensor>,
    composed: &dyn Fn(&Tensor) -> Result<Tensor>,
) {
    let dev = common::device();
    let x = Var::from_tensor(
        &Tensor::randn(0f32, 1.5, shape, &Device::Cpu)
            .unwrap()
            .to_device(&dev)
            .unwrap(),
    )
    .unwrap();
    let out_shape = composed(x.as_tensor()).unwrap().shape().clone();
    let probe = Tensor::randn(0f32, 1.0, out_shape, &Device::Cpu)
        .unwrap()
        .to_device(&dev)
        .unwrap();
    let run = |f: &dyn Fn(&Tensor) -> Result<Tensor>| {
        let y = f(x.as_tensor()).expect(what);
        let grads = (&y * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let flat = |t: &Tensor| {
            t.flatten_all()
                .unwrap()
                .to_device(&Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let mut out = vec![
            flat(&y),
            flat(grads.get(x.as_tensor()).expect("input gradient")),
        ];
        for v in extra {
            out.push(flat(grads.get(v.as_tensor()).expect("parameter gradient")));
        }
        out
    };
    let (a, b) = (run(fused), run(composed));
    for (i, (a, b)) in a.iter().zip(&b).enumerate() {
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let diff = a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        let part = [
            "value",
            "input gradient",
            "weight gradient",
            "bias gradient",
        ][i.min(3)];
        common::within(
            &format!(
                "{what} on {:?}: fused vs composed {part} (relative)",
                common::device()
            ),
            (diff / scale) as f64,
            BOUND,
        );
        assert!(a.iter().all(|v| v.is_finite()), "{what}: {part} not finite");
    }
}

#[test]
fn quick_gelu_matches_composed_ops() {
    compare(
        "quick-gelu",
        (37, 3072),
        &[],
        &|x| fused::quick_gelu(x),
        &|x| x.mul(&candle_nn::ops::sigmoid(&(x * 1.702)?)?),
    );
}

fn composed_layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let c = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let v = c.sqr()?.mean_keepdim(D::Minus1)?;
    c.broadcast_div(&(v + eps)?.sqrt()?)?
        .broadcast_mul(w)?
        .broadcast_add(b)
}

#[test]
fn layer_norm_matches_composed_ops() {
    let dev = common::device();
    let w = Tensor::randn(1f32, 0.2, 768, &Device::Cpu)
        .unwrap()
        .to_device(&dev)
        .unwrap();
    let b = Tensor::randn(0f32, 0.2, 768, &Device::Cpu)
        .unwrap()
        .to_device(&dev)
        .unwrap();
    compare(
        "layer norm",
        (37, 768),
        &[],
        &|x| Ok(fused::layer_norm(x, &w, &b, 1e-5)?.expect("supported device")),
        &|x| composed_layer_norm(x, &w, &b, 1e-5),
    );
}

#[test]
fn layer_norm_with_trained_weight_and_bias_matches_composed_ops() {
    let dev = common::device();
    let w = Var::from_tensor(
        &Tensor::randn(1f32, 0.2, 512, &Device::Cpu)
            .unwrap()
            .to_device(&dev)
            .unwrap(),
    )
    .unwrap();
    let b = Var::from_tensor(
        &Tensor::randn(0f32, 0.2, 512, &Device::Cpu)
            .unwrap()
            .to_device(&dev)
            .unwrap(),
    )
    .unwrap();
    compare(
        "layer norm (trained)",
        (9, 512),
        &[w.clone(), b.clone()],
        &|x| {
            Ok(
                fused::layer_norm(x, w.as_tensor(), b.as_tensor(), 1e-6)?
                    .expect("supported device"),
            )
        },
        &|x| composed_layer_norm(x, w.as_tensor(), b.as_tensor(), 1e-6),
    );
}

#[test]
fn causal_softmax_matches_composed_ops() {
    let dev = common::device();
    // 5 heads × 13 queries over 13 keys (rows of a causal attention), flattened to rows.
    let mask: Vec<f32> = (0..5 * 13)
        .flat_map(|r| (0..13).map(move |j| if j > r % 13 { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (65, 13), &dev).unwrap();
    compare(
        "causal softmax",
        (65, 13),
        &[],
        &|x| Ok(fused::softmax_last_dim(&x.add(&mask)?)?.expect("supported device")),
        &|x| candle_nn::ops::softmax(&x.add(&mask)?, D::Minus1),
    );
    compare(
        "softmax, rows of 77",
        (130, 77),
        &[],
        &|x| Ok(fused::softmax_last_dim(x)?.expect("supported device")),
        &|x| candle_nn::ops::softmax(x, D::Minus1),
    );
}

#[test]
fn frozen_linear_matches_matmul() {
    let dev = common::device();
    let w = Tensor::randn(0f32, 0.05, (384, 768), &Device::Cpu)
        .unwrap()
        .to_device(&dev)
        .unwrap();
    let b = Tensor::randn(0f32, 0.3, 384, &Device::Cpu)
        .unwrap()
        .to_device(&dev)
        .unwrap();
    compare(
        "frozen linear",
        (21, 768),
        &[],
        &|x| Ok(fused::frozen_linear(x, &w, &b)?.expect("tracked f32 on a supported device")),
        &|x| x.matmul(&w.t()?)?.broadcast_add(&b),
    );
}

#[test]
fn untracked_frozen_linear_is_fused_on_the_gpu_only() {
    let dev = common::device();
    let w = Tensor::randn(0f32, 0.05, (40, 96), &Device::Cpu)
        .unwrap()
        .to_device(&dev)
        .unwrap();
    let b = Tensor::randn(0f32, 0.3, 40, &Device::Cpu)
        .unwrap()
        .to_device(&dev)
        .unwrap();
    let x = Tensor::randn(0f32, 1.0, (50, 96), &Device::Cpu)
        .unwrap()
        .to_device(&dev)
        .unwrap();
    match fused::frozen_linear(&x, &w, &b).unwrap() {
        None => assert!(dev.is_cpu(), "fused on the GPU even without a gradient"),
        Some(y) => {
            assert!(
                !dev.is_cpu(),
                "on the CPU untracked products stay with candle's matmul"
            );
            let want = x
                .matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
            let diff = (y - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            common::within(
                "frozen linear: fused vs candle's matmul + bias (absolute)",
                diff as f64,
                1e-5,
            );
        }
    }
}

#[test]
fn other_dtypes_fall_back_to_composed_ops() {
    let dev = common::device();
    let x = Tensor::ones((2, 8), DType::F64, &dev).unwrap();
    let w = Tensor::ones(8, DType::F64, &dev).unwrap();
    assert!(fused::layer_norm(&x, &w, &w, 1e-5).unwrap().is_none());
    assert!(fused::softmax_last_dim(&x).unwrap().is_none());
    let y = fused::quick_gelu(&x)
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    assert!((y[0][0] - 1.0 / (1.0 + (-1.702f64).exp())).abs() < 1e-12);
}
