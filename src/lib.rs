//! promptscope: interactive prompt tuning for CLIP-style vision-language models.
//!
//! Data flows one way: [`data`] → [`clip`] → [`eval`] (and later prompt learning, alignment, fusion)
//! → [`app`]. Every capability is a library function that the CLI and the desktop app both call.

pub mod align;
pub mod alloc;
#[cfg(feature = "gui")]
pub mod app;
pub mod bench;
pub mod clip;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod export;
pub mod fusion;
pub mod progress;
pub mod prompt;
pub mod render;
pub mod rng;
pub mod run;
pub mod startup;
pub mod tensor_file;
#[doc(hidden)]
pub mod testing;
pub mod train;
pub mod value_list;

pub use error::{Error, Result};
