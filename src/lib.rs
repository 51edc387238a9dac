#![doc = include_str!("../README.md")]
//!
//! ## Crate layout
//!
//! One module per concern:
//! - [`optim`]: configs and the table of optimizers;
//! - [`reference`](mod@reference): CPU twins of the kernels (f32 reference, f64 oracle);
//! - [`kernels`]: the WGSL sources in `shaders/` and their validation;
//! - [`gpu`]: the wgpu host layer; [`cpu`]: the CPU optimizer with the same API ([`Stepper`]);
//! - [`transform`]: unscaling and global-norm clipping around the update, and the one order
//!   of the norm's additions; [`schedule`]: hyperparameters as functions of the step;
//! - [`checkpoint`]: safetensors checkpoints; [`layout`]: parameter groups and tensors;
//! - [`validate`]: the agreement battery shared by the tests and `bayesprop validate`;
//! - [`StepDevice`]: where an optimizer steps, as the CLI, `bench` and `demo` name it.
//!
//! Cargo features: `ndarray` (on by default: `Stepper::step_array`, `ParamGroups::add_array`,
//! `reference::step_views`), `bench` (step times against a roofline measured in the same run)
//! and `demo` (the digits experiments), both opt-in. The `bayesprop` binary is the workspace
//! crate `bayesprop-cli`.

#[cfg(feature = "bench")]
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod cpu;
#[cfg(feature = "demo")]
pub mod demo;
pub mod device;
pub mod error;
pub mod gpu;
mod held;
pub mod kernels;
pub mod layout;
pub mod optim;
pub mod reference;
pub mod schedule;
pub mod transform;
pub mod ulp;
pub mod validate;

/// The wgpu this crate is built against, for callers who bring their own device and buffers.
pub use wgpu;

pub use checkpoint::{Checkpoint, HeldVector};
pub use config::{StateFormat, StateStorage};
pub use cpu::{CpuOptimizer, CpuPath};
pub use device::{OpenStepDevice, StepDevice};
pub use error::{Error, Result};
pub use gpu::{BufferRange, GpuContext, GpuOptimizer, GpuOptions, StepShape, TensorBuffers};
pub use layout::{GroupId, Layout, ParamGroups, Stored, TensorId};
pub use optim::{
    BayesConfig, NonFinitePolicy, Optimizer, OptimizerConfig, SigmaInit, SigmaMax, StepReport,
};
pub use schedule::{HyperSchedule, Schedule};
pub use transform::{GradTransform, NormReport};

/// The setters of [`Stepper`] that change only the layout (the device reads it at each step),
/// for the optimizers that own one in `self.layout`: the layout is never handed out mutably, so
/// nothing outside these validated setters can put it out of step with the device's state.
macro_rules! layout_setters {
    () => {
        fn set_config(&mut self, config: $crate::OptimizerConfig) -> $crate::Result<()> {
            self.layout.set_config_everywhere(&config)
        }

        fn set_group_config(
            &mut self,
            group: $crate::GroupId,
            config: $crate::OptimizerConfig,
        ) -> $crate::Result<()> {
            self.layout.set_group_config(group, config)
        }

        fn set_nonfinite_policy(&mut self, policy: $crate::NonFinitePolicy) {
            self.layout.set_policy_everywhere(policy)
        }

        fn set_group_policy(
            &mut self,
            group: $crate::GroupId,
            policy: $crate::NonFinitePolicy,
        ) -> $crate::Result<()> {
            self.layout.set_group_policy(group, policy)
        }

        fn set_schedule(&mut self, schedule: $crate::HyperSchedule) -> $crate::Result<()> {
            self.layout.set_schedule_everywhere(&schedule)
        }

        fn set_group_schedule(
            &mut self,
            group: $crate::GroupId,
            schedule: $crate::HyperSchedule,
        ) -> $crate::Result<()> {
            self.layout.set_group_schedule(group, schedule)
        }

        fn restore_all(&mut self, checkpoint: &$crate::Checkpoint) -> $crate::Result<()> {
            let settings = checkpoint.restore_settings(&self.layout)?;
            self.restore(checkpoint)?;
            let transform = *settings.transform();
            self.layout = settings;
            // Through the setter, which also resets the count of steps skipped in a row.
            self.set_grad_transform(transform)
        }
    };
}
pub(crate) use layout_setters;

/// What `CpuOptimizer` and `GpuOptimizer` share: step every group, read it back, change
/// hyperparameters between steps.
pub trait Stepper {
    /// The groups and tensors, with each group's current config and policy.
    fn layout(&self) -> &Layout;

