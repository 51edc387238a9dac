//! Configs: every optimizer of bayesprop's table, built the way burn builds its own.

use bayesprop::{GradTransform, NonFinitePolicy, OptimizerConfig, StateFormat, StateStorage};

use crate::error::{Error, Result};
use crate::optimizer::BayespropOptimizer;
use crate::tensor::BayespropTensorOptimizer;

/// Any optimizer of bayesprop's table, for burn: `BayespropConfig::adam().init()` in place of
/// burn's `AdamConfig::new().init()`.
#[derive(Clone, Debug)]
pub struct BayespropConfig {
    pub(crate) config: OptimizerConfig,
    pub(crate) policy: NonFinitePolicy,
    pub(crate) lr_as: LrTarget,
    pub(crate) transform: GradTransform,
    pub(crate) storage: StateStorage,
}

/// Which hyperparameter burn's per-step learning rate sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LrTarget {
    /// `lr` where the optimizer has one; ignored by those without (`bayes`, `bayes_fp`).
    Lr,
    /// This float hyperparameter, by its SPEC name (an unknown name is an error).
    Field(String),
    /// None: the config's values stay.
    Ignored,
}

impl BayespropConfig {
    /// Any config of the table, e.g. `bayesprop::optim::AdamConfig { eps: 1e-5, ..AdamConfig::adam() }`.
    /// It is validated at the first step, where errors come back from `try_step`.
    pub fn new(config: impl Into<OptimizerConfig>) -> Self {
        BayespropConfig {
            config: config.into(),
            policy: NonFinitePolicy::default(),
            lr_as: LrTarget::Lr,
            transform: GradTransform::default(),
            storage: StateStorage::default(),
        }
    }

    /// The default config of an optimizer by its SPEC name (`bayes`, `adam`, `adamw`, …; the
    /// same names as `bayesprop --optimizer`).
    pub fn named(name: &str) -> Result<Self> {
        Ok(Self::new(OptimizerConfig::default_for(name)?))
    }

    /// What a step does with NaN or ±Inf gradient elements (SPEC §4; default: skip the step).
    pub fn with_nonfinite_policy(mut self, policy: NonFinitePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The training step around the update, fused into the same step (SPEC §4b): divide every
    /// gradient by a loss scale, clip the global norm over every parameter (which burn's
    /// per-tensor clipping cannot), and stop after too many skipped steps. Validated at the
    /// first step.
    pub fn with_grad_transform(mut self, transform: GradTransform) -> Self {
        self.transform = transform;
        self
    }

    /// Clips the global gradient norm over every parameter to `max_norm`, as
    /// `torch.nn.utils.clip_grad_norm_` (see [`BayespropConfig::with_grad_transform`]).
    pub fn with_clip_norm(mut self, max_norm: f32) -> Self {
        self.transform.clip_norm = Some(max_norm);
        self
    }

    /// Divides every gradient by `scale` first: the loss scale of mixed-precision training.
    pub fn with_grad_scale(mut self, scale: f32) -> Self {
        self.transform.grad_scale = scale;
        self
    }

    /// Holds the optimizer state in `format` (`Bf16`: 2 bytes per element, `Q8`: 1 byte and
    /// a scale per 256 elements; θ and the gradients stay f32), stochastically rounded with
    /// `seed` (bayesprop's rules, §6). The device must hold that format: today the GPU
    /// kernels hold `f32` and `bf16`, and a step with another is an error.
    pub fn with_state_format(mut self, format: StateFormat, seed: u32) -> Self {
        self.storage = StateStorage { format, seed };
        self
    }

    /// Lets burn's learning rate, which a burn scheduler may change every step, set this
    /// hyperparameter instead of `lr`: e.g. `"eta"` for `bayes`, whose variance is its learning
    /// rate and which has no `lr` (by default it ignores burn's). The value is used as given.
    pub fn with_lr_as(mut self, hyperparameter: &str) -> Self {
        self.lr_as = LrTarget::Field(hyperparameter.to_string());
        self
    }

    /// Ignores burn's learning rate: the config's own values hold.
    pub fn without_lr(mut self) -> Self {
        self.lr_as = LrTarget::Ignored;
        self
    }

    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// The optimizer. It finds the device and registers the parameters at its first step.
    pub fn init(&self) -> BayespropOptimizer {
        BayespropOptimizer::new(self.clone())
    }

    /// burn's per-tensor optimizer, for burn's `ModuleOptimizer` and burn-train's `Learner`:
    /// `ModuleOptimizer::from(BayespropConfig::adam().build()?)`. Refuses what a step of one
    /// tensor cannot do: clipping the norm over every parameter (use [`BayespropConfig::init`]).
    pub fn build(&self) -> Result<BayespropTensorOptimizer> {
        self.config.validate()?;
        self.transform.validate()?;
        if self.transform.clip_norm.is_some() {
            return Err(Error::Parameters(
                "clip_norm needs the norm over every parameter, which burn's per-tensor \
                 optimizer never sees: use BayespropConfig::init, the module-level optimizer, \
                 or burn's per-tensor GradientClipping"
                    .into(),
            ));
        }
        Ok(BayespropTensorOptimizer::new(self.clone()))
    }
}

/// One constructor per name of bayesprop's table (optimizers and presets), generated from it:
/// `BayespropConfig::lion()` is `BayespropConfig::named("lion")`, unwrapped.
macro_rules! constructors {
    ($($name:ident)+) => {
        impl BayespropConfig {
            $(
                #[doc = concat!(
                    "`", stringify!($name), "` with the defaults of bayesprop's table (torch's ",
                    "for torch's optimizers: e.g. adam's eps is 1e-8 where burn's Adam uses ",
                    "1e-5, adamw's weight decay 1e-2 where burn's AdamW uses 1e-4)."
                )]
                pub fn $name() -> Self {
                    Self::named(stringify!($name)).expect("a name of bayesprop's table")
                }
            )+
        }
    };
}
bayesprop::for_each_optimizer_name!(constructors);

/// `bayes`, spelled like burn's configs: `BayesConfig::new().init()` in place of
/// `AdamConfig::new().init()`. Hyperparameters as in SPEC §2.
#[derive(Clone, Debug, Default)]
pub struct BayesConfig {
    config: bayesprop::BayesConfig,
}

impl BayesConfig {
    pub fn new() -> Self {
        Self::default()
    }

    /// η, the diffusion per step: the variance's floor, so the step size's scale.
    pub fn with_eta(mut self, eta: f64) -> Self {
        self.config.eta = eta;
        self
    }

    /// β, the EMA factor of g².
    pub fn with_beta(mut self, beta: f64) -> Self {
        self.config.beta = beta;
        self
    }

    /// β₁ of the momentum on the prior-adjusted gradient (0: off).
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.config.momentum = momentum;
        self
    }

    /// λ, a Gaussian prior N(0, 1/λ) on θ.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.config.weight_decay = weight_decay;
        self
    }

    pub fn init(&self) -> BayespropOptimizer {
        BayespropConfig::new(self.config).init()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_of_the_table_has_its_constructor() {
        for (config, name) in [
            (BayespropConfig::bayes(), "bayes"),
            (BayespropConfig::bayes_adam(), "bayes"),
            (BayespropConfig::bayes_fp(), "bayes_fp"),
            (BayespropConfig::lion(), "lion"),
            (BayespropConfig::adamw(), "adamw"),
        ] {
            assert_eq!(config.config().name(), name);
        }
    }
}
