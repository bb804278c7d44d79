//! Learned prompts files in the app: loading one (checked against the model, with the nearest vocabulary
//! words of every context vector) and exporting a run's file to where the user wants it.

use std::path::{Path, PathBuf};

use crate::clip::LoadedClip;
use crate::error::{Error, Result};
use crate::export::interpret::{nearest_tokens, VectorWords};
use crate::export::prompt_file::{PromptFile, PromptMeta};

/// Nearest words shown per context vector.
pub const NEAREST: usize = 5;

#[derive(Debug, Clone)]
pub struct LoadedPrompts {
    pub path: PathBuf,
    pub label: String,
    pub meta: PromptMeta,
    pub words: Vec<VectorWords>,
}

impl LoadedPrompts {
    /// A plain-text summary to copy: where it came from, its settings, its accuracy, its nearest words.
    pub fn summary(&self) -> String {
        let m = &self.meta;
        let mut s = format!(
            "{}\nmodel: {}\nclasses ({}): {}\ncontext: {} × {} tokens, {}, class token at the {}\n",
            self.path.display(),
            m.model_id,
            m.class_names.len(),
            m.class_names.join(", "),
            if m.coop.csc { "class-specific" } else { "unified" },
            self.words.iter().filter(|w| w.class.unwrap_or(0) == 0).count(),
            m.coop.ctx_init.as_deref().map_or("random init".to_string(), |p| format!("init \"{p}\"")),
            format!("{:?}", m.coop.class_position).to_lowercase(),
        );
        if let Some(acc) = m.metrics.pointer("/metrics/test_acc").and_then(|v| v.as_f64()) {
            let hand = m.metrics.pointer("/metrics/handcrafted_test_acc").and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
            s += &format!("test accuracy: {:.2}% (hand-crafted {:.2}%)\n", 100.0 * acc, 100.0 * hand);
        }
        s += "nearest words per context vector:\n";
        for w in &self.words {
            let class = w.class.map_or(String::new(), |c| format!("{} ", m.class_names.get(c).cloned().unwrap_or_default()));
            let near: Vec<String> = w.nearest.iter().map(|n| format!("{} ({:.3})", n.token, n.distance)).collect();
            s += &format!("  {class}{}: {}\n", w.position + 1, near.join(", "));
        }
        s
    }
}

pub fn load(clip: &LoadedClip, path: &Path, label: String) -> Result<LoadedPrompts> {
    let file = PromptFile::load(path)?;
    file.check_model(clip, path)?;
    let words = nearest_tokens(&file.ctx, &clip.model.text.token_embedding, &clip.tokenizer, NEAREST)?;
    Ok(LoadedPrompts { path: path.to_path_buf(), label, meta: file.meta, words })
}

/// Copies a prompts file atomically (a half-written export never replaces a good one).
pub fn export(from: &Path, to: &Path) -> Result<PathBuf> {
    if to.as_os_str().is_empty() {
        return Err(Error::invalid("choose where to save the prompts (a .safetensors path)"));
    }
    crate::error::output_dir(to)?;
    let bytes = std::fs::read(from).map_err(|e| Error::io(from, e))?;
    crate::error::write_atomic(to, &bytes)?;
    Ok(to.to_path_buf())
}
