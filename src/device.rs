//! Where an optimizer steps: the one choice that the command line, `bench` and `demo` share.

use crate::error::{Error, Result};
use crate::optim::OptimizerConfig;
use crate::{CpuOptimizer, GpuContext, GpuOptimizer, GpuOptions, Stepper};

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

impl Device {
    /// This device, ready to make optimizers: the GPU is opened with `gpu`.
    pub fn open(self, gpu: &GpuOptions) -> Result<OpenDevice> {
        Ok(match self {
            Device::Reference => OpenDevice::Reference,
            Device::Cpu => OpenDevice::Cpu,
            Device::Gpu => OpenDevice::Gpu(GpuContext::with_options(gpu)?),
        })
    }
}

/// A [`Device`] opened: where the optimizers of a run step, with the GPU context they share.
#[derive(Clone, Debug)]
pub enum OpenDevice {
    /// [`CpuOptimizer::reference`] (the single-threaded reference).
    Reference,
    /// [`CpuOptimizer`] (the parallel CPU path).
    Cpu,
    /// [`GpuOptimizer`] on this context's adapter.
    Gpu(GpuContext),
}

impl OpenDevice {
    /// Which device this is.
    pub fn device(&self) -> Device {
        match self {
            OpenDevice::Reference => Device::Reference,
            OpenDevice::Cpu => Device::Cpu,
            OpenDevice::Gpu(_) => Device::Gpu,
        }
    }

    /// A new optimizer over `theta0` on this device.
    pub fn optimizer(&self, config: OptimizerConfig, theta0: &[f32]) -> Result<Box<dyn Stepper>> {
        Ok(match self {
            OpenDevice::Reference => Box::new(CpuOptimizer::reference(config, theta0)?),
            OpenDevice::Cpu => Box::new(CpuOptimizer::new(config, theta0)?),
            OpenDevice::Gpu(ctx) => Box::new(GpuOptimizer::new(ctx, config, theta0)?),
        })
    }

    /// A line that says what steps.
    pub fn describe(&self) -> String {
        match self {
            OpenDevice::Reference => {
                "reference (CpuOptimizer, reference path, 1 thread)".to_string()
            }
            OpenDevice::Cpu => format!(
                "cpu (CpuOptimizer, parallel path, {} threads)",
                rayon::current_num_threads()
            ),
            OpenDevice::Gpu(ctx) => {
                let a = ctx.adapter_info();
                format!(
                    "gpu ({}, {:?}, {:?}{})",
                    a.name,
                    a.backend,
                    a.device_type,
                    if ctx.is_software() {
                        ", software adapter"
                    } else {
                        ""
                    }
                )
            }
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
