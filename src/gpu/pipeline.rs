//! Compiled kernels that record into the caller's compute pass: a fused optimizer kernel, and
//! the per-group step control (non-finite scan, commit of the step counter).

use crate::kernels::{Kernel, CONTROL, ENTRY_POINT};

/// Elements per workgroup (the shader's `WORKGROUP_SIZE` override).
pub const WORKGROUP_SIZE: u32 = 256;

/// The pipeline and bind group layout of one kernel, built from the binding convention in
/// `shaders/fused.wgsl`: window at 0, status at 1, θ at 2, g at 3, state slots from 4.
#[derive(Debug)]
pub struct FusedPipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    max_workgroups_per_dimension: u32,
}

/// `shaders/control.wgsl`: window header at 0, status at 1, g at 2.
#[derive(Debug)]
pub struct ControlPipeline {
    scan: wgpu::ComputePipeline,
    commit: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    max_workgroups_per_dimension: u32,
}

fn uniform(binding: u32) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// Compiles `entry_point` of `kernel` against a layout of `entries`.
fn compile(
    device: &wgpu::Device,
    kernel: &Kernel,
    entries: &[wgpu::BindGroupLayoutEntry],
    entry_points: &[&str],
) -> (wgpu::BindGroupLayout, Vec<wgpu::ComputePipeline>) {
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(kernel.name),
        entries,
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
    let pipelines = entry_points
        .iter()
        .map(|entry_point| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.name),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry_point),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &[("WORKGROUP_SIZE", WORKGROUP_SIZE as f64)],
                    ..Default::default()
                },
                cache: None,
            })
        })
        .collect();
    (layout, pipelines)
}

/// A bind group whose bindings 0, 1, 2, … are `buffers` in order.
fn bind_in_order<'a>(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    label: &str,
    buffers: impl IntoIterator<Item = wgpu::BufferBinding<'a>>,
) -> wgpu::BindGroup {
    let entries: Vec<_> = buffers
        .into_iter()
        .enumerate()
        .map(|(binding, b)| wgpu::BindGroupEntry {
            binding: binding as u32,
            resource: wgpu::BindingResource::Buffer(b),
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout,
        entries: &entries,
    })
}

/// The 2-D grid that covers `n` elements: x up to the per-dimension limit, y for the rest.
fn grid(n: u32, max_per_dimension: u32) -> (u32, u32) {
    let groups = n.div_ceil(WORKGROUP_SIZE).max(1);
    let x = groups.min(max_per_dimension);
    (x, groups.div_ceil(x))
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
            uniform(0),
            storage(1, false),
            storage(2, false),
            storage(3, true),
        ];
        entries.extend((0..states).map(|k| storage(4 + k, false)));
        let (layout, mut pipelines) = compile(device, kernel, &entries, &[ENTRY_POINT]);
        FusedPipeline {
            pipeline: pipelines.remove(0),
            layout,
            max_workgroups_per_dimension: device.limits().max_compute_workgroups_per_dimension,
        }
    }

    /// A bind group over the group's window and status, and θ, g and the state ranges of one
    /// chunk.
    pub(crate) fn bind(
        &self,
        device: &wgpu::Device,
        window: wgpu::BufferBinding<'_>,
        status: wgpu::BufferBinding<'_>,
        theta: wgpu::BufferBinding<'_>,
        grad: wgpu::BufferBinding<'_>,
        state: &[wgpu::BufferBinding<'_>],
    ) -> wgpu::BindGroup {
        let buffers = [window, status, theta, grad]
            .into_iter()
            .chain(state.iter().cloned());
        bind_in_order(device, &self.layout, "bayesprop step", buffers)
    }

    /// Records the update of one chunk of `n` elements into the caller's pass.
    pub fn dispatch(&self, pass: &mut wgpu::ComputePass<'_>, bind_group: &wgpu::BindGroup, n: u32) {
        let (x, y) = grid(n, self.max_workgroups_per_dimension);
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }
}

impl ControlPipeline {
    pub(crate) fn new(device: &wgpu::Device) -> Self {
        let entries = [uniform(0), storage(1, false), storage(2, true)];
        let (layout, mut pipelines) = compile(device, &CONTROL, &entries, &["scan", "commit"]);
        let commit = pipelines.pop().expect("two entry points");
        let scan = pipelines.pop().expect("two entry points");
        ControlPipeline {
            scan,
            commit,
            layout,
            max_workgroups_per_dimension: device.limits().max_compute_workgroups_per_dimension,
        }
    }

    /// A bind group over a group's window header and status, and one chunk of its gradient.
    pub(crate) fn bind(
        &self,
        device: &wgpu::Device,
        window: wgpu::BufferBinding<'_>,
        status: wgpu::BufferBinding<'_>,
        grad: wgpu::BufferBinding<'_>,
    ) -> wgpu::BindGroup {
        bind_in_order(
            device,
            &self.layout,
            "bayesprop control",
            [window, status, grad],
        )
    }

    /// Records the count of non-finite gradients of one chunk of `n` elements.
    pub fn scan(&self, pass: &mut wgpu::ComputePass<'_>, bind_group: &wgpu::BindGroup, n: u32) {
        let (x, y) = grid(n, self.max_workgroups_per_dimension);
        pass.set_pipeline(&self.scan);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }

    /// Records the commit of a group's step: its counter advances if the step was applied.
    pub fn commit(&self, pass: &mut wgpu::ComputePass<'_>, bind_group: &wgpu::BindGroup) {
        pass.set_pipeline(&self.commit);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
}
