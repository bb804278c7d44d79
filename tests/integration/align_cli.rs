//! The `align`, `ssvp` and `align-eval` verbs end to end: JSON shapes, PNGs, and bad input that must fail
//! with one clear `error:` line (exit code 1), before writing anything.

use crate::common;

use std::path::Path;
use std::process::Output;

use candle_core::Device;
use common::Scratch as Setup;
use common::{error_line, promptscope};
use promptscope::clip::{l2_normalize, synth, ClipConfig, HiddenAct};
use promptscope::export::prompt_file::PromptFile;
use promptscope::prompt::coop::{CoopConfig, PromptLearner};

fn ok_json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&common::ok(out)).expect("one JSON document on stdout")
}

fn setup() -> Setup {
    Setup::with_tiny_model()
}

fn align(s: &Setup, extra: &[&str]) -> Output {
    let (m, img) = (s.p("m"), common::fixture_image());
    let mut args = vec![
        "align", "--model", &m, "--device", "cpu", "--image", &img, "--format", "json",
    ];
    args.extend_from_slice(extra);
    promptscope(&args)
}

fn ssvp(s: &Setup, extra: &[&str]) -> Output {
    let (m, img) = (s.p("m"), common::fixture_image());
    let mut args = vec![
        "ssvp", "--model", &m, "--device", "cpu", "--image", &img, "--format", "json",
    ];
    args.extend_from_slice(extra);
    promptscope(&args)
}

/// A prompts file (2 classes, 4 context vectors) made on the model in `model_dir`.
fn prompts_for(s: &Setup, model_dir: &str, out: &str) -> String {
    prompts_with(s, model_dir, out, &["golden retriever", "cat"])
}

fn prompts_with(s: &Setup, model_dir: &str, out: &str, names: &[&str]) -> String {
    let clip = promptscope::clip::load(&s.p(model_dir), &Device::Cpu).unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let learner = PromptLearner::new(
        &clip.model().unwrap().text,
        clip.tokenizer().unwrap(),
        &names,
        &CoopConfig {
            n_ctx: 4,
            ..CoopConfig::default()
        },
    )
    .unwrap();
    let w = l2_normalize(&learner.text_features(&clip.model().unwrap().text).unwrap()).unwrap();
    PromptFile::new(&clip, &learner, w)
        .unwrap()
        .save(Path::new(&s.p(out)))
        .unwrap();
    s.p(out)
}

fn png_size(path: &str) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (img.width(), img.height())
}

#[test]
fn align_prints_the_matrix_scores_and_draws_pngs() {
    let s = setup();
    let png = s.p("words.png");
    let j = ok_json(&align(
        &s,
        &[
            "--text",
            "a photo of a golden retriever.",
            "--png",
            &png,
            "--grid-lines",
        ],
    ));
    assert_eq!(j["grid"], serde_json::json!([7, 7]));
    assert_eq!(j["mode"], "token");
    let words: Vec<String> = serde_json::from_value(j["text_tokens"].clone()).unwrap();
    assert_eq!(
        words,
        [
            "a",
            "photo",
            "of",
            "a",
            "golden",
            "retriever",
            ".",
            "<|endoftext|>"
        ]
    );
    let sim = j["sim"].as_array().unwrap();
    assert_eq!(sim.len(), 49);
    assert!(sim.iter().all(|r| r.as_array().unwrap().len() == 8));
    assert!(j["s_i"].is_number() && j["s_t"].is_number());
    assert_eq!(j["argmax_word"].as_array().unwrap().len(), 49);
    assert_eq!(png_size(&png), (224, 224));

    // Value mode, one word's map in jet, class and start tokens included, FILIP's top 25%.
    let png = s.p("word5.png");
    let j = ok_json(&align(
        &s,
        &[
            "--text",
            "a photo of a golden retriever.",
            "--mode",
            "value",
            "--word",
            "6",
            "--png",
            &png,
            "--colormap",
            "jet",
            "--with-cls",
            "--with-sos",
            "--top-fraction",
            "0.25",
        ],
    ));
    assert_eq!(j["mode"], "value");
    assert_eq!(j["sim"].as_array().unwrap().len(), 50);
    assert_eq!(j["text_tokens"][0], "<|startoftext|>");
    assert_eq!(j["top_fraction"], 0.25);
    assert_eq!(png_size(&png), (224, 224));
}

