//! The per-token features that token-wise alignment compares (METHODS §4), L2-normalised:
//! - image tokens in two modes: the model's own output tokens, or MaskCLIP-style value-path features of
//!   the last block;
//! - text tokens of a hand-crafted text or of a learned CoOp prompt, each with a readable label.

use candle_core::{Module, Tensor};
use serde::{Deserialize, Serialize};

use super::pass::VisionPass;
use crate::clip::tokenizer::{EOT, SOT};
use crate::clip::vision::VisionTower;
use crate::clip::{l2_normalize, ClipTokenizer, LoadedClip};
use crate::error::{Error, Result};
use crate::prompt::coop::{ClassPosition, PromptLearner};

/// Which image features a map is made of. Every result records its mode, because the two can disagree
/// badly on an off-the-shelf CLIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlignMode {
    /// FILIP: every output token of the vision tower through `post_layernorm` and `visual_projection`.
    #[default]
    Token,
    /// The ClearCLIP-era "MaskCLIP" (the map method `maskclip-clearclip`; MaskCLIP's own code keeps the
    /// block's residual and MLP, `maskclip`): for each token `x` of the hidden state entering the LAST block,
    /// `out_proj(v_proj(layer_norm1(x)))` of that block — its value path with no query-key attention, no
    /// residual and no MLP — then `post_layernorm` and `visual_projection`. Without the attention each
    /// token keeps its own content instead of the global mix CLIP's last block gathers for the class
    /// token, which gives far cleaner maps on a pretrained CLIP.
    Value,
}

impl std::str::FromStr for AlignMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "token" => Ok(Self::Token),
            "value" => Ok(Self::Value),
            other => Err(format!("unknown alignment mode '{other}': token or value")),
        }
    }
}

impl std::fmt::Display for AlignMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Token => "token",
            Self::Value => "value",
        })
    }
}

/// Image tokens `[B, n, P]`, L2-normalised: the N patch tokens in grid order (row-major), preceded by the
/// class token when `with_cls`.
pub fn image_tokens(
    vision: &VisionTower,
    pass: &VisionPass,
    mode: AlignMode,
    with_cls: bool,
) -> Result<Tensor> {
    let projected = match mode {
        AlignMode::Token => vision.project_tokens(&pass.last)?,
        AlignMode::Value => {
            let last = vision
                .layers
                .last()
                .ok_or_else(|| Error::invalid("the vision tower has no blocks"))?;
            let v = last
                .self_attn
                .value_path(&last.layer_norm1.forward(&pass.into_last)?)?;
            vision.project_tokens(&v)?
        }
    };
    let t = projected.dim(1)?;
    let kept = if with_cls {
        projected
    } else {
        projected.narrow(1, 1, t - 1)?.contiguous()?
    };
    Ok(l2_normalize(&kept)?)
}

/// What a prompt is made of.
#[derive(Clone, Copy)]
pub enum TextSource<'a> {
    /// A hand-crafted text such as "a photo of a dog."
    Text(&'a str),
    /// Class `class` of a learned CoOp prompt (context vectors + that class's name).
    Learned {
        learner: &'a PromptLearner,
        class: usize,
    },
}

/// Text tokens of one or more prompts.
#[derive(Debug, Clone)]
pub struct PromptTokens {
    /// Per prompt: `[n_i, P]`, L2-normalised, positions 1..=eot (0..=eot with the start token).
    pub tokens: Vec<Tensor>,
    /// Per prompt: one label per token row ("photo", "<|endoftext|>", `[V1]` for a learned vector).
    pub labels: Vec<Vec<String>>,
    /// `[C, P]`: each prompt's pooled (end-of-text) feature, L2-normalised, for global-feature scores.
    pub pooled: Tensor,
}

/// Text tokens of hand-crafted texts. An empty text is refused: it has no word to map.
pub fn text_tokens(clip: &LoadedClip, texts: &[String], with_sos: bool) -> Result<PromptTokens> {
    if texts.is_empty() {
        return Err(Error::invalid("no prompt given"));
    }
    for t in texts {
        if clip.tokenizer()?.encode_words(t)?.is_empty() {
            return Err(Error::invalid(format!(
                "the prompt {t:?} is empty: it has no words to align with the image; give a text such as \"a photo of a dog.\""
            )));
        }
    }
    let tok = clip.tokenizer()?;
    let ids = tok.encode_batch(texts)?;
    let eot = clip.model()?.text.eot_positions(&ids)?;
    let out = clip.model()?.text.forward_ids(&ids, true)?;
    let labels = ids
        .iter()
        .zip(&eot)
        .map(|(row, &e)| {
            row[usize::from(!with_sos)..=e]
                .iter()
                .map(|&id| tok.token_text(id))
                .collect()
        })
        .collect();
    finish(out, &eot, labels, with_sos)
}

