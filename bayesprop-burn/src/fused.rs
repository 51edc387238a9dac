//! The module-level step inside burn-train's `Learner`: the model's `TrainStep::optimize`
//! hands every parameter to one [`BayespropOptimizer`], one fused submit per step, with
//! global-norm clipping and a loss scale, which burn's per-tensor path cannot give.
//!
//! The Learner keeps its own `ModuleOptimizer` and checkpoints only that; the fused state is
//! checkpointed here, every `every` steps, beside the Learner's checkpoints.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use burn::module::Module;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::GradientsParams;

use crate::config::BayespropConfig;
use crate::error::Result;
use crate::optimizer::BayespropOptimizer;

/// bayesprop's module-level optimizer for burn-train's `Learner`. Keep a clone in the model,
/// in a field marked `#[module(skip)]`, and step it from `TrainStep::optimize`:
///
/// ```rust,no_run
/// use bayesprop_burn::FusedStep;
/// use burn::module::Module;
/// use burn::nn::Linear;
/// use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
/// use burn::optim::{GradientsParams, ModuleOptimizer};
/// use burn::tensor::Tensor;
/// use burn_train::{RegressionOutput, TrainOutput, TrainStep};
///
/// #[derive(Module, Debug)]
/// struct Model {
///     linear: Linear,
///     #[module(skip)]
///     fused: FusedStep, // FusedStep::new(&BayespropConfig::bayes().with_clip_norm(1.0))
/// }
///
/// impl TrainStep for Model {
///     type Input = (Tensor<2>, Tensor<2>);
///     type Output = RegressionOutput;
///
///     fn step(&self, (x, y): Self::Input) -> TrainOutput<RegressionOutput> {
///         let out = self.linear.forward(x);
///         let loss = (out.clone() - y.clone()).powi_scalar(2).mean();
///         TrainOutput::new(self, loss.backward(), RegressionOutput::new(loss, out, y))
///     }
///
///     fn optimize(
///         self,
///         _: &mut ModuleOptimizer,
///         lr: ModuleLearningRate,
///         grads: GradientsParams,
///     ) -> Self {
///         let fused = self.fused.clone();
///         fused.optimize(self, lr, grads)
///     }
/// }
/// ```
///
/// Clones share one optimizer (the Learner clones its model every step). What it gives up
/// against the per-tensor path ([`BayespropConfig::build`]): burn's per-group learning rates
/// (it takes the base rate of burn's scheduler), the Learner's own optimizer checkpoints (it
/// keeps its own, [`FusedStep::with_checkpoints`]), and several devices (one optimizer over
/// one device's parameters).
#[derive(Clone)]
pub struct FusedStep {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    optim: BayespropOptimizer,
    /// Steps taken through `optimize` (resumed ones included): names the checkpoints.
    steps: usize,
    checkpoints: Option<(PathBuf, usize)>,
}

impl std::fmt::Debug for FusedStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("FusedStep")
            .field("config", inner.optim.config())
            .field("steps", &inner.steps)
            .finish()
    }
}

impl FusedStep {
    /// The module-level optimizer of `config` ([`BayespropConfig::init`]), clipping included.
    pub fn new(config: &BayespropConfig) -> Self {
        FusedStep {
            inner: Arc::new(Mutex::new(Inner {
                optim: config.init(),
                steps: 0,
                checkpoints: None,
            })),
        }
    }

    /// Saves the optimizer's state into `dir` after every `every`-th step, as
    /// `bayesprop-step-{n}.safetensors`. With `every` the Learner's batches per epoch, each
    /// of the Learner's epoch checkpoints has its twin: [`FusedStep::resume`] at epoch × every.
    pub fn with_checkpoints(self, dir: impl AsRef<Path>, every: usize) -> Self {
        self.lock().checkpoints = Some((dir.as_ref().to_path_buf(), every.max(1)));
        self
    }

    /// The checkpoint saved after step `step` in `dir`.
    pub fn checkpoint_path(dir: impl AsRef<Path>, step: usize) -> PathBuf {
        dir.as_ref()
            .join(format!("bayesprop-step-{step}.safetensors"))
    }

    /// Resumes from the checkpoint saved after step `step` in `dir` (restored at the next
    /// step, as [`BayespropOptimizer::load`]); the Learner resumes the model at the same step.
    pub fn resume(&self, dir: impl AsRef<Path>, step: usize) -> Result<()> {
        let mut inner = self.lock();
        inner.optim.load(Self::checkpoint_path(dir, step))?;
        inner.steps = step;
        Ok(())
    }

    /// `TrainStep::optimize`'s body: steps every parameter of `module` that has a gradient in
    /// one fused submit, with the base learning rate of burn's scheduler.
    ///
    /// # Panics
    /// `TrainStep::optimize` has no error channel, so an error panics with its message (see
    /// [`BayespropOptimizer::step`]), as does a checkpoint that cannot be written.
    pub fn optimize<M: Module>(
        &self,
        module: M,
        lr: ModuleLearningRate,
        grads: GradientsParams,
    ) -> M {
        let mut inner = self.lock();
        let module = inner.optim.step(lr.base(), module, grads);
        inner.steps += 1;
        if let Some((dir, every)) = &inner.checkpoints {
            if inner.steps.is_multiple_of(*every) {
                let path = Self::checkpoint_path(dir, inner.steps);
                let saved = std::fs::create_dir_all(dir)
                    .map_err(|e| crate::Error::from(bayesprop::Error::file(dir, e)))
                    .and_then(|()| inner.optim.save(&path));
                if let Err(e) = saved {
                    panic!("bayesprop FusedStep: checkpoint {}: {e}", path.display());
                }
            }
        }
        module
    }

    /// Runs `f` on the optimizer: its state, σ, checkpoints.
    pub fn with_optimizer<T>(&self, f: impl FnOnce(&mut BayespropOptimizer) -> T) -> T {
        f(&mut self.lock().optim)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
