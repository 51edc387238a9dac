//! The optimizer table: one config type per optimizer, and [`TABLE`], the one list of them.
//!
//! Adding an optimizer of SPEC §3 takes four places (as `adagrad` took, in one commit), and a
//! `pub mod` line in `reference/mod.rs`, which declares the twins so that it imports nothing
//! of this module:
//! - its CPU twin, `reference/<name>.rs`: the uniform block declared once with `scalars!`
//!   (the WGSL `struct Scalars`, the f32 rounding and the bytes come from it), and the
//!   per-element update, generic over f32/f64, its `step` through `simd_fn!` (the fast CPU
//!   path). Its config may live there too: the struct declared with `config!` (one line per
//!   hyperparameter: name, type, default, doc; the builder, `--set` and the known keys come
//!   from it), its ranges (`check`) and its f64 per-step scalars (`scalars(t)`), as inherent
//!   methods; the older optimizers keep theirs in `optim/<name>.rs`;
//! - its fused kernel, `shaders/<name>.wgsl`: `fn update` over the lane type `V`, without the
//!   uniform struct or the state bindings, which are generated;
//! - one row in the `optimizer_table!` below: config type, kernel, state slots, presets, its
//!   `validate` battery rows and its demo row. The table generates [`Optimizer`] for the config
//!   (kernel, state slots, uniform bytes, reference and oracle steps) and gives the kernel
//!   its declarations;
//! - its rule in `docs/rules.md`.
//!
//! The host layers, the CLI, `validate`, `replay`, `bench`, the demo, checkpoints and
//! bayesprop-burn's constructors are driven by this table and need no change.

pub mod adam;
pub mod bayes;
pub mod bayes_fp;

pub mod lion;
pub mod rmsprop;
pub mod sgd;
pub mod table;

use std::fmt;

use crate::error::{Error, Result};
use crate::kernels::Kernel;

pub use crate::config::Hyperparameters;
pub use adam::{AdamConfig, AdamConfigBuilder, AdamVariant};
pub use bayes::{BayesConfig, BayesConfigBuilder, SigmaInit, SigmaMax};
pub use bayes_fp::{BayesFpConfig, BayesFpConfigBuilder};
pub use lion::{LionConfig, LionConfigBuilder};
pub use rmsprop::{RmspropConfig, RmspropConfigBuilder};
pub use sgd::{SgdConfig, SgdConfigBuilder};
pub use table::{settings, DemoRow, Row};

/// Every WGSL module of the core, for validation and `info`: the step control, then each
/// optimizer's kernel in table order (`bench`'s roofline kernel is `bench::touch::TOUCH`).
pub const ALL_KERNELS: [&Kernel; KERNELS.len() + 1] = {
    let mut all = [&crate::kernels::CONTROL; KERNELS.len() + 1];
    let mut i = 0;
    while i < KERNELS.len() {
        all[i + 1] = KERNELS[i];
        i += 1;
    }
    all
};

/// Half-decade grids of the demo, centred where each family's learning rate works on its
/// models: a 500-step trial (Adam, RMSProp and SGD with momentum written out by hand, `bayes`
/// from this crate) put each one's best value inside its grid on the digits models. `bayes` and
/// `bayes_fp` at small η step like RMSProp with lr η, so the whole adaptive family (the bayes
/// rows, rmsprop, adam, adamw) sweeps the same grid.
pub(crate) const ADAPTIVE_GRID: [f64; 5] = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1];
const SGD_GRID: [f64; 5] = [3e-2, 1e-1, 3e-1, 1.0, 3.0];
/// Lion's authors advise an lr 3–10× below AdamW's. Measured (full demo budget): best at 1e-3
/// on the softmax and at 1e-4 on the MLP, so the grid reaches 3e-5.
const LION_GRID: [f64; 5] = [3e-5, 1e-4, 3e-4, 1e-3, 3e-3];

