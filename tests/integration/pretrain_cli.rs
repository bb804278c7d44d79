//! `promptscope synth-scenes` and `promptscope pretrain` as a user runs them: pairs written, both towers
//! trained with either loss, a model folder the other verbs load, and clean errors for bad input.

use crate::common;

use common::{error_line, ok, promptscope, Scratch};

fn scenes(s: &Scratch, n: &str) -> String {
    let dir = s.p("pairs");
    ok(&promptscope(&[
        "synth-scenes",
        "--out",
        &dir,
        "--count",
        n,
        "--size",
        "224",
        "--seed",
        "2",
    ]));
    dir
}

#[test]
fn pretrain_writes_a_model_the_other_verbs_load_with_either_loss() {
    let s = Scratch::with_tiny_model();
    let pairs = scenes(&s, "8");
    assert!(
        std::path::Path::new(&pairs).join("000007.txt").is_file()
            && std::path::Path::new(&pairs).join("000007.json").is_file()
    );
    for loss in ["filip", "clip"] {
        let out = s.p(&format!("model-{loss}"));
        let stdout = ok(&promptscope(&[
            "pretrain",
            "--data",
            &pairs,
            "--out",
            &out,
            "--preset",
            "tiny",
            "--loss",
            loss,
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--format",
            "json",
        ]));
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "two epochs and a summary: {stdout}");
        assert!(lines[..2]
            .iter()
            .all(|l| l["loss"].as_f64().is_some_and(f64::is_finite)));
        assert_eq!(lines[2]["epochs"], 2);
        // The folder is a CLIP the rest of promptscope reads.
        let img = format!("{pairs}/000000.png");
        let v: serde_json::Value = serde_json::from_str(&ok(&promptscope(&[
            "embed",
            "--model",
            &out,
            "--text",
            "a red circle.",
            "--image",
            &img,
            "--format",
            "json",
            "--device",
            "cpu",
        ])))
        .unwrap();
        assert_eq!(v["text_embeds"][0].as_array().unwrap().len(), 24);
    }
    // The pointing game reads the trained model: both modes, every object of every scene counted.
    let v: serde_json::Value = serde_json::from_str(&ok(&promptscope(&[
        "pointing",
        "--model",
        &s.p("model-filip"),
        "--count",
        "3",
        "--format",
        "json",
    ])))
    .unwrap();
    let reports = v.as_array().unwrap();
    assert_eq!(
        (
            reports.len(),
            reports[0]["mode"].as_str(),
            reports[1]["mode"].as_str()
        ),
        (2, Some("token"), Some("value"))
    );
    for r in reports {
        assert_eq!(r["scenes"], 3);
        assert!(r["objects"].as_u64().unwrap() >= 3);
        for k in ["hit_rate", "mean_mass_inside", "chance"] {
            assert!((0.0..=1.0).contains(&r[k].as_f64().unwrap()), "{k}: {r}");
        }
    }
    // Fine-tuning starts from a model folder; --fp16 halves the file, and the model reads back as f32.
    let tuned = s.p("tuned");
    ok(&promptscope(&[
        "pretrain",
        "--data",
        &pairs,
        "--out",
        &tuned,
        "--init",
        &s.p("model-filip"),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--fp16",
    ]));
    let size = |d: &str| {
        std::fs::metadata(format!("{d}/model.safetensors"))
            .unwrap()
            .len() as f64
    };
    let ratio = size(&tuned) / size(&s.p("model-filip"));
    assert!((0.49..0.51).contains(&ratio), "{ratio}");
    let img = format!("{pairs}/000000.png");
    ok(&promptscope(&[
        "embed",
        "--model",
        &tuned,
        "--text",
        "a red circle.",
        "--image",
        &img,
        "--device",
        "cpu",
    ]));
}

#[test]
fn bad_pretraining_input_is_a_clean_error() {
    let s = Scratch::with_tiny_model();
    let pairs = scenes(&s, "4");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "pretrain", "--data", &pairs, "--preset", "tiny", "--epochs", "1",
        ];
        args.extend_from_slice(extra);
        if !extra.contains(&"--batch-size") {
            args.extend(["--batch-size", "2"]);
        }
        promptscope(&args)
    };
    let m = s.p("m");
    assert!(error_line(&run(&["--out", &m])).contains("already exists and is not empty"));
    // clap refuses a loss it does not know, listing the ones it does (`cli::enum_flags_…`).
    let out = run(&["--out", &s.p("x"), "--loss", "siglip"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'siglip'") && stderr.contains("[possible values: filip, clip]"),
        "{stderr}"
    );
    assert!(error_line(&run(&["--out", &s.p("x"), "--batch-size", "1"]))
        .contains("--batch-size must be at least 2"));
    let empty = s.p("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = error_line(&promptscope(&[
        "pretrain",
        "--data",
        &empty,
        "--out",
        &s.p("y"),
        "--preset",
        "tiny",
    ]));
    assert!(
        err.contains("no image–caption pairs") && err.contains("empty"),
        "{err}"
    );
    std::fs::write(format!("{pairs}/000001.png"), b"not a png").unwrap();
    let err = error_line(&run(&["--out", &s.p("z")]));
    assert!(err.contains("000001.png"), "{err}");
}

