//! The optimizer table: one config type per optimizer, and the one enum that lists them.
//!
//! Adding an optimizer of SPEC §3 takes a config here (`optim/<name>.rs`, implementing
//! [`Optimizer`]), a CPU reference (`reference/<name>.rs`), a shader (`shaders/<name>.wgsl`),
//! and one row in [`OptimizerConfig`]. The host layers, the CLI, `validate` and the tests are
//! driven by this table and need no change.

pub mod adam;
pub mod bayes;
pub mod rmsprop;
pub mod sgd;

use std::fmt;

use crate::error::{Error, Result};
use crate::kernels::Kernel;

pub use adam::{AdamConfig, AdamConfigBuilder, AdamVariant};
pub use bayes::{BayesConfig, BayesConfigBuilder, SigmaInit, SigmaMax};
pub use rmsprop::{RmspropConfig, RmspropConfigBuilder};
pub use sgd::{SgdConfig, SgdConfigBuilder};

/// What a step does with NaN or ±Inf gradient elements (SPEC §4). They never reach the state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NonFinitePolicy {
    /// The whole step of the group changes nothing and its step counter does not advance
    /// (like a gradient scaler's found-inf).
    #[default]
    SkipStep = 0,
    /// Only those elements keep their θ and state; the step counter advances.
    SkipElement = 1,
    /// As `SkipStep`, and the caller gets [`Error::NonFinite`] with the count.
    Error = 2,
}

impl NonFinitePolicy {
    pub const ALL: [NonFinitePolicy; 3] = [Self::SkipStep, Self::SkipElement, Self::Error];

    /// The CLI spelling: `skip-step`, `skip-element`, `error`.
    pub fn name(self) -> &'static str {
        match self {
            Self::SkipStep => "skip-step",
            Self::SkipElement => "skip-element",
            Self::Error => "error",
        }
    }

    /// Whether a step that saw `nonfinite` such elements is applied.
    pub fn applies(self, nonfinite: u64) -> bool {
        nonfinite == 0 || self == Self::SkipElement
    }
}

impl std::str::FromStr for NonFinitePolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| Error::Unknown {
                what: "non-finite policy",
                name: s.to_string(),
                known: "skip-step, skip-element, error".into(),
            })
    }
}

/// What one step did about non-finite gradients, read back from the device without stalling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepReport {
    /// The step call this reports on, counting every call (applied or not) from 1.
    pub call: u64,
    /// The parameter group (registration order; 0 for a single vector).
    pub group: usize,
    /// NaN or ±Inf gradient elements it saw.
    pub nonfinite: u64,
    /// Whether it changed θ and the state (and advanced the step counter).
    pub applied: bool,
}

/// One per-element state vector of an optimizer, bound to its kernel after θ and g.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StateSlot {
    /// The SPEC name, e.g. `s`, `sigma`, `m`.
    pub name: &'static str,
    /// The value every element starts at.
    pub init: f32,
    /// False when the options do not need this state (e.g. `m` without momentum): it is then
    /// not allocated, and the kernel never touches it.
    pub used: bool,
}

/// What every optimizer config provides to the host layers. Object safe, so the table below can
/// hand out `&dyn Optimizer`.
pub trait Optimizer: fmt::Debug + Send + Sync {
    /// The SPEC name (`bayes`, …).
    fn name(&self) -> &'static str;

    /// The fused WGSL kernel that performs one step.
    fn kernel(&self) -> &'static Kernel;

    /// Checks every hyperparameter against its SPEC range.
    fn validate(&self) -> Result<()>;

    /// The state vectors, in kernel binding order (bindings 4, 5, …).
    fn state_slots(&self) -> Vec<StateSlot>;

    /// The uniform block of step `t` (1-based): hyperparameters and per-step scalars, computed
    /// in f64 and rounded to f32, laid out exactly as the kernel's `Scalars` struct.
    fn uniform_bytes(&self, t: u64) -> Vec<u8>;

    /// SPEC's update on the CPU in f32, element by element, from the same uniform block the
    /// kernel receives. `state` follows [`Optimizer::state_slots`]; unused slots are empty.
    fn reference_step(&self, t: u64, theta: &mut [f32], grad: &[f32], state: &mut [&mut [f32]]);

    /// The same expressions in f64, from unrounded f64 scalars, for error studies.
    fn oracle_step(&self, t: u64, theta: &mut [f64], grad: &[f64], state: &mut [&mut [f64]]);

    /// Sets one hyperparameter from text, by its SPEC name (the CLI's `--set KEY=VALUE`).
    /// The config is not validated here; call [`Optimizer::validate`] afterwards.
    fn set(&mut self, key: &str, value: &str) -> Result<()>;

    /// Bytes moved per element per step: read θ, g and each used state, write θ and each state.
    fn bytes_per_element(&self) -> usize {
        let states = self.state_slots().iter().filter(|s| s.used).count();
        4 * (2 + 1 + 2 * states)
    }
}

/// The table of optimizers. Everything that must work for every optimizer iterates this.
#[derive(Clone, Debug, PartialEq)]
pub enum OptimizerConfig {
    Bayes(BayesConfig),
    Sgd(SgdConfig),
    Rmsprop(RmspropConfig),
    /// `adam` and `adamw`: one kernel, the variant picks the weight decay.
    Adam(AdamConfig),
}

impl OptimizerConfig {
    /// Every optimizer, one default config per name (presets are not listed).
    pub fn all_defaults() -> Vec<OptimizerConfig> {
        vec![
            OptimizerConfig::Bayes(BayesConfig::default()),
            OptimizerConfig::Sgd(SgdConfig::default()),
            OptimizerConfig::Rmsprop(RmspropConfig::default()),
            OptimizerConfig::Adam(AdamConfig::adam()),
            OptimizerConfig::Adam(AdamConfig::adamw()),
        ]
    }

