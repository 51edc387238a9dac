//! `config!`: a config struct from one declaration per hyperparameter (name, type, default, doc),
//! and from it the defaults, the builder, `--set` and the list of known keys.

use crate::error::{Error, Result};
use crate::optim::{parse_bool, parse_f64};

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
    Error::Unknown {
        what: crate::optim::option_kind(optimizer),
        name: key.to_string(),
        known: keys.join(", "),
    }
}

/// Declares a config struct, its `Default`, its builder (`build` validates) and its
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

        impl $crate::optim::config::Hyperparameters for $config {
            fn keys(&self) -> &'static [&'static str] {
                Self::KEYS
            }

            fn set_key(&mut self, optimizer: &'static str, key: &str, value: &str)
                -> $crate::error::Result<()> {
                match key {
                    $(stringify!($field) => {
                        self.$field = <$ty as $crate::optim::config::Setting>::parse_setting(
                            optimizer,
                            stringify!($field),
                            value,
                        )?
                    })*
                    _ => return Err($crate::optim::config::unknown_key(optimizer, key, Self::KEYS)),
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
                $crate::optim::Optimizer::validate(&self.0)?;
                Ok(self.0)
            }
        }
    };
}
pub(crate) use config;
