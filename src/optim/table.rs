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

/// Declares the table. Each group is one config type with its kernel, then its names:
///
/// ```text
/// Variant(ConfigType), kernel CONST = "file" {
///     [preset] "name" => constructor,
///         battery &["settings", …],
///         demo "knob" over GRID [, fixed "settings"];
/// }
/// ```
///
/// `file` is `shaders/<file>.wgsl`, compiled as the fused kernel `CONST` (entry point `main`,
/// after `common.wgsl` and `fused.wgsl`); `kernel CONST = "file" after "shared"` also prepends
/// `shaders/<shared>.wgsl`, code that two kernels share.
macro_rules! optimizer_table {
    (
        $(
            $(#[$meta:meta])*
            $variant:ident($config:ty), kernel $kernel:ident = $file:literal
                $(after $prelude:literal)? {
                $(
                    $($preset:ident)? $name:literal => $make:expr,
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
            impl From<$config> for OptimizerConfig {
                fn from(c: $config) -> Self {
                    OptimizerConfig::$variant(c)
                }
            }
        )+

        /// The fused kernel of every config type, `shaders/<name>.wgsl` after the preludes.
        pub mod shaders {
            use $crate::kernels::{Kernel, COMMON, FUSED};
            $(
                pub const $kernel: Kernel = Kernel {
                    name: $file,
                    preludes: &[
                        COMMON,
                        FUSED,
                        $(include_str!(concat!(
                            env!("CARGO_MANIFEST_DIR"), "/shaders/", $prelude, ".wgsl"
                        )),)?
                    ],
                    body: include_str!(concat!(
                        env!("CARGO_MANIFEST_DIR"), "/shaders/", $file, ".wgsl"
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
                    name: $name,
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

        /// How errors call an option of `optimizer`, e.g. `adamw option`.
        pub(crate) fn option_kind(optimizer: &str) -> &'static str {
            match optimizer {
                $($($name => concat!($name, " option"),)+)+
                _ => "option",
            }
        }
    };
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
