//! One run seam for every front end: a run the CLI stopped resumes in the app (its worker, as the Train
//! tab starts it) and the reverse, ending bit for bit where an uninterrupted run of the same settings
//! ends, for CoOp and for pretraining.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use promptscope::app::events::{Event, TrainControl};
use promptscope::app::worker::Worker;
use promptscope::clip::LoadedClip;
use promptscope::data::DatasetFolder;
use promptscope::train::config::RunConfig;

use crate::common::{ok, promptscope, Scratch};

/// Runs `run` on the app's worker, as the Train tab does; with `stop`, stops it once an epoch is done
/// (its checkpoint written). Returns whether it finished.
fn in_app(
    run: &RunConfig,
    model: Option<&str>,
    data: Option<&str>,
    out: &Path,
    resume: bool,
    stop: bool,
) -> bool {
    let clip = model.map(|m| {
        Arc::new(promptscope::clip::load(m, &candle_core::Device::Cpu).unwrap()) as Arc<LoadedClip>
    });
    let data = data.map(|d| Arc::new(DatasetFolder::open(Path::new(d)).unwrap()));
    let ctx = egui::Context::default();
    let control = Arc::new(TrainControl::default());
    let mut worker = Worker::default();
    worker
        .train(
            &ctx,
            clip,
            data,
            run.clone(),
            out.to_path_buf(),
            resume,
            None,
            control.clone(),
        )
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the app's run never finished"
        );
        for event in worker.drain() {
            match event {
                Event::TrainEpoch { .. } if stop => control.cancel.store(true, Ordering::Relaxed),
                Event::TrainFinished { result, .. } => return result.is_ok(),
                Event::Crashed { message, .. } => panic!("{message}"),
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs a CLI command and stops it with Ctrl-C once it has printed its first epoch line.
fn in_cli_stopped(args: &[&str]) {
    let (status, stderr) = crate::common::ctrl_c_after_first_epoch(args);
    assert_eq!(status.code(), Some(130), "stopped by Ctrl-C: {stderr}");
}

fn bytes(p: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

/// The context of a prompts file (its other metadata records times).
fn context(p: &Path) -> Vec<f32> {
    let f = promptscope::export::prompt_file::PromptFile::load(p).unwrap();
    f.ctx.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn a_coop_run_stopped_in_one_front_end_resumes_in_the_other_bit_for_bit() {
    let s = Scratch::with_tiny_model();
    promptscope::data::synth::write_dataset(&s.dir.path().join("d"), 3, 0, Some((4, 2, 3)), 5)
        .unwrap();
    let (m, d) = (s.p("m"), s.p("d"));
    let flags = |out: &str| -> Vec<String> {
        [
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
            "300",
            "--batch-size",
            "4",
            "--augment",
            "none",
            "--no-cache",
            "--out",
            out,
        ]
        .map(String::from)
        .to_vec()
    };
    let args = |out: &str, extra: &[&str]| -> Vec<String> {
        let mut a = flags(out);
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    let run = |a: Vec<String>| promptscope(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let straight = s.p("straight.safetensors");
    ok(&run(args(&straight, &[])));
    // What the CLI's flags start is what the app runs.
    let config: RunConfig =
        serde_json::from_str(&ok(&run(args(&straight, &["--dry-run"])))).unwrap();

    // Stopped in the app, finished by the CLI.
    let a = s.p("app-then-cli.safetensors");
    assert!(!in_app(
        &config,
        Some(&m),
        Some(&d),
        Path::new(&a),
        false,
        true
    ));
    let ckpt = promptscope::train::coop::checkpoint_path(Path::new(&a));
    assert!(
        ckpt.is_file(),
        "the app's stopped run leaves its checkpoint"
    );
    ok(&run(args(&a, &["--resume"])));
    assert_eq!(context(Path::new(&a)), context(Path::new(&straight)));

    // Stopped by Ctrl-C in the CLI, finished by the app.
    let b = s.p("cli-then-app.safetensors");
    in_cli_stopped(&args(&b, &[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(promptscope::train::coop::checkpoint_path(Path::new(&b)).is_file());
    assert!(in_app(
        &config,
        Some(&m),
        Some(&d),
        Path::new(&b),
        true,
        false
    ));
    assert_eq!(context(Path::new(&b)), context(Path::new(&straight)));
}

#[test]
fn a_pretraining_run_stopped_in_one_front_end_resumes_in_the_other_byte_for_byte() {
    let s = Scratch::with_tiny_model();
    let pairs = s.p("pairs");
    ok(&promptscope(&[
        "synth-scenes",
        "--out",
        &pairs,
        "--count",
        "8",
        "--size",
        "224",
        "--seed",
        "2",
    ]));
    let flags = |out: &str, extra: &[&str]| -> Vec<String> {
        let mut a = [
            "pretrain",
            "--data",
            &pairs,
            "--preset",
            "tiny",
            "--epochs",
            "6",
            "--batch-size",
            "4",
            "--seed",
            "2",
            "--format",
            "json",
            "--out",
            out,
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    let run = |a: Vec<String>| promptscope(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let straight = s.p("straight");
    let summary = ok(&run(flags(&straight, &[])));
    let summary: serde_json::Value = serde_json::from_str(summary.lines().last().unwrap()).unwrap();
    // The app's form holds the same run: the pairs, the preset, the CLI's training settings.
    let config = RunConfig::Pretrain(promptscope::train::config::PretrainRun {
        pairs: pairs.clone().into(),
        scenes: None,
        start: promptscope::train::config::PretrainStart::Preset("tiny".into()),
        image_size: None,
        patch_size: None,
        config: serde_json::from_value(summary["config"].clone()).unwrap(),
        fp16: false,
        shards: Default::default(),
    });
    let weights = |dir: &str| bytes(Path::new(dir).join("model.safetensors"));

    let a = s.p("app-then-cli");
    assert!(!in_app(&config, None, None, Path::new(&a), false, true));
    assert!(promptscope::train::coop::checkpoint_path(Path::new(&a)).is_file());
    ok(&run(flags(&a, &["--resume"])));
    assert!(
        weights(&a) == weights(&straight),
        "app → CLI differs from one run"
    );

    let b = s.p("cli-then-app");
    let text: Vec<String> = flags(&b, &[])
        .into_iter()
        .filter(|f| f != "--format" && f != "json")
        .collect();
    in_cli_stopped(&text.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(promptscope::train::coop::checkpoint_path(Path::new(&b)).is_file());
    assert!(in_app(&config, None, None, Path::new(&b), true, false));
    assert!(
        weights(&b) == weights(&straight),
        "CLI → app differs from one run"
    );
}
