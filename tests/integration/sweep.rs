//! Sweeps as manifests: `sweep plan` → one `sweep run` per task (as an engine would start them) →
//! `sweep collect` gives exactly the JSON `base-to-novel` prints for the same settings; finished tasks
//! are skipped; the engine adapters' files match their golden copies.

use crate::common;

use common::{error_line, ok, promptscope, Scratch};

const FLAGS: [&str; 12] = [
    "--shots",
    "2",
    "--epochs",
    "2",
    "--n-ctx",
    "4",
    "--seeds",
    "1,2",
    "--methods",
    "coop,tip-adapter",
    "--template",
    "a photo of a {}.",
];

/// `sweep plan` of the tiny model and dataset in `s`, writing `out`, with `extra` flags.
fn plan(s: &Scratch, out: &str, extra: &[&str]) {
    let (m, d) = (s.p("m"), s.p("d"));
    let mut args = vec![
        "sweep",
        "plan",
        "--model",
        &m,
        "--data",
        &d,
        "--no-cache",
        "--out",
        out,
    ];
    args.extend(extra);
    ok(&promptscope(&args));
}

fn setup() -> Scratch {
    let s = Scratch::with_tiny_model();
    promptscope::data::synth::write_dataset(&s.dir.path().join("d"), 5, 0, Some((4, 2, 3)), 5)
        .unwrap();
    s
}

#[test]
fn a_sweep_run_task_by_task_collects_to_exactly_the_base_to_novel_report() {
    let s = setup();
    let (m, d, manifest) = (s.p("m"), s.p("d"), s.p("sweep.jsonl"));
    plan(&s, &manifest, &FLAGS);
    let lines: Vec<String> = std::fs::read_to_string(&manifest)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 4, "2 methods × 2 seeds");
    let ids: std::collections::HashSet<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 4, "each task its own id");

    // Collecting before every task ran names the missing ones.
    let early = promptscope(&["sweep", "collect", "--manifest", &manifest]);
    assert!(
        error_line(&early).contains("4 of 4 tasks have no result yet (indices 0-3)"),
        "{}",
        error_line(&early)
    );

    // Tasks 0 and 1 by index, 2 and 3 as a Slurm array and a Kubernetes Indexed Job would start them.
    for i in ["0", "1"] {
        ok(&promptscope(&[
            "sweep",
            "run",
            "--manifest",
            &manifest,
            "--index",
            i,
        ]));
    }
    for (key, i) in [("SLURM_ARRAY_TASK_ID", "2"), ("JOB_COMPLETION_INDEX", "3")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_promptscope"))
            .args(["sweep", "run", "--manifest", &manifest])
            .env(key, i)
            .output()
            .unwrap();
        ok(&out);
    }
    // A finished task is skipped, its result untouched.
    let result = s.dir.path().join("sweep.results");
    let first = std::fs::read_dir(&result)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    let before = std::fs::read(&first).unwrap();
    let again = promptscope(&["sweep", "run", "--manifest", &manifest, "--index", "0"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("done already"));
    assert_eq!(std::fs::read(&first).unwrap(), before);
    let out_of_range = promptscope(&["sweep", "run", "--manifest", &manifest, "--index", "4"]);
    assert!(error_line(&out_of_range).contains("task 4 of a manifest of 4"));

    let collected = ok(&promptscope(&[
        "sweep",
        "collect",
        "--manifest",
        &manifest,
        "--format",
        "json",
    ]));
    let mut direct = vec!["base-to-novel", "--model", &m, "--data", &d, "--no-cache"];
    direct.extend(FLAGS);
    direct.extend(["--format", "json"]);
    let reference = ok(&promptscope(&direct));
    assert_eq!(
        collected.lines().last().unwrap(),
        reference.lines().last().unwrap(),
        "collect's JSON is base-to-novel's, number for number"
    );
    let text = ok(&promptscope(&["sweep", "collect", "--manifest", &manifest]));
    assert!(
        text.contains("Tip-Adapter") && text.contains("CoOp"),
        "{text}"
    );
}

