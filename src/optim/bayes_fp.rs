//! `bayes_fp` (SPEC §2b): `bayes` held at the fixed point of the current curvature, so σ is not
//! stored but read on request from s. Configuration, validation and per-step scalars.

use crate::config::check_field;
use crate::config::config;
use crate::error::{Error, Result};
use crate::optim::{BayesConfig, Optimizer};
use crate::reference::bayes::BayesScalars;
use crate::reference::bayes_fp as reference;

const NAME: &str = "bayes_fp";

config! {
    /// Hyperparameters of `bayes_fp`: `bayes`'s, with its defaults and ranges, less
    /// `sigma_init` (σ is always at its fixed point) and with η > 0. Build with
    /// [`BayesFpConfig::builder`] or start from `default()`.
    pub struct BayesFpConfig, builder BayesFpConfigBuilder {
        /// EMA factor of g², in [0, 1).
        beta: f64 = BayesConfig::default().beta,
        /// Diffusion standard deviation per step, > 0.
        eta: f64 = BayesConfig::default().eta,
        /// Floor of the curvature in σ*(h + eps²), > 0.
        eps: f64 = BayesConfig::default().eps,
        /// Divide the EMA by (1 − beta^t), as Adam does.
        bias_correction: bool = BayesConfig::default().bias_correction,
        /// λ ≥ 0: a Gaussian prior N(0, 1/λ) on θ.
        weight_decay: f64 = BayesConfig::default().weight_decay,
        /// β₁ in [0, 1): EMA of the prior-adjusted gradient; 0 turns it off.
        momentum: f64 = BayesConfig::default().momentum,
    }
}

impl BayesFpConfig {
    pub fn builder() -> BayesFpConfigBuilder {
        BayesFpConfigBuilder(BayesFpConfig::default())
    }

    /// The `bayes` config with the same hyperparameters, whose scalars and ranges these are.
    pub fn as_bayes(&self) -> BayesConfig {
        BayesConfig {
            beta: self.beta,
            eta: self.eta,
            eps: self.eps,
            bias_correction: self.bias_correction,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
            ..BayesConfig::default()
        }
    }

    /// Every scalar the kernel needs at step `t` (1-based): `bayes`'s.
    pub fn scalars(&self, t: u64) -> BayesScalars<f64> {
        self.as_bayes().scalars(t)
    }
}

impl BayesFpConfig {
    /// Checks every hyperparameter against its SPEC range: [`Optimizer::validate`](crate::optim::Optimizer::validate).
    pub(crate) fn check(&self) -> Result<()> {
        // The kernel sees η in f32: one that rounds to 0 there is 0.
        check_field(
            NAME,
            "eta",
            self.eta,
            self.eta > 0.0 && (self.eta as f32) > 0.0,
            "eta > 0 in f32 (bayes_fp has no eta = 0 regime)",
        )?;
        self.as_bayes().validate().map_err(|e| match e {
            Error::Config {
                field,
                value,
                allowed,
                ..
            } => Error::Config {
                optimizer: NAME,
                field,
                value,
                allowed,
            },
            e => e,
        })
    }

    /// σ = σ*(ŝ + λ + eps²) from the stored s, with the c2 of step `t`: the σ that step used.
    /// Before any step s = 0 and c2 is taken as 1: σ*(λ + eps²), the belief of no data.
    /// [`Optimizer::derived_state`](crate::optim::Optimizer::derived_state).
    pub(crate) fn derived(&self, name: &str, t: u64, stored: &[&[f32]]) -> Option<Vec<f32>> {
        let [s, _] = stored else { return None };
        if name != "sigma" {
            return None;
        }
        let mut p = self.scalars(t.max(1)).to_f32();
        if t == 0 {
            p.c2 = 1.0;
        }
        Some(s.iter().map(|&s| reference::sigma(&p, s)).collect())
    }
}
