//! Pretraining on WebDataset shards (METHODS §10): the same pairs streamed from tars train the same
//! weights, bit for bit, as from folders; every kind of broken sample is skipped and counted or refused
//! naming its shard and key; a stopped run resumes to the same weights.

use std::path::{Path, PathBuf};

use super::common::*;
use promptscope::data::webdataset::{read_shard, write_shards, Members, Shard, ShardKind};

fn arg(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// `pretrain` of the tiny preset at 64 px on `data` into `out`, `epochs` in batches of `batch`, no cache.
fn tiny_args(data: &str, out: &Path, epochs: usize, batch: usize) -> Vec<String> {
    [
        "pretrain",
        "--data",
        data,
        "--out",
        &arg(out),
        "--preset",
        "tiny",
        "--image-size",
        "64",
        "--epochs",
        &epochs.to_string(),
        "--batch-size",
        &batch.to_string(),
        "--no-cache",
    ]
    .map(str::to_string)
    .to_vec()
}

fn run(args: &[String]) -> std::process::Output {
    promptscope(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Two epochs in batches of 16 (JSON): the model's bytes and the report.
fn pretrain(data: &str, out: &Path, extra: &[&str]) -> (Vec<u8>, serde_json::Value) {
    let mut args = tiny_args(data, out, 2, 16);
    args.extend(
        ["--format", "json"]
            .iter()
            .chain(extra)
            .map(|a| a.to_string()),
    );
    let stdout = ok(&run(&args));
    let report = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    (
        std::fs::read(out.join("model.safetensors")).unwrap(),
        report,
    )
}

/// Each tar of `shards` unpacked into a folder of the same name under `to` (img2dataset's `files`
/// layout: one folder a shard), as `tar -xf` would.
fn unpack(shards: &Path, to: &Path) {
    for entry in std::fs::read_dir(shards).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "tar") {
            let dir = to.join(path.file_stem().unwrap());
            tar::Archive::new(std::fs::File::open(&path).unwrap())
                .unpack(&dir)
                .unwrap();
        }
    }
}

/// `synth-scenes --format webdataset`: `count` 64 px scenes in shards of `per_shard`, in `dir/shards`.
fn synth_shards(dir: &Path, count: usize, per_shard: usize) -> PathBuf {
    let shards = dir.join("shards");
    ok(&promptscope(&[
        "synth-scenes",
        "--out",
        &arg(&shards),
        "--count",
        &count.to_string(),
        "--size",
        "64",
        "--format",
        "webdataset",
        "--shard-size",
        &per_shard.to_string(),
    ]));
    shards
}

#[test]
fn pretraining_on_shards_equals_the_same_pairs_read_from_folders_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shards = synth_shards(d, 120, 40);
    let sizes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shards.join("sizes.json")).unwrap()).unwrap();
    assert_eq!(
        sizes,
        serde_json::json!({"00000.tar": 40, "00001.tar": 40, "00002.tar": 40})
    );
    let files = d.join("files");
    unpack(&shards, &files);

    let buffer = ["--shuffle-buffer", "32"];
    let brace = format!("{}/{{00000..00002}}.tar", arg(&shards));
    let (a, report) = pretrain(&brace, &d.join("a"), &buffer);
    assert_eq!(report["run"]["source"]["pairs"], 120);
    assert_eq!(report["run"]["source"]["shards"]["shuffle_buffer"], 32);
    assert_eq!(report["skipped"]["by_kind"], serde_json::json!({}));
    // The same pairs from folders, and from the shards' folder: the same weights, byte for byte.
    assert!(a == pretrain(&arg(&files), &d.join("b"), &buffer).0);
    assert!(a == pretrain(&arg(&shards), &d.join("c"), &buffer).0);
    // What they share is the order: another buffer is another order, and other weights.
    assert!(a != pretrain(&brace, &d.join("e"), &["--shuffle-buffer", "1"]).0);

    // The pairs are synth-scenes' folder pairs: every key's caption and pixels the same.
    let flat = d.join("flat");
    ok(&promptscope(&[
        "synth-scenes",
        "--out",
        &arg(&flat),
        "--count",
        "120",
        "--size",
        "64",
    ]));
    let mut seen = 0;
    for name in ["00000.tar", "00001.tar", "00002.tar"] {
        let shard = Shard {
            path: shards.join(name),
            kind: ShardKind::Tar,
        };
        read_shard(&shard, &mut |s| {
            let s = s.unwrap();
            let i: usize = s.key.parse().unwrap();
            let stem = flat.join(format!("{i:06}"));
            let caption = std::fs::read_to_string(stem.with_extension("txt")).unwrap();
            assert_eq!(s.caption, caption.trim());
            let ours =
                promptscope::clip::preprocess::load_image_bytes(&s.image, &s.image_name()).unwrap();
            let theirs =
                promptscope::clip::preprocess::load_image(&stem.with_extension("png")).unwrap();
            assert_eq!(ours.to_rgb8().as_raw(), theirs.to_rgb8().as_raw());
            seen += 1;
            true
        })
        .unwrap();
    }
    assert_eq!(seen, 120);
}