/// `adam` and `adamw` differ only in their weight decay: the same cases for both.
const ADAM_BATTERY: &[&str] = &[
    "",
    "weight_decay=0.1",
    "amsgrad",
    "beta2=0.999999",
    "beta1=0 beta2=0",
    "lr=1e-8",
    "lr=10 amsgrad",
    "n=257",
    // the training step around the update (SPEC §4b): unscaling and a clip that binds
    "grad_scale=65536 clip_norm=0.5",
    // every slot held in bf16 (SPEC §6)
    "amsgrad state_format=bf16",
    // every slot held in q8 (SPEC §6), blocks cut by the tensor's end
    "amsgrad state_format=q8 n=1,257,4099",
];

table::optimizer_table! {
    /// SPEC §2.
    Bayes(BayesConfig), kernel BAYES = bayes after "bayes_step",
        state |c| [s, sigma = (c.initial_sigma()), m if (c.momentum > 0.0)] {
        bayes => BayesConfig::default(),
            battery &[
                "eta=1e-6,1e-3,1,1e3 beta=0,0.9,0.999,0.999999 sigma_init=fixed_point,1e-2",
                // η = 0 has no fixed point to start from or bound by (SPEC §2)
                "eta=0 beta=0,0.9,0.999,0.999999 sigma_init=1e-2 sigma_max=none",
                // without the bound; and with and without it on streams whose curvature
                // rises after tiny first gradients (1e-17 … 1e-3), where it binds
                "eta=1e-6,1e-3,1,1e3 sigma_init=fixed_point,1e-2 sigma_max=none",
                "eta=1e-6,1e-3,1,1e3 sigma_init=fixed_point,1e-2 sigma_max=fixed_point,none \
                 stream=rising",
                "weight_decay=0.01",
                "weight_decay=0.01 sigma_max=none stream=rising",
                "weight_decay=0.01 momentum=0.9 stream=rising",
                "bias_correction=false",
                // the seed's form
                "bias_correction=false sigma_init=1e-3 sigma_max=none",
                // the dispatch edges: 1, not a multiple of the workgroup, one past it, and
                // more than 65,535 workgroups of vec4
                "n=1,3,255,256,257,1000003",
                // SPEC §4b: unscaling alone, a clip that binds (the battery's gradients reach
                // 1e4), and the norm's partial sums over every lane of the reduce (977 blocks)
                "grad_scale=1024",
                "clip_norm=1",
                "n=1000003 clip_norm=10",
                // a norm whose every addition rounds, so its order shows in the bits
                "n=1000003 clip_norm=10 stream=flat",
                // every slot held in bf16 (SPEC §6), over the dispatch edges
                "momentum=0.9 state_format=bf16 state_seed=7 n=1,257,4099",
                // and in q8, one invocation per block over the same edges
                "momentum=0.9 state_format=q8 state_seed=7 n=1,257,4099",
            ],
            demo "eta" over ADAPTIVE_GRID;
        #[preset] bayes_adam => BayesConfig::bayes_adam(),
            battery &["", "stream=rising", "state_format=bf16", "state_format=q8"],
            demo "eta" over ADAPTIVE_GRID;
    }
    /// SPEC §3, torch.optim.SGD.
    Sgd(SgdConfig), kernel SGD = sgd, state |c| [b if (c.momentum > 0.0)] {
        sgd => SgdConfig::default(),
            battery &[
                "",
                "weight_decay=0.01",
                "momentum=0.9",
                "momentum=0.9 dampening=0.5",
                "momentum=0.9 nesterov",
                "momentum=0.9 nesterov weight_decay=0.01",
                "lr=1e-8 momentum=0.9",
                "lr=10 weight_decay=0.01",
                // SPEC §4b: a scale below 1 and a clip that does not bind
                "momentum=0.9 grad_scale=0.125 clip_norm=1e9",
                "momentum=0.9 state_format=bf16",
                "momentum=0.9 state_format=q8",
            ],
            demo "lr" over SGD_GRID, fixed "momentum=0.9";
    }
    /// SPEC §3, torch.optim.RMSprop.
    Rmsprop(RmspropConfig), kernel RMSPROP = rmsprop,
        state |c| [v, a if (c.centered), b if (c.momentum > 0.0)] {
        rmsprop => RmspropConfig::default(),
            battery &[
                "",
                "weight_decay=0.01",
                "centered",
                "momentum=0.9",
                "centered momentum=0.9 weight_decay=0.01",
                "alpha=0.999999",
                "lr=1e-8",
                "lr=10 centered",
                "centered momentum=0.9 state_format=bf16",
                "centered momentum=0.9 state_format=q8",
            ],
            demo "lr" over ADAPTIVE_GRID;
    }
    /// `adam` and `adamw` (SPEC §3, torch.optim.Adam and AdamW): one kernel, the variant picks
    /// the weight decay.
    Adam(AdamConfig), kernel ADAM = adam,
        state |c| [m, v, v_max if (c.amsgrad)], name (c.variant.name()) {
        adam => AdamConfig::adam(),
            battery ADAM_BATTERY,
            demo "lr" over ADAPTIVE_GRID;
        adamw => AdamConfig::adamw(),
            battery ADAM_BATTERY,
            demo "lr" over ADAPTIVE_GRID;
    }
    /// SPEC §3, Lion as lion-pytorch and optax.
    Lion(LionConfig), kernel LION = lion, state [m] {
        lion => LionConfig::default(),
            battery &[
                "",
                "weight_decay=0.1",
                "beta1=0 beta2=0",
                "beta2=0.999999",
                "lr=1e-8",
                "lr=10 weight_decay=0.01",
                "n=257",
                "state_format=bf16",
                "state_format=q8",
            ],
            demo "lr" over LION_GRID;
    }
    /// SPEC §2b: `bayes` at the fixed point, σ computed from s.
    BayesFp(BayesFpConfig), kernel BAYES_FP = bayes_fp after "bayes_step",
        state |c| [s, m if (c.momentum > 0.0)], derived [sigma] {
        bayes_fp => BayesFpConfig::default(),
            battery &[
                "eta=1e-6,1e-3,1,1e3 beta=0,0.9,0.999,0.999999",
                "weight_decay=0.01",
                "momentum=0.9",
                "bias_correction=false",
                "n=1,257",
                "momentum=0.9 state_format=bf16",
                "momentum=0.9 state_format=q8",
            ],
            demo "eta" over ADAPTIVE_GRID;
    }
    /// SPEC §3, torch.optim.Adagrad.
    Adagrad(AdagradConfig in reference), kernel ADAGRAD = adagrad,
        state |c| [sum = (c.initial_accumulator_value)] {
        adagrad => AdagradConfig::default(),
            battery &[
                "",
                "weight_decay=0.1",
                "lr_decay=0.5",
                "initial_accumulator_value=0.1",
                "lr=1e-8",
                "lr=10 lr_decay=0.01 weight_decay=0.01",
                "n=257",
                "state_format=bf16",
                "state_format=q8",
            ],
            demo "lr" over [3e-3, 1e-2, 3e-2, 1e-1, 3e-1];
    }
}

