//! The prompt-learning methods, one arm each: what a run learns and how its prompts are built. A new
//! method is one file in `prompt/` and one arm here (and one in `train::config::RunConfig`).

use serde::{Deserialize, Serialize};

use super::coop::{CoopConfig, PromptLearner};
use super::datp::{self, DatpConfig};
use crate::clip::text::TextTower;
use crate::clip::ClipTokenizer;
use crate::error::Result;

/// Which method, without its settings: what the Train form's method choice holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PromptMethodKind {
    #[default]
    Coop,
    /// CoOp's context plus a meta-net's per-image shift π(x) (conditional prompts).
    Cocoop,
    /// MP-FGVC's discrepancy-aware text prompts, trained in two stages with the VLFM fusion module.
    Datp,
}

impl PromptMethodKind {
    pub const ALL: [PromptMethodKind; 3] = [Self::Coop, Self::Cocoop, Self::Datp];

    pub fn label(self) -> &'static str {
        match self {
            Self::Coop => "CoOp",
            Self::Cocoop => "CoCoOp",
            Self::Datp => "MP-FGVC (DaTP + VLFM)",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum PromptMethod {
    /// Learned context vectors (unified or class-specific) next to each class name.
    Coop(CoopConfig),
    /// Class-specific tokens and the super-category word, no sub-category names.
    Datp(DatpConfig),
}

impl PromptMethod {
    pub fn kind(&self) -> PromptMethodKind {
        match self {
            Self::Coop(_) => PromptMethodKind::Coop,
            Self::Datp(_) => PromptMethodKind::Datp,
        }
    }

    /// The learner of `class_names`' prompts, initialised as the method does.
    pub fn learner(
        &self,
        text: &TextTower,
        tok: &ClipTokenizer,
        class_names: &[String],
    ) -> Result<PromptLearner> {
        match self {
            Self::Coop(c) => PromptLearner::new(text, tok, class_names, c),
            Self::Datp(d) => datp::learner(text, tok, class_names.len(), d),
        }
    }

    /// "unified · end · M=16", "DaTP 'bird' · J=16".
    pub fn describe(&self) -> String {
        match self {
            Self::Coop(c) => {
                let ctx = if c.csc { "CSC" } else { "unified" };
                let pos = format!("{:?}", c.class_position).to_lowercase();
                let init = c
                    .ctx_init
                    .as_deref()
                    .map_or(format!("M={}", c.n_ctx), |p| format!("init \"{p}\""));
                format!("{ctx} · {pos} · {init}")
            }
            Self::Datp(d) => format!("DaTP '{}' · J={}", d.super_category.trim(), d.n_ctx),
        }
    }
}
