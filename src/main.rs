//! The `promptscope` binary: no verb opens the desktop app; each verb runs headless and prints text, or
//! JSON with `--format json`.

use std::process::ExitCode;

use clap::Parser;

/// `println!` that turns a closed stdout (`promptscope ... | head`) into an error instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))?
    };
}

mod cli;

// Why mimalloc: `promptscope::alloc`.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    promptscope::alloc::keep_freed_memory();
    let args = cli::args::Cli::parse();
    cli::interrupt::install();
    let result = match args.verb {
        None => cli::open_default_app(),
        Some(verb) => cli::run(verb),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): it has all it wanted.
        Err(e) if cli::output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(hint) = cli::interrupt::cancelled(&e) {
                eprintln!("cancelled");
                if let Some(hint) = hint {
                    eprintln!("{hint}");
                }
                return ExitCode::from(cli::interrupt::EXIT_STATUS);
            }
            // One line: tensor errors carry a backtrace after the message when RUST_BACKTRACE is set.
            let msg = format!("{e:#}");
            eprintln!("error: {}", msg.lines().next().unwrap_or_default());
            ExitCode::FAILURE
        }
    }
}
