//! The runs folder on disk: what each training run left (a prompts file or a model folder, and the
//! checkpoint it resumes from), how much space it takes, and deleting it. Runs pile up in the cache
//! otherwise, with no way to see them.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::train::coop::{checkpoint_path, CHECKPOINT_SUFFIX};

/// What a run produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// A prompts file (CoOp or MP-FGVC weights).
    Prompts,
    /// A pretrained model folder.
    Model,
    /// Only a checkpoint: the run was stopped before it finished.
    Unfinished,
}

/// One run: its output and its checkpoint (`<output>.ckpt`), counted together.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEntry {
    /// The run's output path (it may not exist for an unfinished run).
    pub path: PathBuf,
    pub kind: RunKind,
    /// Every file or folder of the run, output and checkpoint.
    pub parts: Vec<PathBuf>,
    pub bytes: u64,
    pub modified: Option<SystemTime>,
}

impl RunEntry {
    pub fn name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

/// The runs in `dir`, newest first. A folder that does not exist yet holds no runs.
pub fn list(dir: &Path) -> Result<Vec<RunEntry>> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut by_output: std::collections::BTreeMap<PathBuf, RunEntry> = Default::default();
    for entry in read {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // Temporary files of an atomic write in progress are not runs.
        if name.starts_with('.') {
            continue;
        }
        let output = match name.strip_suffix(CHECKPOINT_SUFFIX) {
            Some(stem) => dir.join(stem),
            None => path.clone(),
        };
        let (bytes, modified) = size_and_time(&path);
        let run = by_output.entry(output.clone()).or_insert_with(|| RunEntry {
            kind: RunKind::Unfinished,
            path: output,
            parts: Vec::new(),
            bytes: 0,
            modified: None,
        });
        if path == run.path {
            run.kind = if path.is_dir() {
                RunKind::Model
            } else {
                RunKind::Prompts
            };
        }
        run.parts.push(path);
        run.bytes += bytes;
        run.modified = run.modified.max(modified);
    }
    let mut runs: Vec<RunEntry> = by_output.into_values().collect();
    runs.sort_by(|a, b| {
        b.modified
            .cmp(&a.modified)
            .then_with(|| a.path.cmp(&b.path))
    });
    Ok(runs)
}

/// Size (a folder's files summed) and last change of a path; unreadable parts count as empty.
fn size_and_time(path: &Path) -> (u64, Option<SystemTime>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return (0, None);
    };
    let modified = meta.modified().ok();
    if !meta.is_dir() {
        return (meta.len(), modified);
    }
    let mut bytes = 0;
    let mut latest = modified;
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        let (b, m) = size_and_time(&entry.path());
        bytes += b;
        latest = latest.max(m);
    }
    (bytes, latest)
}

/// Deletes a run's output and checkpoint. Refuses anything that is not directly inside `dir`, so a
/// stale or crafted entry can never remove files elsewhere.
pub fn delete(dir: &Path, run: &Path) -> Result<()> {
    if run.parent() != Some(dir) || run.file_name().is_none() {
        return Err(Error::invalid(format!(
            "{} is not a run in {}",
            run.display(),
            dir.display()
        )));
    }
    for part in [run.to_path_buf(), checkpoint_path(run)] {
        let removed = if part.is_dir() {
            std::fs::remove_dir_all(&part)
        } else {
            std::fs::remove_file(&part)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&part, e)),
        }
    }
    Ok(())
}

/// "3.2 MB", "812 kB", "120 B".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_group_output_and_checkpoint_and_delete_stays_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("run-1-1.safetensors"), [0u8; 100]).unwrap();
        std::fs::write(d.join("run-1-1.safetensors.ckpt"), [0u8; 50]).unwrap();
        std::fs::write(d.join("run-2-2.safetensors.ckpt"), [0u8; 7]).unwrap();
        std::fs::create_dir(d.join("model-3-3")).unwrap();
        std::fs::write(d.join("model-3-3").join("model.safetensors"), [0u8; 1000]).unwrap();
        std::fs::write(d.join(".tmp-write"), [0u8; 1]).unwrap();
        let runs = list(d).unwrap();
        let find = |n: &str| {
            runs.iter()
                .find(|r| r.name() == n)
                .unwrap_or_else(|| panic!("{n} in {runs:?}"))
        };
        assert_eq!(runs.len(), 3, "{runs:?}");
        assert_eq!(
            (
                find("run-1-1.safetensors").kind,
                find("run-1-1.safetensors").bytes
            ),
            (RunKind::Prompts, 150)
        );
        assert_eq!(
            (
                find("run-2-2.safetensors").kind,
                find("run-2-2.safetensors").bytes
            ),
            (RunKind::Unfinished, 7)
        );
        assert_eq!(
            (find("model-3-3").kind, find("model-3-3").bytes),
            (RunKind::Model, 1000)
        );

        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("keep.safetensors");
        std::fs::write(&victim, b"x").unwrap();
        assert!(delete(d, &victim).is_err());
        assert!(
            victim.exists(),
            "a path outside the runs folder is never deleted"
        );

        delete(d, &d.join("run-1-1.safetensors")).unwrap();
        delete(d, &d.join("model-3-3")).unwrap();
        let left: Vec<String> = list(d).unwrap().iter().map(RunEntry::name).collect();
        assert_eq!(left, ["run-2-2.safetensors"]);
        assert_eq!(
            list(&d.join("missing")).unwrap(),
            vec![],
            "no runs folder yet: no runs"
        );
        assert_eq!(
            (human_size(999), human_size(1500), human_size(3_200_000)),
            ("999 B".into(), "1.5 kB".into(), "3.2 MB".into())
        );
    }
}
