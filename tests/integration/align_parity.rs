//! FILIP token-wise alignment (token and value modes, hand-crafted and learned prompts) and SsVP against
//! the same computation written with transformers' modules (`scripts/make_align_fixtures.py`) on the tiny
//! random-weight CLIP: values within 1e-4, SsVP indices identical. On the CPU, or on a GPU with
//! `PROMPTSCOPE_TEST_DEVICE=cuda`.

use crate::common;

use std::path::PathBuf;

use candle_core::Tensor;
use common::*;
use promptscope::align::{align, ssvp, AlignConfig, AlignMode, Alignment, TextSource};
use promptscope::clip::LoadedClip;
use promptscope::prompt::coop::{CoopConfig, PromptLearner};

/// Parity with the reference: the project-wide bound, not a measured spread.
const TOL: f64 = 1e-4;

fn align_reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("align_reference.json"))
        .expect("align_reference.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn check(what: &str, ours: &[f32], theirs: &[f32]) {
    within(
        &format!("{what} vs transformers ({} values)", ours.len()),
        max_abs_diff(ours, theirs) as f64,
        TOL,
    );
}

struct Fixture {
    r: serde_json::Value,
    clip: LoadedClip,
    pixels: Tensor,
    _dir: tempfile::TempDir,
}

fn setup() -> Fixture {
    let r = align_reference();
    let clip_ref = reference();
    // The alignment fixture must have been made on the weights the CLIP fixture checks.
    assert_eq!(
        r["weights_sha256"], clip_ref["tiny"]["weights_sha256"],
        "rerun scripts/make_align_fixtures.py"
    );
    let dir = model_dir("tiny", &clip_ref);
    let clip = promptscope::clip::load(dir.path().to_str().unwrap(), &device()).unwrap();
    let path: PathBuf = fixtures().join("nonsquare_320x213_pixels.safetensors");
    let pixels = candle_core::safetensors::load(&path, &clip.device)
        .unwrap()
        .remove("pixel_values")
        .unwrap();
    let ids: Vec<u32> = serde_json::from_value(r["text_ids"].clone()).unwrap();
    assert_eq!(
        clip.tokenizer()
            .unwrap()
            .encode(r["text"].as_str().unwrap())
            .unwrap(),
        ids
    );
    Fixture {
        r,
        clip,
        pixels,
        _dir: dir,
    }
}

fn compare(name: &str, a: &Alignment, expected: &serde_json::Value, fraction_index: usize) {
    let rows: Vec<f32> = a.sim.data.clone();
    let theirs = &expected["sim"];
    assert_eq!(a.sim.rows, theirs.as_array().unwrap().len(), "{name}: rows");
    check(&format!("{name} sim"), &rows, &flat(theirs));
    let s = &expected["scores"][fraction_index];
    assert_eq!(s["top_fraction"].as_f64().unwrap(), a.top_fraction);
    check(
        &format!("{name} s_i (top fraction {})", a.top_fraction),
        &[a.s_i],
        &[s["s_i"].as_f64().unwrap() as f32],
    );
    check(
        &format!("{name} s_t (top fraction {})", a.top_fraction),
        &[a.s_t],
        &[s["s_t"].as_f64().unwrap() as f32],
    );
}

