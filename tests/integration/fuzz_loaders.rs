//! Structured mutation fuzzing of every loader promptscope points at files it did not write: valid seeds
//! (made here, or the fixtures), mutated by a seeded mutator that knows where formats keep their lengths
//! and offsets (the first bytes, the JSON numbers), each case written to a file and loaded in-process.
//! A case passes when the loader returns — accepted, or refused with an error; a panic fails the target
//! (its input is kept under `target/fuzz-crashes/`). Errors must name the file the user passed.
//!
//! `PROMPTSCOPE_FUZZ_CASES` sets the cases per target (default 120: the CI run);
//! `scripts/fuzz.sh` runs many more and prints each target's counts.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle_core::Device;
use promptscope::rng::Rng;

use super::common::{fixtures, hf_tokenizer_json, Scratch};

fn cases() -> usize {
    std::env::var("PROMPTSCOPE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120)
}

/// Byte-level mutations that reach parsers' length and offset fields.
struct Mutator {
    rng: Rng,
}

impl Mutator {
    fn below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n.max(1) as u64) as usize
    }

    /// An offset, half the time within the first 256 bytes (headers, lengths, magic numbers).
    fn offset(&mut self, len: usize) -> usize {
        if self.below(2) == 0 {
            self.below(len.min(256))
        } else {
            self.below(len)
        }
    }

    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut b = seed.to_vec();
        for _ in 0..1 + self.below(4) {
            if b.is_empty() {
                b.push(self.rng.next_u64() as u8);
                continue;
            }
            let at = self.offset(b.len());
            match self.below(8) {
                0 => b[at] ^= 1 << self.below(8),
                1 => b[at] = [0, 0xff, 0x7f, 0x80, b'{', b'"', b'\n', b'0'][self.below(8)],
                2 => {
                    // A little-endian integer that parsers read as a length or an offset.
                    let v: u64 =
                        [0, 1, u64::MAX, u32::MAX as u64, 1 << 31, 1 << 40, 7][self.below(7)];
                    let width = [2usize, 4, 8][self.below(3)];
                    for (i, byte) in v.to_le_bytes().iter().take(width).enumerate() {
                        if let Some(x) = b.get_mut(at + i) {
                            *x = *byte;
                        }
                    }
                }
                3 => b.truncate(at),
                4 => {
                    let n = 1 + self.below(16);
                    let junk: Vec<u8> = (0..n).map(|_| self.rng.next_u64() as u8).collect();
                    b.splice(at..at, junk);
                }
                5 => {
                    let end = (at + 1 + self.below(64)).min(b.len());
                    b.drain(at..end);
                }
                6 => {
                    let end = (at + 1 + self.below(64)).min(b.len());
                    let chunk = b[at..end].to_vec();
                    let to = self.offset(b.len());
                    b.splice(to..to, chunk);
                }
                _ => b = self.mutate_json_number(&b),
            }
        }
        b
    }

    /// Replaces one number of a JSON text by an extreme one (0, -1, huge, fractional), keeping it JSON.
    fn mutate_json_number(&mut self, b: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(b);
        let spans: Vec<(usize, usize)> = {
            let bytes = text.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
                    let start = i;
                    while i < bytes.len()
                        && (bytes[i].is_ascii_digit()
                            || bytes[i] == b'.'
                            || bytes[i] == b'e'
                            || bytes[i] == b'-')
                    {
                        i += 1;
                    }
                    out.push((start, i));
                }
                i += 1;
            }
            out
        };
        if spans.is_empty() {
            return b.to_vec();
        }
        let (s, e) = spans[self.below(spans.len())];
        let with = [
            "0",
            "-1",
            "1",
            "3",
            "100000000",
            "18446744073709551615",
            "1e308",
            "0.5",
            "-0",
            "null",
            "\"x\"",
        ][self.below(11)];
        format!("{}{with}{}", &text[..s], &text[e..]).into_bytes()
    }
}

/// What one target's run saw.
struct Counts {
    cases: usize,
    accepted: usize,
    refused: usize,
}

