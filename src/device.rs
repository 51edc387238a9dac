//! Where an optimizer steps: the one choice that the command line, `bench` and `demo` share.

use crate::error::{Error, Result};

/// Where an optimizer steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Device {
    /// The single-threaded CPU reference (`CpuPath::Reference`).
    Reference,
    /// The parallel CPU path (`CpuPath::Parallel`).
    Cpu,
    /// The chosen wgpu adapter.
    Gpu,
}

impl Device {
    pub const ALL: [Device; 3] = [Self::Reference, Self::Cpu, Self::Gpu];

    pub fn name(self) -> &'static str {
        match self {
            Self::Reference => "reference",
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Device {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| Error::Unknown {
                what: "device",
                name: name.to_string(),
                known: "reference, cpu, gpu".into(),
            })
    }
}
