//! CLIP as Hugging Face transformers runs it, with the internals prompt methods need.

pub mod config;
#[cfg(feature = "cuda")]
mod cuda_kernels;
pub mod encode;
pub mod fused;
pub mod layers;
pub mod load;
pub mod model;
pub mod preprocess;
pub mod resample;
pub mod synth;
pub mod text;
pub mod cpu_tower;
pub mod tokenizer;
pub mod vision;

pub use config::{ClipConfig, HiddenAct, TextConfig, VisionConfig};
pub use load::{load, LoadedClip};
pub use model::{l2_normalize, ClipModel};
pub use preprocess::PreprocessConfig;
pub use tokenizer::ClipTokenizer;
