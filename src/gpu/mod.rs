//! The wgpu host layer: device selection and errors, compiled kernels, parameter groups on
//! the device, and `GpuOptimizer`.

pub mod context;
mod group;
pub mod optimizer;
pub mod pipeline;
mod segments;
mod tracker;

pub use context::{
    default_workgroup_size, enumerate_adapters, GpuContext, GpuOptions, ADAPTER_ENV, BACKEND_ENV,
    NO_ADAPTER_HELP, SCALAR_ONLY_ENV, WORKGROUP_SIZE_ENV,
};
#[cfg(feature = "bench")]
pub(crate) use group::{arena_parts, partial_slots};
pub use group::{binding_chunks, parts_of, BufferSlice, ExternalArena, WholeArena, NORM_CHUNK};
pub use optimizer::GpuOptimizer;
pub use pipeline::{Pipeline, WORKGROUP_SIZE};
pub use segments::TensorBuffers;
