//! Tip-Adapter against its own PyTorch code (scripts/make_tip_fixtures.py): the cache from augmented
//! views, the (α, β) its grid search picks on validation, and the logits.

use crate::common;

use candle_core::{Device, Tensor};
use common::{fixtures, flat};
use promptscope::train::features::FeatureSet;
use promptscope::train::tip_adapter::{SearchGrid, TipCache};

#[test]
fn tip_adapter_searches_and_scores_as_its_pytorch_code() {
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("tip_reference.json")).unwrap(),
    )
    .unwrap();
    let dim = |k: &str| r["dims"][k].as_u64().unwrap() as usize;
    let (c, p, k, v, n_val, n_test) = (
        dim("C"),
        dim("P"),
        dim("K"),
        dim("V"),
        dim("n_val"),
        dim("n_test"),
    );
    let d = Device::Cpu;
    let n_train = c * k;
    let train_raw = common::pattern(n_train * v * p, 5, 3, 53, 1.0);
    let train = FeatureSet {
        feats: Tensor::from_vec(train_raw.clone(), (n_train * v, p), &d).unwrap(),
        labels: (0..n_train * v).map(|row| row / v / k).collect(),
        views_per_image: v,
    };
    // Validation and test: a view of a training image plus a pattern (the script's construction).
    let copy = |n: usize, view: usize, noise: Vec<f32>| -> Vec<f32> {
        (0..n)
            .flat_map(|i| (0..p).map(move |j| (i, j)))
            .map(|(i, j)| train_raw[((i % n_train) * v + view) * p + j] + noise[i * p + j])
            .collect()
    };
    let val_labels: Vec<usize> = serde_json::from_value(r["val_labels"].clone()).unwrap();
    let val = FeatureSet {
        feats: Tensor::from_vec(
            copy(n_val, 1, common::pattern(n_val * p, 7, 5, 61, 0.9)),
            (n_val, p),
            &d,
        )
        .unwrap(),
        labels: val_labels,
        views_per_image: 1,
    };
    let test = Tensor::from_vec(
        copy(n_test, 2, common::pattern(n_test * p, 11, 4, 67, 0.9)),
        (n_test, p),
        &d,
    )
    .unwrap();
    let weights = Tensor::from_vec(flat(&r["weights"]), (c, p), &d).unwrap();
    let scale = r["scale"].as_f64().unwrap();

    let cache = TipCache::build(&train, c).unwrap();
    let s = cache
        .search(&val, &weights, scale, &SearchGrid::default())
        .unwrap();
    let best = &r["best"];
    println!("Tip-Adapter search: ours {s:?}, PyTorch {best}");
    assert!(
        (s.alpha - best["alpha"].as_f64().unwrap()).abs() < 1e-12
            && (s.beta - best["beta"].as_f64().unwrap()).abs() < 1e-12
    );
    assert!((s.val_acc - best["val_acc"].as_f64().unwrap()).abs() < 1e-6);
    assert!(
        s.val_acc > r["zero_shot_val_acc"].as_f64().unwrap(),
        "the fixture's cache must matter"
    );

    for (key, (alpha, beta)) in [
        ("test_logits", (s.alpha, s.beta)),
        ("test_logits_fixed", (1.17, 1.0)),
    ] {
        let ours: Vec<f32> = cache
            .logits(&test, &weights, scale, alpha, beta)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let theirs = flat(&r[key]);
        let top = theirs.iter().fold(0f32, |m, x| m.max(x.abs()));
        let rel = f64::from(common::max_abs_diff(&ours, &theirs) / top);
        common::within(
            &format!("Tip-Adapter {key} vs PyTorch (relative to the largest logit)"),
            rel,
            1e-5,
        );
    }
}
