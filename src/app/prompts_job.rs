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
    /// Why this file cannot be scored with what is loaded now, re-checked whenever the model or the
    /// dataset changes: `model` is the loaded model's (id, fingerprint), `classes` the open dataset's
    /// class names. None when it can.
    pub fn problem(
        &self,
        model: Option<(&str, &str)>,
        classes: Option<&[String]>,
    ) -> Option<String> {
        if let Some((id, _)) =
            model.filter(|(_, fp)| !fp.is_empty() && *fp != self.meta.model_fingerprint)
        {
            return Some(format!(
                "made for model '{}', not the loaded '{id}'",
                self.meta.model_id
            ));
        }
        let classes = classes?;
        (self.meta.class_names != classes)
            .then(|| super::compare_job::classes_problem(&self.meta.class_names, classes))
    }

    /// A plain-text summary to copy: where it came from, its settings, its accuracy, its nearest words.
    pub fn summary(&self) -> String {
        let m = &self.meta;
        let mut s = format!(
            "{}\nmodel: {}\nclasses ({}): {}\ncontext: {} × {} tokens, {}, class token at the {}\n",
            self.path.display(),
            m.model_id,
            m.class_names.len(),
            m.class_names.join(", "),
            if m.coop.csc {
                "class-specific"
            } else {
                "unified"
            },
            self.words
                .iter()
                .filter(|w| w.class.unwrap_or(0) == 0)
                .count(),
            m.coop
                .ctx_init
                .as_deref()
                .map_or("random init".to_string(), |p| format!("init \"{p}\"")),
            format!("{:?}", m.coop.class_position).to_lowercase(),
        );
        if let Some(acc) = m
            .metrics
            .pointer("/metrics/test_acc")
            .and_then(|v| v.as_f64())
        {
            let hand = m
                .metrics
                .pointer("/metrics/handcrafted_test_acc")
                .and_then(|v| v.as_f64())
                .unwrap_or(f64::NAN);
            s += &format!(
                "test accuracy: {:.2}% (hand-crafted {:.2}%)\n",
                100.0 * acc,
                100.0 * hand
            );
        }
        s += "nearest words per context vector:\n";
        for w in &self.words {
            let class = w.class.map_or(String::new(), |c| {
                format!("{} ", m.class_names.get(c).cloned().unwrap_or_default())
            });
            let near: Vec<String> = w
                .nearest
                .iter()
                .map(|n| format!("{} ({:.3})", n.token, n.distance))
                .collect();
            s += &format!("  {class}{}: {}\n", w.position + 1, near.join(", "));
        }
        s
    }
}

/// Loads a prompts file; CoOp's own checkpoint (`model.pth.tar-N`) is imported first with the open
/// dataset's class names (CoOp does not store them) into `imports`, and that file is loaded.
pub fn load(
    clip: &LoadedClip,
    path: &Path,
    label: String,
    class_names: Option<&[String]>,
    imports: &Path,
) -> Result<LoadedPrompts> {
    let path = &if crate::export::coop_import::is_coop_checkpoint(path) {
        let names = class_names.ok_or_else(|| {
            Error::bad_file(path, "is a CoOp checkpoint, which does not record its class names", "open the dataset it was trained on first (with its classnames.txt), then load it again")
        })?;
        let file =
            crate::export::coop_import::to_prompt_file(clip, path, names, Default::default())?;
        let stem: String = path
            .file_name()
            .map(|n| n.to_string_lossy().replace(['.', ' '], "-"))
            .unwrap_or_default();
        let out = imports.join(format!("imported-{stem}.safetensors"));
        std::fs::create_dir_all(imports).map_err(|e| Error::io(imports, e))?;
        file.save(&out)?;
        out
    } else {
        path.to_path_buf()
    };
    let file = PromptFile::load(path)?;
    file.check_model(clip, path)?;
    let words = nearest_tokens(
        &file.ctx,
        &clip.model()?.text.token_embedding,
        clip.tokenizer()?,
        NEAREST,
    )?;
    Ok(LoadedPrompts {
        path: path.to_path_buf(),
        label,
        meta: file.meta,
        words,
    })
}

/// Copies a prompts file atomically (a half-written export never replaces a good one).
pub fn export(from: &Path, to: &Path) -> Result<PathBuf> {
    if to.as_os_str().is_empty() {
        return Err(Error::invalid(
            "choose where to save the prompts (a .safetensors path)",
        ));
    }
    crate::error::check_writable(to)?;
    let bytes = std::fs::read(from).map_err(|e| Error::io(from, e))?;
    crate::error::write_atomic(to, &bytes)?;
    Ok(to.to_path_buf())
}
