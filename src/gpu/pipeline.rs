//! Compiled kernels that record into the caller's compute pass: a fused optimizer kernel, the
//! per-group step control (non-finite scan, commit of the step counter); `bench` builds its
//! roofline kernel from the same pieces. Each is compiled at both lane widths (see [`Lanes`]): vec4 for the body
//! of a vector, scalar for a tail.

use crate::kernels::{Kernel, Lanes, CONTROL, ENTRY_POINT};

/// Invocations per workgroup when the context names none (the shaders' `WORKGROUP_SIZE`
/// override); see [`crate::gpu::context::default_workgroup_size`].
pub const WORKGROUP_SIZE: u32 = 256;

/// How a dispatch is shaped: the device's per-dimension limit and the workgroup size.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    max_workgroups_per_dimension: u32,
    workgroup_size: u32,
}

impl Shape {
    pub(crate) fn of(device: &wgpu::Device, workgroup_size: u32) -> Self {
        Shape {
            max_workgroups_per_dimension: device.limits().max_compute_workgroups_per_dimension,
            workgroup_size,
        }
    }

    /// The 2-D grid that covers `invocations`: x up to the per-dimension limit, y for the rest.
    fn grid(&self, invocations: u32) -> (u32, u32) {
        let groups = invocations.div_ceil(self.workgroup_size).max(1);
        let x = groups.min(self.max_workgroups_per_dimension);
        (x, groups.div_ceil(x))
    }

    /// Records `pipelines` at width `lanes` over `n` elements (one invocation per lane group).
    pub(crate) fn dispatch(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        pipelines: &ByWidth,
        lanes: Lanes,
        bind_group: &wgpu::BindGroup,
        n: u32,
    ) {
        let (x, y) = self.grid(n / lanes.width());
        pass.set_pipeline(pipelines.get(lanes));
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }
}

/// One pipeline per lane width, in [`Lanes::ALL`] order.
#[derive(Debug)]
pub(crate) struct ByWidth([wgpu::ComputePipeline; 2]);

impl ByWidth {
    fn get(&self, lanes: Lanes) -> &wgpu::ComputePipeline {
        &self.0[match lanes {
            Lanes::Four => 0,
            Lanes::One => 1,
        }]
    }
}

/// The pipelines and bind group layout of one kernel, built from the binding convention in
/// `shaders/fused.wgsl`: window at 0, status at 1, θ at 2, g at 3, state slots from 4.
#[derive(Debug)]
pub struct FusedPipeline {
    pipelines: ByWidth,
    layout: wgpu::BindGroupLayout,
    shape: Shape,
}

/// `shaders/control.wgsl`: window header at 0, status at 1, g at 2.
#[derive(Debug)]
pub struct ControlPipeline {
    scan: ByWidth,
    commit: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    shape: Shape,
}

pub(crate) fn uniform(binding: u32) -> wgpu::BindGroupLayoutEntry {
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

/// Compiles each of `entry_points` of `kernel` at each lane width against a layout of
/// `entries`: `pipelines[entry point][width]`, widths in [`Lanes::ALL`] order.
pub(crate) fn compile(
    device: &wgpu::Device,
    kernel: &Kernel,
    entries: &[wgpu::BindGroupLayoutEntry],
    entry_points: &[&str],
    constants: &[(&str, f64)],
) -> (wgpu::BindGroupLayout, Vec<ByWidth>) {
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(kernel.name),
        entries,
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(kernel.name),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let modules = Lanes::ALL.map(|lanes| {
        device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(kernel.name),
            source: wgpu::ShaderSource::Wgsl(kernel.source_for(lanes).into()),
        })
    });
    let pipelines = entry_points
        .iter()
        .map(|entry_point| {
            ByWidth(modules.each_ref().map(|module| {
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(kernel.name),
                    layout: Some(&pipeline_layout),
                    module,
                    entry_point: Some(entry_point),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants,
                        ..Default::default()
                    },
                    cache: None,
                })
            }))
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

pub(crate) fn storage(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
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
    pub(crate) fn new(
        device: &wgpu::Device,
        kernel: &Kernel,
        states: u32,
        workgroup_size: u32,
    ) -> Self {
        let mut entries = vec![
            uniform(0),
            storage(1, false),
            storage(2, false),
            storage(3, true),
        ];
        entries.extend((0..states).map(|k| storage(4 + k, false)));
        let constants = [("WORKGROUP_SIZE", workgroup_size as f64)];
        let (layout, mut pipelines) = compile(device, kernel, &entries, &[ENTRY_POINT], &constants);
        FusedPipeline {
            pipelines: pipelines.remove(0),
            layout,
            shape: Shape::of(device, workgroup_size),
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

    /// Records the update of one bound range of `n` elements into the caller's pass, at width
    /// `lanes` (with [`Lanes::Four`], `n` is a multiple of 4).
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

impl ControlPipeline {
    pub(crate) fn new(device: &wgpu::Device, workgroup_size: u32) -> Self {
        let entries = [uniform(0), storage(1, false), storage(2, true)];
        let constants = [("WORKGROUP_SIZE", workgroup_size as f64)];
        let (layout, mut pipelines) =
            compile(device, &CONTROL, &entries, &["scan", "commit"], &constants);
        let [commit, _] = pipelines.pop().expect("two entry points").0;
        let scan = pipelines.pop().expect("two entry points");
        ControlPipeline {
            scan,
            commit,
            layout,
            shape: Shape::of(device, workgroup_size),
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

    /// Records the count of non-finite gradients of one bound range of `n` elements.
    pub fn scan(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        bind_group: &wgpu::BindGroup,
        lanes: Lanes,
        n: u32,
    ) {
        self.shape.dispatch(pass, &self.scan, lanes, bind_group, n);
    }

    /// Records the commit of a group's step: its counter advances if the step was applied.
    pub fn commit(&self, pass: &mut wgpu::ComputePass<'_>, bind_group: &wgpu::BindGroup) {
        pass.set_pipeline(&self.commit);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
}