/// Loads `cases()` mutations of `seeds` written as `file_name` in a scratch folder (`prepare` may add
/// companions there first) with `load`; panics, and errors that do not name the file, fail.
fn fuzz(
    target: &str,
    seeds: &[Vec<u8>],
    file_name: &str,
    prepare: impl Fn(&Path),
    load: impl Fn(&Path) -> Result<(), String>,
) -> Counts {
    let mut m = Mutator {
        rng: Rng::new(0x5eed ^ target.len() as u64),
    };
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let file = dir.path().join(file_name);
    let mut counts = Counts {
        cases: 0,
        accepted: 0,
        refused: 0,
    };
    let mut crashes = Vec::new();
    let mut unnamed = Vec::new();
    for case in 0..cases() {
        let input = m.mutate(&seeds[case % seeds.len()]);
        std::fs::write(&file, &input).unwrap();
        counts.cases += 1;
        match catch_unwind(AssertUnwindSafe(|| load(&file))) {
            Ok(Ok(())) => counts.accepted += 1,
            Ok(Err(e)) => {
                counts.refused += 1;
                if !e.contains(file_name)
                    && !e.contains(&dir.path().display().to_string())
                    && unnamed.len() < 3
                {
                    unnamed.push(e);
                }
            }
            Err(_) => {
                let keep = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
                std::fs::create_dir_all(&keep).unwrap();
                let kept = keep.join(format!("{target}-{case}-{file_name}"));
                std::fs::write(&kept, &input).unwrap();
                crashes.push(kept);
            }
        }
    }
    eprintln!(
        "fuzz {target}: {} cases, {} accepted, {} refused with an error, {} panics",
        counts.cases,
        counts.accepted,
        counts.refused,
        crashes.len()
    );
    assert!(crashes.is_empty(), "{target}: panics on {crashes:?}");
    assert!(
        unnamed.is_empty(),
        "{target}: errors that do not name the file: {unnamed:?}"
    );
    counts
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn tiny_model() -> Scratch {
    Scratch::with_tiny_model()
}

/// Copies the tiny model's files other than `except` into `dir`.
fn model_files_into(model: &Path, dir: &Path, except: &str) {
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        if f != except && model.join(f).is_file() {
            std::fs::copy(model.join(f), dir.join(f)).unwrap();
        }
    }
    if except != "tokenizer.json" {
        std::fs::write(dir.join("tokenizer.json"), hf_tokenizer_json()).unwrap();
    }
}

fn load_model(dir: &Path) -> Result<(), String> {
    let clip = promptscope::clip::load::load_dir(dir, "fuzz", &Device::Cpu).map_err(err)?;
    // A model that loads must also run.
    promptscope::clip::encode::text_features(
        &clip,
        &["a photo of a dog.".to_string()],
        1,
        &promptscope::progress::Silent,
    )
    .map_err(err)?;
    Ok(())
}

#[test]
fn fuzz_config_json() {
    let s = tiny_model();
    let m = s.dir.path().join("m");
    let seed = std::fs::read(m.join("config.json")).unwrap();
    let families: Vec<Vec<u8>> = ["siglip", "chinese_clip"]
        .iter()
        .map(|f| std::fs::read(fixtures().join("families").join(f).join("config.json")).unwrap())
        .collect();
    fuzz(
        "config.json",
        &[seed],
        "config.json",
        |d| model_files_into(&m, d, "config.json"),
        |p| load_model(p.parent().unwrap()),
    );
    // The other families' configs, against their own weights.
    for (name, seed) in ["siglip", "chinese_clip"].iter().zip(families) {
        let src = fixtures().join("families").join(name);
        fuzz(
            &format!("config.json ({name})"),
            &[seed],
            "config.json",
            |d| {
                for f in [
                    "model.safetensors",
                    "tokenizer.json",
                    "preprocessor_config.json",
                ] {
                    std::fs::copy(src.join(f), d.join(f)).unwrap();
                }
            },
            |p| load_model(p.parent().unwrap()),
        );
    }
}

#[test]
fn fuzz_model_safetensors() {
    let s = tiny_model();
    let m = s.dir.path().join("m");
    let seed = std::fs::read(m.join("model.safetensors")).unwrap();
    fuzz(
        "model.safetensors",
        &[seed],
        "model.safetensors",
        |d| model_files_into(&m, d, "model.safetensors"),
        |p| load_model(p.parent().unwrap()),
    );
}

#[test]
fn fuzz_tokenizer_json() {
    let s = tiny_model();
    let m = s.dir.path().join("m");
    let seeds = vec![
        hf_tokenizer_json(),
        std::fs::read(fixtures().join("families/siglip/tokenizer.json")).unwrap(),
    ];
    fuzz(
        "tokenizer.json",
        &seeds,
        "tokenizer.json",
        |d| model_files_into(&m, d, "tokenizer.json"),
        |p| load_model(p.parent().unwrap()),
    );
}