#[test]
fn align_takes_a_learned_prompt_and_ssvp_selects_patches() {
    let s = setup();
    let file = prompts_for(&s, "m", "p.safetensors");
    let j = ok_json(&align(
        &s,
        &["--prompts", &file, "--class", "golden retriever"],
    ));
    let words: Vec<String> = serde_json::from_value(j["text_tokens"].clone()).unwrap();
    assert_eq!(
        words,
        [
            "[V1]",
            "[V2]",
            "[V3]",
            "[V4]",
            "golden",
            "retriever",
            ".",
            "<|endoftext|>"
        ]
    );

    let png = s.p("ssvp.png");
    let j = ok_json(&ssvp(&s, &["--k", "12", "--png", &png]));
    let idx: Vec<usize> = serde_json::from_value(j["indices"].clone()).unwrap();
    assert_eq!(idx.len(), 12);
    assert!(idx.windows(2).all(|w| w[0] < w[1]) && idx.iter().all(|&i| i < 49));
    assert_eq!(j["scores"].as_array().unwrap().len(), 12);
    assert_eq!(j["image_embeds"].as_array().unwrap().len(), 24);
    assert_eq!(png_size(&png), (224, 224));
    // The default K is N/4.
    assert_eq!(
        ok_json(&ssvp(&s, &[]))["indices"].as_array().unwrap().len(),
        12
    );
}

#[test]
fn align_eval_compares_three_accuracies() {
    let s = setup();
    promptscope::data::synth_region::write_dataset(&s.dir.path().join("d"), 4, 3, 224, 32, 1)
        .unwrap();
    let (m, d) = (s.p("m"), s.p("d"));
    let out = promptscope(&[
        "align-eval",
        "--model",
        &m,
        "--device",
        "cpu",
        "--data",
        &d,
        "--template",
        "a {} square.",
        "--mode",
        "value",
        "--score",
        "t",
        "--k",
        "8",
        "--format",
        "json",
    ]);
    let j = ok_json(&out);
    // A flat folder: the derived 30 % test split every evaluation shares (one of each class's 3 images).
    assert_eq!(j["images"], 4);
    assert_eq!(j["split"], "derived 30 % test split, split seed 0");
    assert_eq!(j["ssvp_k"], 8);
    assert_eq!(j["score"], "t");
    for k in ["global_accuracy", "tokenwise_accuracy", "ssvp_accuracy"] {
        let a = j[k].as_f64().unwrap_or_else(|| panic!("{k} in {j}"));
        assert!((0.0..=1.0).contains(&a), "{k} = {a}");
    }
    // Learned prompts for the dataset's classes (folder order).
    let file = prompts_with(
        &s,
        "m",
        "p.safetensors",
        &["blue", "green", "red", "yellow"],
    );
    let j = ok_json(&promptscope(&[
        "align-eval",
        "--model",
        &m,
        "--device",
        "cpu",
        "--data",
        &d,
        "--prompts",
        &file,
        "--format",
        "json",
    ]));
    assert_eq!(
        j["classes"],
        serde_json::json!(["blue", "green", "red", "yellow"])
    );
    assert!(j["tokenwise_accuracy"].is_number());
}

