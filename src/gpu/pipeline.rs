//! A compiled fused kernel that records into the caller's compute pass.

use crate::kernels::{Kernel, ENTRY_POINT};

/// Elements per workgroup (the shader's `WORKGROUP_SIZE` override).
pub const WORKGROUP_SIZE: u32 = 256;

/// The pipeline and bind group layout of one kernel, built from the binding convention in
/// `shaders/common.wgsl`: uniform at 0, θ at 1, g at 2, state slots from 3.
#[derive(Debug)]
pub struct FusedPipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    max_workgroups_per_dimension: u32,
}

fn storage(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

impl FusedPipeline {
    /// Compiles `kernel` with `states` state bindings. Errors surface through the caller's
    /// error scope ([`crate::GpuContext`] wraps this).
    pub(crate) fn new(device: &wgpu::Device, kernel: &Kernel, states: u32) -> Self {
        let mut entries = vec![
            wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            },
            storage(1, false),
            storage(2, true),
        ];
        entries.extend((0..states).map(|k| storage(3 + k, false)));
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(kernel.name),
            entries: &entries,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(kernel.name),
            source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(kernel.name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(kernel.name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(ENTRY_POINT),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &[("WORKGROUP_SIZE", WORKGROUP_SIZE as f64)],
                ..Default::default()
            },
            cache: None,
        });
        FusedPipeline {
            pipeline,
            layout,
            max_workgroups_per_dimension: device.limits().max_compute_workgroups_per_dimension,
        }
    }

    /// A bind group over the uniform block, θ, g and the state ranges, all of one chunk.
    pub(crate) fn bind(
        &self,
        device: &wgpu::Device,
        uniforms: &wgpu::Buffer,
        theta: wgpu::BufferBinding<'_>,
        grad: wgpu::BufferBinding<'_>,
        state: &[wgpu::BufferBinding<'_>],
    ) -> wgpu::BindGroup {
        let mut entries = vec![
            wgpu::BindGroupEntry {
                binding: 0,
                resource: uniforms.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: wgpu::BindingResource::Buffer(theta),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: wgpu::BindingResource::Buffer(grad),
            },
        ];
        entries.extend(state.iter().enumerate().map(|(k, b)| wgpu::BindGroupEntry {
            binding: 3 + k as u32,
            resource: wgpu::BindingResource::Buffer(b.clone()),
        }));
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("bayesprop step"),
            layout: &self.layout,
            entries: &entries,
        })
    }

    /// The 2-D grid that covers `n` elements: x up to the per-dimension limit, y for the rest.
    pub fn grid(&self, n: u32) -> (u32, u32) {
        let groups = n.div_ceil(WORKGROUP_SIZE).max(1);
        let x = groups.min(self.max_workgroups_per_dimension);
        (x, groups.div_ceil(x))
    }

    /// Records one step of `n` elements into the caller's pass.
    pub fn dispatch(&self, pass: &mut wgpu::ComputePass<'_>, bind_group: &wgpu::BindGroup, n: u32) {
        let (x, y) = self.grid(n);
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }
}