#[test]
fn a_stopped_shard_run_resumes_to_the_weights_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shards = synth_shards(d, 96, 32);
    let data = arg(&shards);
    let args = |out: &Path| {
        let mut a = tiny_args(&data, out, 12, 16);
        a.extend(["--shuffle-buffer", "20"].map(str::to_string));
        a
    };
    let stopped = args(&d.join("stopped"));
    let (status, stderr) =
        ctrl_c_after_first_epoch(&stopped.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!status.success(), "{stderr}");
    assert!(d.join("stopped.ckpt").is_file(), "{stderr}");
    let mut resumed = stopped.clone();
    resumed.push("--resume".into());
    ok(&run(&resumed));
    let whole = d.join("whole");
    ok(&run(&args(&whole)));
    assert!(
        std::fs::read(d.join("stopped/model.safetensors")).unwrap()
            == std::fs::read(whole.join("model.safetensors")).unwrap()
    );
}

fn png(i: usize) -> Vec<u8> {
    let img = image::RgbImage::from_fn(32, 32, |x, y| {
        image::Rgb([(x * 8) as u8, (y * 8) as u8, (i * 40) as u8])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn good(i: usize) -> Members {
    vec![
        ("png", png(i)),
        ("txt", format!("a picture numbered {i}").into_bytes()),
    ]
}

/// One shard of 8 samples whose sample 3 is broken as `kind` says, or (truncated) cut short inside
/// sample 5's image; returns the shard's path.
fn broken_shard(dir: &Path, kind: &str) -> PathBuf {
    let make = |i: usize| -> promptscope::Result<Members> {
        Ok(match (i, kind) {
            (3, "no_caption") => vec![("png", png(i)), ("json", b"{}".to_vec())],
            (3, "no_image") => vec![("txt", b"a caption alone".to_vec())],
            (3, "caption_not_utf8") => vec![("png", png(i)), ("txt", vec![b'a', 0xff, 0xfe])],
            (3, "corrupt_image") => vec![
                ("png", b"\x89PNG not really".to_vec()),
                ("txt", b"x".to_vec()),
            ],
            _ => good(i),
        })
    };
    let out = dir.join(kind);
    write_shards(&out, 8, 8, &make).unwrap();
    let shard = out.join("00000.tar");
    if kind == "truncated_shard" {
        // Cut inside sample 5's image: its members' offsets found by reading the tar's headers.
        let bytes = std::fs::read(&shard).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let at = archive
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.path().unwrap().to_str() == Some("000000005.png"))
            .map(|e| e.raw_file_position() as usize + 20)
            .unwrap();
        std::fs::write(&shard, &bytes[..at]).unwrap();
        // Its sizes.json still claims 8, as a copy cut short would.
    }
    shard
}

/// One epoch in batches of 4, as a person runs it (text output).
fn one_epoch(data: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = tiny_args(data, out, 1, 4);
    args.extend(extra.iter().map(|a| a.to_string()));
    run(&args)
}

#[test]
fn every_broken_sample_is_skipped_and_counted_or_refused_naming_its_shard_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, key, says) in [
        ("no_caption", "000000003", "has no caption"),
        ("no_image", "000000003", "has no image"),
        ("caption_not_utf8", "000000003", "not UTF-8"),
        ("corrupt_image", "000000003", "does not decode"),
        ("truncated_shard", "000000005", "cut short"),
    ] {
        let shard = broken_shard(dir.path(), kind);
        let data = arg(&shard);
        // Skipped: the run trains on the rest and reports the one sample, once, whatever the epochs.
        let (_, report) = pretrain(&data, &dir.path().join(format!("{kind}-skip")), &[]);
        assert_eq!(
            report["skipped"]["by_kind"],
            serde_json::json!({ kind: 1 }),
            "{kind}"
        );
        let example = report["skipped"]["examples"][0].as_str().unwrap();
        assert!(
            example.contains(&data) && example.contains(key) && example.contains(says),
            "{kind}: {example}"
        );
        // The text report says so too: a skip is never silent.
        let out = one_epoch(&data, &dir.path().join(format!("{kind}-text")), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{kind}: {stderr}");
        assert!(
            stderr.contains("skipped 1 samples of the shards") && stderr.contains(key),
            "{kind}: {stderr}"
        );
        // Refused: an error naming the shard and the key, no model written, no panic.
        let fail_out = dir.path().join(format!("{kind}-fail"));
        let out = one_epoch(&data, &fail_out, &["--bad-samples", "fail"]);
        let line = error_line(&out);
        assert!(
            line.contains(&data)
                && line.contains(key)
                && line.contains(says)
                && line.contains("--bad-samples skip"),
            "{kind}: {line}"
        );
        assert!(!fail_out.join("model.safetensors").exists(), "{kind}");
    }
}

#[test]
fn shard_lists_that_cannot_be_read_are_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_shards(&d.join("s"), 4, 2, &|i| Ok(good(i))).unwrap();
    let run = |data: &str| {
        error_line(&promptscope(&[
            "pretrain",
            "--data",
            data,
            "--out",
            &arg(&d.join("m")),
            "--preset",
            "tiny",
            "--image-size",
            "64",
            "--no-cache",
        ]))
    };
    // A brace range past the files names the missing one.
    let missing = format!("{}/{{00000..00002}}.tar", arg(&d.join("s")));
    let line = run(&missing);
    assert!(
        line.contains("00002.tar") && line.contains("not found"),
        "{line}"
    );
    // A typo in the braces is named as such.
    let line = run(&format!("{}/{{00000..0000x}}.tar", arg(&d.join("s"))));
    assert!(line.contains("range of numbers"), "{line}");
    // A tar that holds no pairs, with no sizes.json beside it: counted, and refused.
    std::fs::create_dir(d.join("empty")).unwrap();
    write_shards(&d.join("empty"), 2, 2, &|_| {
        Ok(vec![("json", b"{}".to_vec())])
    })
    .unwrap();
    std::fs::remove_file(d.join("empty/sizes.json")).unwrap();
    let line = run(&arg(&d.join("empty/00000.tar")));
    assert!(line.contains("no usable image"), "{line}");
    // A sizes.json that is not a map of counts names itself.
    std::fs::write(d.join("s/sizes.json"), "[1, 2]").unwrap();
    let line = run(&arg(&d.join("s")));
    assert!(line.contains("sizes.json"), "{line}");
}