#[test]
fn bad_input_fails_clearly() {
    let s = setup();
    // K outside 1..=N.
    let e = error_line(&ssvp(&s, &["--k", "50"]));
    assert!(e.contains("K = 50") && e.contains("49 patches"), "{e}");
    let e = error_line(&ssvp(&s, &["--k", "0"]));
    assert!(e.contains("K = 0"), "{e}");
    // An empty prompt, or one of only spaces.
    for text in ["", "   "] {
        let e = error_line(&align(&s, &["--text", text]));
        assert!(e.contains("is empty"), "{e}");
    }
    // A top fraction outside (0, 1].
    for f in ["0", "1.5"] {
        let e = error_line(&align(&s, &["--text", "a dog", "--top-fraction", f]));
        assert!(e.contains("fraction"), "{e}");
    }
    // A word index past the prompt's tokens.
    let e = error_line(&align(&s, &["--text", "a dog", "--word", "9"]));
    assert!(e.contains("word 9") && e.contains("3 tokens"), "{e}");
    // A PNG into a folder that does not exist: refused before any work, nothing written.
    let missing = s.p("no/such/dir/x.png");
    let e = error_line(&align(&s, &["--text", "a dog", "--png", &missing]));
    assert!(e.contains("does not exist"), "{e}");
    assert!(!Path::new(&missing).exists());

    // A prompts file made for a model of other dimensions (text width 16, projection 12).
    let mut other = ClipConfig::tiny(HiddenAct::QuickGelu, 1e-5);
    other.text_config.hidden_size = 16;
    other.text_config.intermediate_size = 32;
    other.projection_dim = 12;
    synth::write_model_folder(&other, &s.dir.path().join("other")).unwrap();
    let file = prompts_for(&s, "other", "other.safetensors");
    let e = error_line(&align(&s, &["--prompts", &file, "--class", "cat"]));
    assert!(
        e.contains("dimension mismatch") && e.contains("width 16"),
        "{e}"
    );

    // A class the prompts file does not have.
    let file = prompts_for(&s, "m", "p.safetensors");
    let e = error_line(&align(&s, &["--prompts", &file, "--class", "zebra"]));
    assert!(
        e.contains("\"zebra\"") && e.contains("golden retriever, cat"),
        "{e}"
    );
}

/// `align --method all --format json`: one object per method (JSON lines), each with its grid, targets
/// and one raw map per target; `token` keeps the plain alignment's `sim`, `s_i` and `s_t`, and its maps
/// are that matrix's columns.
#[test]
fn align_prints_every_method_as_one_json_object_each() {
    let s = setup();
    let out = align(&s, &["--text", "a photo of a dog.", "--method", "all"]);
    let text = common::ok(&out);
    let objects: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    let names: Vec<&str> = objects
        .iter()
        .map(|o| o["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "token",
            "maskclip",
            "maskclip-clearclip",
            "clearclip",
            "sclip",
            "naclip",
            "gem",
            "surgery",
            "rollout",
            "chefer",
            "gradcam",
            "legrad"
        ]
    );
    for o in &objects {
        let grid: Vec<usize> = serde_json::from_value(o["grid"].clone()).unwrap();
        let maps = o["maps"].as_array().unwrap();
        assert_eq!(maps.len(), o["targets"].as_array().unwrap().len(), "{o}");
        for m in maps {
            let rows = m.as_array().unwrap();
            assert_eq!(rows.len(), grid[0]);
            assert!(rows.iter().all(|r| r.as_array().unwrap().len() == grid[1]));
        }
    }
    let token = &objects[0];
    assert_eq!(token["targets"][1], "photo");
    let sim = common::flat(&token["sim"]);
    let cols = token["targets"].as_array().unwrap().len();
    let first_col: Vec<f32> = sim.iter().step_by(cols).copied().collect();
    // The maps' pass runs the CPU kernels' blocks, plain `align` candle's ops: equal to rounding.
    let diff = common::max_abs_diff(&common::flat(&token["maps"][0]), &first_col);
    assert!(diff < 1e-5, "token's map vs the sim column: {diff}");
    assert!(token["s_i"].is_number() && token["s_t"].is_number());
    assert_eq!(objects[1]["targets"], serde_json::json!(["<text>"]));
}