/// CoOp's few-shot protocol as a sweep: each task's test accuracy is what `train` (CoOp) and `adapter`
/// (Tip-Adapter) report for the same shots and seed, and collect's rows are their mean ± std.
#[test]
fn a_few_shot_sweep_reports_what_train_and_adapter_do() {
    let s = setup();
    let manifest = s.p("shots.jsonl");
    plan(
        &s,
        &manifest,
        &[
            "--protocol",
            "few-shot",
            "--shots",
            "1,2",
            "--seeds",
            "1,2",
            "--methods",
            "coop,tip-adapter",
            "--epochs",
            "2",
            "--n-ctx",
            "4",
        ],
    );
    for i in 0..8 {
        ok(&promptscope(&[
            "sweep",
            "run",
            "--manifest",
            &manifest,
            "--index",
            &i.to_string(),
        ]));
    }
    let v: serde_json::Value = serde_json::from_str(
        ok(&promptscope(&[
            "sweep",
            "collect",
            "--manifest",
            &manifest,
            "--format",
            "json",
        ]))
        .lines()
        .last()
        .unwrap(),
    )
    .unwrap();
    let table = &v[0];
    assert_eq!(table["runs"].as_array().unwrap().len(), 8);
    assert_eq!(
        table["rows"].as_array().unwrap().len(),
        4,
        "2 methods × 2 shots"
    );
    let run_of = |method: &str, shots: u64, seed: u64| {
        table["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["method"] == method && r["shots"] == shots && r["seed"] == seed)
            .unwrap_or_else(|| panic!("{method} {shots} {seed}: {table}"))["test_acc"]
            .as_f64()
            .unwrap()
    };
    let (m, d) = (s.p("m"), s.p("d"));
    let verb = |args: &[&str]| -> serde_json::Value {
        let mut full = args.to_vec();
        full.extend([
            "--model",
            &m,
            "--data",
            &d,
            "--no-cache",
            "--format",
            "json",
        ]);
        serde_json::from_str(ok(&promptscope(&full)).lines().last().unwrap()).unwrap()
    };
    let out = s.p("coop.safetensors");
    let coop = verb(&[
        "train", "--shots", "2", "--seed", "1", "--epochs", "2", "--n-ctx", "4", "--out", &out,
    ]);
    assert_eq!(
        coop["summary"]["test_acc"].as_f64().unwrap(),
        run_of("CoOp", 2, 1)
    );
    let tip = verb(&[
        "adapter",
        "--method",
        "tip-adapter",
        "--shots",
        "1",
        "--seed",
        "2",
    ]);
    assert_eq!(
        tip["accuracy"].as_f64().unwrap(),
        run_of("Tip-Adapter", 1, 2)
    );
    let row = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["method"] == "CoOp" && r["shots"] == 2)
        .unwrap();
    let (a, b) = (run_of("CoOp", 2, 1), run_of("CoOp", 2, 2));
    assert!((row["mean"].as_f64().unwrap() - (a + b) / 2.0).abs() < 1e-12);
    let text = ok(&promptscope(&["sweep", "collect", "--manifest", &manifest]));
    assert!(
        text.contains("Tip-Adapter") && text.contains("zero-shot"),
        "{text}"
    );
}

#[test]
fn a_bad_recipe_is_refused_when_planned_under_either_protocol() {
    let s = setup();
    for protocol in ["base-to-novel", "few-shot"] {
        let out = s.p(&format!("{protocol}.jsonl"));
        let (m, d) = (s.p("m"), s.p("d"));
        let bad = promptscope(&[
            "sweep",
            "plan",
            "--protocol",
            protocol,
            "--model",
            &m,
            "--data",
            &d,
            "--no-cache",
            "--methods",
            "coop",
            "--n-ctx",
            "0",
            "--out",
            &out,
        ]);
        assert!(
            error_line(&bad).contains("--n-ctx"),
            "{protocol}: {}",
            error_line(&bad)
        );
        assert!(
            !std::path::Path::new(&out).exists(),
            "{protocol}: no manifest written"
        );
    }
}

#[test]
fn a_broken_manifest_or_a_missing_index_is_a_clear_error() {
    let s = Scratch::with_tiny_model();
    let manifest = s.p("bad.jsonl");
    std::fs::write(&manifest, "{\"id\": 1}\n").unwrap();
    let bad = promptscope(&["sweep", "run", "--manifest", &manifest, "--index", "0"]);
    assert!(
        error_line(&bad).contains("line 1 is not a sweep task"),
        "{}",
        error_line(&bad)
    );
    let s2 = setup();
    let good = s2.p("sweep.jsonl");
    plan(&s2, &good, &["--seeds", "1"]);
    let no_index = std::process::Command::new(env!("CARGO_BIN_EXE_promptscope"))
        .args(["sweep", "run", "--manifest", &good])
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .unwrap();
    assert!(
        error_line(&no_index).contains("--index"),
        "{}",
        error_line(&no_index)
    );
}

