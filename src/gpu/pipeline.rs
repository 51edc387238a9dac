//! Compiled kernels that record into the caller's compute pass, all one type ([`Pipeline`]):
//! each fused optimizer kernel, the per-group step control (non-finite scan, commit of the
//! step counter), and `bench`'s roofline kernel. Each entry point is compiled at both lane
//! widths (see [`Lanes`]): vec4 for the body of a vector, scalar for a tail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::StateFormat;
use crate::kernels::{
    held_bindings, q8_scales_binding, Kernel, Lanes, CONTROL, ENTRY_POINT, Q8_COUNT_ENTRY_POINT,
    Q8_ENTRY_POINT, SEGMENTS_ENTRY_POINT,
};

/// Invocations per workgroup when the context names none (the shaders' `WORKGROUP_SIZE`
/// override); see [`crate::gpu::context::default_workgroup_size`].
pub const WORKGROUP_SIZE: u32 = 256;

/// How a dispatch is shaped: the device's per-dimension limit and the workgroup size.
#[derive(Clone, Copy, Debug)]
struct Shape {
    max_workgroups_per_dimension: u32,
    workgroup_size: u32,
}

impl Shape {
    fn of(device: &wgpu::Device, workgroup_size: u32) -> Self {
        Shape {
            max_workgroups_per_dimension: device.limits().max_compute_workgroups_per_dimension,
            workgroup_size,
        }
    }

    /// The 2-D grid of `groups` workgroups: as few rows as the per-dimension limit allows,
    /// then rows as short as covers them, so that fewer than y workgroups are empty (x at the
    /// limit and y = ⌈groups / x⌉ launched nearly twice the work just past the limit).
    fn grid(&self, groups: u32) -> (u32, u32) {
        let groups = groups.max(1);
        let y = groups.div_ceil(self.max_workgroups_per_dimension);
        (groups.div_ceil(y), y)
    }

    /// Records `pipelines` at width `lanes` over `n` elements, `span` lane groups per
    /// invocation, with `bind_groups` at groups 0, 1, ….
    fn dispatch(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        pipelines: &ByWidth,
        (lanes, span): (Lanes, u32),
        bind_groups: &[&wgpu::BindGroup],
        n: u32,
    ) {
        let invocations = (n / lanes.width()).div_ceil(span);
        let workgroups = invocations.div_ceil(self.workgroup_size);
        self.launch(pass, pipelines.get(lanes), bind_groups, workgroups);
    }

    /// Records `pipeline` with `bind_groups` at groups 0, 1, … over `workgroups` workgroups
    /// of the balanced grid.
    fn launch(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        pipeline: &wgpu::ComputePipeline,
        bind_groups: &[&wgpu::BindGroup],
        workgroups: u32,
    ) {
        let (x, y) = self.grid(workgroups);
        pass.set_pipeline(pipeline);
        set_bind_groups(pass, bind_groups);
        pass.dispatch_workgroups(x, y, 1);
    }

    /// Records `pipelines` at width `lanes` over a segment table of `rows` rows, a workgroup
    /// per row, or several where they are narrower than a row (`segments` in
    /// shaders/fused.wgsl).
    fn dispatch_rows(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        pipelines: &ByWidth,
        lanes: Lanes,
        bind_groups: &[&wgpu::BindGroup],
        rows: u32,
    ) {
        let per_row = ROW_LANES.div_ceil(self.workgroup_size);
        self.launch(pass, pipelines.get(lanes), bind_groups, rows * per_row);
    }
}

fn set_bind_groups(pass: &mut wgpu::ComputePass<'_>, bind_groups: &[&wgpu::BindGroup]) {
    for (index, group) in (0..).zip(bind_groups) {
        pass.set_bind_group(index, *group, &[]);
    }
}

/// One pipeline per lane width, in [`Lanes::ALL`] order.
#[derive(Debug)]
pub(crate) struct ByWidth([wgpu::ComputePipeline; 2]);

