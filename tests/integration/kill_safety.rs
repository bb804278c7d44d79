//! Kill safety: `train --out F` and `pretrain --out DIR` killed with SIGKILL at random instants (model
//! loading, feature caching, mid-epoch, checkpoint writes, the export) and resumed each time end bit for
//! bit where an uninterrupted run does; between kills the output is always either the file that was there
//! before or a complete new one, never a torn one, and no temporary file outlives its process.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use promptscope::export::prompt_file::PromptFile;
use promptscope::rng::Rng;

use super::common::{ok, promptscope, Scratch};

/// Runs the binary with `args`, killing it after `after` unless it finishes first. Returns whether it
/// finished by itself (successfully) and its stdout so far.
fn run_or_kill(args: &[&str], after: Duration) -> (bool, String) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_promptscope"))
        .args(args)
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .stdout(Stdio::from(out.reopen().unwrap()))
        .stderr(Stdio::from(err.reopen().unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + after;
    let finished = loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "{args:?} failed on its own: {status}: {}",
                std::fs::read_to_string(err.path()).unwrap_or_default()
            );
            break true;
        }
        if Instant::now() >= deadline {
            child.kill().unwrap(); // SIGKILL on Unix
            child.wait().unwrap();
            break false;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    (
        finished,
        std::fs::read_to_string(out.path()).unwrap_or_default(),
    )
}

