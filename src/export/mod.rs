//! Files promptscope writes and reads: learned prompts (safetensors + metadata), MP-FGVC weights, CoOp's
//! own checkpoints, and what learned vectors are nearest to in the vocabulary.

pub mod coop_import;
pub mod interpret;
pub mod mpfgvc_file;
pub mod prompt_file;
