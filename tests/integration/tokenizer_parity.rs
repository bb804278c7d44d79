//! Token ids against transformers' CLIPTokenizer for tricky strings, both for the model's own
//! tokenizer.json and for the bundled fallback built from OpenAI's BPE table.

use crate::common;

use promptscope::clip::ClipTokenizer;

fn cases() -> Vec<(String, Vec<u32>)> {
    let text = std::fs::read_to_string(common::fixtures().join("tokenizer_cases.json")).unwrap();
    let v: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    v.into_iter()
        .map(|c| {
            (
                c["text"].as_str().unwrap().to_string(),
                serde_json::from_value(c["ids"].clone()).unwrap(),
            )
        })
        .collect()
}

fn check_all(tok: &ClipTokenizer) {
    let cases = cases();
    assert!(cases.len() >= 10);
    for (text, expected) in &cases {
        assert_eq!(
            &tok.encode(text).unwrap(),
            expected,
            "ids of {text:?} ({})",
            tok.source
        );
    }
}

#[test]
fn hf_tokenizer_json_gives_transformers_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, common::hf_tokenizer_json()).unwrap();
    check_all(&ClipTokenizer::from_file(&path, 77).unwrap());
}

#[test]
fn bundled_fallback_gives_transformers_ids() {
    check_all(&ClipTokenizer::bundled(77).unwrap());
}

#[test]
fn long_texts_are_cut_to_77_with_end_of_text_last() {
    let tok = ClipTokenizer::bundled(77).unwrap();
    let long = cases()
        .into_iter()
        .filter(|(_, ids)| ids.len() == 77)
        .count();
    assert!(long >= 2, "the fixture has long texts");
    let ids = tok.encode(&"supercalifragilistic ".repeat(50)).unwrap();
    assert_eq!((ids.len(), ids[76]), (77, tok.eos_id));
}

#[test]
fn a_foreign_tokenizer_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, "{\"not\": \"a tokenizer\"}").unwrap();
    let err = ClipTokenizer::from_file(&path, 77)
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("bundled"),
        "{err}"
    );
}
