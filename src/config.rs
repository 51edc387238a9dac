//! How an optimizer's config is declared and checked, below the optimizer table: `config!`, a
//! config struct from one declaration per hyperparameter (name, type, default, doc), and from
//! it the defaults, the builder, `--set` and the list of known keys; the parsing and range
//! checks every config shares. It imports nothing of `optim` or `reference`, where configs are
//! declared.

use crate::error::{Error, Result};

/// A hyperparameter type that `--set KEY=VALUE` can parse.
pub trait Setting: Sized {
    /// Parses `value` for `field` of `optimizer`; the error names both.
    fn parse_setting(optimizer: &'static str, field: &'static str, value: &str) -> Result<Self>;
}

impl Setting for f64 {
    fn parse_setting(optimizer: &'static str, field: &'static str, value: &str) -> Result<Self> {
        parse_f64(optimizer, field, value)
    }
}

impl Setting for bool {
    fn parse_setting(optimizer: &'static str, field: &'static str, value: &str) -> Result<Self> {
        parse_bool(optimizer, field, value)
    }
}

/// What a config's declaration gives the table: its keys and `--set`, by name.
pub trait Hyperparameters {
    /// The keys `--set` knows, in declaration order.
    fn keys(&self) -> &'static [&'static str];

    /// Sets `key` from text; `optimizer` names it in errors (`adam` and `adamw` share a config).
    fn set_key(&mut self, optimizer: &'static str, key: &str, value: &str) -> Result<()>;
}

/// The error of a key that `keys` does not list.
pub(crate) fn unknown_key(optimizer: &'static str, key: &str, keys: &[&str]) -> Error {
    Error::UnknownOption {
        optimizer,
        key: key.to_string(),
        known: keys.join(", "),
    }
}

