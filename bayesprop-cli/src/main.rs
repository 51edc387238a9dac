//! `bayesprop`: inspect adapters, validate kernels against the reference, replay gradients.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bayesprop: {e}");
            ExitCode::from(2)
        }
    }
}
