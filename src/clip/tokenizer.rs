//! CLIP's byte-level BPE through the `tokenizers` crate: either the model folder's `tokenizer.json`, or,
//! when a folder has none, the standard OpenAI vocabulary bundled in `assets/` turned into the very same
//! tokenizer that transformers' `CLIPTokenizerFast` converter builds (so ids agree either way).

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::{Error, Result};

/// OpenAI's BPE merges (from the `open_clip_torch` wheel, MIT licence).
const BUNDLED_BPE_GZ: &[u8] = include_bytes!("../../assets/bpe_simple_vocab_16e6.txt.gz");
/// How many merges CLIP uses from that file: 49408 - 256 - 256 - 2.
const NUM_MERGES: usize = 49152 - 256 - 2;
pub const SOT: &str = "<|startoftext|>";
pub const EOT: &str = "<|endoftext|>";

pub struct ClipTokenizer {
    tok: Tokenizer,
    /// Where the tokenizer came from, shown to the user.
    pub source: String,
    pub bos_id: u32,
    pub eos_id: u32,
    /// Sequences longer than this (specials included) are cut, keeping the end-of-text token last.
    pub max_len: usize,
}

impl ClipTokenizer {
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let tok = Tokenizer::from_file(path).map_err(|e| {
            Error::bad_file(path, format!("not a valid tokenizer.json ({e})"), "delete it to use the bundled OpenAI CLIP tokenizer, or replace it with the model's own tokenizer.json")
        })?;
        Self::new(tok, format!("{}", path.display()), max_len)
            .map_err(|e| Error::bad_file(path, e, "use the CLIP tokenizer.json of this model"))
    }

    /// The standard OpenAI CLIP tokenizer, built from the BPE table shipped with promptscope.
    pub fn bundled(max_len: usize) -> Result<Self> {
        let json = bundled_tokenizer_json()?;
        let tok = Tokenizer::from_bytes(json.as_bytes())
            .map_err(|e| Error::invalid(format!("bundled tokenizer: {e}")))?;
        Self::new(
            tok,
            "bundled OpenAI CLIP BPE (assets/bpe_simple_vocab_16e6.txt.gz)".into(),
            max_len,
        )
        .map_err(Error::invalid)
    }

    fn new(tok: Tokenizer, source: String, max_len: usize) -> std::result::Result<Self, String> {
        let bos_id = tok
            .token_to_id(SOT)
            .ok_or_else(|| format!("has no {SOT} token: it is not a CLIP tokenizer"))?;
        let eos_id = tok
            .token_to_id(EOT)
            .ok_or_else(|| format!("has no {EOT} token: it is not a CLIP tokenizer"))?;
        Ok(Self {
            tok,
            source,
            bos_id,
            eos_id,
            max_len,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }

    /// The BPE tokens of `text`, without start/end tokens (a class name inside a CoOp prompt).
    pub fn encode_words(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tok
            .encode(text, false)
            .map_err(|e| Error::invalid(format!("tokenizing {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `[SOT] tokens [EOT]`, cut to `max_len` with the end-of-text token kept last (transformers'
    /// `truncation=True`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(self.bos_id);
        let words = self.encode_words(text)?;
        ids.extend(words.iter().take(self.max_len.saturating_sub(2)));
        ids.push(self.eos_id);
        Ok(ids)
    }

    pub fn encode_batch(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        texts.iter().map(|t| self.encode(t)).collect()
    }

    /// How many BPE tokens `text` has without truncation (to tell the user a prompt is too long).
    pub fn count_words(&self, text: &str) -> Result<usize> {
        Ok(self.encode_words(text)?.len())
    }

    /// Human-readable text of one token ("golden", "." or "<|endoftext|>").
    pub fn token_text(&self, id: u32) -> String {
        match self.tok.id_to_token(id) {
            Some(t) if t == SOT || t == EOT => t,
            Some(t) => {
                let word = t.strip_suffix("</w>").unwrap_or(&t);
                let table = unicode_to_byte();
                let bytes: Vec<u8> = word
                    .chars()
                    .filter_map(|c| table.get(&c).copied())
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            None => format!("<{id}>"),
        }
    }

    pub fn id_of(&self, token: &str) -> Option<u32> {
        self.tok.token_to_id(token)
    }

    /// Saves the tokenizer as `tokenizer.json` (used when we write a model folder).
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self
            .tok
            .to_string(false)
            .map_err(|e| Error::invalid(e.to_string()))?;
        crate::error::write_atomic(path, json.as_bytes())
    }
}

/// GPT-2/CLIP's reversible map from bytes to printable characters.
fn bytes_to_unicode() -> Vec<(u8, char)> {
    let mut bs: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .map(|(b, c)| (b as u8, char::from_u32(c).expect("valid code point")))
        .collect()
}

fn unicode_to_byte() -> std::collections::HashMap<char, u8> {
    bytes_to_unicode()
        .into_iter()
        .map(|(b, c)| (c, b))
        .collect()
}

/// The `tokenizer.json` that transformers' `CLIPConverter` produces from OpenAI's vocabulary.
pub fn bundled_tokenizer_json() -> Result<String> {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(BUNDLED_BPE_GZ)
        .read_to_string(&mut text)
        .map_err(|e| Error::invalid(format!("bundled BPE table is corrupt: {e}")))?;
    let merges: Vec<&str> = text.lines().skip(1).take(NUM_MERGES).collect();
    let byte_chars: Vec<String> = bytes_to_unicode()
        .into_iter()
        .map(|(_, c)| c.to_string())
        .collect();
    let mut vocab: Vec<String> = byte_chars.clone();
    vocab.extend(byte_chars.iter().map(|c| format!("{c}</w>")));
    vocab.extend(merges.iter().map(|m| m.replace(' ', "")));
    vocab.push(SOT.into());
    vocab.push(EOT.into());
    let vocab_map: serde_json::Map<String, serde_json::Value> = vocab
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, serde_json::Value::from(i)))
        .collect();
    let special = |id: usize, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(49406, SOT), special(49407, EOT)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split",
             "pattern": {"Regex": "'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
             "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
        "post_processor": {"type": "RobertaProcessing", "sep": [EOT, 49407], "cls": [SOT, 49406],
                           "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": EOT, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab_map, "merges": merges}
    });
    Ok(json.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_tokenizer_matches_the_known_clip_ids() {
        let t = ClipTokenizer::bundled(77).unwrap();
        assert_eq!(t.vocab_size(), 49408);
        assert_eq!(
            t.encode("a photo of a golden retriever.").unwrap(),
            vec![49406, 320, 1125, 539, 320, 3878, 28394, 269, 49407]
        );
        assert_eq!(t.token_text(28394), "retriever");
    }

    #[test]
    fn long_text_keeps_end_of_text_last() {
        let t = ClipTokenizer::bundled(77).unwrap();
        let ids = t.encode(&"dog ".repeat(200)).unwrap();
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[0], t.bos_id);
        assert_eq!(*ids.last().unwrap(), t.eos_id);
    }
}
