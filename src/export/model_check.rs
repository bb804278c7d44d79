//! The one check every file made on a model goes through before it is used with one (prompts files,
//! MP-FGVC weights): learned vectors are only meaningful on the weights they were trained against, so a
//! file is refused on a model of other dimensions and on a model with the same shapes but other weights.

use std::path::Path;

use crate::clip::LoadedClip;
use crate::error::{Error, Result};

/// What a file records about the model it was made on.
pub struct MadeOn<'a> {
    pub model_id: &'a str,
    /// `clip::load::fingerprint` of that model; empty when the file does not know it.
    pub fingerprint: &'a str,
    /// Each dimension the file depends on: (what, the file's value, `clip`'s value).
    pub dims: Vec<(&'static str, usize, usize)>,
}

/// Refuses `path` (made as `made`) on `clip` when a dimension or the weights differ, naming both models.
pub fn check_model(path: &Path, made: &MadeOn, clip: &LoadedClip) -> Result<()> {
    let fix = format!(
        "use it with the model it was trained on ('{}'), or train it again on '{}'",
        made.model_id, clip.id
    );
    if made.dims.iter().any(|(_, ours, theirs)| ours != theirs) {
        let list = |pick: fn(&(&'static str, usize, usize)) -> usize| {
            made.dims
                .iter()
                .map(|d| format!("{} {}", d.0, pick(d)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(Error::bad_file(
            path,
            format!(
                "was made for model '{}' ({}) but '{}' has {}: dimension mismatch",
                made.model_id,
                list(|d| d.1),
                clip.id,
                list(|d| d.2)
            ),
            fix,
        ));
    }
    if made.fingerprint.is_empty() {
        return Ok(());
    }
    let fingerprint = crate::clip::load::fingerprint(&clip.dir)?;
    if fingerprint != made.fingerprint {
        let short = |f: &str| f.chars().take(12).collect::<String>();
        return Err(Error::bad_file(
            path,
            format!(
                "was trained on model '{}', and '{}' has the same shapes but other weights (fingerprint {} vs {})",
                made.model_id,
                clip.id,
                short(made.fingerprint),
                short(&fingerprint)
            ),
            fix,
        ));
    }
    Ok(())
}
