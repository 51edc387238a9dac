//! `adam` and `adamw` with torch.optim.Adam's and AdamW's semantics (SPEC §3): one config,
//! whose variant chooses coupled or decoupled weight decay, validation and per-step scalars.

use crate::config::config;
use crate::config::{check_betas, check_decay_factor, check_field};
use crate::error::Result;
use crate::optim::{bias_correction, flag, Optimizer};
use crate::reference::adam::AdamScalars;

/// Which of the two: they differ only in how weight decay is applied (and its default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AdamVariant {
    /// Coupled decay: g ← g + λθ.
    Adam,
    /// Decoupled decay: θ ← θ·(1 − lr·λ) before the step.
    AdamW,
}

impl AdamVariant {
    /// The SPEC name: `adam` or `adamw`.
    pub fn name(self) -> &'static str {
        match self {
            AdamVariant::Adam => "adam",
            AdamVariant::AdamW => "adamw",
        }
    }
}

config! {
    /// Hyperparameters of `adam` and `adamw`, with torch's names and defaults. Start from
    /// [`AdamConfig::adam`] or [`AdamConfig::adamw`] (or `default()`, which is `adam`), or
    /// build with [`AdamConfig::builder`].
    pub struct AdamConfig, builder AdamConfigBuilder {
        @fixed {
            variant: AdamVariant = AdamVariant::Adam,
        }
        /// Learning rate, ≥ 0.
        lr: f64 = 1e-3,
        /// EMA factor of g, in [0, 1).
        beta1: f64 = 0.9,
        /// EMA factor of g², in [0, 1).
        beta2: f64 = 0.999,
        /// Added to sqrt(v̂), ≥ 0.
        eps: f64 = 1e-8,
        /// λ ≥ 0 (default 0 for adam, 1e-2 for adamw).
        weight_decay: f64 = 0.0,
        /// Divide by the running maximum of v (allocated only then).
        amsgrad: bool = false,
    }
}

impl AdamConfig {
    /// torch.optim.Adam's defaults.
    pub fn adam() -> Self {
        Self::default()
    }

    /// torch.optim.AdamW's defaults.
    pub fn adamw() -> Self {
        AdamConfig {
            variant: AdamVariant::AdamW,
            weight_decay: 1e-2,
            ..Self::adam()
        }
    }

    /// A builder starting from the defaults of `variant`.
    pub fn builder(variant: AdamVariant) -> AdamConfigBuilder {
        AdamConfigBuilder(match variant {
            AdamVariant::Adam => Self::adam(),
            AdamVariant::AdamW => Self::adamw(),
        })
    }

    /// Every scalar the kernel needs at step `t` (1-based), computed in f64. The reference
    /// and the kernel get this rounded to f32; the oracle uses it as is.
    pub fn scalars(&self, t: u64) -> AdamScalars<f64> {
        let decoupled = self.variant == AdamVariant::AdamW;
        AdamScalars {
            lr: self.lr,
            beta1: self.beta1,
            one_minus_beta1: 1.0 - self.beta1,
            beta2: self.beta2,
            one_minus_beta2: 1.0 - self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            decay_factor: if decoupled {
                1.0 - self.lr * self.weight_decay
            } else {
                1.0
            },
            c1: bias_correction(self.beta1, t),
            c2: bias_correction(self.beta2, t),
            amsgrad: flag(self.amsgrad),
            decoupled: flag(decoupled),
        }
    }
}

impl AdamConfig {
    /// Checks every hyperparameter against its SPEC range: [`Optimizer::validate`](crate::optim::Optimizer::validate).
    pub(crate) fn check(&self) -> Result<()> {
        let name = self.name();
        check_field(name, "lr", self.lr, self.lr >= 0.0, "lr >= 0")?;
        check_betas(name, self.beta1, self.beta2)?;
        check_field(name, "eps", self.eps, self.eps >= 0.0, "eps >= 0")?;
        check_decay_factor(name, self.lr, self.weight_decay)
    }
}