impl ByWidth {
    /// A `q8` variant's entry points: the count before the step (`count`), or the step, one
    /// invocation per q8 block.
    fn q8(&self, count: bool) -> &wgpu::ComputePipeline {
        &self.0[usize::from(!count)]
    }

    fn get(&self, lanes: Lanes) -> &wgpu::ComputePipeline {
        &self.0[match lanes {
            Lanes::Four => 0,
            Lanes::One => 1,
        }]
    }
}

/// Each entry point of one kernel at both lane widths, its bind group layout and its dispatch
/// shape; for the fused and control kernels also the layout of group 1, the step's gradient
/// transform.
#[derive(Debug)]
pub struct Pipeline {
    /// In the order of the entry points given to [`Pipeline::new`].
    entries: Vec<ByWidth>,
    /// A fused kernel's one entry point is compiled per set of override values instead
    /// ([`Pipeline::variant`]), from these.
    modules: [wgpu::ShaderModule; 2],
    pipeline_layout: wgpu::PipelineLayout,
    name: &'static str,
    specialized: Option<Specialized>,
    layout: wgpu::BindGroupLayout,
    transform_layout: Option<wgpu::BindGroupLayout>,
    /// Group 2 under [`Addressing::Segments`]: the segment table.
    table_layout: Option<wgpu::BindGroupLayout>,
    shape: Shape,
}

/// What a fused kernel's variants are compiled from, and those compiled so far.
#[derive(Debug)]
struct Specialized {
    /// Held in `q8`: a variant is [`ByWidth::q8`]'s pair of entry points at width 1.
    q8: bool,
    entry_point: &'static str,
    workgroup_size: u32,
    /// The overrides a [`Specialization`] gives values to, in its order.
    names: Vec<String>,
    variants: Mutex<HashMap<Specialization, Arc<ByWidth>>>,
}

/// The values of a fused kernel's overrides for one step, in the order POLICY, UNSCALE, CLIP
/// (`shaders/fused.wgsl`), then the kernel's flags (see [`crate::kernels::Flag`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Specialization(pub Vec<u32>);

/// Where a kernel's invocations find their elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Addressing {
    /// Element i of the bound range of θ, g and every state: the optimizer's own arena.
    Arena,
    /// One workgroup per row of a segment table (group 2): tensors at any element offset in
    /// the caller's buffers (vec4 rows where θ, g and the state are aligned alike).
    Segments,
}

/// The step control's entry points (shaders/control.wgsl) under [`Addressing::Arena`], in the
/// order [`Pipeline::control`] compiles them: [`SCAN`], [`REDUCE`], [`COMMIT`], [`COUNT`].
const CONTROL_ENTRIES: [&str; 4] = ["scan", "reduce", "commit", "count"];
pub(crate) const SCAN: usize = 0;
pub(crate) const REDUCE: usize = 1;
pub(crate) const COMMIT: usize = 2;
pub(crate) const COUNT: usize = 3;
/// The same under [`Addressing::Segments`]: [`SCAN_SEGMENTS`], [`COUNT_SEGMENTS`].
const CONTROL_SEGMENTS_ENTRIES: [&str; 2] = ["scan_segments", "count_segments"];
pub(crate) const SCAN_SEGMENTS: usize = 0;
pub(crate) const COUNT_SEGMENTS: usize = 1;

/// Lane groups that one invocation of [`COUNT`] and of [`COUNT_SEGMENTS`] checks (rows of
/// the latter's table are merged to hold as many; `COUNT_SPAN` in shaders/control.wgsl): on llvmpipe
/// a count of one lane group per invocation cost more than its read of g
/// (docs/performance.md).
pub(crate) const COUNT_SPAN: u32 = 8;

