//! Shared by the integration tests: the GPU context, which never skips silently.
#![allow(dead_code)]

use bayesprop::{Error, GpuContext};

/// Set to 1 to let GPU tests print "skipped" instead of failing when no adapter exists.
pub const SKIP_ENV: &str = "BAYESPROP_SKIP_GPU_TESTS";

/// The GPU context for a test. With no adapter the test fails with the fix, unless
/// `BAYESPROP_SKIP_GPU_TESTS=1`, in which case it prints "skipped" and gets `None`.
pub fn gpu(test: &str) -> Option<GpuContext> {
    // Lavapipe warns on every start when this is unset.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    match GpuContext::new() {
        Ok(ctx) => Some(ctx),
        Err(Error::NoAdapter(message)) if std::env::var(SKIP_ENV).as_deref() == Ok("1") => {
            eprintln!("{test}: skipped ({SKIP_ENV}=1): {message}");
            None
        }
        Err(e) => panic!(
            "{test}: {e}\n(GPU tests fail without an adapter; set {SKIP_ENV}=1 to skip them explicitly)"
        ),
    }
}
