//! The prompt-learning methods, one arm each: what a run learns and how its prompts are built. A new
//! method is one file in `prompt/` and one arm here (and one in `train::config::RunConfig`); a new
//! member of the CoOp family (same learner, another loss term or module) is one arm of `CoopVariant`.

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
    /// CoOp's context with the loss pulling each class weight towards the hand-crafted prompt's.
    Kgcoop,
    /// CoOp's context plus a meta-net's per-image shift π(x) (conditional prompts).
    Cocoop,
    /// MP-FGVC's discrepancy-aware text prompts, trained in two stages with the VLFM fusion module.
    Datp,
}

impl PromptMethodKind {
    pub const ALL: [PromptMethodKind; 4] = [Self::Coop, Self::Kgcoop, Self::Cocoop, Self::Datp];

    pub fn label(self) -> &'static str {
        match self {
            Self::Coop => "CoOp",
            Self::Kgcoop => "KgCoOp",
            Self::Cocoop => "CoCoOp",
            Self::Datp => "MP-FGVC (DaTP + VLFM)",
        }
    }
}

/// Which member of the CoOp family a run trains. All three learn the same context (`CoopConfig`); they
/// differ in what the loss adds or what is learned beside it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum CoopVariant {
    #[default]
    Coop,
    /// KgCoOp: the loss adds λ·(1 − mean_i cos(w_i, w_i^clip)), pulling each learned class weight towards
    /// the hand-crafted prompt's (the knowledge CoOp forgets on unseen classes). Its paper uses λ = 8.
    Kgcoop { lambda: f64 },
    /// CoCoOp: a meta-net, trained with the context, adds π(x) to every context token for each image.
    Cocoop,
}

impl CoopVariant {
    /// KgCoOp's λ in its paper.
    pub const KG_LAMBDA: f64 = 8.0;

    /// How the CLI's flags name it: `--cocoop`, or a `--kg-lambda` above 0 (0 is plain CoOp).
    pub fn from_flags(cocoop: bool, kg_lambda: f64) -> Self {
        if cocoop {
            Self::Cocoop
        } else if kg_lambda != 0.0 {
            // Negative and non-finite λ stay KgCoOp's, so validation names them instead of quietly
            // training plain CoOp.
            Self::Kgcoop { lambda: kg_lambda }
        } else {
            Self::Coop
        }
    }

    pub fn kind(self) -> PromptMethodKind {
        match self {
            Self::Coop => PromptMethodKind::Coop,
            Self::Kgcoop { .. } => PromptMethodKind::Kgcoop,
            Self::Cocoop => PromptMethodKind::Cocoop,
        }
    }

    /// KgCoOp's λ; None for the others.
    pub fn kg_lambda(self) -> Option<f64> {
        match self {
            Self::Kgcoop { lambda } => Some(lambda),
            _ => None,
        }
    }

    /// "CoOp", "KgCoOp λ=8", "CoCoOp".
    pub fn name(self) -> String {
        match self {
            Self::Kgcoop { lambda } => format!("KgCoOp λ={lambda}"),
            other => other.kind().label().to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum PromptMethod {
    /// Learned context vectors (unified or class-specific) next to each class name, trained as CoOp,
    /// KgCoOp or CoCoOp.
    Coop {
        config: CoopConfig,
        variant: CoopVariant,
    },
    /// Class-specific tokens and the super-category word, no sub-category names.
    Datp(DatpConfig),
}

impl PromptMethod {
    pub fn kind(&self) -> PromptMethodKind {
        match self {
            Self::Coop { variant, .. } => variant.kind(),
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
            Self::Coop { config, .. } => PromptLearner::new(text, tok, class_names, config),
            Self::Datp(d) => datp::learner(text, tok, class_names.len(), d),
        }
    }

    /// "unified · end · M=16", "DaTP 'bird' · J=16".
    pub fn describe(&self) -> String {
        match self {
            Self::Coop { config: c, .. } => {
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
