//! CoOp in promptscope against CoOp's PyTorch code (scripts/make_coop_fixtures.py) on the same tiny CLIP
//! and image features: full batch, no augmentation; the context after every epoch must agree. Runs on
//! `common::device()` (the CPU, or a GPU with `PROMPTSCOPE_TEST_DEVICE=cuda`).

use crate::common;

use std::sync::atomic::AtomicBool;

use candle_core::Tensor;
use common::*;
use promptscope::prompt::coop::{ClassPosition, CoopConfig, PromptLearner};
use promptscope::train::coop::{Features, TrainConfig, TrainEvent, Trainer};

fn coop_reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("coop_reference.json")).unwrap())
        .unwrap()
}

/// `kg_lambda > 0`: KgCoOp, anchored on the fixture's hand-crafted template.
fn trajectory_matches(case: &str, cfg: CoopConfig, set_init: bool, kg_lambda: f64) {
    let r = coop_reference();
    let c = &r[case];
    let dir = model_dir("tiny", &reference());
    let clip = promptscope::clip::load(dir.path().to_str().unwrap(), &device()).unwrap();
    let classes: Vec<String> = serde_json::from_value(r["classes"].clone()).unwrap();
    let mut learner = PromptLearner::new(
        &clip.model().unwrap().text,
        clip.tokenizer().unwrap(),
        &classes,
        &cfg,
    )
    .unwrap();
    let shape: Vec<usize> = serde_json::from_value(c["shape"].clone()).unwrap();
    assert_eq!(learner.ctx.dims(), shape.as_slice());
    let init = flat(&c["init"]);
    if set_init {
        learner
            .set_ctx(&Tensor::from_vec(init.clone(), shape.clone(), &clip.device).unwrap())
            .unwrap();
    } else {
        let ours: Vec<f32> = learner
            .ctx
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            max_abs_diff(&ours, &init) < 1e-7,
            "phrase initialisation differs from CoOp's"
        );
    }
    let optim = common::optim_config(&r["optim"]);
    let n = r["n_images"].as_u64().unwrap() as usize;
    let p = clip.model().unwrap().config.projection_dim;
    let train = Features {
        feats: Tensor::from_vec(common::pattern(n * p, 5, 3, 53, 1.0), (n, p), &clip.device)
            .unwrap(),
        labels: serde_json::from_value(r["labels"].clone()).unwrap(),
        views_per_image: 1,
    };
    let epochs = optim.epochs;
    let anchor = (kg_lambda > 0.0).then(|| {
        let template = r["kg_template"].as_str().unwrap().to_string();
        promptscope::eval::zeroshot::class_weights(
            &clip,
            &classes,
            &[template],
            &promptscope::progress::Silent,
        )
        .unwrap()
    });
    let mut trainer = Trainer::new(
        &clip.model().unwrap().text,
        learner,
        TrainConfig {
            optim,
            batch_size: None,
            seed: 1,
        },
        clip.model().unwrap().logit_scale(),
    );
    if let Some(a) = anchor {
        trainer = trainer.with_kg_anchor(a, kg_lambda).unwrap();
    }
    let mut ctx_per_epoch = vec![];
    let mut losses = vec![];
    let mut lrs = vec![];
    let cancel = AtomicBool::new(false);
    let progress = promptscope::progress::Reporter {
        cancel: &cancel,
        on_update: |_: &str, _, _| {},
    };
    // Epoch by epoch, reading the context after each.
    for e in 0..epochs {
        let mut on_event = |ev: TrainEvent| {
            if let TrainEvent::Epoch(s) = ev {
                losses.push(s.loss);
                lrs.push(s.lr);
            }
        };
        trainer
            .run_until(&train, None, e + 1, None, &progress, &mut on_event)
            .unwrap();
        assert_eq!(trainer.state.epoch, e + 1);
        ctx_per_epoch.push(
            trainer
                .learner
                .ctx
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
    }
    let theirs: Vec<Vec<f32>> = c["ctx"].as_array().unwrap().iter().map(flat).collect();
    for (e, (ours, theirs)) in ctx_per_epoch.iter().zip(&theirs).enumerate() {
        let rel = common::relative_change(ours, theirs, &init);
        within(
            &format!("{case} epoch {e}: context change vs PyTorch (relative)"),
            rel,
            1e-4,
        );
        within(
            &format!("{case} epoch {e}: loss vs PyTorch"),
            (losses[e] - c["loss"][e].as_f64().unwrap()).abs(),
            1e-4,
        );
        assert!((lrs[e] - c["lr"][e].as_f64().unwrap()).abs() < 1e-12);
    }
}

