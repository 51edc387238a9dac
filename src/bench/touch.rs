//! The roofline kernel (`shaders/touch.wgsl`): reads and writes the arrays of an optimizer
//! with `STATES` state vectors, with trivial arithmetic. Bench-only, so it lives here and not
//! among the optimizer kernels.

use crate::gpu::pipeline::{compile, storage, uniform, ByWidth, Shape};
use crate::kernels::{Kernel, Lanes, COMMON, ENTRY_POINT};

/// The roofline of a fused step: reads and writes the arrays of an optimizer with `STATES`
/// state vectors, with trivial arithmetic.
pub const TOUCH: Kernel = Kernel {
    name: "touch",
    preludes: &[COMMON],
    body: include_str!("../../shaders/touch.wgsl"),
};

/// `shaders/touch.wgsl` with `states` state vectors: uniform at 0, θ at 2, g at 3, states from
/// 4 (up to [`TouchPipeline::MAX_STATES`]).
#[derive(Debug)]
pub struct TouchPipeline {
    pipelines: ByWidth,
    layout: wgpu::BindGroupLayout,
    shape: Shape,
}

impl TouchPipeline {
    /// State vectors the touch kernel can stand in for.
    pub const MAX_STATES: u32 = 4;

    /// Compiles the touch kernel for `states` state vectors (at most [`Self::MAX_STATES`]).
    pub fn new(device: &wgpu::Device, states: u32, workgroup_size: u32) -> Self {
        assert!(states <= Self::MAX_STATES, "touch: {states} state vectors");
        let mut entries = vec![uniform(0), storage(2, false), storage(3, true)];
        entries.extend((0..Self::MAX_STATES).map(|k| storage(4 + k, false)));
        let constants = [
            ("WORKGROUP_SIZE", workgroup_size as f64),
            ("STATES", states as f64),
        ];
        let (layout, mut pipelines) = compile(device, &TOUCH, &entries, &[ENTRY_POINT], &constants);
        TouchPipeline {
            pipelines: pipelines.remove(0),
            layout,
            shape: Shape::of(device, workgroup_size),
        }
    }

    /// A bind group over the uniform, θ, g and [`Self::MAX_STATES`] state ranges (unused
    /// ones may be any small buffer).
    pub fn bind(
        &self,
        device: &wgpu::Device,
        uniform: wgpu::BufferBinding<'_>,
        theta: wgpu::BufferBinding<'_>,
        grad: wgpu::BufferBinding<'_>,
        state: &[wgpu::BufferBinding<'_>],
    ) -> wgpu::BindGroup {
        let entries: Vec<_> = [(0, uniform), (2, theta), (3, grad)]
            .into_iter()
            .chain((4..).zip(state.iter().cloned()))
            .map(|(binding, b)| wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::Buffer(b),
            })
            .collect();
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("bayesprop touch"),
            layout: &self.layout,
            entries: &entries,
        })
    }

    /// Records the touch of one bound range of `n` elements.
    pub fn dispatch(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        bind_group: &wgpu::BindGroup,
        lanes: Lanes,
        n: u32,
    ) {
        self.shape
            .dispatch(pass, &self.pipelines, lanes, bind_group, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `kernels::ALL` (validated by tests/shaders.rs) holds only the core's kernels.
    #[test]
    fn touch_kernel_validates_at_both_widths() {
        let checked = TOUCH.validate().unwrap();
        assert_eq!(checked.storage_bindings, 2 + TouchPipeline::MAX_STATES);
    }
}
