//! The library's test helpers, and the runner of the binary.
#![allow(dead_code, unused_imports)]

#[path = "../../../tests/common/mod.rs"]
mod library;

pub mod cli;

pub use library::*;
