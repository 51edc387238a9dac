//! The adapter's error: bayesprop's own, or what went wrong between burn and bayesprop.

use std::fmt;

/// What can go wrong between a burn module and bayesprop's step.
#[derive(Debug)]
pub enum Error {
    /// bayesprop refused a config, a checkpoint, or the device reported an error.
    Bayesprop(bayesprop::Error),
    /// burn could not set up its wgpu device.
    Init(String),
    /// The parameters live on a burn device that was not set up through
    /// [`crate::init_device`] or [`crate::register_setup`], so bayesprop has no handle to it.
    UnsharedDevice(String),
    /// A parameter or gradient that the kernels cannot step in place.
    Tensor { what: String, problem: String },
    /// The parameters with gradients differ from those registered at the first step.
    Parameters(String),
    /// A question about the optimizer's state before its first step built it.
    NotStarted(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bayesprop(e) => write!(f, "{e}"),
            Error::Init(e) => write!(f, "setting up burn's wgpu device: {e}"),
            Error::UnsharedDevice(device) => write!(
                f,
                "the parameters are on {device}, which bayesprop cannot reach: create the device \
                 with bayesprop_burn::init_device() (or register_setup for your own wgpu handles) \
                 and build the model on it"
            ),
            Error::Tensor { what, problem } => write!(f, "{what}: {problem}"),
            Error::Parameters(e) => write!(f, "{e}"),
            Error::NotStarted(what) => write!(
                f,
                "{what}: the optimizer has not stepped yet (its state is built at the first step)"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bayesprop(e) => Some(e),
            _ => None,
        }
    }
}

impl From<bayesprop::Error> for Error {
    fn from(e: bayesprop::Error) -> Self {
        Error::Bayesprop(e)
    }
}

/// A failed step hands the module back unchanged, as a burn step would return it.
pub struct StepError<M> {
    pub error: Error,
    pub module: M,
}

impl<M> fmt::Debug for StepError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.error, f)
    }
}

impl<M> fmt::Display for StepError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}