/// The sbatch script, the Ray driver and the Indexed Job, for a fixed manifest and binary, against
/// `tests/fixtures/sweep/*` (`UPDATE_GOLDEN=1` rewrites them after a deliberate change).
#[test]
fn engine_files_match_their_golden_copies() {
    let s = setup();
    let manifest = s.dir.path().join("sweep.jsonl");
    plan(
        &s,
        manifest.to_str().unwrap(),
        &["--methods", "coop,kgcoop,cocoop"],
    );
    // The golden copies have the manifest's folder as /sweeps.
    let golden = common::fixtures().join("sweep");
    for (verb, file, extra) in [
        ("slurm", "sbatch.sh", vec!["--gpus", "1", "--parallel", "4"]),
        ("ray", "ray_driver.py", vec!["--cpus", "4"]),
        (
            "k8s",
            "indexed_job.yaml",
            vec!["--image", "ghcr.io/example/promptscope:0.1", "--mem", "16G"],
        ),
    ] {
        let mut args = vec![
            "sweep",
            verb,
            "--manifest",
            manifest.to_str().unwrap(),
            "--bin",
            "/opt/promptscope/bin/promptscope",
        ];
        args.extend(extra);
        let text = ok(&promptscope(&args));
        let dir = std::fs::canonicalize(s.dir.path()).unwrap();
        let text = text.replace(dir.to_str().unwrap(), "/sweeps");
        let path = golden.join(file);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(&golden).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        let want =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(text, want, "{verb}: differs from {}", path.display());
        assert!(text.contains("9 tasks"), "3 methods × 3 seeds: {text}");
    }
    // The feature-extraction array of a sweep that shares a cache: its one folder in 4 slices.
    let cached = s.dir.path().join("cached.jsonl");
    let cache = s.p("cache");
    let (m, d) = (s.p("m"), s.p("d"));
    ok(&promptscope(&[
        "sweep",
        "plan",
        "--model",
        &m,
        "--data",
        &d,
        "--cache",
        &cache,
        "--out",
        cached.to_str().unwrap(),
        "--methods",
        "coop",
    ]));
    let text = ok(&promptscope(&[
        "sweep",
        "slurm",
        "--manifest",
        cached.to_str().unwrap(),
        "--bin",
        "/opt/promptscope/bin/promptscope",
        "--features-slices",
        "4",
    ]));
    let dir = std::fs::canonicalize(s.dir.path()).unwrap();
    let text = text.replace(dir.to_str().unwrap(), "/sweeps");
    let path = golden.join("features.sbatch");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(text, std::fs::read_to_string(&path).unwrap());
    assert!(
        text.contains("--array=0-3%")
            && text.contains("sweep features --manifest /sweeps/cached.jsonl --slices 4"),
        "{text}"
    );
    // Without a shared cache there is nothing to extract.
    let line = error_line(&promptscope(&[
        "sweep",
        "slurm",
        "--manifest",
        manifest.to_str().unwrap(),
        "--features-slices",
        "4",
    ]));
    assert!(line.contains("nothing to extract"), "{line}");
}

/// The sweep on a real Slurm (`scripts/slurm_sweep.sh`: a one-node cluster on this machine): 12 tasks
/// as an array, one CoOp task cancelled with scancel once it has checkpointed, `collect` then naming
/// it, its resubmission resuming, and the merged table identical to the same tasks run one by one in
/// process. Needs root and Debian's slurm-wlm and munge (scripts/setup.sh installs them);
/// `PROMPTSCOPE_SKIP_SLURM=1` skips it where neither can be had.
#[test]
fn a_slurm_array_with_a_cancelled_task_collects_to_the_in_process_table() {
    let work = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/slurm_sweep.sh"
        ))
        .arg(env!("CARGO_BIN_EXE_promptscope"))
        .arg(work.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) && std::env::var_os("PROMPTSCOPE_SKIP_SLURM").is_some() {
        eprintln!("skipped (PROMPTSCOPE_SKIP_SLURM): {stderr}");
        return;
    }
    assert!(out.status.success(), "slurm_sweep.sh failed: {stderr}");
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    let cancelled = v["cancelled_index"].as_u64().unwrap();
    assert!(v["tasks"].as_u64().unwrap() >= 12);
    assert!(
        v["collect_before_resubmit"]
            .as_str()
            .unwrap()
            .contains(&format!("(indices {cancelled})")),
        "{}",
        v["collect_before_resubmit"]
    );
    assert_eq!(v["slurm"], v["local"]);
    assert_eq!(v["identical"], true);
    assert_eq!(
        v["feature_slices_done"], 3,
        "the features array ran its 3 slices before the sweep"
    );
    assert_eq!(
        v["slurm"].as_array().map(Vec::len),
        Some(2),
        "one table per shots value"
    );
    eprintln!(
        "Slurm sweep of {} tasks: {} s; the same tasks one by one: {} s",
        v["tasks"], v["slurm_s"], v["sequential_s"]
    );
}

