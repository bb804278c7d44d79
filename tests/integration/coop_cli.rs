//! CoOp end to end through the `promptscope` verbs: determinism, resume, export/import round trips, and
//! bad input that must fail clearly without writing anything.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use candle_core::Device;
use common::Scratch as Setup;
use common::{error_line, ok, promptscope};
use promptscope::clip::{synth, ClipConfig, HiddenAct};
use promptscope::export::prompt_file::PromptFile;

fn setup() -> Setup {
    let s = Setup::with_tiny_model();
    promptscope::data::synth::write_dataset(&s.dir.path().join("d"), 3, 0, Some((4, 2, 3)), 5)
        .unwrap();
    s
}

fn train(s: &Setup, out: &str, extra: &[&str]) -> Output {
    let (m, d, o, c) = (s.p("m"), s.p("d"), s.p(out), s.p("cache"));
    let mut args = vec![
        "train",
        "--model",
        &m,
        "--data",
        &d,
        "--shots",
        "2",
        "--n-ctx",
        "4",
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--lr",
        "0.05",
        "--views",
        "2",
        "--cache",
        &c,
        "--out",
        &o,
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    promptscope(&args)
}

fn ctx_bits(path: &str) -> Vec<u32> {
    let f = PromptFile::load(Path::new(path)).unwrap();
    f.ctx
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

#[test]
fn the_same_command_twice_gives_bit_identical_context() {
    let s = setup();
    let first = ok(&train(&s, "a.safetensors", &[]));
    // The second run reads the features from the cache the first one wrote.
    ok(&train(&s, "b.safetensors", &[]));
    assert_eq!(
        ctx_bits(&s.p("a.safetensors")),
        ctx_bits(&s.p("b.safetensors"))
    );
    let lines: Vec<serde_json::Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "3 epoch lines and a summary");
    for (e, l) in lines[..3].iter().enumerate() {
        assert_eq!(l["epoch"], e);
        for k in ["loss", "lr", "train_acc", "val_acc"] {
            assert!(l[k].is_number(), "{k} in {l}");
        }
    }
    assert!(lines[3]["summary"]["test_acc"].is_number());
    // Training moved the context away from its initialisation.
    let f = PromptFile::load(Path::new(&s.p("a.safetensors"))).unwrap();
    let init = promptscope::prompt::coop::normal_init(4 * 32, 0.02, 1);
    let now: Vec<f32> = f.ctx.flatten_all().unwrap().to_vec1().unwrap();
    assert!(common::max_abs_diff(&now, &init) > 1e-4);
}

#[test]
fn a_killed_run_resumes_to_the_same_result() {
    let s = setup();
    ok(&train(&s, "full.safetensors", &[]));
    // A run stopped after its second epoch leaves a checkpoint next to its output.
    let clip = promptscope::clip::load(&s.p("m"), &Device::Cpu).unwrap();
    let ds = promptscope::data::DatasetFolder::open(Path::new(&s.p("d"))).unwrap();
    // The same settings as Setup::train's command line.
    let run = {
        use promptscope::prompt::coop::CoopConfig;
        use promptscope::train::config::{Augment, CoopRun};
        use promptscope::train::coop::TrainConfig;
        use promptscope::train::optim::OptimConfig;
        CoopRun {
            shots: Some(2),
            seed: 1,
            split_seed: 0,
            coop: CoopConfig {
                n_ctx: 4,
                ..Default::default()
            },
            train: TrainConfig {
                optim: OptimConfig {
                    lr: 0.05,
                    epochs: 3,
                    ..Default::default()
                },
                batch_size: Some(4),
                seed: 1,
            },
            augment: Augment::CropFlip,
            views: 2,
            template: "a photo of a {}.".into(),
            variant: Default::default(),
        }
    };
    let cache = s.dir.path().join("cache");
    let rd = promptscope::run::coop::prepare(
        &clip,
        &ds,
        &run,
        Some(&cache),
        &promptscope::progress::Silent,
    )
    .unwrap();
    let learner = promptscope::prompt::coop::PromptLearner::new(
        &clip.model().unwrap().text,
        clip.tokenizer().unwrap(),
        &ds.class_names,
        &run.coop,
    )
    .unwrap();
    let mut t = promptscope::train::coop::Trainer::new(
        &clip.model().unwrap().text,
        learner,
        run.train.clone(),
        clip.model().unwrap().logit_scale(),
    );
    let out = s.p("resumed.safetensors");
    let ckpt = promptscope::train::coop::checkpoint_path(Path::new(&out));
    t.run_until(
        &rd.train,
        Some(&rd.val),
        2,
        Some(&ckpt),
        &promptscope::progress::Silent,
        &mut |_| {},
    )
    .unwrap();
    assert!(ckpt.is_file());
    let resumed = ok(&train(&s, "resumed.safetensors", &["--resume"]));
    assert_eq!(
        resumed.lines().count(),
        2,
        "only the third epoch ran: {resumed}"
    );
    assert_eq!(ctx_bits(&out), ctx_bits(&s.p("full.safetensors")));
    assert!(
        !ckpt.exists(),
        "the checkpoint is removed once the export is written"
    );
}

/// A "checkpoint" whose pickle would call os.system when unpickled (scripts/make_coop_checkpoint.py) is
/// refused before anything is read: the error names the function, nothing is written, nothing runs.
#[test]
fn a_checkpoint_whose_pickle_calls_os_system_is_refused() {
    let s = setup();
    let fx = common::fixtures().join("coop_checkpoint");
    let out = s.p("evil.safetensors");
    let run = promptscope(&[
        "import-coop",
        fx.join("evil.pth.tar").to_str().unwrap(),
        "--model",
        &s.p("m"),
        "--classnames",
        fx.join("classnames.txt").to_str().unwrap(),
        "--out",
        &out,
    ]);
    let line = error_line(&run);
    for needle in ["evil.pth.tar", "refused", "posix.system", "torch.save"] {
        assert!(line.contains(needle), "{needle:?} not in {line:?}");
    }
    assert!(!Path::new(&out).exists());
    assert!(
        !Path::new("promptscope-was-here").exists()
            && !s.dir.path().join("promptscope-was-here").exists()
    );
}

/// The fixture is written as CoOp's trainer writes it: beside the weights, the SGD state and the
/// warm-up scheduler's, which pickles a CosineAnnealingLR holding the optimiser and the Parameter.
#[test]
fn coop_checkpoint_imports_and_round_trips() {
    let s = setup();
    let fx = common::fixtures().join("coop_checkpoint");
    let globals =
        promptscope::export::pickle_guard::check_checkpoint(&fx.join("model.pth.tar-3")).unwrap();
    for (module, name) in [
        ("torch.optim.lr_scheduler", "CosineAnnealingLR"),
        ("torch.optim.sgd", "SGD"),
        ("collections", "defaultdict"),
        ("torch._utils", "_rebuild_parameter"),
    ] {
        assert!(
            globals.iter().any(|(m, n)| m == module && n == name),
            "{module}.{name} not in the fixture's pickle: {globals:?}"
        );
    }
    let out = s.p("imported.safetensors");
    ok(&promptscope(&[
        "import-coop",
        fx.join("model.pth.tar-3").to_str().unwrap(),
        "--model",
        &s.p("m"),
        "--classnames",
        fx.join("classnames.txt").to_str().unwrap(),
        "--class-position",
        "middle",
        "--out",
        &out,
    ]));
    let f = PromptFile::load(Path::new(&out)).unwrap();
    assert_eq!(f.ctx.dims(), &[3, 4, 32]);
    assert!(f.meta.coop.csc);
    assert_eq!(
        f.meta.class_names,
        vec!["red circle", "green square", "blue stripes"]
    );
    // The context is CoOp's, value for value (make_coop_checkpoint.py's formula).
    let want: Vec<f32> = (0..384)
        .map(|i| (((11 * i + 7) % 89) as f32 / 44.5 - 1.0) * 0.05)
        .collect();
    let got: Vec<f32> = f.ctx.flatten_all().unwrap().to_vec1().unwrap();
    assert!(common::max_abs_diff(&got, &want) == 0.0);
    // class_embeds are the normalised features of the prompts the context makes.
    let clip = promptscope::clip::load(&s.p("m"), &Device::Cpu).unwrap();
    let learner = f.learner(&clip, Path::new(&out)).unwrap();
    let w = promptscope::clip::l2_normalize(
        &learner.text_features(&clip.model().unwrap().text).unwrap(),
    )
    .unwrap();
    let d = common::max_abs_diff(
        &w.flatten_all().unwrap().to_vec1().unwrap(),
        &f.class_embeds.flatten_all().unwrap().to_vec1().unwrap(),
    );
    // The export's class_embeds were computed in the same process order as here: 0 on both the AVX-512 and AVX2+FMA kernels (the bound allows another thread count).
    common::within(
        "imported CoOp context: class_embeds vs recomputed",
        d as f64,
        1e-6,
    );
    // interpret works on class-specific contexts: one row per (class, position).
    let v: serde_json::Value = serde_json::from_str(&ok(&promptscope(&[
        "interpret",
        &out,
        "--model",
        &s.p("m"),
        "--top-k",
        "3",
        "--format",
        "json",
    ])))
    .unwrap();
    assert_eq!(v.as_array().unwrap().len(), 12);
    assert_eq!(v[5]["class"], 1);
    assert_eq!(v[5]["nearest"].as_array().unwrap().len(), 3);
}

#[test]
fn export_loads_back_with_the_same_accuracy_and_in_python() {
    let s = setup();
    let summary = ok(&train(&s, "p.safetensors", &[]));
    let last = serde_json::from_str::<serde_json::Value>(summary.lines().last().unwrap()).unwrap();
    let test_acc = last["summary"]["test_acc"].as_f64().unwrap();
    assert!(
        last["summary"]["ms_per_step"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0),
        "the step time: {last}"
    );
    let e: serde_json::Value = serde_json::from_str(&ok(&promptscope(&[
        "eval",
        "--model",
        &s.p("m"),
        "--data",
        &s.p("d"),
        "--prompts",
        &s.p("p.safetensors"),
        "--cache",
        &s.p("cache"),
        "--format",
        "json",
    ])))
    .unwrap();
    assert_eq!(e["eval"]["accuracy"].as_f64().unwrap(), test_acc);

    let script = format!(
        "from safetensors.numpy import load_file\nfrom safetensors import safe_open\nimport json\n\
         t = load_file({p:?})\nassert t['ctx'].shape == (4, 32), t['ctx'].shape\nassert t['class_embeds'].shape == (3, 24)\n\
         m = safe_open({p:?}, 'np').metadata()\nassert json.loads(m['class_names']) == ['red circle', 'red square', 'red stripes'], m['class_names']\n\
         assert json.loads(m['coop'])['n_ctx'] == 4\nassert m['format'] == 'promptscope-coop/1'\nprint('ok')",
        p = s.p("p.safetensors")
    );
    let py = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 (scripts/setup.sh installs safetensors)");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
}

#[test]
fn too_many_shots_names_the_class_and_its_count() {
    let s = setup();
    let (m, d, o) = (s.p("m"), s.p("d"), s.p("x.safetensors"));
    let out = promptscope(&[
        "train", "--model", &m, "--data", &d, "--shots", "16", "--out", &o,
    ]);
    let line = error_line(&out);
    assert!(
        line.contains("red circle") && line.contains("4 training images") && line.contains("16"),
        "{line}"
    );
    assert!(!Path::new(&o).exists());
}

#[test]
fn export_into_a_missing_folder_fails_before_training() {
    let s = setup();
    let out = train(&s, "no/such/folder/p.safetensors", &[]);
    let line = error_line(&out);
    assert!(line.contains("no/such/folder"), "{line}");
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "no epoch ran"
    );
}

