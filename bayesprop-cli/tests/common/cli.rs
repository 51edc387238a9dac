//! Running the `bayesprop` binary from a test: a scratch folder and the runner.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `bayesprop` binary in `dir`.
pub fn bayesprop(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bayesprop"))
        .args(args)
        .current_dir(dir)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .expect("the binary runs")
}