#[test]
fn fuzz_preprocessor_config() {
    let s = tiny_model();
    let m = s.dir.path().join("m");
    let seeds = vec![
        String::from_utf8(std::fs::read(fixtures().join("families/chinese_clip/preprocessor_config.json")).unwrap()).unwrap().replace(": 32", ": 224").into_bytes(),
        br#"{"size": {"shortest_edge": 224}, "crop_size": 224, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}"#.to_vec(),
        br#"{"size": {"height": 224, "width": 224}, "do_center_crop": false, "do_normalize": true, "rescale_factor": 0.00392156862745098}"#.to_vec(),
    ];
    let image = fixtures().join("nonsquare_320x213.png");
    fuzz(
        "preprocessor_config.json",
        &seeds,
        "preprocessor_config.json",
        |d| model_files_into(&m, d, ""),
        |p| {
            let clip = promptscope::clip::load::load_dir(p.parent().unwrap(), "fuzz", &Device::Cpu)
                .map_err(err)?;
            promptscope::clip::encode::pixel_batch(&clip, std::slice::from_ref(&image))
                .map_err(err)?;
            Ok(())
        },
    );
}

#[test]
fn fuzz_images() {
    // One small picture in each format the dataset loader reads.
    let img = image::RgbImage::from_fn(23, 17, |x, y| {
        image::Rgb([(x * 11) as u8, (y * 13) as u8, ((x + y) * 7) as u8])
    });
    let encode = |format| {
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img.clone())
            .write_to(&mut out, format)
            .unwrap();
        out.into_inner()
    };
    let cfg = promptscope::clip::PreprocessConfig::clip(32);
    for (name, format) in [
        ("image.png", image::ImageFormat::Png),
        ("image.jpg", image::ImageFormat::Jpeg),
        ("image.webp", image::ImageFormat::WebP),
        ("image.gif", image::ImageFormat::Gif),
        ("image.bmp", image::ImageFormat::Bmp),
        ("image.tiff", image::ImageFormat::Tiff),
    ] {
        fuzz(
            name,
            &[encode(format)],
            name,
            |_| {},
            |p| {
                let img = promptscope::clip::preprocess::load_image(p).map_err(err)?;
                promptscope::clip::preprocess::preprocess(&img, &cfg);
                Ok(())
            },
        );
    }
}

#[test]
fn fuzz_prompts_files() {
    let s = tiny_model();
    let clip = promptscope::clip::load(&s.p("m"), &Device::Cpu).unwrap();
    let names = vec!["red circle".to_string(), "blue square".to_string()];
    let cfg = promptscope::prompt::coop::CoopConfig {
        n_ctx: 4,
        ..Default::default()
    };
    let learner = promptscope::prompt::coop::PromptLearner::new(
        &clip.model().unwrap().text,
        clip.tokenizer().unwrap(),
        &names,
        &cfg,
    )
    .unwrap();
    let weights = learner.text_features(&clip.model().unwrap().text).unwrap();
    let file = promptscope::export::prompt_file::PromptFile::new(&clip, &learner, weights).unwrap();
    let path = s.dir.path().join("p.safetensors");
    file.save(&path).unwrap();
    let seed = std::fs::read(&path).unwrap();
    let feats = candle_core::Tensor::ones((2, 24), candle_core::DType::F32, &Device::Cpu).unwrap();
    fuzz(
        "prompts file",
        &[seed],
        "p.safetensors",
        |_| {},
        |p| {
            let f = promptscope::export::prompt_file::PromptFile::load(p).map_err(err)?;
            // A file that loads is scored, as Compare would.
            f.scorer(&clip, p)
                .map_err(err)?
                .logits(&clip, &feats)
                .map_err(err)?;
            Ok(())
        },
    );
}

#[test]
fn fuzz_coop_checkpoints() {
    let seeds: Vec<Vec<u8>> = ["model.pth.tar-3", "evil.pth.tar"]
        .iter()
        .map(|f| std::fs::read(fixtures().join("coop_checkpoint").join(f)).unwrap())
        .collect();
    fuzz(
        "model.pth.tar",
        &seeds,
        "model.pth.tar",
        |_| {},
        |p| {
            promptscope::export::coop_import::read(p)
                .map(|_| ())
                .map_err(err)
        },
    );
}

#[test]
fn fuzz_caption_files() {
    let s = Scratch::with_tiny_model();
    let pairs = s.dir.path().join("pairs");
    super::common::ok(&super::common::promptscope(&[
        "synth-scenes",
        "--out",
        pairs.to_str().unwrap(),
        "--count",
        "3",
        "--size",
        "32",
        "--seed",
        "1",
    ]));
    let seeds: Vec<Vec<u8>> = vec![
        b"000000.png\ta red circle\n000001.png\ta blue square left of a green ring\n".to_vec(),
        b"{\"image\": \"000000.png\", \"caption\": \"a red circle\"}\n{\"image\": \"000002.png\", \"caption\": \"x\"}\n".to_vec(),
    ];
    for (name, seed) in ["captions.tsv", "captions.jsonl"].iter().zip(&seeds) {
        fuzz(
            name,
            std::slice::from_ref(seed),
            name,
            |d| {
                for i in 0..3 {
                    let f = format!("00000{i}.png");
                    std::fs::copy(pairs.join(&f), d.join(&f)).unwrap();
                }
            },
            |p| {
                promptscope::data::scenes::read_pairs(p.parent().unwrap())
                    .map(|_| ())
                    .map_err(err)
            },
        );
    }
}

