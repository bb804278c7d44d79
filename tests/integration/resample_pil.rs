//! Byte-for-byte parity of `resize_bicubic_pil` with Pillow's
//! `Image.resize(..., resample=BICUBIC, reducing_gap=None)`.
//!
//! CLIP's reference preprocessing resizes with Pillow, so any difference here
//! would show up as embedding drift. The fixtures are produced by
//! `scripts/make_resample_fixtures.py`; regenerate them with that script if
//! cases are added.

use std::path::{Path, PathBuf};

use image::RgbImage;
use promptscope::clip::resample::resize_bicubic_pil;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Case {
    input: String,
    output: String,
    width: u32,
    height: u32,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resample")
}

fn load_rgb(path: &Path) -> RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .to_rgb8()
}

#[test]
fn matches_pillow_bicubic_byte_for_byte() {
    let dir = fixture_dir();
    let index = std::fs::read_to_string(dir.join("cases.json")).expect("read cases.json");
    let cases: Vec<Case> = serde_json::from_str(&index).expect("parse cases.json");
    assert!(!cases.is_empty(), "cases.json lists no cases");

    let mut failures = Vec::new();
    for case in &cases {
        let src = load_rgb(&dir.join(&case.input));
        let expected = load_rgb(&dir.join(&case.output));
        assert_eq!(
            expected.dimensions(),
            (case.width, case.height),
            "{}: fixture size disagrees with cases.json",
            case.output
        );

        let actual = resize_bicubic_pil(&src, case.width, case.height);
        assert_eq!(
            actual.dimensions(),
            (case.width, case.height),
            "{}",
            case.output
        );

        let (mut differing, mut max_diff, mut first) = (0usize, 0u8, None);
        for (i, (&a, &e)) in actual.as_raw().iter().zip(expected.as_raw()).enumerate() {
            if a != e {
                differing += 1;
                max_diff = max_diff.max(a.abs_diff(e));
                first.get_or_insert((i, a, e));
            }
        }
        if differing > 0 {
            let (i, a, e) = first.unwrap();
            let px = i / 3;
            failures.push(format!(
                "{} -> {}x{} ({}): {differing} of {} bytes differ, max |diff| {max_diff}; \
                 first at pixel ({}, {}) channel {}: got {a}, Pillow {e}",
                case.input,
                case.width,
                case.height,
                case.output,
                expected.as_raw().len(),
                px % case.width as usize,
                px / case.width as usize,
                i % 3,
            ));
        }
    }

    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Pillow:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