/// The scan's entry point: with the norm (`scan`: workgroups halve their squares in shared
/// memory) or with the non-finite count alone (`count`: no barrier, see
/// shaders/control.wgsl).
pub(crate) fn scan_entry(addressing: Addressing, norm: bool) -> usize {
    match (addressing, norm) {
        (Addressing::Arena, true) => SCAN,
        (Addressing::Arena, false) => COUNT,
        (Addressing::Segments, true) => SCAN_SEGMENTS,
        (Addressing::Segments, false) => COUNT_SEGMENTS,
    }
}

/// Invocations per workgroup of `shaders/control.wgsl`, whatever the context's size: its
/// scan and reduce sum in the fixed order of [`crate::transform`], 256 lanes wide.
pub const NORM_LANES: u32 = crate::transform::REDUCE_LANES as u32;

/// Lane groups per row of a segment table (`ROW_LANES` in shaders/common.wgsl).
pub(crate) const ROW_LANES: u32 = NORM_LANES;

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

/// A bind group of one whole buffer at binding 0.
fn bind_whole(
    device: &wgpu::Device,
    label: &str,
    layout: &wgpu::BindGroupLayout,
    buffer: &wgpu::Buffer,
) -> wgpu::BindGroup {
    bind_buffers(
        device,
        label,
        layout,
        in_order([buffer.as_entire_buffer_binding()]),
    )
}

fn bind_buffers<'a>(
    device: &wgpu::Device,
    label: &str,
    layout: &wgpu::BindGroupLayout,
    buffers: impl IntoIterator<Item = (u32, wgpu::BufferBinding<'a>)>,
) -> wgpu::BindGroup {
    let entries: Vec<_> = buffers
        .into_iter()
        .map(|(binding, b)| wgpu::BindGroupEntry {
            binding,
            resource: wgpu::BindingResource::Buffer(b),
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout,
        entries: &entries,
    })
}

/// `buffers` at bindings 0, 1, 2, … in order.
pub fn in_order<'a>(
    buffers: impl IntoIterator<Item = wgpu::BufferBinding<'a>>,
) -> impl Iterator<Item = (u32, wgpu::BufferBinding<'a>)> {
    (0..).zip(buffers)
}