#[test]
fn fuzz_classnames_files() {
    let seeds = vec![
        b"n01440764 tench\nn01443537 goldfish\n".to_vec(),
        b"red circle\nblue square\n".to_vec(),
    ];
    fuzz(
        "classnames.txt",
        &seeds,
        "classnames.txt",
        |_| {},
        |p| {
            promptscope::data::classnames::read_names(p, None)
                .map(|_| ())
                .map_err(err)
        },
    );
}

/// Dataset trees as users make them by accident: symlink loops and dangling links, non-UTF-8 and
/// non-Latin names, empty and single classes, files that are not images or are cut, stray splits.
#[test]
fn fuzz_dataset_trees() {
    use std::os::unix::ffi::OsStrExt;
    let png = {
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(image::RgbImage::new(8, 8))
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    };
    let mut rng = Rng::new(99);
    let mut below = |n: u64| (rng.next_u64() % n) as usize;
    let (mut opened, mut refused) = (0, 0);
    let root_names: [&[u8]; 6] = [
        b"cat",
        "고양이".as_bytes(),
        "🐱 cat".as_bytes(),
        b"bad\xff\xfename",
        b"a_b_c",
        b".hidden",
    ];
    for case in 0..cases() / 2 {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir(&root).unwrap();
        // Flat folders and train/test trees mostly; a stray lone split now and then.
        let splits: &[&str] = [
            &[""][..],
            &[""],
            &["train", "test"],
            &["train", "val", "test"],
            &["test"],
            &["val"],
        ][below(6)];
        let names: Vec<usize> = (0..1 + below(4))
            .map(|_| below(root_names.len() as u64))
            .collect();
        for c in 0..splits.len() * names.len() {
            let base = root.join(splits[c % splits.len()]);
            let name = std::ffi::OsStr::from_bytes(root_names[names[c / splits.len()]]).to_owned();
            let class = base
                .join(&name)
                .with_extension((c / splits.len()).to_string());
            std::fs::create_dir_all(&class).unwrap();
            // Mostly real classes (a few good images) with the odd bad entry among them.
            for f in 0..1 + below(4) {
                std::fs::write(class.join(format!("good{f}.png")), &png).unwrap();
            }
            for f in 0..below(3) {
                let file = class.join(format!(
                    "{f}.{}",
                    ["png", "jpg", "txt", "PNG", ""][below(5)]
                ));
                match below(7) {
                    0 => std::fs::write(&file, &png).unwrap(),
                    1 => std::fs::write(&file, &png[..below(png.len() as u64)]).unwrap(),
                    2 => std::fs::write(&file, b"").unwrap(),
                    3 => std::os::unix::fs::symlink(&root, &file).unwrap(),
                    4 => std::os::unix::fs::symlink(dir.path().join("nowhere"), &file).unwrap(),
                    5 => std::fs::create_dir_all(file.join("nested")).unwrap(),
                    _ => std::fs::write(&file, b"not an image").unwrap(),
                }
            }
        }
        if below(4) == 0 {
            std::os::unix::fs::symlink(&root, root.join("loop")).unwrap();
        }
        let result = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
            let data = promptscope::data::DatasetFolder::open(&root).map_err(err)?;
            let _ = promptscope::data::fewshot::test_split(&data, 0).map_err(err)?;
            let split = promptscope::data::fewshot::few_shot(&data, Some(2), 1, 0).map_err(err)?;
            for s in split.train.iter().chain(&split.test) {
                let _ = promptscope::clip::preprocess::load_image(&s.path);
            }
            Ok(())
        }));
        match result {
            Ok(Ok(())) => opened += 1,
            Ok(Err(e)) => {
                refused += 1;
                if std::env::var("FUZZ_VERBOSE").is_ok() {
                    eprintln!("refused: {e}");
                }
            }
            Err(_) => panic!(
                "dataset tree case {case} panicked (kept at {})",
                dir.keep().display()
            ),
        }
    }
    eprintln!("fuzz dataset trees: {} cases, {opened} opened and split, {refused} refused with an error, 0 panics", opened + refused);
}
