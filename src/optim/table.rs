//! `optimizer_table!`: from one row per optimizer name, the [`OptimizerConfig`] enum and its
//! plumbing, the kernels, the presets, the `validate` battery rows and the demo rows.
//!
//! [`OptimizerConfig`]: crate::optim::OptimizerConfig

use crate::optim::OptimizerConfig;

/// One name of the table: an optimizer, or a preset (a name for a config of another).
#[derive(Clone, Copy, Debug)]
pub struct Row {
    /// The name `default_for`, `--optimizer` and the demo use.
    pub name: &'static str,
    /// A preset is not listed by `all_defaults` (its config's own name is another row's).
    pub preset: bool,
    /// Its default config.
    pub config: fn() -> OptimizerConfig,
    /// `validate`'s cases, as settings strings: `KEY=VALUE` or a bare `KEY` (true), separated
    /// by spaces; `n=N` sets the size; `a,b,c` lists values, and the row stands for every
    /// combination. `""` is the defaults. Each case is named `<name> <settings>`.
    pub battery: &'static [&'static str],
    pub demo: DemoRow,
}

/// How the demo sweeps one optimizer.
#[derive(Clone, Copy, Debug)]
pub struct DemoRow {
    /// The swept setting: `lr`, or `eta` for `bayes`.
    pub knob: &'static str,
    /// The full sweep, ascending, in half-decade steps.
    pub grid: [f64; 5],
    /// Settings every run gets besides the swept one, as in [`Row::battery`].
    pub fixed: &'static str,
}

/// Splits a settings string (`"momentum=0.9 nesterov"`) into `--set` pairs; a bare key is
/// `KEY=true`.
pub fn settings(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split_whitespace()
        .map(|token| token.split_once('=').unwrap_or((token, "true")))
}

