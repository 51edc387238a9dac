//! The library's integration tests, one module per concern, linked into one binary: each
//! binary links wgpu, so one binary instead of seventeen saves CI their links.
//! `tests/no_adapter.rs` stays a binary of its own: it changes environment variables.

#[path = "../common/mod.rs"]
mod common;

mod agreement;
mod bayes_fp;
mod caller_tensors;
mod checkpoint;
mod classic;
mod config;
#[cfg(feature = "demo")]
mod demo;
mod fast_path;
mod groups;
mod hardware_rule;
mod lanes;
mod lion;
mod memory;
mod nonfinite;
mod shaders;
mod sigma_max;
#[cfg(feature = "ndarray")]
mod spec_facts;
mod state_codec;
mod state_format;
mod stepper;
mod train;
