//! The wgpu host layer: device selection and errors, compiled kernels, parameter groups on
//! the device, and `GpuOptimizer`.

pub mod context;
mod group;
pub mod optimizer;
pub mod pipeline;
mod tracker;

pub use context::{
    enumerate_adapters, GpuContext, GpuOptions, ADAPTER_ENV, BACKEND_ENV, NO_ADAPTER_HELP,
};
pub use group::{BufferSlice, ExternalArena};
pub use optimizer::GpuOptimizer;
pub use pipeline::{ControlPipeline, FusedPipeline, WORKGROUP_SIZE};
