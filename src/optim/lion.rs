//! `lion` (SPEC §3; Chen et al. 2023, as lion-pytorch and optax implement it): configuration,
//! validation and per-step scalars.

use crate::config::config;
use crate::config::{check_betas, check_decay_factor, check_field};
use crate::error::Result;
use crate::reference::lion::LionScalars;

const NAME: &str = "lion";

config! {
    /// Hyperparameters of `lion`, with lion-pytorch's names and defaults. Build with
    /// [`LionConfig::builder`] or start from `default()`.
    pub struct LionConfig, builder LionConfigBuilder {
        /// Learning rate, ≥ 0: every element moves by exactly lr per step (or not at all).
        lr: f64 = 1e-4,
        /// Weight of m against g in the direction whose sign is stepped along, in [0, 1).
        beta1: f64 = 0.9,
        /// EMA factor of the momentum m, in [0, 1).
        beta2: f64 = 0.99,
        /// λ ≥ 0, decoupled: θ ← θ·(1 − lr·λ) before the step.
        weight_decay: f64 = 0.0,
    }
}

impl LionConfig {
    pub fn builder() -> LionConfigBuilder {
        LionConfigBuilder(LionConfig::default())
    }

    /// Every scalar the kernel needs (the same at every step: Lion has no bias correction),
    /// computed in f64. The reference and the kernel get this rounded to f32; the oracle uses
    /// it as is.
    pub fn scalars(&self, _t: u64) -> LionScalars<f64> {
        LionScalars {
            lr: self.lr,
            beta1: self.beta1,
            one_minus_beta1: 1.0 - self.beta1,
            beta2: self.beta2,
            one_minus_beta2: 1.0 - self.beta2,
            decay_factor: 1.0 - self.lr * self.weight_decay,
        }
    }
}

impl LionConfig {
    /// Checks every hyperparameter against its SPEC range: [`Optimizer::validate`](crate::optim::Optimizer::validate).
    pub(crate) fn check(&self) -> Result<()> {
        check_field(NAME, "lr", self.lr, self.lr >= 0.0, "lr >= 0")?;
        check_betas(NAME, self.beta1, self.beta2)?;
        check_decay_factor(NAME, self.lr, self.weight_decay)
    }
}