#[test]
fn unified_end_phrase_init_follows_pytorch() {
    let cfg = CoopConfig {
        n_ctx: 0,
        ctx_init: Some("a photo of a".into()),
        csc: false,
        class_position: ClassPosition::End,
        seed: 1,
    };
    trajectory_matches("unified_end_phrase", cfg, false, 0.0);
}

#[test]
fn csc_middle_follows_pytorch() {
    let cfg = CoopConfig {
        n_ctx: 4,
        ctx_init: None,
        csc: true,
        class_position: ClassPosition::Middle,
        seed: 1,
    };
    trajectory_matches("csc_middle_random", cfg, true, 0.0);
}

#[test]
fn unified_front_follows_pytorch() {
    let cfg = CoopConfig {
        n_ctx: 4,
        ctx_init: None,
        csc: false,
        class_position: ClassPosition::Front,
        seed: 1,
    };
    trajectory_matches("unified_front_random", cfg, true, 0.0);
}

/// KgCoOp (Yao et al. 2023): CoOp's loss plus λ·(1 − mean cos) to the hand-crafted prompt's class
/// features, λ = 8, against KgCoOp's PyTorch loss on the same model.
#[test]
fn kgcoop_follows_pytorch() {
    let cfg = CoopConfig {
        n_ctx: 4,
        ctx_init: None,
        csc: false,
        class_position: ClassPosition::End,
        seed: 1,
    };
    trajectory_matches("kgcoop_unified_end_random", cfg, true, 8.0);
}

