//! CLIP as Hugging Face transformers runs it, with the internals prompt methods need.

pub mod config;
pub mod demo;
pub mod encode;
pub mod family;
pub mod kernels;
pub mod layers;
pub mod load;
pub mod model;
pub mod preprocess;
pub mod resample;
pub mod synth;
pub mod text;
pub mod tokenizer;
pub mod vision;

pub use config::{ClipConfig, HiddenAct, TextConfig, VisionConfig};
pub use family::Family;
pub use load::{load, LoadedClip};
pub use model::{l2_normalize, ClipModel};
pub use preprocess::PreprocessConfig;
pub use tokenizer::ClipTokenizer;