/// One method by name, a PNG of it, and a wrong name refused with the list of names.
#[test]
fn align_method_draws_its_map_and_refuses_unknown_names() {
    let s = setup();
    let png = s.p("gem.png");
    let out = align(&s, &["--text", "a dog.", "--method", "gem", "--png", &png]);
    let o: serde_json::Value = serde_json::from_str(common::ok(&out).trim()).unwrap();
    assert_eq!(o["method"], "gem");
    assert!(Path::new(&png).is_file());
    let out = align(&s, &["--text", "a dog.", "--method", "gradcamm"]);
    let err = error_line(&out);
    assert!(
        err.contains("unknown map method 'gradcamm'") && err.contains("naclip"),
        "{err}"
    );
}

/// `pointing --methods`: one score per method on the same scenes, the random baseline beside them.
#[test]
fn pointing_scores_each_method_asked_for() {
    let s = setup();
    let m = s.p("m");
    let out = promptscope(&[
        "pointing",
        "--model",
        &m,
        "--device",
        "cpu",
        "--count",
        "3",
        "--methods",
        "rollout,token",
        "--methods",
        "token",
        "--format",
        "json",
    ]);
    let r = ok_json(&out);
    let methods = r["methods"].as_array().unwrap();
    let names: Vec<&str> = methods
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rollout", "token"]);
    let objects = r["objects"].as_u64().unwrap();
    assert!(objects >= 3);
    for m in methods {
        let hits = m["point_hits"].as_u64().unwrap();
        assert!(hits <= objects);
        assert!((m["point_rate"].as_f64().unwrap() - hits as f64 / objects as f64).abs() < 1e-9);
        assert!(m["ms_per_map"].as_f64().unwrap() > 0.0);
    }
    assert!(r["point_chance"].as_f64().unwrap() > 0.0);
}

/// `pointing --data`: images with masks (ROOT/<class>/NAME.png + NAME.mask.png) instead of scenes;
/// an image without a mask is left out, a folder without any or a mask of another size is a clear error.
#[test]
fn pointing_reads_a_folder_of_masked_images() {
    let s = setup();
    let root = Path::new(&s.p("masked")).to_path_buf();
    let draw = |path: &Path, w: u32, h: u32, x0: u32, white_only: bool| {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let on = (x0..x0 + 60).contains(&x) && (80..140).contains(&y);
            match (on, white_only) {
                (true, _) => image::Rgb([255, 255, 255]),
                (false, true) => image::Rgb([0, 0, 0]),
                (false, false) => image::Rgb([40, 90, 160]),
            }
        });
        img.save(path).unwrap();
    };
    for (class, x0) in [("red_square", 20), ("circle", 140)] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        draw(&dir.join("a.png"), 224, 224, x0, false);
        draw(&dir.join("a.mask.png"), 224, 224, x0, true);
        // No mask: not part of the set.
        draw(&dir.join("b.png"), 224, 224, x0, false);
    }
    let m = s.p("m");
    let run = |data: &str| {
        promptscope(&[
            "pointing",
            "--model",
            &m,
            "--device",
            "cpu",
            "--data",
            data,
            "--methods",
            "token,rollout",
            "--format",
            "json",
        ])
    };
    let r = ok_json(&run(root.to_str().unwrap()));
    assert_eq!(r["scenes"], 2);
    assert_eq!(r["objects"], 2);
    assert_eq!(r["methods"].as_array().unwrap().len(), 2);
    // A random patch near a 60 px square in a 224 px image (7×7 grid): a few patches of 49.
    let chance = r["point_chance"].as_f64().unwrap();
    assert!(chance > 0.02 && chance < 0.5, "{chance}");

    let empty = s.p("no-masks");
    std::fs::create_dir_all(Path::new(&empty).join("cat")).unwrap();
    draw(
        &Path::new(&empty).join("cat").join("x.png"),
        64,
        64,
        0,
        false,
    );
    let err = error_line(&run(&empty));
    assert!(
        err.contains("no image with a mask") && err.contains(".mask.png"),
        "{err}"
    );

    draw(&root.join("circle").join("a.mask.png"), 100, 100, 0, true);
    let err = error_line(&run(root.to_str().unwrap()));
    assert!(err.contains("a.mask.png") && err.contains("size"), "{err}");
}
