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
    let mut child = Command::new(env!("CARGO_BIN_EXE_promptscope"))
        .args(args)
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .stdout(Stdio::from(out.reopen().unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + after;
    let finished = loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{args:?} failed on its own: {status}");
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

/// 80–110 % of the start-up, plus up to `fraction` of the training: each killed run gets a little
/// further than the last checkpoint, so a run takes many kills to finish.
fn kill_time(rng: &mut Rng, startup: Duration, training: Duration, fraction: f64) -> Duration {
    let u = |rng: &mut Rng| (rng.next_u64() % 1000) as f64 / 1000.0;
    startup.mul_f64(0.8 + 0.3 * u(rng)) + training.mul_f64(fraction * u(rng))
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
            "60",
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
    let mut finished = false;
    for _ in 0..400 {
        // Around the end of start-up plus up to a twentieth of the training: some kills land in
        // start-up (the first run also caches features), most a few epochs into training, some in the
        // checkpoint writes and the export.
        // Until a run has cached the features, start-up includes computing them.
        let cached =
            std::fs::read_dir(s.dir.path().join("cache")).is_ok_and(|mut d| d.next().is_some());
        let after = kill_time(
            &mut rng,
            if cached { startup } else { startup_uncached },
            training,
            0.05,
        );
        let (done, stdout) = run_or_kill(&args, after);
        let bytes = std::fs::read(&out).unwrap();
        assert!(
            bytes == older || PromptFile::load(Path::new(&out)).is_ok(),
            "a torn export after kill {kills}"
        );
        if done {
            finished = true;
            break;
        }
        kills += 1;
        let last_epoch = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["epoch"].as_u64());
        phases[match last_epoch {
            None => 0,
            Some(59) => 2,
            Some(_) => 1,
        }] += 1;
    }
    assert!(finished, "the run never finished across {kills} kills");
    eprintln!(
        "kill safety: {kills} SIGKILLs (before the first epoch: {}, during training: {}, after the last epoch: {}); start-up {:.2} s, training {:.2} s",
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
    loop {
        let after = kill_time(&mut rng, startup, training, 0.12);
        let (done, _) = run_or_kill(&a, after);
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