    /// Presets: a name for a config of another optimizer.
    const PRESETS: &'static [&'static str] = &["bayes_adam"];

    /// The default config of the named optimizer (presets included).
    pub fn default_for(name: &str) -> Result<OptimizerConfig> {
        match name {
            "bayes" => Ok(OptimizerConfig::Bayes(BayesConfig::default())),
            "bayes_adam" => Ok(OptimizerConfig::Bayes(BayesConfig::bayes_adam())),
            "sgd" => Ok(OptimizerConfig::Sgd(SgdConfig::default())),
            "rmsprop" => Ok(OptimizerConfig::Rmsprop(RmspropConfig::default())),
            "adam" => Ok(OptimizerConfig::Adam(AdamConfig::adam())),
            "adamw" => Ok(OptimizerConfig::Adam(AdamConfig::adamw())),
            _ => Err(Error::Unknown {
                what: "optimizer",
                name: name.to_string(),
                known: Self::all_defaults()
                    .iter()
                    .map(|c| c.as_dyn().name())
                    .chain(Self::PRESETS.iter().copied())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The named optimizer with `KEY=VALUE` settings applied, validated.
    pub fn from_settings<'a>(
        name: &str,
        settings: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<OptimizerConfig> {
        let mut config = Self::default_for(name)?;
        for (key, value) in settings {
            config.as_dyn_mut().set(key, value)?;
        }
        config.validate()?;
        Ok(config)
    }

    pub fn as_dyn(&self) -> &dyn Optimizer {
        match self {
            OptimizerConfig::Bayes(c) => c,
            OptimizerConfig::Sgd(c) => c,
            OptimizerConfig::Rmsprop(c) => c,
            OptimizerConfig::Adam(c) => c,
        }
    }

    pub fn as_dyn_mut(&mut self) -> &mut dyn Optimizer {
        match self {
            OptimizerConfig::Bayes(c) => c,
            OptimizerConfig::Sgd(c) => c,
            OptimizerConfig::Rmsprop(c) => c,
            OptimizerConfig::Adam(c) => c,
        }
    }

    pub fn name(&self) -> &'static str {
        self.as_dyn().name()
    }

    pub fn validate(&self) -> Result<()> {
        self.as_dyn().validate()
    }

    /// Names of the state vectors that are allocated for this config.
    pub fn used_state_names(&self) -> Vec<&'static str> {
        self.as_dyn()
            .state_slots()
            .into_iter()
            .filter(|s| s.used)
            .map(|s| s.name)
            .collect()
    }

    /// Changing hyperparameters between steps is free, but not a change that would need a
    /// different set of state vectors (e.g. turning momentum on).
    pub(crate) fn check_same_layout(&self, new: &OptimizerConfig) -> Result<()> {
        let (old_slots, new_slots) = (self.as_dyn().state_slots(), new.as_dyn().state_slots());
        if self.name() != new.name()
            || old_slots
                .iter()
                .map(|s| s.used)
                .ne(new_slots.iter().map(|s| s.used))
        {
            return Err(Error::Config {
                optimizer: new.name(),
                field: "config",
                value: format!("{new:?}"),
                allowed: "the same optimizer with the same state vectors as the running one \
                          (momentum cannot be switched on or off between steps)",
            });
        }
        Ok(())
    }
}

impl From<BayesConfig> for OptimizerConfig {
    fn from(c: BayesConfig) -> Self {
        OptimizerConfig::Bayes(c)
    }
}

impl From<SgdConfig> for OptimizerConfig {
    fn from(c: SgdConfig) -> Self {
        OptimizerConfig::Sgd(c)
    }
}

impl From<RmspropConfig> for OptimizerConfig {
    fn from(c: RmspropConfig) -> Self {
        OptimizerConfig::Rmsprop(c)
    }
}

impl From<AdamConfig> for OptimizerConfig {
    fn from(c: AdamConfig) -> Self {
        OptimizerConfig::Adam(c)
    }
}

/// Parses a finite number for `--set`, with an error that names the field.
pub(crate) fn parse_f64(optimizer: &'static str, field: &'static str, value: &str) -> Result<f64> {
    value
        .trim()
        .parse::<f64>()
        .map_err(|_| Error::config(optimizer, field, value, "a number"))
}

/// Parses `true`/`false` for `--set`, with an error that names the field.
pub(crate) fn parse_bool(
    optimizer: &'static str,
    field: &'static str,
    value: &str,
) -> Result<bool> {
    match value.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Error::config(optimizer, field, value, "true or false")),
    }
}

/// Checks that `value` is finite, fits f32 (the kernel gets it as f32) and satisfies `ok`; else
/// a `Config` error that names the field and its allowed range.
pub(crate) fn check_field(
    optimizer: &'static str,
    field: &'static str,
    value: f64,
    ok: bool,
    allowed: &'static str,
) -> Result<()> {
    if value.is_finite() && ok && (value as f32).is_finite() {
        Ok(())
    } else {
        Err(Error::config(optimizer, field, value, allowed))
    }
}

/// An option passed to a kernel as an f32 uniform: 1 on, 0 off.
pub(crate) fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

/// `1 / (1 - beta^t)`, Adam's bias correction, in f64 (1 when `t` = 0 is never used).
pub(crate) fn bias_correction(beta: f64, t: u64) -> f64 {
    1.0 / (1.0 - beta.powf(t as f64))
}
