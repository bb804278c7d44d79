//! Scoring prompts against images.

pub mod linear_probe;
pub mod metrics;
pub mod templates;
pub mod zeroshot;
