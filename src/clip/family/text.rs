//! Text for the other families: the folder's `tokenizer.json` (SentencePiece for SigLIP, WordPiece for
//! Chinese-CLIP) through `tokenizers`, cut to the model's context as a fast tokenizer cuts it (room kept
//! for the special tokens), then padded the way the family was trained.

use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::{Tokenizer, TruncationParams};

use super::Family;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy)]
pub enum Padding {
    /// SigLIP: every text padded to the full context with this id, no mask (its text tower pools the last
    /// position and was trained on `padding="max_length"`).
    MaxLength(u32),
    /// BERT-style: padded to the longest text of the batch with this id, and masked.
    Longest(u32),
}

pub struct FamilyText {
    tok: Tokenizer,
    padding: Padding,
}

/// Token ids `[N, L]`, and the attention mask where the family uses one.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<Vec<u32>>,
    pub mask: Option<Vec<Vec<u32>>>,
}

impl Encoded {
    pub fn ids_tensor(&self, device: &Device) -> Result<Tensor> {
        rows(&self.ids, device)
    }

    pub fn mask_tensor(&self, device: &Device) -> Result<Option<Tensor>> {
        self.mask.as_ref().map(|m| rows(m, device)).transpose()
    }
}

fn rows(rows: &[Vec<u32>], device: &Device) -> Result<Tensor> {
    let (n, l) = (rows.len(), rows.first().map_or(0, Vec::len));
    Ok(Tensor::from_vec(rows.concat(), (n, l), device)?)
}

impl FamilyText {
    pub fn load(path: &Path, context: usize, padding: Padding, family: Family) -> Result<Self> {
        let fix = format!(
            "a {} folder needs the model's tokenizer.json: save it with transformers' AutoTokenizer.from_pretrained(<model>).save_pretrained(<folder>)",
            family.name()
        );
        if !path.is_file() {
            return Err(Error::missing(path, fix));
        }
        let mut tok = Tokenizer::from_file(path).map_err(|e| {
            Error::bad_file(
                path,
                format!("not a valid tokenizer.json ({e})"),
                fix.clone(),
            )
        })?;
        tok.with_padding(None);
        tok.with_truncation(Some(TruncationParams {
            max_length: context,
            ..Default::default()
        }))
        .map_err(|e| {
            Error::bad_file(
                path,
                format!("cannot cut to {context} tokens ({e})"),
                fix.clone(),
            )
        })?;
        Ok(Self { tok, padding })
    }

    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }

    pub fn encode(&self, texts: &[String]) -> Result<Encoded> {
        if texts.is_empty() {
            return Err(Error::invalid("no texts to encode"));
        }
        let mut ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| {
                self.tok
                    .encode(t.as_str(), true)
                    .map(|e| e.get_ids().to_vec())
            })
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::invalid(format!("tokenizing: {e}")))?;
        let (len, pad, masked) = match self.padding {
            Padding::MaxLength(pad) => (
                self.tok.get_truncation().map_or(0, |t| t.max_length),
                pad,
                false,
            ),
            Padding::Longest(pad) => (ids.iter().map(Vec::len).max().unwrap_or(0), pad, true),
        };
        let mask = masked.then(|| {
            ids.iter()
                .map(|r| (0..len).map(|i| u32::from(i < r.len())).collect())
                .collect()
        });
        for r in &mut ids {
            r.resize(len, pad);
        }
        Ok(Encoded { ids, mask })
    }
}