/// Stopped after its first epoch and resumed from the checkpoint, a run writes the same weights as one
/// that never stopped, byte for byte; a checkpoint of other settings is refused.
#[test]
fn pretraining_stopped_and_resumed_ends_byte_for_byte_where_an_uninterrupted_run_does() {
    use promptscope::train::optim::OptimConfig;
    use promptscope::train::pretrain::{PretrainConfig, PretrainLoss, TrainableClip};
    use std::sync::atomic::{AtomicBool, Ordering};
    let s = Scratch::with_tiny_model();
    let pairs =
        promptscope::data::scenes::read_pairs(std::path::Path::new(&scenes(&s, "8"))).unwrap();
    let dev = candle_core::Device::Cpu;
    let tok = promptscope::clip::ClipTokenizer::bundled(77).unwrap();
    let cfg = common::preset("tiny");
    let data = promptscope::run::pretrain::prepare(
        &pairs,
        224,
        &promptscope::clip::PreprocessConfig::clip(224),
        &tok,
        &dev,
        &promptscope::progress::Silent,
    )
    .unwrap();
    let optim = OptimConfig {
        lr: 1e-3,
        momentum: 0.9,
        weight_decay: 0.1,
        warmup_epochs: 1,
        warmup_lr: 1e-4,
        epochs: 3,
    };
    let config = PretrainConfig {
        loss: PretrainLoss::Filip,
        top_fraction: 0.5,
        optim,
        batch_size: 4,
        seed: 2,
        shape_labels: 0.0,
        ..PretrainConfig::default()
    };
    let run = serde_json::json!({"test": 1});
    // Returns the run's history and how many epochs this call trained.
    let train =
        |out: &std::path::Path, resume: bool, cancel_after_first: bool, config: &PretrainConfig| {
            let model = TrainableClip::init(&cfg, 1, &dev).unwrap();
            let cancel = AtomicBool::new(false);
            let progress = promptscope::progress::Reporter {
                cancel: &cancel,
                on_update: |_: &str, _, _| {},
            };
            let mut epochs_here = 0;
            let r = promptscope::run::pretrain::train(
                &model,
                &data,
                config,
                &run,
                out,
                promptscope::clip::synth::Storage::F32,
                resume,
                &progress,
                &mut |e| {
                    if let promptscope::train::epoch_loop::TrainEvent::Epoch(_) = e {
                        epochs_here += 1;
                        if cancel_after_first {
                            cancel.store(true, Ordering::Relaxed);
                        }
                    }
                },
            );
            r.map(|h| (h, epochs_here))
        };
    let straight = s.dir.path().join("straight");
    train(&straight, false, false, &config).unwrap();
    let stopped = s.dir.path().join("stopped");
    assert!(matches!(
        train(&stopped, false, true, &config),
        Err(promptscope::Error::Cancelled)
    ));
    let ckpt = s.dir.path().join("stopped.ckpt");
    assert!(ckpt.is_file() && !stopped.exists());
    let mut other = config.clone();
    other.top_fraction = 1.0;
    let err = train(&stopped, true, false, &other)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stopped.ckpt") && err.contains("other settings"),
        "{err}"
    );
    let (history, epochs_here) = train(&stopped, true, false, &config).unwrap();
    assert_eq!(
        epochs_here, 2,
        "the resumed run trains the two epochs left, not three"
    );
    assert_eq!(
        history.iter().map(|h| h.epoch).collect::<Vec<_>>(),
        vec![0, 1, 2],
        "the history carries on"
    );
    let bytes = |dir: &std::path::Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(
        bytes(&straight) == bytes(&stopped),
        "resumed weights differ from the uninterrupted run's"
    );
    assert!(!ckpt.exists(), "a finished run removes its checkpoint");
}

/// `synth-scenes --same-colour` writes the scenes the shape measures use: two or three objects of one
/// colour and distinct shapes in each, with captions and object lists like any pairs folder.
#[test]
fn same_colour_scenes_hold_objects_of_one_colour_and_distinct_shapes() {
    let s = Scratch {
        dir: tempfile::tempdir().unwrap(),
    };
    let dir = s.p("same");
    ok(&promptscope(&[
        "synth-scenes",
        "--out",
        &dir,
        "--count",
        "12",
        "--size",
        "64",
        "--same-colour",
    ]));
    for i in 0..12 {
        let stem = std::path::Path::new(&dir).join(format!("{i:06}"));
        assert!(stem.with_extension("png").is_file() && stem.with_extension("txt").is_file());
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(stem.with_extension("json")).unwrap()).unwrap();
        let objects = meta["objects"].as_array().unwrap();
        assert!(objects.len() >= 2, "{meta}");
        let colours: std::collections::HashSet<_> =
            objects.iter().map(|o| o["colour"].to_string()).collect();
        let shapes: std::collections::HashSet<_> =
            objects.iter().map(|o| o["shape"].to_string()).collect();
        assert_eq!(colours.len(), 1, "{meta}");
        assert_eq!(shapes.len(), objects.len(), "{meta}");
    }
    assert!(!std::path::Path::new(&dir).join("000012.png").exists());
}
