//! # bayesprop
//!
//! Fused optimizer steps for wgpu, with an exact CPU reference. Training is filtering: keep a
//! Gaussian belief (mean θ, diagonal variance σ) over the parameters, update it with each batch
//! by Bayes' rule on a quadratic model of the loss, then widen it by η². The variance is the
//! learning rate. `SPEC.md` (see the README) states every update rule exactly.
//!
//! Layout, one place per concern:
//! - [`optim`]: configs and the table of optimizers;
//! - [`reference`]: CPU twins of the kernels (f32 reference, f64 oracle);
//! - [`kernels`]: the WGSL sources in `shaders/` and their validation;
//! - [`gpu`]: the wgpu host layer; [`cpu`]: the CPU optimizer with the same API;
//! - [`validate`]: the agreement battery shared by the tests and `bayesprop validate`.

pub mod cpu;
pub mod error;
pub mod gpu;
pub mod kernels;
pub mod optim;
pub mod reference;
pub mod ulp;
pub mod validate;

/// The wgpu this crate is built against, for callers who bring their own device and buffers.
pub use wgpu;

pub use cpu::{CpuOptimizer, CpuPath};
pub use error::{Error, Result};
pub use gpu::{GpuContext, GpuOptimizer, GpuOptions};
pub use optim::{BayesConfig, NonFinitePolicy, Optimizer, OptimizerConfig, SigmaInit, StepReport};

/// What `CpuOptimizer` and `GpuOptimizer` share: step a vector, read it back.
pub trait Stepper {
    /// Number of parameters.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Steps applied so far: the t of the last applied step. Steps skipped for non-finite
    /// gradients do not count. On the GPU this waits for the steps in flight.
    fn steps_taken(&self) -> u64;

    fn nonfinite_policy(&self) -> NonFinitePolicy;

    /// Applies from the next step on.
    fn set_nonfinite_policy(&mut self, policy: NonFinitePolicy);

    /// Reports of the steps since the last call that saw non-finite gradients (waiting for the
    /// device to finish them), or the [`Error::NonFinite`] of a step under
    /// `NonFinitePolicy::Error` not yet returned. Clean steps make no report.
    fn step_reports(&mut self) -> Result<Vec<StepReport>>;

    fn config(&self) -> &OptimizerConfig;

    /// Replaces the hyperparameters between steps (for schedules); validated, and it must keep
    /// the same state vectors.
    fn set_config(&mut self, config: OptimizerConfig) -> Result<()>;

    /// One step with a gradient from host memory. Never waits for the device. Under
    /// `NonFinitePolicy::Error`, a step with non-finite gradients changes nothing and its
    /// error is returned at once on the CPU; on the GPU by the first call that learns of it
    /// (the next `step`, or `step_reports`), which then changes nothing either.
    fn step(&mut self, grad: &[f32]) -> Result<()>;

    /// One step with a gradient in an ndarray of any shape and layout (flattened in logical
    /// order, which must match θ's).
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

    /// θ, copied to the host.
    fn theta(&self) -> Result<Vec<f32>>;

    /// A state vector by its SPEC name (`s`, `sigma`, `m`, …), copied to the host.
    fn state(&self, name: &str) -> Result<Vec<f32>>;
}
