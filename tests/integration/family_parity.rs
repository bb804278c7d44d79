//! SigLIP and Chinese-CLIP (run by candle-transformers) against transformers on tiny random-weight models
//! in the real layout (`scripts/make_family_fixtures.py`): the ids our tokenisation gives, the pixels our
//! preprocessing gives, and the global features and logit scale, from the model folders as a user passes
//! them. Then what a user does with such a model: zero-shot and a feature adapter from the command line,
//! and a clear refusal for what needs CLIP's token-level access.

use std::path::PathBuf;

use promptscope::clip::{encode, load, Family};
use promptscope::progress::Silent;

use super::common::{error_line, fixtures, flat, max_abs_diff, ok, promptscope, within};

fn folder(name: &str) -> PathBuf {
    fixtures().join("families").join(name)
}

fn reference(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(folder(name).join("reference.json")).unwrap())
        .unwrap()
}

fn images() -> Vec<PathBuf> {
    (0..2)
        .map(|i| fixtures().join("families").join(format!("image{i}.png")))
        .collect()
}

fn check(name: &str, family: Family) {
    let r = reference(name);
    let clip = load::load(folder(name).to_str().unwrap(), &candle_core::Device::Cpu).unwrap();
    assert_eq!(clip.family(), family);
    let captions: Vec<String> = r["captions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();

    let enc = clip.global().unwrap().encode(&captions).unwrap();
    let want_ids: Vec<Vec<u32>> = serde_json::from_value(r["ids"].clone()).unwrap();
    assert_eq!(enc.ids, want_ids, "{name}: token ids");
    if let Some(mask) = r.get("mask") {
        assert_eq!(
            enc.mask.as_ref(),
            Some(&serde_json::from_value::<Vec<Vec<u32>>>(mask.clone()).unwrap()),
            "{name}: mask"
        );
    }

    let pixels = encode::pixel_batch(&clip, &images()).unwrap();
    let px: Vec<f32> = pixels.flatten_all().unwrap().to_vec1().unwrap();
    within(
        &format!("{name}: pixels vs the image processor (PIL)"),
        f64::from(max_abs_diff(&px, &flat(&r["pixels"]))),
        1e-5,
    );

    let text: Vec<f32> = encode::text_features(&clip, &captions, 4, &Silent)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    within(
        &format!("{name}: text features vs transformers"),
        f64::from(max_abs_diff(&text, &flat(&r["text"]))),
        1e-4,
    );
    let image: Vec<f32> = encode::image_features(&clip, &images(), 1, &Silent)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    within(
        &format!("{name}: image features vs transformers"),
        f64::from(max_abs_diff(&image, &flat(&r["image"]))),
        1e-4,
    );
    // The features are not all alike (a model that ignored its input would pass the bounds above on
    // nearly constant features only if transformers did too).
    assert!(
        max_abs_diff(
            &text[..clip.projection_dim()],
            &text[clip.projection_dim()..2 * clip.projection_dim()]
        ) > 1e-2
    );

    within(
        &format!("{name}: logit scale"),
        f64::from((clip.logit_scale() - r["logit_scale"].as_f64().unwrap() as f32).abs()),
        1e-6,
    );
    if let Some(bias) = r.get("logit_bias") {
        let ours = clip.global().unwrap().logit_bias.unwrap();
        within(
            &format!("{name}: logit bias"),
            (f64::from(ours) - bias.as_f64().unwrap()).abs(),
            1e-6,
        );
    }
}

#[test]
fn siglip_matches_transformers() {
    check("siglip", Family::Siglip);
}

#[test]
fn chinese_clip_matches_transformers() {
    check("chinese_clip", Family::ChineseClip);
}

#[test]
fn a_global_feature_family_runs_zero_shot_and_adapters_and_refuses_prompt_learning_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = tmp.path().join("d");
    promptscope::data::synth::write_dataset(&ds, 3, 0, Some((2, 1, 2)), 7).unwrap();
    let (ds, model) = (ds.to_str().unwrap(), folder("siglip"));
    let model = model.to_str().unwrap();

    let v: serde_json::Value = serde_json::from_str(&ok(&promptscope(&[
        "zero-shot",
        "--model",
        model,
        "--data",
        ds,
        "--format",
        "json",
    ])))
    .unwrap();
    assert_eq!(v["total"], 6);
    let v: serde_json::Value = serde_json::from_str(&ok(&promptscope(&[
        "adapter",
        "--method",
        "tip-adapter",
        "--model",
        model,
        "--data",
        ds,
        "--shots",
        "1",
        "--views",
        "1",
        "--format",
        "json",
    ])))
    .unwrap();
    assert!(v.to_string().contains("accuracy"), "{v}");

    let line = error_line(&promptscope(&[
        "train",
        "--model",
        model,
        "--data",
        ds,
        "--shots",
        "1",
        "--epochs",
        "1",
        "--out",
        &tmp.path().join("p.safetensors").display().to_string(),
    ]));
    for needle in ["SigLIP", "token-level", "zero-shot", "Tip-Adapter"] {
        assert!(line.contains(needle), "{needle:?} not in {line:?}");
    }
    // Every explanation map reads CLIP's blocks: refused with the reason, per method.
    let image = std::fs::read_dir(tmp.path().join("d").join("test"))
        .unwrap()
        .flat_map(|c| std::fs::read_dir(c.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .next()
        .unwrap();
    for (method, extra) in [("naclip", None), ("rollout", Some("class token"))] {
        let line = error_line(&promptscope(&[
            "align",
            "--model",
            model,
            "--image",
            image.to_str().unwrap(),
            "--text",
            "a dog.",
            "--method",
            method,
        ]));
        for needle in [method, "SigLIP", "global features only"]
            .into_iter()
            .chain(extra)
        {
            assert!(line.contains(needle), "{needle:?} not in {line:?}");
        }
    }
}

#[test]
fn an_unknown_model_type_names_the_supported_families() {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(folder("siglip").join(f), tmp.path().join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(tmp.path().join("config.json"))
        .unwrap()
        .replace("\"model_type\": \"siglip\"", "\"model_type\": \"blip\"");
    std::fs::write(tmp.path().join("config.json"), cfg).unwrap();
    let line = error_line(&promptscope(&[
        "embed",
        "--model",
        tmp.path().to_str().unwrap(),
        "--text",
        "x",
    ]));
    for needle in ["config.json", "blip", "siglip", "chinese_clip"] {
        assert!(line.contains(needle), "{needle:?} not in {line:?}");
    }
    // A SigLIP folder without its tokenizer says how to get one.
    std::fs::write(
        tmp.path().join("config.json"),
        std::fs::read(folder("siglip").join("config.json")).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
    let line = error_line(&promptscope(&[
        "embed",
        "--model",
        tmp.path().to_str().unwrap(),
        "--text",
        "x",
    ]));
    assert!(
        line.contains("tokenizer.json") && line.contains("save_pretrained"),
        "{line}"
    );
}

#[test]
fn the_app_says_what_a_siglip_model_can_do_compares_with_it_and_trains_only_adapters() {
    use super::app_ui::{click, harness, labels_containing, wait_for, wait_idle};
    use egui_kittest::kittest::{NodeT as _, Queryable as _};
    use promptscope::app::PromptscopeApp;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shapes");
    promptscope::data::synth::write_dataset(&data, 3, 0, Some((4, 2, 3)), 0).unwrap();
    let mut app = PromptscopeApp::new_headless()
        .with_startup(Some(folder("siglip").display().to_string()), Some(data));
    app.runs_dir = tmp.path().join("runs");
    app.cache_dir = None;
    let mut h = harness(app);
    wait_idle(&mut h);
    assert!(
        h.state().state.errors.is_empty(),
        "{:?}",
        h.state().state.errors
    );
    assert_eq!(labels_containing(&h, "SigLIP · global features"), 1);

    click(&mut h, "Run zero-shot");
    wait_idle(&mut h);
    let report = h
        .state()
        .state
        .report
        .as_ref()
        .unwrap_or_else(|| panic!("no comparison: {:?}", h.state().state.errors));
    assert_eq!(report.methods[0].eval.total, 9);

    click(&mut h, "Train");
    assert!(
        h.get_by_label("Start training")
            .accesskit_node()
            .is_disabled(),
        "CoOp cannot start on SigLIP"
    );
    assert_eq!(labels_containing(&h, "gives global features only"), 1);
    click(&mut h, promptscope::app::train_panel::ADAPTER_METHOD);
    assert!(!h
        .get_by_label("Start training")
        .accesskit_node()
        .is_disabled());
    click(&mut h, "Tip-Adapter-F");
    click(&mut h, "2-shot");
    h.state_mut().train.form.adapter.views = 1;
    click(&mut h, "Start training");
    wait_for(&mut h, "the adapter run", |a| {
        !a.state.is_training() && !a.state.runs.is_empty()
    });
    let run = &h.state().state.runs[0];
    assert_eq!(
        run.status,
        promptscope::app::training::RunStatus::Finished,
        "{:?}",
        h.state().state.errors
    );
    assert_eq!(run.epochs.len(), 20);
}
