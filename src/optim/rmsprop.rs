//! `rmsprop` with torch.optim.RMSprop's semantics (SPEC §3): configuration, validation and
//! per-step scalars.

use crate::error::{Error, Result};
use crate::kernels::{Kernel, RMSPROP};
use crate::optim::{check_field, flag, parse_bool, parse_f64, Optimizer, StateSlot};
use crate::reference::rmsprop::{self as reference, RmspropScalars};

const NAME: &str = "rmsprop";

/// Hyperparameters of `rmsprop`, with torch's names and defaults. Build with
/// [`RmspropConfig::builder`] or start from `default()`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmspropConfig {
    /// Learning rate, ≥ 0.
    pub lr: f64,
    /// EMA factor of g², ≥ 0 (torch's only check; values > 1 diverge).
    pub alpha: f64,
    /// Added to sqrt(v̄), ≥ 0.
    pub eps: f64,
    /// λ ≥ 0, added to the gradient as λθ.
    pub weight_decay: f64,
    /// μ ≥ 0; 0 turns momentum off (and its buffer `b` is not allocated).
    pub momentum: f64,
    /// Divide by sqrt(v − a²), with `a` the EMA of g (allocated only then).
    pub centered: bool,
}

impl Default for RmspropConfig {
    fn default() -> Self {
        RmspropConfig {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
        }
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
            pad: 0.0,
        }
    }
}

impl Optimizer for RmspropConfig {
    fn name(&self) -> &'static str {
        NAME
    }

    fn kernel(&self) -> &'static Kernel {
        &RMSPROP
    }

    fn validate(&self) -> Result<()> {
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

    fn state_slots(&self) -> Vec<StateSlot> {
        vec![
            StateSlot {
                name: "v",
                init: 0.0,
                used: true,
            },
            StateSlot {
                name: "a",
                init: 0.0,
                used: self.centered,
            },
            StateSlot {
                name: "b",
                init: 0.0,
                used: self.momentum > 0.0,
            },
        ]
    }

    fn uniform_bytes(&self, t: u64) -> Vec<u8> {
        bytemuck::bytes_of(&self.scalars(t).to_f32()).to_vec()
    }

    fn reference_step(&self, t: u64, theta: &mut [f32], grad: &[f32], state: &mut [&mut [f32]]) {
        let [v, a, b] = state else {
            panic!("rmsprop has 3 state slots, got {}", state.len())
        };
        reference::step(&self.scalars(t).to_f32(), theta, grad, v, a, b);
    }

    fn oracle_step(&self, t: u64, theta: &mut [f64], grad: &[f64], state: &mut [&mut [f64]]) {
        let [v, a, b] = state else {
            panic!("rmsprop has 3 state slots, got {}", state.len())
        };
        reference::step(&self.scalars(t), theta, grad, v, a, b);
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "lr" => self.lr = parse_f64(NAME, "lr", value)?,
            "alpha" => self.alpha = parse_f64(NAME, "alpha", value)?,
            "eps" => self.eps = parse_f64(NAME, "eps", value)?,
            "weight_decay" => self.weight_decay = parse_f64(NAME, "weight_decay", value)?,
            "momentum" => self.momentum = parse_f64(NAME, "momentum", value)?,
            "centered" => self.centered = parse_bool(NAME, "centered", value)?,
            _ => {
                return Err(Error::Unknown {
                    what: "rmsprop option",
                    name: key.to_string(),
                    known: "lr, alpha, eps, weight_decay, momentum, centered".to_string(),
                })
            }
        }
        Ok(())
    }
}

/// Builder for [`RmspropConfig`]; `build` validates.
#[derive(Clone, Copy, Debug)]
pub struct RmspropConfigBuilder(RmspropConfig);

impl RmspropConfigBuilder {
    pub fn lr(mut self, lr: f64) -> Self {
        self.0.lr = lr;
        self
    }
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.0.alpha = alpha;
        self
    }
    pub fn eps(mut self, eps: f64) -> Self {
        self.0.eps = eps;
        self
    }
    pub fn weight_decay(mut self, lambda: f64) -> Self {
        self.0.weight_decay = lambda;
        self
    }
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.0.momentum = momentum;
        self
    }
    pub fn centered(mut self, on: bool) -> Self {
        self.0.centered = on;
        self
    }
    pub fn build(self) -> Result<RmspropConfig> {
        self.0.validate()?;
        Ok(self.0)
    }
}