impl Pipeline {
    /// Compiles each of `entry_points` of `kernel` at each lane width against a layout of
    /// `bindings` (and, where `transform_read_only` says how, the step's transform at group 1,
    /// binding 0; under [`Addressing::Segments`] the segment table at group 2), with the
    /// `WORKGROUP_SIZE` override and `constants`. Errors surface through the caller's error
    /// scope ([`crate::GpuContext`] wraps this).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        device: &wgpu::Device,
        kernel: &Kernel,
        bindings: &[wgpu::BindGroupLayoutEntry],
        transform_read_only: Option<bool>,
        addressing: Addressing,
        entry_points: &[&str],
        workgroup_size: u32,
        constants: &[(&str, f64)],
        format: StateFormat,
    ) -> Self {
        let constants: Vec<_> = [("WORKGROUP_SIZE", workgroup_size as f64)]
            .into_iter()
            .chain(constants.iter().copied())
            .collect();
        let layout_of = |entries: &[wgpu::BindGroupLayoutEntry]| {
            device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(kernel.name),
                entries,
            })
        };
        let layout = layout_of(bindings);
        let transform_layout =
            transform_read_only.map(|read_only| layout_of(&[storage(0, read_only)]));
        let table_layout =
            (addressing == Addressing::Segments).then(|| layout_of(&[storage(0, true)]));
        let groups: Vec<_> = [
            Some(&layout),
            transform_layout.as_ref(),
            table_layout.as_ref(),
        ]
        .into_iter()
        .take_while(Option::is_some)
        .collect();
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(kernel.name),
            bind_group_layouts: &groups,
            immediate_size: 0,
        });
        let modules = Lanes::ALL.map(|lanes| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel.name),
                source: wgpu::ShaderSource::Wgsl(kernel.source_in(lanes, format).into()),
            })
        });
        let entries = entry_points
            .iter()
            .map(|entry_point| {
                compile(
                    device,
                    kernel.name,
                    &modules,
                    &pipeline_layout,
                    entry_point,
                    &constants,
                )
            })
            .collect();
        Pipeline {
            entries,
            modules,
            pipeline_layout,
            name: kernel.name,
            specialized: None,
            layout,
            transform_layout,
            table_layout,
            shape: Shape::of(device, workgroup_size),
        }
    }

    /// A fused optimizer kernel with `states` state bindings held in `format`, by the binding
    /// convention of `shaders/fused.wgsl`: window at 0, status at 1, θ at 2, g at 3, state
    /// slots from 4 (then, for a held format, the dispatch's `Held` uniform and the group's
    /// tensor table: [`held_bindings`]); the transform at group 1. Nothing is compiled until
    /// a step asks for a variant.
    pub(crate) fn fused(
        device: &wgpu::Device,
        kernel: &Kernel,
        states: u32,
        workgroup_size: u32,
        addressing: Addressing,
        format: StateFormat,
    ) -> Self {
        let mut bindings = vec![
            uniform(0),
            storage(1, false),
            storage(2, false),
            // Read only, but declared read_write: see shaders/fused.wgsl.
            storage(3, false),
        ];
        bindings.extend((0..states).map(|k| storage(4 + k, false)));
        if format != StateFormat::F32 {
            let (held, tensors) = held_bindings(states as usize);
            bindings.extend([uniform(held as u32), storage(tensors as u32, true)]);
        }
        if format == StateFormat::Q8 {
            bindings.push(storage(q8_scales_binding(states as usize) as u32, false));
        }
        let entry_point = match addressing {
            Addressing::Arena => ENTRY_POINT,
            Addressing::Segments => SEGMENTS_ENTRY_POINT,
        };
        let mut pipeline = Self::new(
            device,
            kernel,
            &bindings,
            Some(true),
            addressing,
            &[],
            workgroup_size,
            &[],
            format,
        );
        let names = ["POLICY", "UNSCALE", "CLIP"]
            .map(String::from)
            .into_iter()
            .chain(kernel.flags.iter().map(|f| f.constant()))
            .collect();
        pipeline.specialized = Some(Specialized {
            q8: format == StateFormat::Q8,
            entry_point,
            workgroup_size,
            names,
            variants: Mutex::new(HashMap::new()),
        });
        pipeline
    }

    /// The fused kernel's variant for `values` if it has been compiled.
    pub(crate) fn compiled_variant(&self, values: &Specialization) -> Option<Arc<ByWidth>> {
        let specialized = self.specialized.as_ref().expect("a fused pipeline");
        specialized.variants.lock().unwrap().get(values).cloned()
    }

    /// Compiles the fused kernel's variant for `values` and keeps it. Errors surface through
    /// the caller's error scope ([`crate::GpuContext`] wraps this).
    pub(crate) fn compile_variant(
        &self,
        device: &wgpu::Device,
        values: &Specialization,
    ) -> Arc<ByWidth> {
        let specialized = self.specialized.as_ref().expect("a fused pipeline");
        assert_eq!(specialized.names.len(), values.0.len(), "{}", self.name);
        let constants: Vec<(&str, f64)> = [("WORKGROUP_SIZE", specialized.workgroup_size)]
            .into_iter()
            .chain(
                specialized
                    .names
                    .iter()
                    .map(String::as_str)
                    .zip(values.0.iter().copied()),
            )
            .map(|(name, value)| (name, f64::from(value)))
            .collect();
        let variant = Arc::new(match specialized.q8 {
            // The module is width 1 either way (`Kernel::source_in`); compile it once per
            // entry point.
            true => ByWidth([Q8_COUNT_ENTRY_POINT, Q8_ENTRY_POINT].map(|entry_point| {
                compile_one(
                    device,
                    self.name,
                    &self.modules[1],
                    &self.pipeline_layout,
                    entry_point,
                    &constants,
                )
            })),
            false => compile(
                device,
                self.name,
                &self.modules,
                &self.pipeline_layout,
                specialized.entry_point,
                &constants,
            ),
        });
        specialized
            .variants
            .lock()
            .unwrap()
            .insert(values.clone(), variant.clone());
        variant
    }

    /// `shaders/control.wgsl`: window header at 0, status at 1, g at 2, the partial sums of
    /// squares at 3, the transform at group 1; entry points [`SCAN`], [`REDUCE`], [`COMMIT`] and
    /// [`COUNT`] (or [`SCAN_SEGMENTS`] and [`COUNT_SEGMENTS`]). Always [`NORM_LANES`] invocations
    /// per workgroup: the norm's order needs it. The scan divides g by the scale only with
    /// `unscale` (the `UNSCALE` override).
    pub(crate) fn control(device: &wgpu::Device, addressing: Addressing, unscale: bool) -> Self {
        let bindings = [
            uniform(0),
            storage(1, false),
            storage(2, true),
            storage(3, false),
        ];
        let entries: &[&str] = match addressing {
            Addressing::Arena => &CONTROL_ENTRIES,
            Addressing::Segments => &CONTROL_SEGMENTS_ENTRIES,
        };
        Self::new(
            device,
            &CONTROL,
            &bindings,
            Some(false),
            addressing,
            entries,
            NORM_LANES,
            &[
                ("UNSCALE", f64::from(u8::from(unscale))),
                ("COUNT_SPAN", f64::from(COUNT_SPAN)),
            ],
            StateFormat::F32,
        )
    }

    /// The bind group of the optimizer's transform buffer (group 1).
    pub(crate) fn bind_transform(
        &self,
        device: &wgpu::Device,
        transform: &wgpu::Buffer,
    ) -> wgpu::BindGroup {
        let layout = self.transform_layout.as_ref();
        bind_whole(
            device,
            "bayesprop transform",
            layout.expect("a fused or control pipeline"),
            transform,
        )
    }

    /// The bind group of a segment table (group 2; see [`Addressing::Segments`]).
    pub(crate) fn bind_table(
        &self,
        device: &wgpu::Device,
        table: &wgpu::Buffer,
    ) -> wgpu::BindGroup {
        let layout = self.table_layout.as_ref().expect("a segments pipeline");
        bind_whole(device, "bayesprop segment table", layout, table)
    }

    /// Records a fused kernel's variant at width `lanes` over a segment table of `rows` rows,
    /// one workgroup per row (or several, when narrower), with `bind_groups` at groups 0, 1, 2.
    pub(crate) fn dispatch_rows_of(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        pipelines: &ByWidth,
        bind_groups: &[&wgpu::BindGroup],
        lanes: Lanes,
        rows: u32,
    ) {
        self.shape
            .dispatch_rows(pass, pipelines, lanes, bind_groups, rows);
    }

    /// A bind group of `buffers` at their bindings (see [`in_order`]).
    pub fn bind<'a>(
        &self,
        device: &wgpu::Device,
        label: &str,
        buffers: impl IntoIterator<Item = (u32, wgpu::BufferBinding<'a>)>,
    ) -> wgpu::BindGroup {
        bind_buffers(device, label, &self.layout, buffers)
    }

    /// Records entry point `entry` over one bound range of `n` elements into the caller's
    /// pass, at width `lanes` (with [`Lanes::Four`], `n` is a multiple of 4), with
    /// `bind_groups` at groups 0, 1, … (the transform's second, for the fused and control
    /// kernels). The bench's rooflines and unfused step record with it.
    #[cfg(feature = "bench")]
    pub fn dispatch(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        entry: usize,
        bind_groups: &[&wgpu::BindGroup],
        lanes: Lanes,
        n: u32,
    ) {
        self.shape
            .dispatch(pass, &self.entries[entry], (lanes, 1), bind_groups, n);
    }

    /// Records a group's scan ([`scan_entry`]) at width `lanes`, with `bind_groups` at groups
    /// 0, 1 (and the segment table at 2): over `n` elements of the arena, or over a segment
    /// table of `n` rows, one workgroup each. In the arena a count covers [`COUNT_SPAN`] lane
    /// groups per invocation; a count's segment table merges up to as many rows into one
    /// (`segments::count_rows`).
    pub(crate) fn dispatch_scan(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        (addressing, norm): (Addressing, bool),
        bind_groups: &[&wgpu::BindGroup],
        lanes: Lanes,
        n: u32,
    ) {
        let pipelines = &self.entries[scan_entry(addressing, norm)];
        match addressing {
            Addressing::Arena => {
                let span = if norm { 1 } else { COUNT_SPAN };
                self.shape
                    .dispatch(pass, pipelines, (lanes, span), bind_groups, n)
            }
            Addressing::Segments => {
                self.shape
                    .dispatch_rows(pass, pipelines, lanes, bind_groups, n)
            }
        }
    }

    /// Records a `q8` variant's step (or, with `count`, its count) over `blocks` q8 blocks,
    /// one invocation each.
    pub(crate) fn dispatch_q8(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        variant: &ByWidth,
        count: bool,
        bind_groups: &[&wgpu::BindGroup],
        blocks: u32,
    ) {
        let workgroups = blocks.div_ceil(self.shape.workgroup_size);
        self.shape
            .launch(pass, variant.q8(count), bind_groups, workgroups);
    }

    /// [`Pipeline::dispatch`] of a fused kernel's variant.
    pub(crate) fn dispatch_of(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        pipelines: &ByWidth,
        bind_groups: &[&wgpu::BindGroup],
        lanes: Lanes,
        n: u32,
    ) {
        self.shape
            .dispatch(pass, pipelines, (lanes, 1), bind_groups, n);
    }

    /// Records one workgroup of entry point `entry` (the norm's reduce, the commit of a
    /// group's step).
    pub fn dispatch_one(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        entry: usize,
        bind_groups: &[&wgpu::BindGroup],
    ) {
        pass.set_pipeline(self.entries[entry].get(Lanes::Four));
        set_bind_groups(pass, bind_groups);
        pass.dispatch_workgroups(1, 1, 1);
    }
}

