//! How long-running work reports progress and learns it should stop, whoever drives it (the CLI's
//! progress bar, the app's worker channel, a test).

use std::sync::atomic::{AtomicBool, Ordering};

pub trait Progress: Sync {
    /// `done` of `total` units of `stage` are finished.
    fn update(&self, stage: &str, done: usize, total: usize);
    /// Checked between units of work; returning true stops the work with `Error::Cancelled`.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Reports nowhere, never cancels.
pub struct Silent;

impl Progress for Silent {
    fn update(&self, _: &str, _: usize, _: usize) {}
}

/// Cancellation flag plus a callback; the building block for UI and CLI reporters.
pub struct Reporter<'a, F: Fn(&str, usize, usize) + Sync> {
    pub cancel: &'a AtomicBool,
    pub on_update: F,
}

impl<F: Fn(&str, usize, usize) + Sync> Progress for Reporter<'_, F> {
    fn update(&self, stage: &str, done: usize, total: usize) {
        (self.on_update)(stage, done, total)
    }
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

pub fn check(p: &dyn Progress) -> crate::error::Result<()> {
    if p.cancelled() {
        Err(crate::error::Error::Cancelled)
    } else {
        Ok(())
    }
}