    /// Number of parameters over all tensors: the length of a flat gradient.
    fn len(&self) -> usize {
        self.layout().total_len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Steps applied so far by group 0: the t of its last applied step. Steps skipped for
    /// non-finite gradients do not count. On the GPU this waits for the steps in flight, so a
    /// device error met while waiting is returned here rather than hidden behind a stale count.
    fn steps_taken(&self) -> Result<u64>;

    /// Group 0's config.
    fn config(&self) -> &OptimizerConfig {
        &self.layout().groups()[0].config
    }

    /// Replaces every group's hyperparameters between steps (for schedules); validated, and
    /// each group must keep the same state vectors.
    fn set_config(&mut self, config: OptimizerConfig) -> Result<()>;

    /// Replaces one group's hyperparameters between steps; nothing is rebuilt.
    fn set_group_config(&mut self, group: GroupId, config: OptimizerConfig) -> Result<()>;

    /// Group 0's policy.
    fn nonfinite_policy(&self) -> NonFinitePolicy {
        self.layout().groups()[0].policy
    }

    /// Every group's policy, from the next step on.
    fn set_nonfinite_policy(&mut self, policy: NonFinitePolicy);

    fn set_group_policy(&mut self, group: GroupId, policy: NonFinitePolicy) -> Result<()>;

    /// What every step does to the raw gradient before the update (SPEC §4b).
    fn grad_transform(&self) -> GradTransform {
        *self.layout().transform()
    }

    /// Unscaling, clipping and the limit on skipped steps, from the next step on; validated.
    /// Resets the count of steps skipped in a row.
    fn set_grad_transform(&mut self, transform: GradTransform) -> Result<()>;

    /// Schedules a float hyperparameter of every group by its SPEC name (`lr`, `eta`, …),
    /// replacing any schedule of that hyperparameter; an error, and no change, if a group's
    /// optimizer has no such float.
    fn set_schedule(&mut self, schedule: HyperSchedule) -> Result<()>;

    fn set_group_schedule(&mut self, group: GroupId, schedule: HyperSchedule) -> Result<()>;

    /// The global gradient norm and clip factor of each step since the last call, while
    /// clipping is on (waiting for the device to finish them, as `step_reports`).
    fn norm_reports(&mut self) -> Result<Vec<NormReport>>;

    /// Reports of the steps since the last call that saw non-finite gradients (waiting for the
    /// device to finish them), or the [`Error::NonFinite`] of a step under
    /// `NonFinitePolicy::Error` not yet returned. Clean steps make no report.
    fn step_reports(&mut self) -> Result<Vec<StepReport>>;

    /// One step of every group, with `grad` holding every tensor's gradient flat in
    /// registration order. Never waits for the device. Under `NonFinitePolicy::Error`, a group
    /// whose gradients are not all finite changes nothing, and its error is returned at once
    /// on the CPU; on the GPU by the first call that learns of it (the next `step`, or
    /// `step_reports`), which then changes nothing either.
    fn step(&mut self, grad: &[f32]) -> Result<()>;

    /// One step with a gradient in an ndarray of any shape and layout (flattened in logical
    /// order, which must match the tensors').
    #[cfg(feature = "ndarray")]
    fn step_array<D: ndarray::Dimension>(
        &mut self,
        grad: ndarray::ArrayView<'_, f32, D>,
    ) -> Result<()>
    where
        Self: Sized,
    {
        match grad.as_slice() {
            Some(contiguous) => self.step(contiguous),
            None => self.step(&grad.iter().copied().collect::<Vec<_>>()),
        }
    }

    /// θ of every tensor, flat, copied to the host.
    fn theta(&self) -> Result<Vec<f32>>;

    /// A state vector of every tensor by its SPEC name (`s`, `sigma`, `m`, …), flat, copied to
    /// the host.
    fn state(&self, name: &str) -> Result<Vec<f32>>;

    /// θ, every state vector and every group's step count (waits for the device).
    fn checkpoint(&self) -> Result<Checkpoint>;

    /// Restores a checkpoint of the same groups, optimizers, tensors and shapes; on a
    /// mismatch nothing changes. The hyperparameters, policies, schedules and transform stay
    /// those of `self` (see [`Stepper::restore_all`]).
    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<()>;

    /// [`Stepper::restore`], and the saved configs, policies, schedules and gradient
    /// transform too: going on from here is the saved run going on. Nothing changes unless
    /// all of it fits.
    fn restore_all(&mut self, checkpoint: &Checkpoint) -> Result<()>;

    /// Saves a checkpoint atomically (safetensors; see [`checkpoint`]).
    fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()>
    where
        Self: Sized,
    {
        self.checkpoint()?.save(path)
    }

    /// Loads a checkpoint saved by any device; a corrupt or mismatched file changes nothing.
    fn load(&mut self, path: impl AsRef<std::path::Path>) -> Result<()>
    where
        Self: Sized,
    {
        let checkpoint = Checkpoint::load(path)?;
        self.restore(&checkpoint)
    }

    /// [`Stepper::load`] with the saved settings too, as [`Stepper::restore_all`].
    fn load_all(&mut self, path: impl AsRef<std::path::Path>) -> Result<()>
    where
        Self: Sized,
    {
        let checkpoint = Checkpoint::load(path)?;
        self.restore_all(&checkpoint)
    }
}

/// The Rust examples of `docs/api.md`, compiled (and type-checked) by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../docs/api.md")]
pub struct ApiDocExamples;