/// What a step does with NaN or ±Inf gradient elements (SPEC §4). Under every policy but
/// `Propagate` they never reach the state.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum NonFinitePolicy {
    /// The whole step of the group changes nothing and its step counter does not advance
    /// (like a gradient scaler's found-inf).
    #[default]
    SkipStep = 0,
    /// Only those elements keep their θ and state; the step counter advances.
    SkipElement = 1,
    /// As `SkipStep`, and the caller gets [`Error::NonFinite`] with the count.
    Error = 2,
    /// No test and no count: non-finite values flow into θ and the state, as in torch's and
    /// burn's optimizers without a gradient scaler. The fastest step, for comparisons like
    /// for like and for callers who check elsewhere.
    Propagate = 3,
}

impl NonFinitePolicy {
    pub const ALL: [NonFinitePolicy; 4] = [
        Self::SkipStep,
        Self::SkipElement,
        Self::Error,
        Self::Propagate,
    ];

    /// The CLI spelling: `skip-step`, `skip-element`, `error`, `propagate`.
    pub fn name(self) -> &'static str {
        match self {
            Self::SkipStep => "skip-step",
            Self::SkipElement => "skip-element",
            Self::Error => "error",
            Self::Propagate => "propagate",
        }
    }

    /// Whether a step that saw `nonfinite` such elements is applied.
    pub fn applies(self, nonfinite: u64) -> bool {
        nonfinite == 0 || matches!(self, Self::SkipElement | Self::Propagate)
    }

    /// Whether the whole group's gradient is counted before any element is updated: the
    /// policies under which one non-finite element skips the step.
    pub fn counts_first(self) -> bool {
        matches!(self, Self::SkipStep | Self::Error)
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
                known: Self::ALL.map(Self::name).join(", "),
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

impl StepReport {
    /// What a step call that saw `count` non-finite gradient elements in `group` reports,
    /// and the error it raises under `NonFinitePolicy::Error`: built here alone, so that the
    /// CPU, which learns the count at once, and the GPU, which reads it back later, say the
    /// same thing.
    pub(crate) fn of(
        call: u64,
        group: usize,
        count: u64,
        policy: NonFinitePolicy,
    ) -> (StepReport, Option<Error>) {
        let report = StepReport {
            call,
            group,
            nonfinite: count,
            applied: policy.applies(count),
        };
        let error = (policy == NonFinitePolicy::Error).then_some(Error::NonFinite {
            step: call,
            group,
            count,
        });
        (report, error)
    }
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

/// What every optimizer config provides to the host layers. Object safe, so the table can hand
/// out `&dyn Optimizer`. Its keys and `--set` come from the config's declaration (`config!`).
pub trait Optimizer: Hyperparameters + fmt::Debug + Send + Sync {
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
    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let name = self.name();
        self.set_key(name, key, value)
    }

    /// Vectors read like states but computed from the stored ones on request (none by default;
    /// `bayes_fp`'s σ). Checkpoints do not carry them.
    fn derived_state_names(&self) -> &'static [&'static str] {
        &[]
    }

    /// The derived vector `name` of elements whose stored states are `stored` (in slot order,
    /// unused slots empty, any common length), after `t` applied steps; `None` if `name` is
    /// not one of [`Optimizer::derived_state_names`].
    fn derived_state(&self, name: &str, t: u64, stored: &[&[f32]]) -> Option<Vec<f32>> {
        let _ = (name, t, stored);
        None
    }

    /// Bytes moved per element per step: read θ, g and each used state, write θ and each state.
    fn bytes_per_element(&self) -> usize {
        self.bytes_per_element_in(crate::config::StateFormat::F32) as usize
    }

    /// [`Optimizer::bytes_per_element`] with the state held in `format` (SPEC §6): each used
    /// state read and written at [`crate::config::StateFormat::element_bytes`].
    fn bytes_per_element_in(&self, format: crate::config::StateFormat) -> f64 {
        let states = self.state_slots().iter().filter(|s| s.used).count() as f64;
        4.0 * (2.0 + 1.0) + 2.0 * states * format.element_bytes()
    }
}

impl OptimizerConfig {
    /// Every optimizer, one default config per name (presets are not listed).
    pub fn all_defaults() -> Vec<OptimizerConfig> {
        TABLE
            .iter()
            .filter(|row| !row.preset)
            .map(|row| (row.config)())
            .collect()
    }

    /// The default config of the named optimizer (presets included).
    pub fn default_for(name: &str) -> Result<OptimizerConfig> {
        match TABLE.iter().find(|row| row.name == name) {
            Some(row) => Ok((row.config)()),
            None => Err(Error::Unknown {
                what: "optimizer",
                name: name.to_string(),
                // optimizers first, then the presets
                known: TABLE
                    .iter()
                    .filter(|row| !row.preset)
                    .chain(TABLE.iter().filter(|row| row.preset))
                    .map(|row| row.name)
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

    /// Bytes of optimizer state for one tensor of `n` elements held in `format`: one slot of
    /// [`crate::StateFormat::slot_bytes`] per used state vector (what the optimizers allocate for a
    /// single tensor, whose arena has no padding).
    pub fn state_bytes(&self, format: crate::StateFormat, n: usize) -> usize {
        self.used_state_names().len() * format.slot_bytes(n)
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