/// `features --shard I/N` splits a folder's extraction across tasks: the slices partition the folder,
/// each fills the shared cache's per-image store, and any later subset (a split, a seed's shots) reads
/// its features from there, equal to computing them afresh. A damaged pack is passed over and computed
/// again.
#[test]
fn feature_shards_fill_the_cache_that_every_later_subset_reads() {
    use promptscope::train::feature_store::STORE_STAGE;
    use promptscope::train::features::extract;
    let s = setup();
    let (m, d, cache) = (s.p("m"), s.p("d"), s.p("cache"));
    let run = |shard: &str| -> serde_json::Value {
        let out = ok(&promptscope(&[
            "features", "--model", &m, "--data", &d, "--shard", shard, "--cache", &cache,
            "--format", "json",
        ]));
        serde_json::from_str(out.lines().last().unwrap()).unwrap()
    };
    let slices: Vec<serde_json::Value> = ["0/3", "1/3", "2/3"].iter().map(|s| run(s)).collect();
    let total = slices[0]["folder_images"].as_u64().unwrap();
    assert_eq!(total, 5 * (4 + 2 + 3), "every split of the folder");
    let mut next = 0;
    for slice in &slices {
        assert_eq!(slice["first"].as_u64().unwrap(), next, "contiguous slices");
        next += slice["images"].as_u64().unwrap();
        assert_eq!(slice["computed"], slice["images"]);
    }
    assert_eq!(next, total, "the slices cover the folder");
    let again = run("1/3");
    assert_eq!(
        (again["computed"].as_u64(), again["reused"].clone()),
        (Some(0), slices[1]["images"].clone())
    );

    // Any subset: read from the store, nothing encoded, the features those images have.
    let dev = candle_core::Device::Cpu;
    let clip = promptscope::clip::load(&m, &dev).unwrap();
    let ds = promptscope::data::DatasetFolder::open(std::path::Path::new(&d)).unwrap();
    let subset: Vec<_> = ds
        .test
        .clone()
        .unwrap()
        .into_iter()
        .chain(ds.train.clone().unwrap().into_iter().step_by(3))
        .collect();
    let stages = std::sync::Mutex::new(Vec::new());
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let progress = promptscope::progress::Reporter {
        cancel: &cancel,
        on_update: |stage: &str, _, _| stages.lock().unwrap().push(stage.to_string()),
    };
    let stored = extract(
        &clip,
        &subset,
        0,
        3,
        Some(std::path::Path::new(&cache)),
        &progress,
    )
    .unwrap();
    assert_eq!(stages.lock().unwrap().as_slice(), [STORE_STAGE]);
    let fresh = extract(&clip, &subset, 0, 3, None, &promptscope::progress::Silent).unwrap();
    let flat = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(common::max_abs_diff(&flat(&stored.feats), &flat(&fresh.feats)) < 1e-5);

    // A pack cut short is passed over (with a warning) and its images encoded again.
    let store = std::path::PathBuf::from(slices[0]["store"].as_str().unwrap());
    for pack in std::fs::read_dir(&store).unwrap() {
        let pack = pack.unwrap().path();
        let bytes = std::fs::read(&pack).unwrap();
        std::fs::write(&pack, &bytes[..bytes.len() / 2]).unwrap();
    }
    let out = promptscope(&[
        "features", "--model", &m, "--data", &d, "--shard", "0/3", "--cache", &cache, "--format",
        "json",
    ]);
    let redo: serde_json::Value = serde_json::from_str(ok(&out).lines().last().unwrap()).unwrap();
    assert_eq!(redo["computed"], slices[0]["images"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("ignoring feature pack"));

    for (bad, says) in [("3/3", "from 0 to 2"), ("1-3", "is not I/N")] {
        let line = error_line_or_usage(&promptscope(&[
            "features", "--model", &m, "--data", &d, "--shard", bad, "--cache", &cache,
        ]));
        assert!(line.contains(says), "{bad}: {line}");
    }
    let line = error_line(&promptscope(&[
        "features",
        "--model",
        &m,
        "--data",
        &d,
        "--no-cache",
    ]));
    assert!(line.contains("drop --no-cache"), "{line}");
}

/// A usage error (clap's exit code 2) or a run error: the message either way, never a panic.
fn error_line_or_usage(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && !stderr.contains("panicked"),
        "{stderr}"
    );
    stderr
}
