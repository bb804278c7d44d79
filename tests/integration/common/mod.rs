//! Shared by the integration tests: the random-weight checkpoints of `scripts/make_fixtures.py`,
//! rebuilt here bit for bit, and comparison helpers.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use promptscope::clip::{synth, ClipConfig, HiddenAct};

/// The device parity tests run on: the CPU, or `PROMPTSCOPE_TEST_DEVICE=cuda` on a GPU machine.
pub fn device() -> candle_core::Device {
    match std::env::var("PROMPTSCOPE_TEST_DEVICE").as_deref() {
        Ok("cuda") => candle_core::Device::new_cuda(0)
            .expect("PROMPTSCOPE_TEST_DEVICE=cuda needs a CUDA build and GPU"),
        _ => candle_core::Device::Cpu,
    }
}

/// Fixtures are found next to the sources, or under `PROMPTSCOPE_FIXTURES` when the test binaries run
/// from another checkout (a GPU machine).
pub fn fixtures() -> PathBuf {
    if let Ok(dir) = std::env::var("PROMPTSCOPE_FIXTURES") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("clip_reference.json"))
        .expect("clip_reference.json");
    serde_json::from_str(&text).expect("valid JSON")
}

pub fn preset(name: &str) -> ClipConfig {
    match name {
        "tiny" => ClipConfig::tiny(HiddenAct::QuickGelu, 1e-5),
        "tiny-gelu" => ClipConfig::tiny(HiddenAct::Gelu, 1e-6),
        other => panic!("no preset {other}"),
    }
}

/// transformers' own CLIP tokenizer.json, as `make_fixtures.py` saved it.
pub fn hf_tokenizer_json() -> Vec<u8> {
    let gz =
        std::fs::read(fixtures().join("hf_clip_tokenizer.json.gz")).expect("tokenizer fixture");
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

/// Writes the preset's checkpoint with the HF-made tokenizer.json into a fresh temp folder, and checks
/// that the weights are the ones the reference was computed on.
pub fn model_dir(name: &str, reference: &serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    synth::write_model_folder(&preset(name), dir.path()).unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), hf_tokenizer_json()).unwrap();
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let sha = sha256_hex(&bytes);
    assert_eq!(
        Some(sha.as_str()),
        reference[name]["weights_sha256"].as_str(),
        "the synthetic weights changed since the fixtures were made: run `cargo build && python3 scripts/make_fixtures.py`"
    );
    dir
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// All numbers of a nested JSON array, flattened.
pub fn flat(v: &serde_json::Value) -> Vec<f32> {
    match v {
        serde_json::Value::Array(a) => a.iter().flat_map(flat).collect(),
        serde_json::Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        other => panic!("not a number array: {other}"),
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// `make_fixtures.py`'s pattern_pixels: exactly representable, so both sides see the same input.
pub fn pattern_pixels(batch: usize, size: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(batch * 3 * size * size);
    for b in 0..batch {
        for c in 0..3 {
            for y in 0..size {
                for x in 0..size {
                    v.push(((7 * x + 13 * y + 31 * c + 17 * b) % 255) as f32 / 127.5 - 1.0);
                }
            }
        }
    }
    v
}

/// `make_fixtures.py`'s pattern_embeds.
pub fn pattern_embeds(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((3 * i + 5) % 97) as f32 / 48.5 - 1.0)
        .collect()
}

/// Runs the `promptscope` binary with `args` and presses Ctrl-C (SIGINT) once it has printed its first
/// `epoch` line on stderr, while the job polls for cancellation. Returns how it exited (within 10 s of
/// the Ctrl-C) and all it printed on stderr, which is read to its end on a thread (a closed stderr would
/// fail the run's next line).
pub fn ctrl_c_after_first_epoch(args: &[&str]) -> (std::process::ExitStatus, String) {
    use std::io::BufRead;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = Command::new(env!("CARGO_BIN_EXE_promptscope"))
        .args(args)
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no epoch line: {seen:?}"));
        seen.push(line);
        if seen.last().unwrap().starts_with("epoch") {
            break;
        }
    }
    // libc is not a dependency; `kill` is in every POSIX shell environment.
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("still running 10 s after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    seen.extend(rx.iter());
    (status, seen.join("\n"))
}

/// Runs the `promptscope` binary. Hub look-ups go to a closed local port, so they fail at once and never
/// reach the network.
pub fn promptscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_promptscope"))
        .args(args)
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env(
            "HF_HOME",
            std::env::temp_dir().join("promptscope-test-hf-home"),
        )
        .output()
        .expect("run promptscope")
}