/// Runs to the end; returns the start-up time (all but the training) and the training time (the
/// summary's `key`, in seconds).
fn timed(args: &[&str], key: &str) -> (Duration, Duration) {
    let start = Instant::now();
    let stdout = ok(&promptscope(args));
    let whole = start.elapsed();
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let summary = last.get("summary").unwrap_or(&last);
    let training = Duration::from_secs_f64(
        summary[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no {key} in {last}")),
    );
    (whole.saturating_sub(training), training)
}

/// When to kill the next run: about when start-up ends, plus up to `reach` epochs. The start-up estimate
/// adapts (a machine under load starts slower): a run killed before its first epoch lengthens it, one
/// that got far shortens it. So every kill lands near the training's front and a run takes many kills
/// to finish, however fast the machine is.
struct KillClock {
    startup: Duration,
    epoch: Duration,
    reach: f64,
}

impl KillClock {
    fn next(&self, rng: &mut Rng) -> Duration {
        let u = |rng: &mut Rng| (rng.next_u64() % 1000) as f64 / 1000.0;
        self.startup.mul_f64(0.95 + 0.1 * u(rng)) + self.epoch.mul_f64(self.reach * u(rng))
    }

    /// A run killed `after` had reported `epochs` epochs: re-estimate when start-up ends.
    fn observe(&mut self, after: Duration, epochs: usize) {
        if epochs == 0 {
            // Start-up was not over yet.
            self.startup = self.startup.max(after).mul_f64(1.1);
        } else {
            // Start-up ended about `epochs` epochs before the kill.
            let seen = after.saturating_sub(self.epoch * epochs as u32);
            self.startup = (self.startup + seen) / 2;
        }
    }
}

/// The epochs finished according to the run's checkpoint next to `out` (0 without one).
fn checkpoint_epoch(out: &str) -> usize {
    let ckpt = promptscope::train::coop::checkpoint_path(Path::new(out));
    promptscope::tensor_file::read_safetensors(&ckpt)
        .ok()
        .and_then(|(_, meta)| meta.get("epoch")?.parse().ok())
        .unwrap_or(0)
}

/// The epochs a run printed (`{"epoch": …}` lines).
fn epochs_reported(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["epoch"].as_u64())
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn ctx_bits(path: &Path) -> Vec<u32> {
    let f = PromptFile::load(path).unwrap();
    f.ctx
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Temporary files (`.NAME.PID-N.tmp`) left in `dir`.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn training_killed_at_random_instants_resumes_to_the_uninterrupted_context_bit_for_bit() {
    let s = Scratch::with_tiny_model();
    promptscope::data::synth::write_dataset(&s.dir.path().join("d"), 3, 0, Some((4, 2, 3)), 5)
        .unwrap();
    let (m, d) = (s.p("m"), s.p("d"));
    let args = |out: &str, cache: &str| -> Vec<String> {
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
            "100",
            "--batch-size",
            "2",
            "--lr",
            "0.05",
            "--views",
            "2",
            "--cache",
            cache,
            "--out",
            out,
            "--format",
            "json",
            "--resume",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    // Twice: the second run reads the cached features, as every resumed run does; its start-up (model
    // load, split, cache read) and training time size the kills.
    let reference = s.p("reference.safetensors");
    let (startup_uncached, _) = timed(&strs(&args(&reference, &s.p("cache-ref"))), "train_seconds");
    let (startup, training) = timed(&strs(&args(&reference, &s.p("cache-ref"))), "train_seconds");

    // The output already holds an older, valid prompts file: between kills it must stay that file or
    // become the new one whole.
    let out = s.p("killed.safetensors");
    std::fs::copy(s.dir.path().join("reference.safetensors"), &out).unwrap();
    let older = std::fs::read(&out).unwrap();
    let args = args(&out, &s.p("cache"));
    let args = strs(&args);
    let mut rng = Rng::new(7);
    let (mut kills, mut phases) = (0, [0usize; 3]);
    let (mut finished, mut restarts) = (false, 0);
    // Until a run has cached the features, start-up includes computing them: its own clock.
    let epoch = training / 100;
    let mut uncached = KillClock {
        startup: startup_uncached,
        epoch,
        reach: 1.5,
    };
    let mut cached = KillClock {
        startup,
        epoch,
        reach: 1.5,
    };
    for _ in 0..400 {
        let has_cache =
            std::fs::read_dir(s.dir.path().join("cache")).is_ok_and(|mut d| d.next().is_some());
        let clock = if has_cache {
            &mut cached
        } else {
            &mut uncached
        };
        let after = clock.next(&mut rng);
        let before = checkpoint_epoch(&out);
        let (done, stdout) = run_or_kill(&args, after);
        let bytes = std::fs::read(&out).unwrap();
        assert!(
            bytes == older || PromptFile::load(Path::new(&out)).is_ok(),
            "a torn export after kill {kills}"
        );
        if done {
            assert_eq!(
                ctx_bits(Path::new(&out)),
                ctx_bits(Path::new(&reference)),
                "resumed context differs from the uninterrupted one (after {kills} kills)"
            );
            if kills >= 20 {
                finished = true;
                break;
            }
            // Finished before enough kills (the machine sped up since the clocks were timed, as when
            // a parallel test ends): start over from the older file and keep killing.
            restarts += 1;
            std::fs::write(&out, &older).unwrap();
            continue;
        }
        kills += 1;
        // Progress from the checkpoint (stdout may not have been flushed when the kill came).
        let epochs = epochs_reported(&stdout);
        clock.observe(after, checkpoint_epoch(&out).saturating_sub(before));
        phases[match epochs.last() {
            None => 0,
            Some(99) => 2,
            Some(_) => 1,
        }] += 1;
    }
    assert!(finished, "the run never finished across {kills} kills");
    eprintln!(
        "kill safety: {kills} SIGKILLs over {} runs (before the first epoch: {}, during training: {}, after the last epoch: {}); start-up {:.2} s, training {:.2} s",
        restarts + 1,
        phases[0],
        phases[1],
        phases[2],
        startup.as_secs_f64(),
        training.as_secs_f64()
    );
    assert!(
        kills >= 20,
        "only {kills} kills: the run was too short to interrupt"
    );
    assert!(
        phases[0] > 0 && phases[1] > 0,
        "kills in every phase: {phases:?}"
    );
    assert_eq!(
        ctx_bits(Path::new(&out)),
        ctx_bits(Path::new(&reference)),
        "resumed context differs from the uninterrupted one"
    );
    assert!(
        !Path::new(&promptscope::train::coop::checkpoint_path(Path::new(&out))).exists(),
        "the checkpoint is removed once the export is written"
    );
    assert_eq!(
        temporaries(s.dir.path()),
        Vec::<String>::new(),
        "stale temporaries left"
    );
}

#[test]
fn pretraining_killed_at_random_instants_resumes_to_the_same_weights() {
    let s = Scratch::with_tiny_model();
    ok(&promptscope(&[
        "synth-scenes",
        "--out",
        &s.p("pairs"),
        "--count",
        "8",
        "--size",
        "224",
        "--seed",
        "2",
    ]));
    let args = |out: &str| -> Vec<String> {
        let pairs = s.p("pairs");
        [
            "pretrain",
            "--data",
            &pairs,
            "--out",
            out,
            "--preset",
            "tiny",
            "--loss",
            "filip",
            "--epochs",
            "12",
            "--batch-size",
            "4",
            "--format",
            "json",
            "--resume",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let reference = s.p("reference");
    let (startup, training) = timed(&strs(&args(&reference)), "seconds");
    let out = s.p("killed");
    let a = args(&out);
    let a = strs(&a);
    let mut rng = Rng::new(11);
    let mut kills = 0;
    let mut clock = KillClock {
        startup,
        epoch: training / 12,
        reach: 1.5,
    };
    loop {
        let after = clock.next(&mut rng);
        let (done, stdout) = run_or_kill(&a, after);
        clock.observe(after, epochs_reported(&stdout).len());
        // The model folder appears whole or not at all.
        let folder = Path::new(&out);
        assert!(
            !folder.exists()
                || folder.join("model.safetensors").is_file()
                    && folder.join("config.json").is_file(),
            "a partial model folder after kill {kills}"
        );
        if done {
            break;
        }
        kills += 1;
        assert!(kills < 200, "the run never finished");
    }
    eprintln!(
        "kill safety (pretrain): {kills} SIGKILLs; start-up {:.2} s, training {:.2} s",
        startup.as_secs_f64(),
        training.as_secs_f64()
    );
    assert!(kills >= 5, "only {kills} kills");
    let weights = |dir: &str| std::fs::read(Path::new(dir).join("model.safetensors")).unwrap();
    assert!(
        weights(&out) == weights(&reference),
        "resumed weights differ from the uninterrupted run's"
    );
}

/// Two processes filling the same feature-cache entries at once both finish with the same context, and
/// what they leave is read back by a third run without a warning (their temporaries never collide).
#[test]
fn two_processes_filling_one_cache_do_not_corrupt_it() {
    let s = Scratch::with_tiny_model();
    promptscope::data::synth::write_dataset(&s.dir.path().join("d"), 3, 0, Some((4, 2, 3)), 6)
        .unwrap();
    let (m, d, cache) = (s.p("m"), s.p("d"), s.p("cache"));
    let command = |out: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_promptscope"));
        c.args([
            "train", "--model", &m, "--data", &d, "--shots", "2", "--n-ctx", "4", "--epochs", "3",
            "--views", "3", "--cache", &cache, "--out", out,
        ]);
        c.env("HF_ENDPOINT", "http://127.0.0.1:9")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    let (a, b) = (s.p("a.safetensors"), s.p("b.safetensors"));
    let runs: Vec<_> = [&a, &b]
        .iter()
        .map(|out| command(out).spawn().unwrap())
        .collect();
    for r in runs {
        let out = r.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(ctx_bits(Path::new(&a)), ctx_bits(Path::new(&b)));
    let third = command(&s.p("c.safetensors")).output().unwrap();
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(
        third.status.success() && !stderr.contains("ignoring feature cache"),
        "{stderr}"
    );
    assert_eq!(
        ctx_bits(Path::new(&s.p("c.safetensors"))),
        ctx_bits(Path::new(&a))
    );
    assert_eq!(temporaries(Path::new(&cache)), Vec::<String>::new());
}
