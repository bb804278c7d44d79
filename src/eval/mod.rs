//! Scoring prompts against images.

pub mod metrics;
pub mod zeroshot;