/// CoCoOp (Zhou et al. 2022): the context and the meta-net together, each image with its own prompts
/// (`ctx + π(x)`), against CoCoOp's PyTorch forward on the same model and features.
#[test]
fn cocoop_follows_pytorch() {
    use candle_core::Var;
    use promptscope::prompt::cocoop::MetaNet;
    let r = coop_reference();
    let c = &r["cocoop_end_phrase"];
    let dir = model_dir("tiny", &reference());
    let clip = promptscope::clip::load(dir.path().to_str().unwrap(), &device()).unwrap();
    let classes: Vec<String> = serde_json::from_value(r["classes"].clone()).unwrap();
    let cfg = CoopConfig {
        n_ctx: 0,
        ctx_init: Some("a photo of a".into()),
        csc: false,
        class_position: ClassPosition::End,
        seed: 1,
    };
    let learner = PromptLearner::new(
        &clip.model().unwrap().text,
        clip.tokenizer().unwrap(),
        &classes,
        &cfg,
    )
    .unwrap();
    let init: Vec<Vec<f32>> = c["init"].as_array().unwrap().iter().map(flat).collect();
    let ours: Vec<f32> = learner
        .ctx
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(
        max_abs_diff(&ours, &init[0]) < 1e-7,
        "phrase initialisation differs from CoCoOp's"
    );
    let (p, d) = (
        clip.model().unwrap().config.projection_dim,
        clip.model().unwrap().config.text_config.hidden_size,
    );
    let h = (p / 16).max(1);
    let var = |v: &[f32], shape: &[usize]| {
        Var::from_tensor(&Tensor::from_vec(v.to_vec(), shape, &clip.device).unwrap()).unwrap()
    };
    let meta = MetaNet {
        w1: var(&init[1], &[h, p]),
        b1: var(&init[2], &[h]),
        w2: var(&init[3], &[d, h]),
        b2: var(&init[4], &[d]),
    };
    let optim = common::optim_config(&c["optim"]);
    let n = r["n_images"].as_u64().unwrap() as usize;
    let train = Features {
        feats: Tensor::from_vec(common::pattern(n * p, 5, 3, 53, 1.0), (n, p), &clip.device)
            .unwrap(),
        labels: serde_json::from_value(r["labels"].clone()).unwrap(),
        views_per_image: 1,
    };
    let epochs = optim.epochs;
    let config = TrainConfig {
        optim,
        batch_size: None,
        seed: 1,
    };
    let mut t = Trainer::new(
        &clip.model().unwrap().text,
        learner,
        config,
        clip.model().unwrap().logit_scale(),
    )
    .with_meta_net(meta);
    let base: Vec<f32> = init.concat();
    for e in 0..epochs {
        let mut loss = None;
        t.run_until(
            &train,
            None,
            e + 1,
            None,
            &promptscope::progress::Silent,
            &mut |ev| {
                if let TrainEvent::Epoch(s) = ev {
                    loss = Some(s.loss);
                }
            },
        )
        .unwrap();
        let [w1, b1, w2, b2] = t.meta_net().unwrap().vars();
        let ours: Vec<f32> = [&t.learner.ctx, w1, b1, w2, b2]
            .iter()
            .flat_map(|v| {
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect();
        let theirs: Vec<f32> = c["params"][e]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(flat)
            .collect();
        within(
            &format!("CoCoOp epoch {e}: context and meta-net change vs PyTorch (relative)"),
            common::relative_change(&ours, &theirs, &base),
            1e-4,
        );
        within(
            &format!("CoCoOp epoch {e}: loss vs PyTorch"),
            (loss.unwrap() - c["loss"][e].as_f64().unwrap()).abs(),
            1e-4,
        );
    }
}

/// A checkpoint records which CoOp-family member wrote it, so a KgCoOp checkpoint does not resume a CoOp
/// run (or one with another λ) as if it were its own; checkpoints from before that entry existed
/// (KgCoOp's λ inside the train config) still resume the run they came from.
#[test]
fn a_checkpoint_resumes_only_the_variant_that_wrote_it() {
    use promptscope::prompt::CoopVariant;
    let r = coop_reference();
    let dir = model_dir("tiny", &reference());
    let clip = promptscope::clip::load(dir.path().to_str().unwrap(), &device()).unwrap();
    let classes: Vec<String> = serde_json::from_value(r["classes"].clone()).unwrap();
    let text = &clip.model().unwrap().text;
    let p = clip.model().unwrap().config.projection_dim;
    let n = r["n_images"].as_u64().unwrap() as usize;
    let train = Features {
        feats: Tensor::from_vec(common::pattern(n * p, 5, 3, 53, 1.0), (n, p), &clip.device)
            .unwrap(),
        labels: serde_json::from_value(r["labels"].clone()).unwrap(),
        views_per_image: 1,
    };
    let config = TrainConfig {
        optim: promptscope::train::optim::OptimConfig {
            epochs: 2,
            ..Default::default()
        },
        batch_size: None,
        seed: 1,
    };
    let anchor = promptscope::eval::zeroshot::class_weights(
        &clip,
        &classes,
        &["a photo of a {}.".to_string()],
        &promptscope::progress::Silent,
    )
    .unwrap();
    let trainer = |variant: CoopVariant| {
        let cfg = CoopConfig {
            n_ctx: 4,
            ..Default::default()
        };
        let learner = PromptLearner::new(text, clip.tokenizer().unwrap(), &classes, &cfg).unwrap();
        let t = Trainer::new(text, learner, config.clone(), clip.logit_scale());
        match variant {
            CoopVariant::Kgcoop { lambda } => t.with_kg_anchor(anchor.clone(), lambda).unwrap(),
            _ => t,
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("kg.ckpt.safetensors");
    let kg8 = CoopVariant::Kgcoop { lambda: 8.0 };
    let mut first = trainer(kg8);
    let cancel = AtomicBool::new(false);
    let progress = promptscope::progress::Reporter {
        cancel: &cancel,
        on_update: |_: &str, _, _| {},
    };
    first
        .run_until(&train, None, 1, Some(&ckpt), &progress, &mut |_| {})
        .unwrap();
    let refusal = |v: CoopVariant| trainer(v).resume(&ckpt).err().map(|e| e.to_string());
    assert!(refusal(kg8).is_none(), "{:?}", refusal(kg8));
    let coop = refusal(CoopVariant::Coop).expect("CoOp refuses KgCoOp's checkpoint");
    assert!(
        coop.contains("is a KgCoOp λ=8 checkpoint, and this run is CoOp"),
        "{coop}"
    );
    assert!(refusal(CoopVariant::Kgcoop { lambda: 2.0 }).is_some());
    // The same checkpoint as written before the variant entry: λ in the train config.
    common::edit_safetensors_meta(&ckpt, |meta| {
        meta.remove("variant");
        let mut train_config: serde_json::Value =
            serde_json::from_str(&meta["train_config"]).unwrap();
        train_config["kg_lambda"] = 8.0.into();
        meta.insert("train_config".into(), train_config.to_string());
    });
    assert!(refusal(kg8).is_none(), "{:?}", refusal(kg8));
    assert!(refusal(CoopVariant::Coop).is_some());
}
