//! VLFM's forward pass against the PyTorch reference of `scripts/make_vlfm_fixtures.py` (1x1 convolutions
//! over the multimodal sequence, as the paper describes it) on the same weights and inputs.

use crate::common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::{fixtures, flat, max_abs_diff, within};
use promptscope::fusion::vlfm::{Vlfm, VlfmConfig};

/// `make_vlfm_fixtures.py`'s pattern(), from a `[a, b, m, scale]` spec.
fn pattern(n: usize, spec: &serde_json::Value) -> Vec<f32> {
    let s: Vec<f64> = serde_json::from_value(spec.clone()).unwrap();
    let (a, b, m, scale) = (s[0] as usize, s[1] as usize, s[2] as usize, s[3] as f32);
    (0..n)
        .map(|i| (((a * i + b) % m) as f32 / (m as f32 / 2.0) - 1.0) * scale)
        .collect()
}

fn tensor(entry: &serde_json::Value) -> Tensor {
    let shape: Vec<usize> = serde_json::from_value(entry["shape"].clone()).unwrap();
    let n = shape.iter().product();
    Tensor::from_vec(pattern(n, &entry["pattern"]), shape, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn vlfm_forward_matches_pytorch() {
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("vlfm_reference.json")).unwrap(),
    )
    .unwrap();
    let n = |k: &str| r[k].as_u64().unwrap() as usize;
    let cfg = VlfmConfig {
        dim: n("dim"),
        num_classes: n("classes"),
        expansion: n("expansion"),
        seed: 0,
    };
    let weights: HashMap<String, Tensor> = r["weights"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), tensor(v)))
        .collect();
    let vlfm = Vlfm::from_tensors(&cfg, &weights, &Device::Cpu).unwrap();
    let out = vlfm
        .forward(&tensor(&r["inputs"]["e_v"]), &tensor(&r["inputs"]["e_t"]))
        .unwrap();
    let mut worst = 0f32;
    for (name, ours) in [
        ("attention", &out.attention),
        ("fused", &out.fused),
        ("refined", &out.refined),
        ("logits", &out.logits),
    ] {
        let diff = max_abs_diff(&values(ours), &flat(&r[name]));
        within(&format!("VLFM {name} vs PyTorch"), diff as f64, 1e-4);
        worst = worst.max(diff);
    }
    println!("VLFM max difference over attention, E'_V, Ê_V and logits: {worst:.2e}");
}
