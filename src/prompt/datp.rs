//! MP-FGVC's discrepancy-aware text prompts (DaTP, METHODS §5): for sub-category c the prompt is
//! `[X^c_1 … X^c_J, class++]`, J learned tokens per class followed by the *super-category* word (`bird`),
//! the same for every class; no sub-category name is used.
//!
//! That is a class-specific CoOp context whose every "class name" is the super-category, so it is built
//! on [`PromptLearner`] (CSC, class at the end) rather than on a second learner. Like CoOp's prompts it
//! reads `[SOS] X … X bird . [EOS]`: the learner keeps CoOp's full stop after the name.

use serde::{Deserialize, Serialize};

use crate::clip::text::TextTower;
use crate::clip::ClipTokenizer;
use crate::error::{Error, Result};
use crate::prompt::coop::{ClassPosition, CoopConfig, PromptLearner};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatpConfig {
    /// J, the learned tokens per class.
    pub n_ctx: usize,
    /// The super-category word shared by every prompt (`bird`, `dog`, `food`).
    pub super_category: String,
    /// Seed of the N(0, 0.02²) initialisation of the tokens.
    pub seed: u64,
}

impl DatpConfig {
    /// The CoOp configuration DaTP amounts to.
    pub fn coop(&self) -> CoopConfig {
        CoopConfig {
            n_ctx: self.n_ctx,
            ctx_init: None,
            csc: true,
            class_position: ClassPosition::End,
            seed: self.seed,
        }
    }
}

/// The super-category's tokens, refusing a word that gives none (blank) or that contains a start- or
/// end-of-text token, which would end the prompt before the word.
pub fn super_category_tokens(tok: &ClipTokenizer, word: &str) -> Result<Vec<u32>> {
    let ids = tok.encode_words(word.trim())?;
    if ids.is_empty() {
        return Err(no_tokens(word));
    }
    if ids.iter().any(|&i| i == tok.bos_id || i == tok.eos_id) {
        return Err(Error::invalid(format!(
            "--super-category {word:?} contains a start- or end-of-text token: give a plain word, e.g. --super-category bird"
        )));
    }
    Ok(ids)
}

/// The error for a super-category word without tokens (blank, or only characters the tokenizer drops).
pub fn no_tokens(word: &str) -> Error {
    Error::invalid(format!("--super-category {word:?} has no tokens: give the word naming what every class is, e.g. --super-category bird"))
}

/// The DaTP learner for `num_classes` sub-categories.
pub fn learner(
    text: &TextTower,
    tok: &ClipTokenizer,
    num_classes: usize,
    config: &DatpConfig,
) -> Result<PromptLearner> {
    if num_classes == 0 {
        return Err(Error::invalid("no classes to learn prompts for"));
    }
    if config.n_ctx == 0 {
        return Err(Error::invalid(
            "--n-ctx must be at least 1: DaTP learns J ≥ 1 tokens per class",
        ));
    }
    super_category_tokens(tok, &config.super_category)?;
    let names = vec![config.super_category.trim().to_string(); num_classes];
    PromptLearner::new(text, tok, &names, &config.coop())
}