#[test]
fn token_and_value_modes_match_transformers() {
    let f = setup();
    let text = TextSource::Text(f.r["text"].as_str().unwrap());
    for (key, mode, with_cls, with_sos) in [
        ("token", AlignMode::Token, false, false),
        ("token_cls_sos", AlignMode::Token, true, true),
        ("value", AlignMode::Value, false, false),
    ] {
        let expected = &f.r[key];
        for (i, s) in expected["scores"].as_array().unwrap().iter().enumerate() {
            let cfg = AlignConfig {
                mode,
                with_cls,
                with_sos,
                top_fraction: s["top_fraction"].as_f64().unwrap(),
            };
            let a = align(&f.clip, &f.pixels, &text, &cfg).unwrap();
            assert_eq!(a.mode, mode);
            assert_eq!(a.grid, [7, 7]);
            compare(key, &a, expected, i);
            let words: Vec<&str> = a.text_tokens.iter().map(String::as_str).collect();
            if with_sos {
                assert_eq!(
                    words,
                    [
                        "<|startoftext|>",
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
            } else {
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
            }
        }
    }
}

#[test]
fn learned_prompt_matches_transformers() {
    let f = setup();
    let l = &f.r["learned"];
    let name = l["class_name"].as_str().unwrap().to_string();
    let n_ctx = l["n_ctx"].as_u64().unwrap() as usize;
    let cfg = CoopConfig {
        n_ctx,
        ..CoopConfig::default()
    };
    let mut learner = PromptLearner::new(
        &f.clip.model().unwrap().text,
        f.clip.tokenizer().unwrap(),
        &[name],
        &cfg,
    )
    .unwrap();
    let d = f.clip.model().unwrap().config.text_config.hidden_size;
    learner
        .set_ctx(&Tensor::from_vec(flat(&l["ctx"]), (n_ctx, d), &f.clip.device).unwrap())
        .unwrap();
    let a = align(
        &f.clip,
        &f.pixels,
        &TextSource::Learned {
            learner: &learner,
            class: 0,
        },
        &AlignConfig::default(),
    )
    .unwrap();
    assert_eq!(
        a.text_tokens,
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
    compare("learned prompt", &a, l, 0);
}

#[test]
fn ssvp_matches_transformers() {
    let f = setup();
    check(
        "SsVP class-token attention",
        &ssvp(&f.clip.model().unwrap().vision, &f.pixels, Some(12)).unwrap()[0].attention,
        &flat(&f.r["ssvp_attention"]),
    );
    for e in f.r["ssvp"].as_array().unwrap() {
        let k = e["k"].as_u64().unwrap() as usize;
        let sel = ssvp(&f.clip.model().unwrap().vision, &f.pixels, Some(k))
            .unwrap()
            .remove(0);
        let indices: Vec<usize> = serde_json::from_value(e["indices"].clone()).unwrap();
        assert_eq!(sel.indices, indices, "K = {k}: indices");
        println!("K = {k}: indices {:?} identical", sel.indices);
        check(&format!("K = {k} scores"), &sel.scores, &flat(&e["scores"]));
        check(
            &format!("K = {k} image feature"),
            &sel.image_embeds,
            &flat(&e["image_embeds"]),
        );
    }
    // The default K is N/4 = 12.
    assert_eq!(
        ssvp(&f.clip.model().unwrap().vision, &f.pixels, None).unwrap()[0]
            .indices
            .len(),
        12
    );
}

#[test]
fn a_learned_context_equal_to_words_aligns_like_the_text() {
    // A context initialised from "a photo of a" is exactly those words' embeddings, so the learned
    // prompt must give the hand-crafted text's matrix, with [V1]…[V4] in place of the words.
    let f = setup();
    let cfg = CoopConfig {
        ctx_init: Some("a photo of a".into()),
        ..CoopConfig::default()
    };
    use promptscope::prompt::coop::ClassPosition;
    for position in [
        ClassPosition::End,
        ClassPosition::Middle,
        ClassPosition::Front,
    ] {
        let cfg = CoopConfig {
            class_position: position,
            ..cfg.clone()
        };
        let learner = PromptLearner::new(
            &f.clip.model().unwrap().text,
            f.clip.tokenizer().unwrap(),
            &["golden retriever".to_string()],
            &cfg,
        )
        .unwrap();
        let a = align(
            &f.clip,
            &f.pixels,
            &TextSource::Learned {
                learner: &learner,
                class: 0,
            },
            &AlignConfig::default(),
        )
        .unwrap();
        let labels: Vec<&str> = a.text_tokens.iter().map(String::as_str).collect();
        match position {
            ClassPosition::End => {
                assert_eq!(
                    labels,
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
                let t = align(
                    &f.clip,
                    &f.pixels,
                    &TextSource::Text("a photo of a golden retriever."),
                    &AlignConfig::default(),
                )
                .unwrap();
                check("learned 'a photo of a' vs text", &a.sim.data, &t.sim.data);
            }
            ClassPosition::Middle => assert_eq!(
                labels,
                [
                    "[V1]",
                    "[V2]",
                    "golden",
                    "retriever",
                    "[V3]",
                    "[V4]",
                    ".",
                    "<|endoftext|>"
                ]
            ),
            ClassPosition::Front => assert_eq!(
                labels,
                [
                    "golden",
                    "retriever",
                    "[V1]",
                    "[V2]",
                    "[V3]",
                    "[V4]",
                    ".",
                    "<|endoftext|>"
                ]
            ),
        }
    }
}
