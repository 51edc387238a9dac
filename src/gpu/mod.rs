//! The wgpu host layer: device selection and errors, compiled kernels, parameter groups on
//! the device, and `GpuOptimizer`.

mod buffers;
pub mod context;
mod group;
pub mod memory;
pub mod optimizer;
pub(crate) mod pipeline;
mod segments;
mod tracker;

pub use buffers::{BufferRange, TensorBuffers};
pub use context::{
    default_workgroup_size, enumerate_adapters, GpuContext, GpuOptions, ADAPTER_ENV, BACKEND_ENV,
    NO_ADAPTER_HELP, SCALAR_ONLY_ENV, WORKGROUP_SIZE_ENV,
};
#[cfg(feature = "bench")]
pub(crate) use group::{arena_parts, partial_slots};
pub use memory::{measure_allocations, Allocated};
pub use optimizer::{GpuOptimizer, StepShape};
