//! `promptscope mpfgvc train|eval` end to end, and bad input that must fail with one clear line and
//! write nothing.

use crate::common;

use std::path::Path;
use std::process::Output;

use common::Scratch as Setup;
use common::{error_line, ok, promptscope};
use promptscope::clip::{synth, ClipConfig, HiddenAct};

fn setup() -> Setup {
    let s = Setup::with_tiny_model();
    promptscope::data::synth_fine::write_dataset(&s.dir.path().join("d"), 3, (4, 2, 3), 14, 5)
        .unwrap();
    s
}

/// A small run; `set` replaces (or adds) flags, as `[("--train-blocks", "4")]`.
fn train(s: &Setup, out: &str, set: &[(&str, &str)]) -> Output {
    let (m, d, o, c) = (s.p("m"), s.p("d"), s.p(out), s.p("cache"));
    let mut flags: Vec<(&str, &str)> = vec![
        ("--model", &m),
        ("--data", &d),
        ("--super-category", "bird"),
        ("--n-ctx", "2"),
        ("--train-blocks", "1"),
        ("--epochs1", "2"),
        ("--epochs2", "3"),
        ("--lr1", "0.003"),
        ("--lr2", "0.003"),
        ("--batch-size", "4"),
        ("--cache", &c),
        ("--out", &o),
        ("--format", "json"),
    ];
    for (k, v) in set {
        match flags.iter_mut().find(|(f, _)| f == k) {
            Some(entry) => entry.1 = v,
            None => flags.push((k, v)),
        }
    }
    let mut args = vec!["mpfgvc", "train"];
    args.extend(flags.iter().flat_map(|(k, v)| [*k, *v]));
    promptscope(&args)
}

#[test]
fn train_prints_epochs_of_both_stages_and_eval_reads_the_export_back() {
    let s = setup();
    let stdout = ok(&train(&s, "w.safetensors", &[]));
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        2 + 3 + 1,
        "2 stage-1 epochs, 3 stage-2 epochs, a summary: {stdout}"
    );
    for (l, (stage, epoch)) in lines.iter().zip([(1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]) {
        assert_eq!(
            (l["stage"].as_u64(), l["epoch"].as_u64()),
            (Some(stage), Some(epoch)),
            "{l}"
        );
        for k in ["loss", "lr", "train_acc", "val_acc"] {
            assert!(l[k].is_number(), "{k} in {l}");
        }
        assert_eq!(l["val_acc_i2t"].is_number(), stage == 1, "{l}");
    }
    let test = &lines[5]["summary"]["test"];
    for k in ["stage1_i2t", "stage1_head", "stage2"] {
        assert!(test[k].is_number(), "{k} in {test}");
    }
    assert_eq!(test["images"], 9);

    let (m, d, w) = (s.p("m"), s.p("d"), s.p("w.safetensors"));
    let eval = ok(&promptscope(&[
        "mpfgvc",
        "eval",
        "--model",
        &m,
        "--data",
        &d,
        "--weights",
        &w,
        "--no-cache",
        "--format",
        "json",
    ]));
    let e: serde_json::Value = serde_json::from_str(eval.trim()).unwrap();
    assert_eq!(
        &e["eval"], test,
        "eval of the export must reproduce the run's test accuracies"
    );
    let text = ok(&promptscope(&[
        "mpfgvc",
        "eval",
        "--model",
        &m,
        "--data",
        &d,
        "--weights",
        &w,
    ]));
    assert!(
        text.contains("stage 1 image-to-text") && text.contains("stage 2 VLFM"),
        "{text}"
    );
}

#[test]
fn blank_super_category_is_refused_before_anything_is_written() {
    let s = setup();
    for word in ["", "   "] {
        let err = error_line(&train(&s, "w.safetensors", &[("--super-category", word)]));
        assert!(
            err.contains("--super-category") && err.contains("has no tokens"),
            "{err}"
        );
    }
    let err = error_line(&train(
        &s,
        "w.safetensors",
        &[("--super-category", "<|endoftext|>")],
    ));
    assert!(err.contains("end-of-text"), "{err}");
    assert!(!Path::new(&s.p("w.safetensors")).exists());
}

#[test]
fn more_train_blocks_than_the_tower_has_is_refused() {
    let s = setup();
    let err = error_line(&train(&s, "w.safetensors", &[("--train-blocks", "4")]));
    assert!(
        err.contains("--train-blocks 4 but the vision tower has 3 blocks"),
        "{err}"
    );
    assert!(!Path::new(&s.p("w.safetensors")).exists());
    // clap refuses an optimiser it does not know, listing the ones it does.
    let out = train(&s, "w.safetensors", &[("--optim2", "lion")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--optim2") && err.contains("[possible values: sgd, adamw]"),
        "{err}"
    );
}

#[test]
fn weights_for_another_model_or_dataset_are_refused() {
    let s = setup();
    ok(&train(&s, "w.safetensors", &[]));
    let (d, w) = (s.p("d"), s.p("w.safetensors"));
    // Same shapes, other weights.
    synth::write_model_folder(
        &ClipConfig::tiny(HiddenAct::Gelu, 1e-6),
        &s.dir.path().join("other"),
    )
    .unwrap();
    let err = error_line(&promptscope(&[
        "mpfgvc",
        "eval",
        "--model",
        &s.p("other"),
        "--data",
        &d,
        "--weights",
        &w,
        "--no-cache",
    ]));
    assert!(
        err.contains("same shapes but other weights")
            && err.contains("with the model it was trained on"),
        "{err}"
    );
    // Other dimensions.
    let mut narrow = ClipConfig::tiny(HiddenAct::QuickGelu, 1e-5);
    narrow.projection_dim = 16;
    synth::write_model_folder(&narrow, &s.dir.path().join("narrow")).unwrap();
    let err = error_line(&promptscope(&[
        "mpfgvc",
        "eval",
        "--model",
        &s.p("narrow"),
        "--data",
        &d,
        "--weights",
        &w,
        "--no-cache",
    ]));
    assert!(
        err.contains("dimension mismatch") && err.contains("projection 24"),
        "{err}"
    );
    // Another dataset.
    promptscope::data::synth_fine::write_dataset(&s.dir.path().join("d4"), 4, (2, 1, 1), 14, 5)
        .unwrap();
    let err = error_line(&promptscope(&[
        "mpfgvc",
        "eval",
        "--model",
        &s.p("m"),
        "--data",
        &s.p("d4"),
        "--weights",
        &w,
        "--no-cache",
    ]));
    assert!(err.contains("was trained for classes"), "{err}");
    // Not an MP-FGVC file at all.
    std::fs::write(s.p("junk.safetensors"), b"junk").unwrap();
    let err = error_line(&promptscope(&[
        "mpfgvc",
        "eval",
        "--model",
        &s.p("m"),
        "--data",
        &d,
        "--weights",
        &s.p("junk.safetensors"),
    ]));
    assert!(err.contains("junk.safetensors"), "{err}");
}