/// Text tokens of the learned prompts of `classes` (a learner's `prompts()` rows through
/// `forward_embeds`).
pub fn learned_tokens(
    clip: &LoadedClip,
    learner: &PromptLearner,
    classes: &[usize],
    with_sos: bool,
) -> Result<PromptTokens> {
    let c = learner.num_classes();
    if let Some(&bad) = classes.iter().find(|&&i| i >= c) {
        return Err(Error::invalid(format!(
            "class {bad} asked of a prompt with {c} classes"
        )));
    }
    let (prompts, eot) = learner.prompts()?;
    let idx: Vec<u32> = classes.iter().map(|&i| i as u32).collect();
    let rows = prompts.index_select(&Tensor::new(idx.as_slice(), prompts.device())?, 0)?;
    let eot: Vec<usize> = classes.iter().map(|&i| eot[i]).collect();
    let out = clip.model()?.text.forward_embeds(&rows, &eot, true)?;
    let labels = classes
        .iter()
        .zip(&eot)
        .map(|(&i, &e)| {
            let all = learned_labels(clip.tokenizer()?, learner, i)?;
            if all.len() != e + 1 {
                return Err(Error::invalid(format!(
                    "labels of class {i}'s prompt: {} tokens for end-of-text at {e}",
                    all.len()
                )));
            }
            Ok(all[usize::from(!with_sos)..].to_vec())
        })
        .collect::<Result<_>>()?;
    finish(out, &eot, labels, with_sos)
}

fn finish(
    out: crate::clip::text::TextOutput,
    eot: &[usize],
    labels: Vec<Vec<String>>,
    with_sos: bool,
) -> Result<PromptTokens> {
    let all = out
        .tokens
        .ok_or_else(|| Error::invalid("the text tower returned no tokens"))?;
    let start = usize::from(!with_sos);
    let tokens = eot
        .iter()
        .enumerate()
        .map(|(i, &e)| {
            Ok(l2_normalize(&all.get(i)?.narrow(
                0,
                start,
                e + 1 - start,
            )?)?)
        })
        .collect::<Result<_>>()?;
    Ok(PromptTokens {
        tokens,
        labels,
        pooled: l2_normalize(&out.pooled)?,
    })
}

/// The token labels of class `class`'s learned prompt, start token to end-of-text: context vectors show as
/// `[V1]`, `[V2]`…, the rest as decoded tokens. The class name is tokenised as `PromptLearner::new` does
/// it (inside the placeholder prompt, so punctuation merges the same way).
pub fn learned_labels(
    tok: &ClipTokenizer,
    learner: &PromptLearner,
    class: usize,
) -> Result<Vec<String>> {
    let m = learner.n_ctx;
    let placeholder = match &learner.config.ctx_init {
        Some(phrase) => phrase.trim().to_string(),
        None => vec!["X"; m].join(" "),
    };
    let name = &learner.class_names[class];
    let words = tok.encode_words(&format!("{placeholder} {name}."))?;
    let mut suffix: Vec<String> = words
        .get(m..)
        .unwrap_or_default()
        .iter()
        .map(|&id| tok.token_text(id))
        .collect();
    suffix.push(EOT.to_string());
    let l = learner.name_lens[class].min(suffix.len());
    let (name_part, tail) = suffix.split_at(l);
    let ctx: Vec<String> = (1..=m).map(|j| format!("[V{j}]")).collect();
    let half = m / 2;
    let mut out = vec![SOT.to_string()];
    match learner.config.class_position {
        ClassPosition::End => {
            out.extend(ctx);
            out.extend_from_slice(&suffix);
        }
        ClassPosition::Middle => {
            out.extend_from_slice(&ctx[..half]);
            out.extend_from_slice(name_part);
            out.extend_from_slice(&ctx[half..]);
            out.extend_from_slice(tail);
        }
        ClassPosition::Front => {
            out.extend_from_slice(name_part);
            out.extend(ctx);
            out.extend_from_slice(tail);
        }
    }
    Ok(out)
}

/// One prompt's tokens from either source.
pub fn prompt_tokens(
    clip: &LoadedClip,
    source: &TextSource,
    with_sos: bool,
) -> Result<PromptTokens> {
    match *source {
        TextSource::Text(t) => text_tokens(clip, &[t.to_string()], with_sos),
        TextSource::Learned { learner, class } => learned_tokens(clip, learner, &[class], with_sos),
    }
}
