//! Shared by the harnesses: AFL's bytes written to a scratch file of the right name, the loader called
//! on it. A loader that returns (accepted or refused) is fine; a panic or an abort is what AFL reports.

use std::path::PathBuf;

/// A per-process scratch folder (AFL runs one harness per process).
pub fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("promptscope-afl-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Writes `data` to `name` in the scratch folder and returns its path.
pub fn file(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, data).expect("scratch folder is writable");
    path
}
