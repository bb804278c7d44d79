//! Results go to stdout through here (`outln!` in main.rs writes the same way): a reader that goes away
//! (`promptscope ... | head`) is an error the verb returns, never a panic, and `main` ends quietly on it.

use std::cell::RefCell;
use std::fmt::Display;
use std::io::Write as _;

use anyhow::{Context as _, Result};

/// One line on stdout.
pub fn line(text: impl Display) -> Result<()> {
    writeln!(std::io::stdout().lock(), "{text}").context("writing to stdout")
}

/// True when `e` comes from writing to a pipe whose reader has gone: the user stopped reading, so there
/// is nothing to report.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Lines written from a job's callbacks (one JSON line per epoch), which cannot return errors: the first
/// failed write is kept and later lines are dropped, so the job still finishes (and writes its export)
/// while [`Lines::finish`] reports the failure afterwards.
#[derive(Default)]
pub struct Lines {
    failed: RefCell<Option<anyhow::Error>>,
}

impl Lines {
    pub fn line(&self, text: impl Display) {
        let mut failed = self.failed.borrow_mut();
        if failed.is_none() {
            if let Err(e) = line(text) {
                *failed = Some(e);
            }
        }
    }

    pub fn finish(self) -> Result<()> {
        self.failed.into_inner().map_or(Ok(()), Err)
    }
}
