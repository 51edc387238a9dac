//! The wgpu host layer: device selection and errors, compiled kernels, and `GpuOptimizer`.

pub mod context;
pub mod optimizer;
pub mod pipeline;
mod tracker;

pub use context::{
    enumerate_adapters, GpuContext, GpuOptions, ADAPTER_ENV, BACKEND_ENV, NO_ADAPTER_HELP,
};
pub use optimizer::GpuOptimizer;
pub use pipeline::{FusedPipeline, WORKGROUP_SIZE};