/// Declares the table. Each group is one config type with its kernel, twin and state slots,
/// then its names:
///
/// ```text
/// Variant(ConfigType [in reference]), kernel CONST = file [after "shared"],
///     state [|c|] [slot [= (init)] [if (used)], …] [, name (expr)] [, derived [name, …]] {
///     [#[preset]] name => constructor,
///         battery &["settings", …],
///         demo "knob" over GRID [, fixed "settings"];
/// }
/// ```
///
/// `file` names the fused kernel `shaders/<file>.wgsl` (compiled as `CONST`, entry points
/// `main` and `segments`, after `common.wgsl` and `fused.wgsl`; `after "shared"` also prepends
/// `shaders/<shared>.wgsl`, code that two kernels share) and its CPU twin `reference::<file>`,
/// which declares the uniform block with `scalars!` and defines
/// `step(p, theta, grad, slot, …)`, one slice per state slot in the row's order.
///
/// The state slots are declared here once: the kernel's bindings 4, 5, … are generated from
/// them, so are [`Optimizer::state_slots`] and the reference and oracle steps. A slot starts
/// at `init` (0 if not given) and is allocated when `used` holds (always if not given); both
/// read the config as `c`. `name` is the config's SPEC name where a group has several
/// (default: the group's first name); `derived` lists [`Optimizer::derived_state_names`],
/// computed by the config's inherent `derived(name, t, stored)`.
///
/// `in reference` says the config is declared in the twin (and re-exports it here); else it
/// is in scope where the table is.
///
/// Each config provides, as inherent methods, only what is its own: `scalars(t)` (the f64
/// uniform block of step `t`) and `check()` (its ranges, for [`Optimizer::validate`]). The
/// table generates the rest of [`Optimizer`] for it.
///
/// [`Optimizer`]: crate::optim::Optimizer
/// [`Optimizer::state_slots`]: crate::optim::Optimizer::state_slots
/// [`Optimizer::validate`]: crate::optim::Optimizer::validate
/// [`Optimizer::derived_state_names`]: crate::optim::Optimizer::derived_state_names
macro_rules! optimizer_table {
    (
        $(
            $(#[$meta:meta])*
            $variant:ident($config:ident $(in $home:ident)?), kernel $kernel:ident = $file:ident
                $(after $prelude:literal)?,
                state $(|$c:ident|)? [$($slot:ident $(= ($init:expr))? $(if ($used:expr))?),+ $(,)?]
                $(, name ($config_name:expr))?
                $(, derived [$($derived:ident),+])? {
                $(
                    $(#[$preset:ident])? $name:ident => $make:expr,
                        battery $battery:expr,
                        demo $knob:literal over $grid:expr $(, fixed $fixed:literal)?;
                )+
            }
        )+
    ) => {
        /// The table of optimizers, one variant per config type. Everything that must work
        /// for every optimizer iterates [`TABLE`] or matches this.
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        pub enum OptimizerConfig {
            $($(#[$meta])* $variant($config),)+
        }

        impl OptimizerConfig {
            pub fn as_dyn(&self) -> &dyn Optimizer {
                match self {
                    $(OptimizerConfig::$variant(c) => c,)+
                }
            }

            pub fn as_dyn_mut(&mut self) -> &mut dyn Optimizer {
                match self {
                    $(OptimizerConfig::$variant(c) => c,)+
                }
            }
        }

        $(
            $(pub use $crate::$home::$file::$config;)?

            impl From<$config> for OptimizerConfig {
                fn from(c: $config) -> Self {
                    OptimizerConfig::$variant(c)
                }
            }

            impl Optimizer for $config {
                fn name(&self) -> &'static str {
                    $crate::optim::table::optimizer_table!(
                        @name self [$($c)?] [$($config_name)?] ; $($name)+
                    )
                }

                fn kernel(&self) -> &'static Kernel {
                    &shaders::$kernel
                }

                fn validate(&self) -> $crate::error::Result<()> {
                    self.check()
                }

                fn state_slots(&self) -> Vec<StateSlot> {
                    $(let $c = self; let _ = $c;)?
                    vec![$(
                        StateSlot {
                            name: stringify!($slot),
                            init: $crate::optim::table::optimizer_table!(@init $($init)?),
                            used: $crate::optim::table::optimizer_table!(@used $($used)?),
                        },
                    )+]
                }

                fn uniform_bytes(&self, t: u64) -> Vec<u8> {
                    self.scalars(t).to_f32().uniform_bytes()
                }

                fn reference_step(
                    &self,
                    t: u64,
                    theta: &mut [f32],
                    grad: &[f32],
                    state: &mut [&mut [f32]],
                ) {
                    let [$($slot),+] = state else {
                        panic!("{} has the state slots {:?}, got {}", self.name(),
                            [$(stringify!($slot)),+], state.len())
                    };
                    $crate::reference::$file::step(
                        &self.scalars(t).to_f32(), theta, grad, $($slot),+
                    );
                }

                fn oracle_step(
                    &self,
                    t: u64,
                    theta: &mut [f64],
                    grad: &[f64],
                    state: &mut [&mut [f64]],
                ) {
                    let [$($slot),+] = state else {
                        panic!("{} has the state slots {:?}, got {}", self.name(),
                            [$(stringify!($slot)),+], state.len())
                    };
                    $crate::reference::$file::step(&self.scalars(t), theta, grad, $($slot),+);
                }

                $(
                    fn derived_state_names(&self) -> &'static [&'static str] {
                        &[$(stringify!($derived)),+]
                    }

                    fn derived_state(
                        &self,
                        name: &str,
                        t: u64,
                        stored: &[&[f32]],
                    ) -> Option<Vec<f32>> {
                        self.derived(name, t, stored)
                    }
                )?
            }
        )+

        /// The fused kernel of every config type, `shaders/<name>.wgsl` after the preludes,
        /// with its `Scalars` and state bindings generated from the twin's and the row's
        /// declarations.
        pub mod shaders {
            use $crate::kernels::{Kernel, COMMON, FUSED};
            $(
                pub const $kernel: Kernel = Kernel {
                    name: stringify!($file),
                    preludes: &[
                        COMMON,
                        FUSED,
                        $(include_str!(concat!(
                            env!("CARGO_MANIFEST_DIR"), "/shaders/", $prelude, ".wgsl"
                        )),)?
                    ],
                    scalars: $crate::reference::$file::SCALARS,
                    flags: $crate::reference::$file::FLAGS,
                    states: &[$(stringify!($slot)),+],
                    body: include_str!(concat!(
                        env!("CARGO_MANIFEST_DIR"), "/shaders/", stringify!($file), ".wgsl"
                    )),
                };
            )+
        }

        /// Every optimizer kernel, in table order.
        pub const KERNELS: &[&$crate::kernels::Kernel] = &[$(&shaders::$kernel),+];

        /// Every name, optimizers and presets, in table order.
        pub const TABLE: &[Row] = &[
            $($(
                Row {
                    name: stringify!($name),
                    preset: $crate::optim::table::optimizer_table!(@preset $($preset)?),
                    config: || OptimizerConfig::from($make),
                    battery: $battery,
                    demo: DemoRow {
                        knob: $knob,
                        grid: $grid,
                        fixed: $crate::optim::table::optimizer_table!(@fixed $($fixed)?),
                    },
                },
            )+)+
        ];


        /// Calls `$callback! { name name … }` with every name of the table (optimizers and
        /// presets, in table order) as identifiers, for code generated per name in other
        /// crates (bayesprop-burn's constructors).
        #[macro_export]
        macro_rules! for_each_optimizer_name {
            ($callback:ident) => {
                $callback! { $($($name)+)+ }
            };
        }
    };
    (@name $self:ident [$($c:ident)?] [] ; $name:ident $($_other:ident)*) => {
        stringify!($name)
    };
    (@name $self:ident [$($c:ident)?] [$config_name:expr] ; $($name:ident)+) => {{
        $(let $c = $self;)?
        $config_name
    }};
    (@init $init:expr) => { ($init) as f32 };
    (@init) => { 0.0 };
    (@used $used:expr) => { $used };
    (@used) => { true };
    (@preset preset) => { true };
    (@preset) => { false };
    (@fixed $fixed:literal) => { $fixed };
    (@fixed) => { "" };
}
pub(crate) use optimizer_table;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::TABLE;

    #[test]
    fn each_optimizer_row_is_its_configs_name() {
        for row in TABLE {
            let config = (row.config)();
            config.validate().unwrap();
            assert_eq!(row.preset, config.name() != row.name, "{}", row.name);
        }
    }

    #[test]
    fn configs_round_trip_through_json() {
        for row in TABLE {
            let config = (row.config)();
            let json = serde_json::to_string(&config).unwrap();
            let back: OptimizerConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, config, "{json}");
        }
    }

    #[test]
    fn settings_strings_split_into_pairs() {
        let pairs: Vec<_> = settings(" momentum=0.9  nesterov lr=1e-3").collect();
        assert_eq!(
            pairs,
            [("momentum", "0.9"), ("nesterov", "true"), ("lr", "1e-3")]
        );
    }
}