#[test]
fn class_name_past_77_tokens_is_a_clear_error() {
    let s = setup();
    // Folder names are too short for such a class name, so the class list goes to the library directly.
    let long = "very ".repeat(80) + "long";
    let clip = promptscope::clip::load(&s.p("m"), &Device::Cpu).unwrap();
    let err = promptscope::prompt::coop::PromptLearner::new(
        &clip.model().unwrap().text,
        clip.tokenizer().unwrap(),
        std::slice::from_ref(&long),
        &Default::default(),
    )
    .err()
    .expect("must fail")
    .to_string();
    assert!(err.contains("81 tokens") && err.contains("77"), "{err}");
}

#[test]
fn prompts_file_from_another_model_names_the_mismatch() {
    let s = setup();
    ok(&train(&s, "p.safetensors", &[]));
    let mut other = ClipConfig::tiny(HiddenAct::QuickGelu, 1e-5);
    other.text_config.hidden_size = 64;
    other.text_config.intermediate_size = 128;
    synth::write_model_folder(&other, &s.dir.path().join("m64")).unwrap();
    let out = promptscope(&[
        "eval",
        "--model",
        &s.p("m64"),
        "--data",
        &s.p("d"),
        "--prompts",
        &s.p("p.safetensors"),
        "--no-cache",
    ]);
    let line = error_line(&out);
    assert!(
        line.contains("p.safetensors")
            && line.contains("dimension mismatch")
            && line.contains("64"),
        "{line}"
    );
}

