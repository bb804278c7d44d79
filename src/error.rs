//! One error type for the library. Every variant that concerns user input names the file and says what
//! to do about it, because the user sees these messages as-is on the command line and in the app.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {reason}. {fix}")]
    BadFile {
        path: PathBuf,
        reason: String,
        fix: String,
    },

    #[error("{path}: not found. {fix}")]
    Missing { path: PathBuf, fix: String },

    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },

    #[error("could not read image {path}: {reason}. Remove or replace the file")]
    Image { path: PathBuf, reason: String },

    #[error("dataset {path}: {reason}")]
    Dataset { path: PathBuf, reason: String },

    #[error("model '{id}': {reason}")]
    Hub { id: String, reason: String },

    #[error("{0}")]
    Invalid(String),

    #[error("cancelled")]
    Cancelled,

    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

impl Error {
    pub fn bad_file(
        path: impl Into<PathBuf>,
        reason: impl ToString,
        fix: impl Into<String>,
    ) -> Self {
        Error::BadFile {
            path: path.into(),
            reason: reason.to_string(),
            fix: sentence(fix.into()),
        }
    }

    pub fn missing(path: impl Into<PathBuf>, fix: impl Into<String>) -> Self {
        Error::Missing {
            path: path.into(),
            fix: sentence(fix.into()),
        }
    }

    pub fn io(path: impl Into<PathBuf>, err: impl ToString) -> Self {
        Error::Io {
            path: path.into(),
            reason: err.to_string(),
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
}

/// Messages read as "path: what is wrong. What to do.": the advice starts a sentence.
fn sentence(s: String) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => s,
    }
}

/// The folder `path` will be written into (`.` for a bare file name), or an error naming it when it does
/// not exist: long jobs call this before they start, so they fail at once rather than at the export.
pub fn output_dir(path: &std::path::Path) -> Result<PathBuf> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::missing(
            dir,
            format!(
                "create the folder first, or choose another path for {}",
                path.display()
            ),
        ));
    }
    Ok(dir)
}

/// [`output_dir`], and a file can be created there (a read-only mount, a folder without write permission,
/// a full disk that cannot take even an empty file): jobs call this before hours of work.
pub fn check_writable(path: &std::path::Path) -> Result<PathBuf> {
    let dir = output_dir(path)?;
    let probe = dir.join(format!(".promptscope-write-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(dir)
        }
        Err(e) => Err(Error::bad_file(
            &dir,
            format!("cannot be written to ({e})"),
            format!("choose a folder you can write for {}", path.display()),
        )),
    }
}

/// Writes `bytes` to `path` atomically: a crash or a full disk never leaves a half-written file where the
/// user's output (or an earlier good file) should be. The bytes go to a temporary file beside it (named
/// by process and call, so concurrent writers of one path never share one), are synced, then renamed
/// over `path`; temporaries that killed processes left behind are removed.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALL: AtomicU64 = AtomicU64::new(0);
    let dir = output_dir(path)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    remove_stale_temporaries(&dir, &file_name);
    let call = CALL.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.{}-{call}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Removes `.{file_name}.{pid}-{n}.tmp` files of processes that no longer run (a SIGKILL between write
/// and rename leaves one). Only where the process table can be asked (/proc); elsewhere they stay.
fn remove_stale_temporaries(dir: &std::path::Path, file_name: &str) {
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!(".{file_name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A folder that [`create_dir_atomic`] may fill: absent, or empty. Checked up front by jobs that would
/// otherwise find out only after hours of work.
pub fn check_new_dir(dir: &std::path::Path) -> Result<()> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Error::bad_file(
            dir,
            "already exists and is not empty",
            "choose a new folder or remove this one",
        ));
    }
    Ok(())
}

/// Builds a new folder at `dir` through `fill`, which writes into a temporary sibling that is renamed
/// into place only when complete: an interrupted run never leaves a half-made model or dataset behind.
pub fn create_dir_atomic(
    dir: &std::path::Path,
    fill: impl FnOnce(&std::path::Path) -> Result<()>,
) -> Result<()> {
    check_new_dir(dir)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = parent.join(format!(".{name}.{}.partial", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = fill(&tmp).and_then(|()| {
        if dir.exists() {
            std::fs::remove_dir(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}
