//! CLIP-Adapter and Tip-Adapter-F against their PyTorch code (scripts/make_adapter_fixtures.py): the
//! parameters after every epoch of full-batch training on the same features, compared on their
//! movement from the initial values.

use crate::common;

use candle_core::{Device, Tensor, Var};
use common::{fixtures, flat, within};
use promptscope::train::adapters::{Adapter, AdapterTrainer};
use promptscope::train::epoch_loop::{run_until, TrainSet};
use promptscope::train::features::FeatureSet;
use promptscope::train::tip_adapter::TipCache;

/// Trains `adapter` epoch by epoch and compares its parameters with the fixture's after each.
fn follows(
    name: &str,
    case: &serde_json::Value,
    r: &serde_json::Value,
    adapter: Adapter,
    train: &FeatureSet,
    weights: &Tensor,
) {
    let init: Vec<f32> = adapter
        .vars()
        .iter()
        .flat_map(|v| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect();
    let o = common::optim_config(&case["optim"]);
    let epochs = o.epochs;
    let mut t = AdapterTrainer::new(
        adapter,
        weights.clone(),
        r["scale"].as_f64().unwrap(),
        train,
        None,
        o,
        None,
        1,
    );
    let set = TrainSet {
        items: train.labels.len(),
        views: 1,
    };
    for e in 0..epochs {
        let mut loss = None;
        run_until(
            &mut t,
            set,
            e + 1,
            "",
            &promptscope::progress::Silent,
            &mut |ev, _| {
                if let promptscope::train::epoch_loop::TrainEvent::Epoch(s) = ev {
                    loss = Some(s.loss);
                }
            },
        )
        .unwrap();
        let ours: Vec<f32> = t
            .adapter
            .vars()
            .iter()
            .flat_map(|v| {
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect();
        let theirs: Vec<f32> = match &case["params"][e] {
            serde_json::Value::Array(a) if a.first().is_some_and(|x| x.is_array()) => {
                a.iter().flat_map(flat).collect()
            }
            v => flat(v),
        };
        within(
            &format!("{name} epoch {e}: parameter change vs PyTorch (relative)"),
            common::relative_change(&ours, &theirs, &init),
            1e-4,
        );
        within(
            &format!("{name} epoch {e}: loss vs PyTorch"),
            (loss.unwrap() - case["loss"][e].as_f64().unwrap()).abs(),
            1e-4,
        );
    }
}

#[test]
fn clip_adapter_and_tip_adapter_f_follow_pytorch() {
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("adapter_reference.json")).unwrap(),
    )
    .unwrap();
    let dim = |k: &str| r["dims"][k].as_u64().unwrap() as usize;
    let (c, p, n) = (dim("C"), dim("P"), dim("N"));
    let d = Device::Cpu;
    let train = FeatureSet {
        feats: Tensor::from_vec(common::pattern(n * p, 5, 3, 53, 1.0), (n, p), &d).unwrap(),
        labels: serde_json::from_value(r["labels"].clone()).unwrap(),
        views_per_image: 1,
    };
    let weights = Tensor::from_vec(flat(&r["weights"]), (c, p), &d).unwrap();

    let ca = &r["clip_adapter"];
    let init = ca["init"].as_array().unwrap();
    let down =
        Var::from_tensor(&Tensor::from_vec(flat(&init[0]), (p / 4, p), &d).unwrap()).unwrap();
    let up = Var::from_tensor(&Tensor::from_vec(flat(&init[1]), (p, p / 4), &d).unwrap()).unwrap();
    follows(
        "CLIP-Adapter",
        ca,
        &r,
        Adapter::Clip {
            down,
            up,
            ratio: ca["ratio"].as_f64().unwrap(),
        },
        &train,
        &weights,
    );

    let tf = &r["tip_f"];
    let cache = TipCache::build(&train, c).unwrap();
    let keys: Vec<f32> = cache.keys.flatten_all().unwrap().to_vec1().unwrap();
    assert!(
        common::max_abs_diff(&keys, &flat(&tf["init"])) < 1e-6,
        "the cache's keys are Tip-Adapter-F's initial weights"
    );
    let adapter = Adapter::tip_f(
        &cache,
        tf["alpha"].as_f64().unwrap(),
        tf["beta"].as_f64().unwrap(),
    )
    .unwrap();
    follows("Tip-Adapter-F", tf, &r, adapter, &train, &weights);
}