/// `entry_point` of `modules` at each width, with `constants`.
fn compile(
    device: &wgpu::Device,
    label: &str,
    modules: &[wgpu::ShaderModule; 2],
    layout: &wgpu::PipelineLayout,
    entry_point: &str,
    constants: &[(&str, f64)],
) -> ByWidth {
    ByWidth(
        modules
            .each_ref()
            .map(|module| compile_one(device, label, module, layout, entry_point, constants)),
    )
}

/// One entry point of one module.
fn compile_one(
    device: &wgpu::Device,
    label: &str,
    module: &wgpu::ShaderModule,
    layout: &wgpu::PipelineLayout,
    entry_point: &str,
    constants: &[(&str, f64)],
) -> wgpu::ComputePipeline {
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: Some(layout),
        module,
        entry_point: Some(entry_point),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants,
            ..Default::default()
        },
        cache: None,
    })
}

#[cfg(test)]
mod tests {
    use super::Shape;

    #[test]
    fn the_grid_covers_every_workgroup_and_wastes_less_than_a_row() {
        let shape = Shape {
            max_workgroups_per_dimension: 65_535,
            workgroup_size: 256,
        };
        for groups in [
            1u32, 2, 65_534, 65_535, 65_536, 65_537, 131_070, 131_071, 262_144,
        ] {
            let (x, y) = shape.grid(groups);
            assert!(x <= 65_535 && y <= 65_535, "{groups}: {x} × {y}");
            assert!(x * y >= groups, "{groups}: {x} × {y} does not cover it");
            assert!(
                x * y - groups < y,
                "{groups}: {x} × {y} wastes a row or more"
            );
        }
        // Just past the limit: 2 rows of 32,768, not 2 rows of 65,535.
        assert_eq!(shape.grid(65_536), (32_768, 2));
    }
}