#[test]
fn shards_without_sizes_are_counted_once_and_the_count_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 6 samples, one without caption: 5 usable.
    write_shards(&d.join("s"), 6, 3, &|i| {
        Ok(if i == 4 {
            vec![("png", png(i))]
        } else {
            good(i)
        })
    })
    .unwrap();
    std::fs::remove_file(d.join("s/sizes.json")).unwrap();
    let cache = d.join("cache");
    let set = promptscope::data::webdataset::ShardSet::open(
        &d.join("s"),
        Some(&cache),
        &promptscope::progress::Silent,
    )
    .unwrap();
    assert_eq!(set.sizes, [3, 2]);
    assert!(set.sizes_from.starts_with(cache.join("shard-sizes")));
    // The cached count is what a second open reads: rewrite it and the shards are not read again.
    std::fs::write(&set.sizes_from, "[7, 9]").unwrap();
    let again = promptscope::data::webdataset::ShardSet::open(
        &d.join("s"),
        Some(&cache),
        &promptscope::progress::Silent,
    )
    .unwrap();
    assert_eq!(again.sizes, [7, 9]);
    // A changed shard is another key: counted afresh.
    write_shards(&d.join("s"), 4, 3, &|i| Ok(good(i))).unwrap();
    std::fs::remove_file(d.join("s/sizes.json")).unwrap();
    let fresh = promptscope::data::webdataset::ShardSet::open(
        &d.join("s"),
        Some(&cache),
        &promptscope::progress::Silent,
    )
    .unwrap();
    assert_eq!(fresh.sizes, [3, 1]);
}
