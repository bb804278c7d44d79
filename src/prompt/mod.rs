//! Prompts: CoOp contexts, MP-FGVC's DaTP prompts, and the method enum that a run carries.

pub mod cocoop;
pub mod coop;
pub mod datp;
pub mod method;

pub use method::{CoopVariant, PromptMethod, PromptMethodKind};
