//! Files promptscope writes and reads: learned prompts (safetensors + metadata), MP-FGVC weights, CoOp's
//! own checkpoints, what learned vectors are nearest to in the vocabulary, and the check that a file
//! meets the model it was made on.

pub mod coop_import;
pub mod interpret;
pub mod model_check;
pub mod mpfgvc_file;
pub mod pickle_guard;
pub mod prompt_file;
