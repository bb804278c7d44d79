//! Scoring prompts against images.

pub mod classify;
pub mod linear_probe;
pub mod metrics;
pub mod templates;
pub mod zeroshot;
