//! `bayes`, the seed's optimizer (SPEC §2): configuration, validation and per-step scalars.

use crate::config::{config, Setting};
use crate::error::{Error, Result};
use crate::optim::{bias_correction, flag};
use crate::reference::bayes::{self as reference, BayesScalars};

const NAME: &str = "bayes";

/// How σ starts (SPEC §2).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SigmaInit {
    /// σ starts at 0 ("no belief yet") and each element is set to the fixed point σ*(h) of its
    /// first curvature h > 0.
    FixedPoint,
    /// σ starts at this finite value > 0.
    Value(f64),
}

/// Whether σ is bounded by the fixed point of the current curvature (SPEC §2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SigmaMax {
    /// σ never exceeds σ*(h + eps²), the fixed point of the current curvature: after a rise
    /// of the curvature σ drops to it at once instead of relaxing at rate hσ per step.
    /// Needs eta > 0.
    #[default]
    FixedPoint,
    /// No bound: the rule without it.
    None,
}

config! {
    /// Hyperparameters of `bayes`. Build with [`BayesConfig::builder`] or start from
    /// `default()`.
    pub struct BayesConfig, builder BayesConfigBuilder {
        /// EMA factor of g², in [0, 1).
        beta: f64 = 0.999,
        /// Diffusion standard deviation per step, ≥ 0.
        eta: f64 = 1e-3,
        /// Curvature floor (eps²) inside σ*, the fixed point that initialises and bounds σ, > 0.
        eps: f64 = 1e-8,
        /// Divide the EMA by (1 − beta^t), as Adam does.
        bias_correction: bool = true,
        /// How σ starts.
        sigma_init: SigmaInit = SigmaInit::FixedPoint,
        /// Whether σ is bounded by σ*(h + eps²) of the current curvature.
        sigma_max: SigmaMax = SigmaMax::FixedPoint,
        /// λ ≥ 0: a Gaussian prior N(0, 1/λ) on θ.
        weight_decay: f64 = 0.0,
        /// β₁ in [0, 1): EMA of the prior-adjusted gradient; 0 turns it off.
        momentum: f64 = 0.0,
    }
}

impl Setting for SigmaInit {
    fn parse_setting(optimizer: &'static str, field: &'static str, value: &str) -> Result<Self> {
        match value.trim() {
            "fixed_point" | "FixedPoint" => Ok(SigmaInit::FixedPoint),
            v => Ok(SigmaInit::Value(f64::parse_setting(optimizer, field, v)?)),
        }
    }
}

impl Setting for SigmaMax {
    fn parse_setting(optimizer: &'static str, field: &'static str, value: &str) -> Result<Self> {
        match value.trim() {
            "fixed_point" | "FixedPoint" => Ok(SigmaMax::FixedPoint),
            "none" | "None" => Ok(SigmaMax::None),
            _ => Err(Error::config(
                optimizer,
                field,
                value,
                "fixed_point or none",
            )),
        }
    }
}

impl BayesConfig {
    pub fn builder() -> BayesConfigBuilder {
        BayesConfigBuilder(BayesConfig::default())
    }

    /// The `bayes_adam` preset: `bayes` with β₁ = 0.9.
    pub fn bayes_adam() -> Self {
        BayesConfig {
            momentum: 0.9,
            ..BayesConfig::default()
        }
    }

    /// The fixed point σ*(h) = η²/2 + η·sqrt(η²/4 + 1/h) of the variance update, in f64.
    pub fn sigma_star(&self, h: f64) -> f64 {
        reference::sigma_star(&self.scalars(1), h)
    }

    /// Every scalar the kernel needs at step `t` (1-based), computed in f64. The reference
    /// and the kernel get this rounded to f32; the oracle uses it as is.
    pub fn scalars(&self, t: u64) -> BayesScalars<f64> {
        let c2 = if self.bias_correction {
            bias_correction(self.beta, t)
        } else {
            1.0
        };
        let c1 = if self.momentum > 0.0 {
            bias_correction(self.momentum, t)
        } else {
            1.0
        };
        BayesScalars {
            beta: self.beta,
            one_minus_beta: 1.0 - self.beta,
            c2,
            weight_decay: self.weight_decay,
            beta1: self.momentum,
            one_minus_beta1: 1.0 - self.momentum,
            c1,
            eta: self.eta,
            eta_sq: self.eta * self.eta,
            eps_sq: self.eps * self.eps,
            bound: flag(self.sigma_max == SigmaMax::FixedPoint),
        }
    }

    /// σ's value before the first step: the `sigma` slot's start.
    pub(crate) fn initial_sigma(&self) -> f64 {
        match self.sigma_init {
            SigmaInit::FixedPoint => 0.0,
            SigmaInit::Value(v) => v,
        }
    }
}

/// Checks `value` is finite, within `[low, high)` (or `[low, high]`), and fits f32.
fn check_range(field: &'static str, value: f64, ok: bool, allowed: &'static str) -> Result<()> {
    if value.is_finite() && ok && (value as f32).is_finite() {
        Ok(())
    } else {
        Err(Error::config(NAME, field, value, allowed))
    }
}

impl BayesConfig {
    /// Checks every hyperparameter against its SPEC range: [`Optimizer::validate`](crate::optim::Optimizer::validate).
    pub(crate) fn check(&self) -> Result<()> {
        check_range(
            "beta",
            self.beta,
            (0.0..1.0).contains(&self.beta),
            "0 <= beta < 1",
        )?;
        // η² is passed to the kernel as f32, so it must be finite there too.
        check_range(
            "eta",
            self.eta,
            self.eta >= 0.0 && ((self.eta * self.eta) as f32).is_finite(),
            "eta >= 0 with eta² finite in f32 (eta < 1.8e19)",
        )?;
        check_range(
            "eps",
            self.eps,
            self.eps > 0.0 && ((self.eps * self.eps) as f32) > 0.0,
            "eps > 0 with eps² > 0 in f32 (eps >= 1e-22)",
        )?;
        check_range(
            "weight_decay",
            self.weight_decay,
            self.weight_decay >= 0.0,
            "weight_decay >= 0 and finite in f32 (< 3.4e38)",
        )?;
        check_range(
            "momentum",
            self.momentum,
            (0.0..1.0).contains(&self.momentum),
            "0 <= momentum < 1",
        )?;
        match self.sigma_init {
            SigmaInit::Value(v) => check_range(
                "sigma_init",
                v,
                v > 0.0 && (v as f32) > 0.0,
                "fixed_point, or a finite value > 0 in f32",
            )?,
            // The kernel sees η in f32: one that rounds to 0 there is 0.
            SigmaInit::FixedPoint if self.eta as f32 == 0.0 => {
                return Err(Error::config(
                    NAME,
                    "sigma_init",
                    "fixed_point",
                    "a finite value > 0 when eta = 0 in f32 (the fixed point of eta = 0 is σ = 0)",
                ))
            }
            SigmaInit::FixedPoint => {}
        }
        if self.sigma_max == SigmaMax::FixedPoint && self.eta as f32 == 0.0 {
            return Err(Error::config(
                NAME,
                "sigma_max",
                "fixed_point",
                "none when eta = 0 in f32 (the fixed point of eta = 0 is σ = 0, which would \
                 stop learning): set sigma_max=none, or eta > 0",
            ));
        }
        Ok(())
    }
}
