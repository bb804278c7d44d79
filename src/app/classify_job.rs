//! One image classified with a learned prompts file (the Export tab's "Classify an image…"): what a
//! user does first with prompts they just trained.

use std::path::{Path, PathBuf};

use crate::clip::LoadedClip;
use crate::error::Result;
use crate::export::prompt_file::PromptFile;

/// Classes shown per image.
pub const TOP_K: usize = 5;

#[derive(Debug, Clone)]
pub struct Classified {
    pub prompts: PathBuf,
    pub image: PathBuf,
    /// (class, probability), best first.
    pub top: Vec<(String, f32)>,
}

pub fn run(clip: &LoadedClip, prompts: &Path, image: &Path) -> Result<Classified> {
    let file = PromptFile::load(prompts)?;
    let scorer = file.scorer(clip, prompts)?;
    let mut predictions = crate::eval::classify::top_k_by(
        clip,
        &|feats| scorer.logits(clip, feats),
        &file.meta.class_names,
        &[image.to_path_buf()],
        TOP_K,
        &crate::progress::Silent,
    )?;
    Ok(Classified {
        prompts: prompts.to_path_buf(),
        image: image.to_path_buf(),
        top: predictions.remove(0).top,
    })
}