#[test]
fn prompts_file_from_a_model_with_other_weights_names_both_models() {
    let s = setup();
    ok(&train(&s, "p.safetensors", &[]));
    // The same architecture (every width equal), other weights.
    let other = s.dir.path().join("other");
    let values = |name: &str, shape: &[usize]| {
        let noise = synth::uniform_values(&format!("other.{name}"), shape.iter().product());
        Ok(synth::tensor_values(name, shape)
            .iter()
            .zip(noise)
            .map(|(v, n)| v + 0.01 * n)
            .collect())
    };
    synth::write_model_folder_with(
        &ClipConfig::tiny(HiddenAct::QuickGelu, 1e-5),
        &other,
        synth::Storage::F32,
        &values,
    )
    .unwrap();
    let (m, o) = (s.p("m"), s.p("other"));
    for verb in [
        vec![
            "eval",
            "--model",
            &o,
            "--data",
            &s.p("d"),
            "--prompts",
            &s.p("p.safetensors"),
            "--no-cache",
        ],
        vec!["interpret", &s.p("p.safetensors"), "--model", &o],
    ] {
        let line = error_line(&promptscope(&verb));
        assert!(
            line.contains("p.safetensors") && line.contains("same shapes but other weights"),
            "{line}"
        );
        assert!(
            line.contains(&format!("'{m}'")) && line.contains(&format!("'{o}'")),
            "both models named: {line}"
        );
    }
    // The model it was trained on still takes it.
    ok(&promptscope(&[
        "eval",
        "--model",
        &m,
        "--data",
        &s.p("d"),
        "--prompts",
        &s.p("p.safetensors"),
        "--no-cache",
    ]));
}

