//! Where an optimizer steps: the one choice that the command line, `bench` and `demo` share.

use crate::config::StateStorage;
use crate::error::{Error, Result};
use crate::optim::OptimizerConfig;
use crate::{
    CpuOptimizer, CpuPath, GpuContext, GpuOptimizer, GpuOptions, GroupId, ParamGroups, Stepper,
};

/// Where an optimizer steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StepDevice {
    /// The single-threaded CPU reference (`CpuPath::Reference`).
    Reference,
    /// The parallel CPU path (`CpuPath::Parallel`).
    Cpu,
    /// The chosen wgpu adapter.
    Gpu,
}

impl StepDevice {
    pub const ALL: [StepDevice; 3] = [Self::Reference, Self::Cpu, Self::Gpu];

    pub fn name(self) -> &'static str {
        match self {
            Self::Reference => "reference",
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
        }
    }
}

impl StepDevice {
    /// This device, ready to make optimizers: the GPU is opened with `gpu`.
    pub fn open(self, gpu: &GpuOptions) -> Result<OpenStepDevice> {
        Ok(match self {
            StepDevice::Reference => OpenStepDevice::Reference,
            StepDevice::Cpu => OpenStepDevice::Cpu,
            StepDevice::Gpu => OpenStepDevice::Gpu(GpuContext::with_options(gpu)?),
        })
    }
}

/// A [`StepDevice`] opened: where the optimizers of a run step, with the GPU context they share.
#[derive(Clone, Debug)]
pub enum OpenStepDevice {
    /// [`CpuOptimizer::reference`] (the single-threaded reference).
    Reference,
    /// [`CpuOptimizer`] (the parallel CPU path).
    Cpu,
    /// [`GpuOptimizer`] on this context's adapter.
    Gpu(GpuContext),
}

impl OpenStepDevice {
    /// Which device this is.
    pub fn device(&self) -> StepDevice {
        match self {
            OpenStepDevice::Reference => StepDevice::Reference,
            OpenStepDevice::Cpu => StepDevice::Cpu,
            OpenStepDevice::Gpu(_) => StepDevice::Gpu,
        }
    }

    /// A new optimizer over `theta0` on this device, its state held as f32.
    pub fn optimizer(&self, config: OptimizerConfig, theta0: &[f32]) -> Result<Box<dyn Stepper>> {
        self.optimizer_stored(config, StateStorage::default(), theta0)
    }

    /// A new optimizer over `theta0` on this device, its state held as `storage` says.
    pub fn optimizer_stored(
        &self,
        config: OptimizerConfig,
        storage: StateStorage,
        theta0: &[f32],
    ) -> Result<Box<dyn Stepper>> {
        let mut groups = ParamGroups::single(config, theta0)?;
        groups.set_state_format(GroupId(0), storage.format, storage.seed)?;
        Ok(match self {
            OpenStepDevice::Reference => {
                Box::new(CpuOptimizer::from_groups(&groups, CpuPath::Reference))
            }
            OpenStepDevice::Cpu => Box::new(CpuOptimizer::from_groups(&groups, CpuPath::Parallel)),
            OpenStepDevice::Gpu(ctx) => Box::new(GpuOptimizer::from_groups(ctx, &groups)?),
        })
    }

    /// A line that says what steps.
    pub fn describe(&self) -> String {
        match self {
            OpenStepDevice::Reference => {
                "reference (CpuOptimizer, reference path, 1 thread)".to_string()
            }
            OpenStepDevice::Cpu => format!(
                "cpu (CpuOptimizer, parallel path, {} threads)",
                rayon::current_num_threads()
            ),
            OpenStepDevice::Gpu(ctx) => {
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

impl std::fmt::Display for StepDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for StepDevice {
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
