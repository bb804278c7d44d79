//! Whole experiments as the CLI and the app run them: split → cached features → training on the epoch
//! loop (resumable) → evaluation → export. One file a method family.

pub mod base_to_novel;
pub mod coop;
pub mod execute;
pub mod mpfgvc;
pub mod pretrain;
pub mod sweep;
pub mod tip;
