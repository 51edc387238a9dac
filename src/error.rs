//! One error type for the crate, with variants a caller can match on.

use std::path::PathBuf;

/// Every fallible operation in bayesprop returns this.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A hyperparameter outside its allowed range (SPEC §2–§3).
    #[error("invalid {optimizer} config: {field} = {value}, allowed: {allowed}")]
    Config {
        optimizer: &'static str,
        field: &'static str,
        value: String,
        allowed: &'static str,
    },

    /// Two inputs that must have the same number of elements do not.
    #[error("length mismatch: {what} has {got} elements, expected {expected}")]
    LengthMismatch {
        what: &'static str,
        got: usize,
        expected: usize,
    },

    /// An unknown optimizer, option key or state name.
    #[error("unknown {what} `{name}`; known: {known}")]
    Unknown {
        what: &'static str,
        name: String,
        known: String,
    },

    /// A `--set` key that the optimizer's config does not have.
    #[error("unknown {optimizer} option `{key}`; known: {known}")]
    UnknownOption {
        optimizer: &'static str,
        key: String,
        known: String,
    },

    /// Groups and tensors that cannot be laid out as asked (duplicate names, unknown ids,
    /// buffers that do not fit the layout).
    #[error("layout: {0}")]
    Layout(String),

    /// No adapter could be found (or none matched the selection).
    #[error("{0}")]
    NoAdapter(String),

    /// A vector or buffer larger than the device allows.
    #[error("{what} needs {needed} bytes but the device allows at most {allowed} bytes ({limit})")]
    TooLarge {
        what: &'static str,
        needed: u64,
        allowed: u64,
        limit: &'static str,
    },

    /// Under `NonFinitePolicy::Error`: a step saw NaN or ±Inf gradient elements, and changed
    /// nothing (θ, the state and the step counter are as before it).
    #[error("step {step} saw {count} non-finite gradient element(s) (NaN or ±Inf) in group {group} and changed nothing there (non-finite policy: error)")]
    NonFinite { step: u64, group: usize, count: u64 },

    /// `max_consecutive_skips`: that many steps in a row were skipped for non-finite
    /// gradients, so this step call was refused and changed nothing (as optax's
    /// `apply_if_finite`). Restoring a checkpoint or setting the transform again resets it.
    #[error("{count} step(s) in a row were skipped for non-finite gradients (max_consecutive_skips = {count}); refusing to step further")]
    TooManySkips { count: u64 },

    /// An error reported by the device: validation, out of memory, device lost, mapping.
    /// `source` is wgpu's own error where there is one (downcast it to `wgpu::Error`,
    /// `wgpu::PollError`, `wgpu::BufferAsyncError` or `wgpu::RequestDeviceError`).
    #[error("device error: {what}{}", suffix(source))]
    Device {
        what: String,
        #[source]
        source: Option<DeviceErrorSource>,
    },

    /// A WGSL module that naga refuses, with the diagnostic pointing into its source.
    #[error("shader `{kernel}` at width {width}: {message}")]
    Shader {
        kernel: &'static str,
        width: u32,
        message: String,
    },

    /// A checkpoint that is well formed but holds other groups, optimizers, tensors, shapes or
    /// state vectors than the optimizer it is restored into; nothing was changed.
    #[error("checkpoint does not match this optimizer: {0}")]
    CheckpointMismatch(String),

    /// A file that could not be read or written, or whose contents are wrong.
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },

    /// A setting that this implementation does not support yet (e.g. a low-precision
    /// `state_format` on the GPU optimizer); nothing was built or changed.
    #[error("{0}")]
    Unsupported(String),

    /// Work refused up front because the host's memory cannot hold it (the kernel's
    /// out-of-memory killer would end the process instead of an error).
    #[error("{what} needs {needed} bytes of host memory but {available} bytes are available (MemAvailable in /proc/meminfo)")]
    HostMemory {
        what: String,
        needed: u64,
        available: u64,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error a device error came from.
pub type DeviceErrorSource = Box<dyn std::error::Error + Send + Sync + 'static>;

fn suffix(source: &Option<DeviceErrorSource>) -> String {
    source
        .as_ref()
        .map(|s| format!(": {s}"))
        .unwrap_or_default()
}

impl Error {
    /// A `Config` error; `value` is formatted with `Debug` so NaN and infinities read clearly.
    pub fn config(
        optimizer: &'static str,
        field: &'static str,
        value: impl std::fmt::Debug,
        allowed: &'static str,
    ) -> Self {
        Error::Config {
            optimizer,
            field,
            value: format!("{value:?}"),
            allowed,
        }
    }

    /// A device error with no wgpu error behind it.
    pub fn device(what: impl Into<String>) -> Self {
        Error::Device {
            what: what.into(),
            source: None,
        }
    }

    /// A device error caused by wgpu's `source`, kept as [`std::error::Error::source`].
    pub fn device_from(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Device {
            what: what.into(),
            source: Some(Box::new(source)),
        }
    }

    pub fn file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