/// Declares a config struct, its `Default`, its builder (`build` validates with the config's
/// inherent `check`, which every config defines) and its
/// [`Hyperparameters`] from one line per hyperparameter:
///
/// ```text
/// config! {
///     /// doc of the struct
///     pub struct SgdConfig, builder SgdConfigBuilder {
///         @fixed { /* fields that are not keys (no setter, no `--set`), same syntax */ }
///         /// doc of the field, also the builder setter's
///         lr: f64 = 1e-3,
///     }
/// }
/// ```
///
/// Adding a hyperparameter is one more line; its type must implement [`Setting`].
macro_rules! config {
    (
        $(#[$meta:meta])*
        pub struct $config:ident, builder $builder:ident {
            $(@fixed {
                $($(#[$fixed_meta:meta])* $fixed:ident: $fixed_ty:ty = $fixed_default:expr,)*
            })?
            $($(#[$field_meta:meta])* $field:ident: $ty:ty = $default:expr,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        pub struct $config {
            $($($(#[$fixed_meta])* pub $fixed: $fixed_ty,)*)?
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl Default for $config {
            fn default() -> Self {
                $config {
                    $($($fixed: $fixed_default,)*)?
                    $($field: $default,)*
                }
            }
        }

        impl $config {
            /// The keys of `--set KEY=VALUE`, in declaration order.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];
        }

        impl $crate::config::Hyperparameters for $config {
            fn keys(&self) -> &'static [&'static str] {
                Self::KEYS
            }

            fn set_key(&mut self, optimizer: &'static str, key: &str, value: &str)
                -> $crate::error::Result<()> {
                match key {
                    $(stringify!($field) => {
                        self.$field = <$ty as $crate::config::Setting>::parse_setting(
                            optimizer,
                            stringify!($field),
                            value,
                        )?
                    })*
                    _ => return Err($crate::config::unknown_key(optimizer, key, Self::KEYS)),
                }
                Ok(())
            }
        }

        #[doc = concat!("Builder for [`", stringify!($config), "`]; `build` validates.")]
        #[derive(Clone, Copy, Debug)]
        pub struct $builder($config);

        impl $builder {
            $(
                $(#[$field_meta])*
                pub fn $field(mut self, $field: $ty) -> Self {
                    self.0.$field = $field;
                    self
                }
            )*

            pub fn build(self) -> $crate::error::Result<$config> {
                self.0.check()?;
                Ok(self.0)
            }
        }
    };
}
pub(crate) use config;

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

/// `beta1` and `beta2` of the Adam-like optimizers: EMA factors in [0, 1).
pub(crate) fn check_betas(optimizer: &'static str, beta1: f64, beta2: f64) -> Result<()> {
    check_field(
        optimizer,
        "beta1",
        beta1,
        (0.0..1.0).contains(&beta1),
        "0 <= beta1 < 1",
    )?;
    check_field(
        optimizer,
        "beta2",
        beta2,
        (0.0..1.0).contains(&beta2),
        "0 <= beta2 < 1",
    )
}

/// λ ≥ 0 of a decay that may be decoupled: its factor 1 − lr·λ is passed to the kernel as f32,
/// so it must be finite there.
pub(crate) fn check_decay_factor(
    optimizer: &'static str,
    lr: f64,
    weight_decay: f64,
) -> Result<()> {
    check_field(
        optimizer,
        "weight_decay",
        weight_decay,
        weight_decay >= 0.0 && ((1.0 - lr * weight_decay) as f32).is_finite(),
        "weight_decay >= 0 with lr·weight_decay finite in f32",
    )
}

/// How a group's optimizer state is held (SPEC §6): `f32` (the default), `bf16` (2 bytes per
/// element, stochastic rounding) or `q8` (1 byte per element and one f32 scale per block of
/// [`STATE_Q8_BLOCK`] elements of a tensor's state slot). θ and g stay f32 in every format.
/// The codec is [`crate::reference::state_codec`] (twin of `shaders/state_codec.wgsl`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum StateFormat {
    /// 4 bytes per state element, exact.
    #[default]
    F32,
    /// 2 bytes per state element: the top half of the f32, stochastically rounded.
    Bf16,
    /// 1 byte per state element plus 4 bytes of scale per block.
    Q8,
}

/// Elements of one q8 block, counted from the start of a tensor's state slot.
pub const STATE_Q8_BLOCK: usize = 256;

impl StateFormat {
    /// Every format, in the order their names are listed.
    pub const ALL: [StateFormat; 3] = [StateFormat::F32, StateFormat::Bf16, StateFormat::Q8];

    /// The name `FromStr` reads and `Display` writes: `f32`, `bf16`, `q8`.
    pub fn name(self) -> &'static str {
        match self {
            StateFormat::F32 => "f32",
            StateFormat::Bf16 => "bf16",
            StateFormat::Q8 => "q8",
        }
    }

    /// Bytes that one state slot of a tensor of `n` elements takes: 4n, 2n, or for q8
    /// n + 4·⌈n/256⌉ (codes, then one f32 scale per block; the last block may be shorter).
    /// A group's state is the sum over its tensors, since blocks never span two tensors.
    pub fn slot_bytes(self, n: usize) -> usize {
        match self {
            StateFormat::F32 => 4 * n,
            StateFormat::Bf16 => 2 * n,
            StateFormat::Q8 => n + 4 * n.div_ceil(STATE_Q8_BLOCK),
        }
    }

    /// Bytes of one state element over whole blocks, its scale's share included: 4, 2, or
    /// 1 + 4/256 for q8.
    pub fn element_bytes(self) -> f64 {
        self.slot_bytes(STATE_Q8_BLOCK) as f64 / STATE_Q8_BLOCK as f64
    }
}

impl std::fmt::Display for StateFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for StateFormat {
    type Err = Error;

    /// Reads `f32`, `bf16` or `q8`; anything else is one line that lists them.
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s.trim())
            .ok_or_else(|| Error::Unknown {
                what: "state format",
                name: s.to_string(),
                known: Self::ALL.map(Self::name).join(", "),
            })
    }
}

/// Parses a `state_seed` (SPEC §6): an integer in 0 ..= 2^32 − 1; anything else is one line.
pub fn parse_state_seed(value: &str) -> Result<u32> {
    value.trim().parse::<u32>().map_err(|_| {
        Error::config(
            "group",
            "state_seed",
            value,
            "an integer in 0 ..= 4294967295 (u32)",
        )
    })
}

/// How a group's optimizer state is held (SPEC §6): its format and the seed of its stochastic
/// rounding. Set per group ([`crate::ParamGroups::set_state_format`]); the command line and the
/// demo take them as `state_format=…` and `state_seed=…` beside the hyperparameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StateStorage {
    pub format: StateFormat,
    pub seed: u32,
}

impl StateStorage {
    /// The settings that are storage options rather than hyperparameters.
    pub const KEYS: [&'static str; 2] = ["state_format", "state_seed"];

    /// Sets `key` from text when it is a storage option (`Ok(true)`); `Ok(false)` for any
    /// other key. A bad value is one line.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool> {
        match key.trim() {
            "state_format" => self.format = value.parse()?,
            "state_seed" => self.seed = parse_state_seed(value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// [`StateStorage::set`], refusing in one line a key that is not a storage option.
    pub fn set_option(&mut self, key: &str, value: &str) -> Result<()> {
        match self.set(key, value)? {
            true => Ok(()),
            false => Err(Error::Unknown {
                what: "group option",
                name: key.to_string(),
                known: Self::KEYS.join(", "),
            }),
        }
    }

    /// Splits `KEY=VALUE` settings into the storage options, read into a `StateStorage`, and
    /// the rest (the optimizer's hyperparameters), in their order.
    pub fn split<'a>(
        settings: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(Self, Vec<(&'a str, &'a str)>)> {
        let mut storage = StateStorage::default();
        let mut rest = Vec::new();
        for (key, value) in settings {
            if !storage.set(key, value)? {
                rest.push((key, value));
            }
        }
        Ok((storage, rest))
    }
}

impl std::fmt::Display for StateStorage {
    /// `state_format=q8 state_seed=7`, the seed left out when it is 0.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "state_format={}", self.format)?;
        if self.seed != 0 {
            write!(f, " state_seed={}", self.seed)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod state_format_tests {
    use super::*;

    #[test]
    fn names_round_trip_and_an_unknown_name_lists_the_valid_ones() {
        for f in StateFormat::ALL {
            assert_eq!(f.to_string().parse::<StateFormat>().unwrap(), f);
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{f}\""));
        }
        assert_eq!(StateFormat::default(), StateFormat::F32);
        let e = "fp8".parse::<StateFormat>().unwrap_err().to_string();
        assert_eq!(e, "unknown state format `fp8`; known: f32, bf16, q8");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn a_seed_out_of_u32_range_is_one_line() {
        assert_eq!(parse_state_seed("0").unwrap(), 0);
        assert_eq!(parse_state_seed(" 4294967295").unwrap(), u32::MAX);
        for bad in ["4294967296", "-1", "1.5", "x", ""] {
            let e = parse_state_seed(bad).unwrap_err().to_string();
            assert!(e.contains("state_seed") && e.contains("u32"), "{e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn bytes_per_slot() {
        use StateFormat::*;
        assert_eq!(F32.slot_bytes(1000), 4000);
        assert_eq!(Bf16.slot_bytes(1000), 2000);
        assert_eq!(Q8.slot_bytes(0), 0);
        assert_eq!(Q8.slot_bytes(1), 5);
        assert_eq!(Q8.slot_bytes(256), 260);
        assert_eq!(Q8.slot_bytes(257), 265);
        assert_eq!(Q8.slot_bytes(1000), 1000 + 16);
        // SPEC §6: `bayes` (two slots) holds 2.03 B per parameter in q8.
        let per_param = 2.0 * Q8.slot_bytes(1 << 20) as f64 / (1 << 20) as f64;
        assert!((per_param - 2.03125).abs() < 1e-12);
    }
}
