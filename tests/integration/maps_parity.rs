//! Every explanation-map method (`align::maps`) against its PyTorch port on transformers' `CLIPModel`
//! (`scripts/make_maps_fixtures.py`, which cites the reference file and commit each port follows), on
//! the tiny random-weight CLIP and on a ViT-B/16-shaped one: each map within 1e-4 of its own range.

use crate::common;

use candle_core::Tensor;
use common::*;
use promptscope::align::maps::{ImageMaps, MapMethod, MapOptions, WHOLE_TEXT};
use promptscope::clip::config::ClipConfig;
use promptscope::clip::LoadedClip;

/// Parity with the reference: the project-wide bound, relative to each map's range.
const TOL: f64 = 1e-4;

fn maps_reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("maps_reference.json"))
        .expect("maps_reference.json");
    serde_json::from_str(&text).expect("valid JSON")
}

/// The preset's random weights with transformers' tokenizer, checked to be the ones the fixture used.
fn model(
    preset: &str,
    config: &ClipConfig,
    r: &serde_json::Value,
) -> (LoadedClip, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join(preset);
    promptscope::clip::synth::write_model_folder(config, &folder).unwrap();
    std::fs::write(folder.join("tokenizer.json"), hf_tokenizer_json()).unwrap();
    let sha = sha256_hex(&std::fs::read(folder.join("model.safetensors")).unwrap());
    assert_eq!(
        Some(sha.as_str()),
        r["weights_sha256"].as_str(),
        "{preset}: the synthetic weights changed since the fixture was made: run `cargo build && python3 scripts/make_maps_fixtures.py`"
    );
    let clip = promptscope::clip::load(folder.to_str().unwrap(), &device()).unwrap();
    (clip, dir)
}

fn pixels(clip: &LoadedClip) -> Tensor {
    candle_core::safetensors::load(
        fixtures().join("nonsquare_320x213_pixels.safetensors"),
        &clip.device,
    )
    .unwrap()
    .remove("pixel_values")
    .unwrap()
}

/// The largest difference over the reference map's range.
fn relative(ours: &[f32], theirs: &[f32]) -> f64 {
    let (lo, hi) = theirs
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    f64::from(max_abs_diff(ours, theirs)) / f64::from((hi - lo).max(1e-12))
}

fn every_method_matches(preset: &str, config: ClipConfig) {
    let all = maps_reference();
    let r = &all[preset];
    let (clip, _dir) = model(preset, &config, r);
    let text = r["text"].as_str().unwrap();
    let ids: Vec<u32> = serde_json::from_value(r["text_ids"].clone()).unwrap();
    assert_eq!(clip.tokenizer().unwrap().encode(text).unwrap(), ids);
    let image = ImageMaps::new(&clip, &pixels(&clip), &MapMethod::ALL).unwrap();
    let maps = image.maps(text).unwrap();
    assert_eq!(maps.len(), MapMethod::ALL.len());
    let grid: Vec<usize> = serde_json::from_value(r["grid"].clone()).unwrap();
    for m in &maps {
        let theirs = &r["methods"][m.method.name()];
        let theirs = theirs
            .as_array()
            .unwrap_or_else(|| panic!("{preset}: no reference for {}", m.method));
        assert_eq!(m.grid.to_vec(), grid, "{preset} {}: grid", m.method);
        assert_eq!(m.maps.len(), theirs.len(), "{preset} {}: targets", m.method);
        if !m.method.per_word() {
            assert_eq!(m.targets, [WHOLE_TEXT]);
        } else {
            // Word tokens after the start token, end-of-text included.
            assert_eq!(m.targets.len(), ids.len() - 1);
        }
        for (t, (ours, theirs)) in m.maps.iter().zip(theirs).enumerate() {
            let theirs = flat(theirs);
            assert_eq!(ours.len(), grid[0] * grid[1]);
            within(
                &format!("{preset} {} map {t} (relative to its range)", m.method),
                relative(ours, &theirs),
                TOL,
            );
        }
    }
    // Chefer's text side: each word's relevance.
    let chefer = maps.iter().find(|m| m.method == MapMethod::Chefer).unwrap();
    let words = chefer
        .word_relevance
        .as_ref()
        .expect("Chefer's word relevance");
    assert_eq!(words.len(), ids.len() - 2);
    let ours: Vec<f32> = words.iter().map(|w| w.1).collect();
    within(
        &format!("{preset} Chefer word relevance"),
        f64::from(max_abs_diff(&ours, &flat(&r["chefer_word_relevance"]))),
        TOL,
    );
    // The gradient methods batch their texts: one backward for several gives each text's own maps.
    let texts = [text.to_string(), "a dog on the grass.".to_string()];
    for (k, m) in MapMethod::ALL.iter().enumerate() {
        let batched = image.method_maps_many(k, &texts).unwrap();
        for (t, b) in texts.iter().zip(&batched) {
            let alone = image.method_maps(k, t).unwrap();
            assert_eq!(b.targets, alone.targets, "{m}");
            let ours: Vec<f32> = b.maps.concat();
            within(
                &format!("{preset} {m}: batched vs alone, {t:?}"),
                relative(&ours, &alone.maps.concat()),
                TOL,
            );
            assert_eq!(b.word_relevance.is_some(), *m == MapMethod::Chefer);
        }
    }
    // The gradient methods' settings: Chefer over every block, LeGrad over the last one.
    let options = MapOptions {
        chefer_blocks: config.vision_config.num_hidden_layers,
        legrad_blocks: 1,
    };
    let methods = [MapMethod::Chefer, MapMethod::Legrad];
    let image = ImageMaps::with_options(&clip, &pixels(&clip), &methods, options).unwrap();
    for (m, key) in image
        .maps(text)
        .unwrap()
        .iter()
        .zip(["chefer@all", "legrad@1"])
    {
        within(
            &format!("{preset} {key} (relative to its range)"),
            relative(&m.maps[0], &flat(&r["methods"][key][0])),
            TOL,
        );
    }
}

#[test]
fn every_map_method_matches_its_pytorch_port_on_the_tiny_clip() {
    every_method_matches("tiny", preset("tiny"));
}

#[test]
fn every_map_method_matches_its_pytorch_port_on_a_b16_shaped_clip() {
    every_method_matches("vit-b-16", ClipConfig::vit_b_16());
}