#[test]
fn classify_ranks_an_image_as_eval_does() {
    let s = setup();
    ok(&train(&s, "p.safetensors", &[]));
    let p = s.p("p.safetensors");
    let e: serde_json::Value = serde_json::from_str(&ok(&promptscope(&[
        "eval",
        "--model",
        &s.p("m"),
        "--data",
        &s.p("d"),
        "--prompts",
        &p,
        "--no-cache",
        "--format",
        "json",
    ])))
    .unwrap();
    let names = PromptFile::load(Path::new(&p)).unwrap().meta.class_names;
    for pred in e["eval"]["predictions"].as_array().unwrap().iter().take(3) {
        let image = pred["path"].as_str().unwrap();
        // No --model: the one the prompts file was made with.
        let c: serde_json::Value = serde_json::from_str(&ok(&promptscope(&[
            "classify",
            "--prompts",
            &p,
            "--image",
            image,
            "--top-k",
            "2",
            "--format",
            "json",
        ])))
        .unwrap();
        let top = c["images"][0]["top"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        let probs: Vec<f64> = top
            .iter()
            .map(|t| t["probability"].as_f64().unwrap())
            .collect();
        assert!(
            probs[0] >= probs[1] && probs.iter().sum::<f64>() <= 1.0 + 1e-6,
            "{probs:?}"
        );
        assert_eq!(
            top[0]["class"],
            names[pred["predicted"].as_u64().unwrap() as usize],
            "{image}"
        );
        // The same probability eval gives (image features batched differently: float rounding only).
        let eval_p = pred["top5"][0][1].as_f64().unwrap();
        assert!((probs[0] - eval_p).abs() < 1e-4, "{} vs {eval_p}", probs[0]);
        assert_eq!(c["images"][0]["path"], image);
    }

    // Hand-crafted prompts over listed classes: every class when k exceeds them, summing to 1.
    let image = e["eval"]["predictions"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let text = ok(&promptscope(&[
        "classify",
        "--model",
        &s.p("m"),
        "--classes",
        "red circle,red square",
        "--template",
        "a photo of a {}.",
        "--image",
        &image,
    ]));
    let pcts: Vec<f64> = text
        .lines()
        .skip(1)
        .map(|l| {
            l.trim()
                .trim_end_matches('%')
                .rsplit(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(pcts.len(), 2, "{text}");
    assert!((pcts.iter().sum::<f64>() - 100.0).abs() < 0.02, "{text}");

    // An image that is not there, or not an image: an error naming it.
    let line = error_line(&promptscope(&[
        "classify",
        "--prompts",
        &p,
        "--image",
        &s.p("missing.png"),
    ]));
    assert!(line.contains("missing.png"), "{line}");
    std::fs::write(s.p("broken.jpg"), b"not a jpeg").unwrap();
    let line = error_line(&promptscope(&[
        "classify",
        "--prompts",
        &p,
        "--image",
        &image,
        "--image",
        &s.p("broken.jpg"),
    ]));
    assert!(line.contains("broken.jpg"), "{line}");
}

#[test]
fn import_coop_reads_coops_classnames_format() {
    let s = setup();
    let fx = common::fixtures().join("coop_checkpoint");
    std::fs::write(
        s.p("classnames.txt"),
        "n00000001 red circle\n\nn00000002 green square\nn00000003 blue stripes\n",
    )
    .unwrap();
    let out = s.p("imported.safetensors");
    ok(&promptscope(&[
        "import-coop",
        fx.join("model.pth.tar-3").to_str().unwrap(),
        "--model",
        &s.p("m"),
        "--classnames",
        &s.p("classnames.txt"),
        "--class-position",
        "middle",
        "--out",
        &out,
    ]));
    assert_eq!(
        PromptFile::load(Path::new(&out)).unwrap().meta.class_names,
        ["red circle", "green square", "blue stripes"]
    );
}

#[test]
fn ctrl_c_stops_training_keeps_the_checkpoint_and_exits_130() {
    let s = setup();
    let (m, d, o, c) = (s.p("m"), s.p("d"), s.p("long.safetensors"), s.p("cache"));
    let (status, stderr) = common::ctrl_c_after_first_epoch(&[
        "train",
        "--model",
        &m,
        "--data",
        &d,
        "--shots",
        "2",
        "--n-ctx",
        "4",
        "--epochs",
        "100000",
        "--batch-size",
        "4",
        "--augment",
        "none",
        "--cache",
        &c,
        "--out",
        &o,
    ]);
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.lines().any(|l| l == "cancelled"), "{stderr}");
    assert!(
        stderr.contains("--resume") && stderr.contains("long.safetensors.ckpt"),
        "says how to resume: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        Path::new(&format!("{o}.ckpt")).is_file(),
        "the checkpoint is kept"
    );
    assert!(!Path::new(&o).exists(), "no export from a cancelled run");
}

#[test]
fn training_with_closed_stdout_finishes_and_exits_quietly() {
    let s = setup();
    let (m, d, o, c) = (s.p("m"), s.p("d"), s.p("q.safetensors"), s.p("cache"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_promptscope"))
        .args([
            "train",
            "--model",
            &m,
            "--data",
            &d,
            "--shots",
            "2",
            "--n-ctx",
            "4",
            "--epochs",
            "3",
            "--batch-size",
            "4",
            "--augment",
            "none",
            "--cache",
            &c,
            "--out",
            &o,
            "--format",
            "json",
        ])
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the first line: every write to stdout fails.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("error"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(Path::new(&o).is_file(), "the run went on to its export");
}

/// KgCoOp from the CLI: the pull towards the template changes the context, is recorded in the export,
/// and a negative λ is refused.
#[test]
fn kgcoop_trains_from_the_cli_and_is_recorded() {
    let s = setup();
    ok(&train(&s, "coop.safetensors", &[]));
    ok(&train(&s, "kg.safetensors", &["--kg-lambda", "8"]));
    assert_ne!(
        ctx_bits(&s.p("coop.safetensors")),
        ctx_bits(&s.p("kg.safetensors")),
        "λ = 8 changes the trajectory"
    );
    let f = PromptFile::load(Path::new(&s.p("kg.safetensors"))).unwrap();
    assert_eq!(
        f.meta.variant,
        promptscope::prompt::CoopVariant::Kgcoop { lambda: 8.0 }
    );
    let run: promptscope::train::config::CoopRun =
        serde_json::from_value(f.meta.metrics["run"].clone()).unwrap();
    assert_eq!(run.method_name(), "KgCoOp λ=8");
    // The same export as written before the variant had its own entry (λ inside the train config)
    // reads back as KgCoOp.
    let old = s.p("old-kg.safetensors");
    std::fs::copy(s.p("kg.safetensors"), &old).unwrap();
    common::edit_safetensors_meta(Path::new(&old), |meta| {
        let mut full: serde_json::Value = serde_json::from_str(&meta["promptscope"]).unwrap();
        full.as_object_mut().unwrap().remove("variant");
        full["train"]["kg_lambda"] = 8.0.into();
        meta.insert("promptscope".into(), full.to_string());
    });
    assert_eq!(
        PromptFile::load(Path::new(&old)).unwrap().meta.variant,
        promptscope::prompt::CoopVariant::Kgcoop { lambda: 8.0 }
    );
    let bad = train(&s, "bad.safetensors", &["--kg-lambda=-1"]);
    assert!(
        error_line(&bad).contains("--kg-lambda"),
        "{}",
        error_line(&bad)
    );
}

/// CoCoOp from the CLI: `train --cocoop` keeps its recipe where flags are silent, exports the meta-net
/// (under CoCoOp's own names), and `eval` and `classify` score the file per image, agreeing with the run's
/// own test accuracy; the same context without the meta-net scores differently.
#[test]
fn cocoop_trains_from_the_cli_and_its_export_scores_per_image() {
    let s = setup();
    let summary = ok(&train(&s, "co.safetensors", &["--cocoop"]));
    let last: serde_json::Value = serde_json::from_str(summary.lines().last().unwrap()).unwrap();
    let test_acc = last["summary"]["test_acc"].as_f64().unwrap();
    let f = PromptFile::load(Path::new(&s.p("co.safetensors"))).unwrap();
    assert!(f.meta.cocoop && f.meta_net.is_some());
    let t = f.meta.train.as_ref().unwrap();
    assert_eq!(
        (t.batch_size, t.optim.epochs),
        (Some(4), 3),
        "flags given win over CoCoOp's recipe"
    );
    let eval = |file: &str| -> serde_json::Value {
        serde_json::from_str(&ok(&promptscope(&[
            "eval",
            "--model",
            &s.p("m"),
            "--data",
            &s.p("d"),
            "--prompts",
            &s.p(file),
            "--cache",
            &s.p("cache"),
            "--format",
            "json",
        ])))
        .unwrap()
    };
    let e = eval("co.safetensors");
    assert_eq!(
        e["eval"]["accuracy"].as_f64().unwrap(),
        test_acc,
        "eval scores the file as training did"
    );

    // The same file without its meta-net: CoOp scoring of the same context gives other logits.
    let scorer = |path: &str| {
        let clip = promptscope::clip::load(&s.p("m"), &Device::Cpu).unwrap();
        let f = PromptFile::load(Path::new(path)).unwrap();
        let feats = candle_core::Tensor::from_vec(
            common::pattern(2 * 24, 5, 3, 53, 1.0),
            (2, 24),
            &Device::Cpu,
        )
        .unwrap();
        f.scorer(&clip, Path::new(path))
            .unwrap()
            .logits(&clip, &feats)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let mut plain = PromptFile::load(Path::new(&s.p("co.safetensors"))).unwrap();
    plain.meta_net = None;
    plain.meta.cocoop = false;
    plain.save(Path::new(&s.p("plain.safetensors"))).unwrap();
    assert!(
        common::max_abs_diff(
            &scorer(&s.p("co.safetensors")),
            &scorer(&s.p("plain.safetensors"))
        ) > 1e-4,
        "the meta-net's shift changes the logits"
    );

    let script = format!(
        "from safetensors.numpy import load_file\nt = load_file({p:?})\n\
         assert t['meta_net.linear1.weight'].shape == (1, 24) and t['meta_net.linear2.weight'].shape == (32, 1), {{k: v.shape for k, v in t.items()}}\nprint('ok')",
        p = s.p("co.safetensors")
    );
    let py = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );

    let img = s.dir.path().join("d").join("test");
    let one = std::fs::read_dir(&img)
        .unwrap()
        .flatten()
        .flat_map(|c| std::fs::read_dir(c.path()).unwrap().flatten())
        .next()
        .unwrap()
        .path();
    let c: serde_json::Value = serde_json::from_str(&ok(&promptscope(&[
        "classify",
        "--model",
        &s.p("m"),
        "--prompts",
        &s.p("co.safetensors"),
        "--image",
        one.to_str().unwrap(),
        "--format",
        "json",
    ])))
    .unwrap();
    assert!(c.to_string().contains("red"), "{c}");
    let refused = train(
        &s,
        "bad.safetensors",
        &["--cocoop", "--class-position", "front"],
    );
    assert!(
        error_line(&refused).contains("CoCoOp"),
        "{}",
        error_line(&refused)
    );
}

/// Tip-Adapter from the CLI: α and β come from the grid and the validation split, the test split is
/// scored, and the report says which split.
#[test]
fn feature_adapters_report_their_parameters_and_test_accuracy() {
    let s = setup();
    let run = |method: &str| -> serde_json::Value {
        let args = [
            "adapter",
            "--method",
            method,
            "--model",
            &s.p("m"),
            "--data",
            &s.p("d"),
            "--shots",
            "2",
            "--views",
            "2",
            "--epochs",
            "3",
            "--no-cache",
            "--format",
            "json",
        ];
        serde_json::from_str(ok(&promptscope(&args)).lines().last().unwrap()).unwrap()
    };
    for method in ["tip-adapter", "tip-adapter-f", "clip-adapter"] {
        let v = run(method);
        assert_eq!(v["total"], 9, "{method}: the 3 × 3 test images");
        assert_eq!(v["cache_images"], 6, "2 shots × 3 classes");
        assert_eq!(v["split"], "test/ folder");
        assert!(
            v["zero_shot_test_acc"].as_f64().is_some()
                && v["accuracy"].as_f64().is_some()
                && v["val_acc"].as_f64().is_some()
        );
        // A step time for what trains step-wise, none for the training-free cache.
        assert_eq!(
            v["ms_per_step"].as_f64().is_some_and(|ms| ms > 0.0),
            method != "tip-adapter",
            "{method}: {}",
            v["ms_per_step"]
        );
        if method == "clip-adapter" {
            assert!(v["searched"].is_null(), "CLIP-Adapter has no α, β");
        } else {
            let (alpha, beta) = (
                v["searched"]["alpha"].as_f64().unwrap(),
                v["searched"]["beta"].as_f64().unwrap(),
            );
            assert!(
                (0.1..3.0).contains(&alpha) && (0.1..7.0).contains(&beta),
                "{v}"
            );
        }
    }
    let bad = promptscope(&[
        "adapter",
        "--method",
        "tip",
        "--model",
        &s.p("m"),
        "--data",
        &s.p("d"),
    ]);
    // clap refuses it, listing the adapters.
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("[possible values: tip-adapter, tip-adapter-f, clip-adapter]"),
        "{stderr}"
    );
}

/// Base-to-novel: the first half of the sorted classes are base, the rest novel; one row per method with
/// base, novel and H over the seeds, and class-specific contexts refused (nothing carries to new names).
#[test]
fn base_to_novel_reports_base_novel_and_h_per_method_over_seeds() {
    let s = Setup::with_tiny_model();
    promptscope::data::synth::write_dataset(&s.dir.path().join("d"), 5, 0, Some((4, 2, 3)), 5)
        .unwrap();
    let args = [
        "base-to-novel",
        "--model",
        &s.p("m"),
        "--data",
        &s.p("d"),
        "--shots",
        "2",
        "--epochs",
        "2",
        "--n-ctx",
        "4",
        "--seeds",
        "1,2",
        "--no-cache",
        "--format",
        "json",
    ];
    let v: serde_json::Value =
        serde_json::from_str(ok(&promptscope(&args)).lines().last().unwrap()).unwrap();
    assert_eq!(
        v["base_classes"].as_array().unwrap().len(),
        3,
        "⌈5/2⌉ base classes"
    );
    assert_eq!(v["novel_classes"].as_array().unwrap().len(), 2);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["method"], "CoOp");
    assert_eq!(rows[1]["seeds"].as_array().unwrap().len(), 2);
    for r in rows {
        let (b, n, h) = (
            r["mean"]["base"].as_f64().unwrap(),
            r["mean"]["novel"].as_f64().unwrap(),
            r["mean"]["harmonic"].as_f64().unwrap(),
        );
        let want = if b + n > 0.0 {
            2.0 * b * n / (b + n)
        } else {
            0.0
        };
        assert!((h - want).abs() < 1e-12, "{r}");
    }
    // Zero-shot does not depend on the seed.
    assert_eq!(rows[0]["std"]["base"], 0.0);
    let kg = serde_json::from_str::<serde_json::Value>(
        ok(&promptscope(&[&args[..], &["--kg-lambda", "8"]].concat()))
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(kg["rows"][1]["method"], "KgCoOp λ=8");
    // CoCoOp: the meta-net's per-image prompts, scored on both halves; its recipe fills what is not given.
    // (Without --n-ctx: its "a photo of a" context, 4 tokens, carried to the novel names.)
    let no_n_ctx: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| *a != "--n-ctx" && *a != "4")
        .collect();
    let co = serde_json::from_str::<serde_json::Value>(
        ok(&promptscope(
            &[&no_n_ctx[..], &["--cocoop", "--batch-size", "4"]].concat(),
        ))
        .lines()
        .last()
        .unwrap(),
    )
    .unwrap();
    assert_eq!(co["rows"][1]["method"], "CoCoOp");
    assert!(co["rows"][1]["mean"]["novel"].as_f64().is_some());
    // The feature adapters, fitted on the base shots: Tip-Adapter's cache holds no novel image, so on
    // the novel half it is zero-shot, seed for seed; CLIP-Adapter's residual applies to any class.
    let ad = serde_json::from_str::<serde_json::Value>(
        ok(&promptscope(
            &[
                &args[..],
                &["--methods", "coop,tip-adapter,clip-adapter", "--views", "1"],
            ]
            .concat(),
        ))
        .lines()
        .last()
        .unwrap(),
    )
    .unwrap();
    let methods: Vec<&str> = ad["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods[1..], ["CoOp", "Tip-Adapter", "CLIP-Adapter"]);
    assert_eq!(
        ad["rows"][2]["mean"]["novel"], ad["rows"][0]["mean"]["novel"],
        "Tip-Adapter on novel classes is zero-shot"
    );
    assert_eq!(
        ad["rows"][1], v["rows"][1],
        "CoOp's row does not depend on what else runs"
    );
    let bad = promptscope(&[&args[..], &["--methods", "coop,bogus"]].concat());
    assert!(
        error_line(&bad).contains("bogus") && error_line(&bad).contains("clip-adapter"),
        "{}",
        error_line(&bad)
    );
}

/// `bench cocoop` times CoCoOp's step beside CoOp's on the same classes and batch: the text
/// tower runs once per image, so a batch of 4 costs more than CoOp's one pass over the classes.
#[test]
fn bench_times_cocoop_steps_beside_coops() {
    let s = Setup::with_tiny_model();
    let m = s.p("m");
    let bench = |mode: &str| -> serde_json::Value {
        let args = [&[
            "bench",
            mode,
            "--model",
            &m,
            "--classes",
            "5",
            "--n-ctx",
            "4",
            "--batch",
            "4",
            "--steps",
            "2",
            "--format",
            "json",
        ][..]]
        .concat();
        serde_json::from_str(ok(&promptscope(&args)).lines().last().unwrap()).unwrap()
    };
    let (coop, cocoop) = (bench("coop"), bench("cocoop"));
    assert_eq!(
        (coop["cocoop"].as_bool(), cocoop["cocoop"].as_bool()),
        (Some(false), Some(true))
    );
    assert!(
        coop["ms_per_step"].as_f64().unwrap() > 0.0
            && cocoop["ms_per_step"].as_f64().unwrap() > 0.0
    );
    assert!(cocoop["peak_rss_mb"].as_f64().is_some_and(|m| m > 0.0));
    let bad = promptscope(&["bench", "--model", &s.p("m"), "--cocoop"]);
    assert!(!bad.status.success(), "--cocoop needs --coop");
    assert!(
        error_line(&bad).contains("`bench cocoop`"),
        "{}",
        error_line(&bad)
    );
}

/// The spelling from before bench's modes were subcommands still runs the same mode, and says the new one.
#[test]
fn bench_takes_its_old_mode_flags_and_names_the_new_subcommand() {
    let s = Setup::with_tiny_model();
    let m = s.p("m");
    let args = [
        "--model",
        &m,
        "--classes",
        "3",
        "--n-ctx",
        "2",
        "--batch",
        "2",
        "--steps",
        "1",
        "--format",
        "json",
    ];
    let old = promptscope(&[&["bench", "--coop", "--csc"][..], &args[..]].concat());
    let json: serde_json::Value = serde_json::from_str(ok(&old).lines().last().unwrap()).unwrap();
    assert_eq!(
        (json["csc"].as_bool(), json["classes"].as_u64()),
        (Some(true), Some(3))
    );
    assert!(String::from_utf8_lossy(&old.stderr).contains("promptscope bench csc"));
    // No mode flag: the towers, as before.
    let towers = promptscope(&[
        "bench",
        "--model",
        &m,
        "--batch",
        "2",
        "--images",
        "2",
        "--text-batch",
        "2",
        "--texts",
        "2",
        "--format",
        "json",
    ]);
    let json: serde_json::Value =
        serde_json::from_str(ok(&towers).lines().last().unwrap()).unwrap();
    assert!(
        json["images_per_s"].as_f64().is_some_and(|v| v > 0.0),
        "{json}"
    );
}