/// A clean failure: exit code 1, no panic, and the one `error:` line it printed.
pub fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {stderr}"))
        .to_string()
}

/// The stdout of a run that must have succeeded.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub use promptscope::testing::within;

/// A temp folder for one test: the tiny random-weight model at `m`, and whatever the test writes beside it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn with_tiny_model() -> Self {
        let dir = tempfile::tempdir().unwrap();
        synth::write_model_folder(&preset("tiny"), &dir.path().join("m")).unwrap();
        Self { dir }
    }

    /// A path inside the folder, as the CLI takes it.
    pub fn p(&self, rel: &str) -> String {
        self.dir.path().join(rel).to_str().unwrap().to_string()
    }
}

/// The non-square PNG fixture, as the CLI takes it.
pub fn fixture_image() -> String {
    fixtures()
        .join("nonsquare_320x213.png")
        .to_str()
        .unwrap()
        .to_string()
}

/// The fixture scripts' pattern(): `((a·i + b) % m) / (m/2) − 1`, times `scale`: exactly representable,
/// so PyTorch and the test build the same numbers bit for bit.
pub fn pattern(n: usize, a: usize, b: usize, m: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (((a * i + b) % m) as f32 / (m as f32 / 2.0) - 1.0) * scale)
        .collect()
}

/// How far `ours` is from `theirs`, relative to how far `theirs` moved from `base`: a trajectory is
/// compared on its change, or the shared starting point would hide a wrong update.
pub fn relative_change(ours: &[f32], theirs: &[f32], base: &[f32]) -> f64 {
    let num: f64 = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = theirs
        .iter()
        .zip(base)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    num / den
}

/// A fixture's optimiser settings (`lr`, `momentum`, `weight_decay`, `warmup_epochs`, `warmup_lr`,
/// `epochs`; missing ones are 0).
pub fn optim_config(o: &serde_json::Value) -> promptscope::train::optim::OptimConfig {
    let f = |k: &str| o[k].as_f64().unwrap_or(0.0);
    promptscope::train::optim::OptimConfig {
        lr: f("lr"),
        momentum: f("momentum"),
        weight_decay: f("weight_decay"),
        warmup_epochs: o["warmup_epochs"].as_u64().unwrap_or(0) as usize,
        warmup_lr: f("warmup_lr"),
        epochs: o["epochs"].as_u64().unwrap() as usize,
    }
}

/// An MP-FGVC stage as the tests train it: AdamW at `lr` for `epochs` after one warm-up epoch, batch 32.
pub fn mpfgvc_stage(lr: f64, epochs: usize) -> promptscope::train::mpfgvc::StageConfig {
    promptscope::train::mpfgvc::StageConfig {
        optim: promptscope::train::optim::OptimConfig {
            lr,
            momentum: 0.9,
            weight_decay: 5e-4,
            warmup_epochs: 1,
            warmup_lr: 1e-5,
            epochs,
        },
        batch_size: Some(32),
        optimizer: promptscope::train::mpfgvc::OptimizerKind::AdamW,
    }
}

/// Rewrites the metadata of the safetensors file at `path` in place (tensors unchanged): how the tests
/// make a file as an older version wrote it.
pub fn edit_safetensors_meta(
    path: &std::path::Path,
    edit: impl FnOnce(&mut std::collections::HashMap<String, String>),
) {
    let (tensors, mut meta) = promptscope::tensor_file::read_safetensors(path).unwrap();
    edit(&mut meta);
    let tensors: Vec<(&str, candle_core::Tensor)> = tensors
        .iter()
        .map(|(k, t)| (k.as_str(), t.clone()))
        .collect();
    std::fs::write(
        path,
        promptscope::tensor_file::safetensors_bytes(&tensors, meta).unwrap(),
    )
    .unwrap();
}
