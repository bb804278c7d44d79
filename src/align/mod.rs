//! Fine-grained alignment, the "explain" half of the app: FILIP's token-wise similarity between image
//! patches and prompt words (with MaskCLIP-style value-path features as a second mode), token-wise
//! classification, and SsVP's parameter-free patch selection (METHODS §4, §5).
//!
//! One job per file: [`pass`] runs the vision tower once keeping what the methods need, [`tokens`] turns
//! that (and a prompt) into normalised tokens, [`filip`] scores a similarity matrix, [`classify`] ranks
//! classes with it, [`ssvp`] selects patches, [`region`] measures where a map puts its mass, [`pointing`]
//! and [`shape`] score maps and tokens on captioned scenes.

pub mod classify;
pub mod filip;
pub mod maps;
pub mod pass;
pub mod pointing;
pub mod region;
pub mod shape;
pub mod ssvp;
pub mod tokens;

pub use filip::{align, AlignConfig, Alignment, SimMatrix};
pub use ssvp::{ssvp, SsvpSelection};
pub use tokens::{AlignMode, PromptTokens, TextSource};
