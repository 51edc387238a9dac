//! `sgd` with torch.optim.SGD's semantics (SPEC §3): configuration, validation and per-step
//! scalars.

use crate::config::check_field;
use crate::config::config;
use crate::error::{Error, Result};
use crate::optim::flag;
use crate::reference::sgd::SgdScalars;

const NAME: &str = "sgd";

config! {
    /// Hyperparameters of `sgd`, with torch's names and defaults. Build with
    /// [`SgdConfig::builder`] or start from `default()`.
    pub struct SgdConfig, builder SgdConfigBuilder {
        /// Learning rate, ≥ 0.
        lr: f64 = 1e-3,
        /// μ ≥ 0; 0 turns momentum off (and its buffer `b` is not allocated).
        momentum: f64 = 0.0,
        /// Fraction of the gradient held back from the buffer after the first step.
        dampening: f64 = 0.0,
        /// Step along g + μ·b instead of b; needs momentum > 0 and dampening = 0.
        nesterov: bool = false,
        /// λ ≥ 0, added to the gradient as λθ.
        weight_decay: f64 = 0.0,
    }
}

impl SgdConfig {
    pub fn builder() -> SgdConfigBuilder {
        SgdConfigBuilder(SgdConfig::default())
    }

    /// Every scalar the kernel needs at step `t` (1-based), computed in f64. The reference
    /// and the kernel get this rounded to f32; the oracle uses it as is.
    pub fn scalars(&self, t: u64) -> SgdScalars<f64> {
        SgdScalars {
            lr: self.lr,
            momentum: self.momentum,
            one_minus_dampening: 1.0 - self.dampening,
            weight_decay: self.weight_decay,
            first_step: flag(t == 1),
            nesterov: flag(self.nesterov),
        }
    }
}

impl SgdConfig {
    /// Checks every hyperparameter against its SPEC range: [`Optimizer::validate`](crate::optim::Optimizer::validate).
    pub(crate) fn check(&self) -> Result<()> {
        check_field(NAME, "lr", self.lr, self.lr >= 0.0, "lr >= 0")?;
        check_field(
            NAME,
            "momentum",
            self.momentum,
            self.momentum >= 0.0,
            "momentum >= 0",
        )?;
        check_field(
            NAME,
            "dampening",
            self.dampening,
            true,
            "a finite number (torch puts no range on it)",
        )?;
        check_field(
            NAME,
            "weight_decay",
            self.weight_decay,
            self.weight_decay >= 0.0,
            "weight_decay >= 0",
        )?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::config(
                NAME,
                "nesterov",
                self.nesterov,
                "true only with momentum > 0 and dampening = 0 (as torch)",
            ));
        }
        Ok(())
    }
}
