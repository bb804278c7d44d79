//! MP-FGVC's multimodal half (METHODS §5): discrepancy-aware text prompts (DaTP), the vision-language
//! fusion module (VLFM) and the two-stage training that ties them to a CLIP model.
//!
//! `datp` builds the prompts, `tail` the trainable end of the vision tower, `params` the trainable
//! linear maps, `vlfm` the fusion module, `two_stage` the two training loops, `pipeline` a whole run,
//! `export` its weights file.

pub mod datp;
pub mod export;
pub mod params;
pub mod pipeline;
pub mod tail;
pub mod two_stage;
pub mod vlfm;
