//! `rmsprop` with torch.optim.RMSprop's semantics (SPEC §3): configuration, validation and
//! per-step scalars.

use crate::config::check_field;
use crate::config::config;
use crate::error::Result;
use crate::optim::flag;
use crate::reference::rmsprop::RmspropScalars;

const NAME: &str = "rmsprop";

config! {
    /// Hyperparameters of `rmsprop`, with torch's names and defaults. Build with
    /// [`RmspropConfig::builder`] or start from `default()`.
    pub struct RmspropConfig, builder RmspropConfigBuilder {
        /// Learning rate, ≥ 0.
        lr: f64 = 1e-2,
        /// EMA factor of g², ≥ 0 (torch's only check; values > 1 diverge).
        alpha: f64 = 0.99,
        /// Added to sqrt(v̄), ≥ 0.
        eps: f64 = 1e-8,
        /// λ ≥ 0, added to the gradient as λθ.
        weight_decay: f64 = 0.0,
        /// μ ≥ 0; 0 turns momentum off (and its buffer `b` is not allocated).
        momentum: f64 = 0.0,
        /// Divide by sqrt(v − a²), with `a` the EMA of g (allocated only then).
        centered: bool = false,
    }
}

impl RmspropConfig {
    pub fn builder() -> RmspropConfigBuilder {
        RmspropConfigBuilder(RmspropConfig::default())
    }

    /// Every scalar the kernel needs (the same at every step), computed in f64. The reference
    /// and the kernel get this rounded to f32; the oracle uses it as is.
    pub fn scalars(&self, _t: u64) -> RmspropScalars<f64> {
        RmspropScalars {
            lr: self.lr,
            alpha: self.alpha,
            one_minus_alpha: 1.0 - self.alpha,
            eps: self.eps,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
            centered: flag(self.centered),
        }
    }
}

impl RmspropConfig {
    /// Checks every hyperparameter against its SPEC range: [`Optimizer::validate`](crate::optim::Optimizer::validate).
    pub(crate) fn check(&self) -> Result<()> {
        check_field(NAME, "lr", self.lr, self.lr >= 0.0, "lr >= 0")?;
        check_field(NAME, "alpha", self.alpha, self.alpha >= 0.0, "alpha >= 0")?;
        check_field(NAME, "eps", self.eps, self.eps >= 0.0, "eps >= 0")?;
        check_field(
            NAME,
            "weight_decay",
            self.weight_decay,
            self.weight_decay >= 0.0,
            "weight_decay >= 0",
        )?;
        check_field(
            NAME,
            "momentum",
            self.momentum,
            self.momentum >= 0.0,
            "momentum >= 0",
        )
    }
}
