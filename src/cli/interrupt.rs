//! Ctrl-C. While a job reports progress (a `Bar` is alive) the first Ctrl-C asks it to stop: `Bar`'s
//! `cancelled()` turns true, the library stops at its next batch with `Error::Cancelled`, and `main` says
//! "cancelled" and exits with 130 (128 + SIGINT, what a shell reports for a process Ctrl-C ended), after
//! training has kept its checkpoint. A second Ctrl-C, or one while nothing is listening (loading a model,
//! a quick verb), ends the process at once.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The exit status of a cancelled run.
pub const EXIT_STATUS: u8 = 130;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static LISTENERS: AtomicUsize = AtomicUsize::new(0);

/// Routes Ctrl-C here for the rest of the process. Without a handler (it could not be installed) Ctrl-C
/// keeps its default: the process ends at once.
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) || LISTENERS.load(Ordering::SeqCst) == 0 {
            eprintln!("\ncancelled");
            std::process::exit(i32::from(EXIT_STATUS));
        }
        eprintln!("\nstopping after the current batch (Ctrl-C again to quit at once)");
    });
}

/// Whether the user asked the job to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Held by whatever polls [`requested`] between batches: while one is alive, Ctrl-C waits for the job to
/// stop cleanly instead of ending the process.
pub struct Listening(());

impl Listening {
    pub fn new() -> Self {
        LISTENERS.fetch_add(1, Ordering::SeqCst);
        Listening(())
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        LISTENERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How to continue a cancelled training run, printed after "cancelled".
#[derive(Debug)]
pub struct ResumeHint(pub String);

impl std::fmt::Display for ResumeHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `e`, with how to resume attached when it is a cancellation and `ckpt` (the checkpoint a training run
/// writes after every epoch) is there.
pub fn resume_hint(e: promptscope::Error, ckpt: &Path) -> anyhow::Error {
    if matches!(e, promptscope::Error::Cancelled) && ckpt.is_file() {
        let hint = format!("the last finished epoch is saved in {}: run the same command with --resume to continue", ckpt.display());
        anyhow::Error::from(e).context(ResumeHint(hint))
    } else {
        e.into()
    }
}

/// Whether `e` is a cancellation, and the hint to print with it.
pub fn cancelled(e: &anyhow::Error) -> Option<Option<&ResumeHint>> {
    let is_cancel = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<promptscope::Error>(),
            Some(promptscope::Error::Cancelled)
        )
    });
    is_cancel.then(|| e.downcast_ref::<ResumeHint>())
}
