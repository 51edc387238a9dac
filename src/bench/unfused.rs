//! The unfused training step on the GPU: PyTorch's unscale, norm and scale passes as kernels
//! of their own, writing the optimizer's gradient buffer from a raw gradient of their own,
//! before the optimizer's plain step. The unscale and scale kernels are
//! `shaders/unfused.wgsl`; the norm is the step control's own scan and reduce
//! (`shaders/control.wgsl`), run as a pass of its own over the unscaled gradient. Bench-only,
//! like the touch: the fused step is what the crate offers, and this is what it is measured
//! against.

use std::ops::Range;
use std::sync::Arc;

use crate::bench::roofline::binding;
use crate::bench::timing::PassTimer;
use crate::error::{Error, Result};
use crate::gpu::pipeline::{in_order, scan_entry, storage, uniform, Addressing, Pipeline, REDUCE};
use crate::gpu::{arena_parts, partial_slots, GpuContext, GpuOptimizer};
use crate::kernels::{Kernel, Lanes, COMMON};
use crate::optim::NonFinitePolicy;
use crate::transform::GradTransform;

/// PyTorch's unscale and scale passes.
pub const UNFUSED: Kernel = Kernel {
    name: "unfused",
    preludes: &[COMMON],
    scalars: &[],
    flags: &[],
    states: &[],
    body: include_str!("../../shaders/unfused.wgsl"),
};

/// The entry points of [`UNFUSED`].
const UNSCALE: usize = 0;
const SCALE: usize = 1;

/// Compiles `shaders/unfused.wgsl`: the loss scale at 0, the raw gradient at 1, g at 2, the
/// transform (its clip factor) at 3.
pub fn pipeline(device: &wgpu::Device, workgroup_size: u32) -> Pipeline {
    let bindings = [
        uniform(0),
        storage(1, true),
        storage(2, false),
        storage(3, true),
    ];
    Pipeline::new(
        device,
        &UNFUSED,
        &bindings,
        None,
        Addressing::Arena,
        &["unscale", "scale"],
        workgroup_size,
        &[],
        crate::config::StateFormat::F32,
    )
}

/// One bound range of the gradient: its elements, lane width, and the bind groups of the
/// unscale and scale kernels and of the norm's scan.
struct Part {
    range: Range<u64>,
    lanes: Lanes,
    passes: wgpu::BindGroup,
    scan: wgpu::BindGroup,
}

impl Part {
    fn len(&self) -> u32 {
        (self.range.end - self.range.start) as u32
    }
}

/// The unfused passes over an optimizer's gradient buffer (group 0, in a single buffer the
/// optimizer owns), with the raw gradient in a buffer of their own, uploaded once: every step
/// starts from it, as every training step starts from a fresh backward pass.
pub struct GpuUnfused {
    ctx: GpuContext,
    pipeline: Pipeline,
    control: Arc<Pipeline>,
    parts: Vec<Part>,
    reduce: wgpu::BindGroup,
    transform: wgpu::BindGroup,
    /// Kept alive for the bind groups.
    _buffers: Vec<wgpu::Buffer>,
}

impl GpuUnfused {
    /// Over `optimizer`'s gradient buffer, with `raw` (the gradient before unscaling, as long
    /// as the arena) and the loss scale and clipping norm of `transform` (no clipping: a
    /// norm of ∞, so the factor is 1 and the passes still run).
    pub fn over(
        ctx: &GpuContext,
        optimizer: &GpuOptimizer,
        raw: &[f32],
        transform: &GradTransform,
    ) -> Result<Self> {
        use wgpu::util::DeviceExt;
        let arena = optimizer.whole_arena().ok_or_else(|| {
            Error::Layout(
                "the unfused step needs group 0 in single buffers the optimizer owns".into(),
            )
        })?;
        let device = ctx.device();
        let bound = arena.bound.max(4);
        let ranges = arena_parts(ctx, bound);
        // The scan's regions of partials, as the optimizer's own.
        let slots: Vec<u64> = ranges
            .iter()
            .map(|(r, lanes)| partial_slots(r.end - r.start, *lanes))
            .collect();
        let control = ctx.control_pipeline(Addressing::Arena, true)?;
        ctx.scoped("unfused passes", || {
            let pipeline = pipeline(device, ctx.workgroup_size());
            let init = |label: &str, contents: &[u8], usage: wgpu::BufferUsages| {
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents,
                    usage,
                })
            };
            let (storage, uniform) = (wgpu::BufferUsages::STORAGE, wgpu::BufferUsages::UNIFORM);
            let mut padded = raw.to_vec();
            padded.resize(bound as usize, 0.0);
            let raw = init(
                "unfused raw gradient",
                bytemuck::cast_slice(&padded),
                storage,
            );
            let scale = [transform.grad_scale, 0.0, 0.0, 0.0];
            let scale = init("unfused loss scale", bytemuck::cast_slice(&scale), uniform);
            // The norm's scan reads g already unscaled (scale 1), under skip-element (no
            // count), writing partials; reduce turns them into the factor.
            let clip_norm = transform.clip_norm.unwrap_or(f32::INFINITY);
            let norm = [1.0, clip_norm, 0.0, 1.0];
            let norm = init("unfused norm", bytemuck::cast_slice(&norm), storage);
            let header = [0, NonFinitePolicy::SkipElement as u32, 1, 0];
            let header = init(
                "unfused norm header",
                bytemuck::cast_slice(&header),
                uniform,
            );
            let status = init("unfused status", &[0; 8], storage);
            let partials = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("unfused partials"),
                size: 4 * slots.iter().sum::<u64>(),
                usage: storage,
                mapped_at_creation: false,
            });
            let control_group = |grad: wgpu::BufferBinding, partials: wgpu::BufferBinding| {
                control.bind(
                    device,
                    "bayesprop unfused norm",
                    in_order([
                        header.as_entire_buffer_binding(),
                        status.as_entire_buffer_binding(),
                        grad,
                        partials,
                    ]),
                )
            };
            let mut next = 0;
            let parts = ranges
                .into_iter()
                .zip(&slots)
                .map(|((range, lanes), &count)| {
                    let passes = pipeline.bind(
                        device,
                        "bayesprop unfused",
                        in_order([
                            scale.as_entire_buffer_binding(),
                            binding(&raw, &range),
                            binding(&arena.grad, &range),
                            norm.as_entire_buffer_binding(),
                        ]),
                    );
                    let region = wgpu::BufferBinding {
                        buffer: &partials,
                        offset: next * 4,
                        size: wgpu::BufferSize::new(count * 4),
                    };
                    next += count;
                    let scan = control_group(binding(&arena.grad, &range), region);
                    Part {
                        range,
                        lanes,
                        passes,
                        scan,
                    }
                })
                .collect();
            let reduce = control_group(
                binding(&arena.grad, &(0..4)),
                partials.as_entire_buffer_binding(),
            );
            let transform = control.bind_transform(device, &norm);
            GpuUnfused {
                ctx: ctx.clone(),
                pipeline,
                control: control.clone(),
                parts,
                reduce,
                transform,
                _buffers: vec![raw, scale, norm, header, status, partials],
            }
        })
    }

    /// Submits the unscale, norm and scale passes, one kernel after another (timed together
    /// by `timer` if given); the optimizer's step comes after. Does not wait.
    pub fn submit(&self, timer: Option<&mut PassTimer>) -> Result<()> {
        let ctx = &self.ctx;
        ctx.scoped("unfused passes", || {
            let mut encoder = ctx.device().create_command_encoder(&Default::default());
            {
                // Dispatches in one pass run in order, each seeing the last one's writes, as
                // separate kernel launches do.
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("bayesprop unfused"),
                    timestamp_writes: timer.and_then(PassTimer::pass_writes),
                });
                for part in &self.parts {
                    let groups = [&part.passes];
                    self.pipeline
                        .dispatch(&mut pass, UNSCALE, &groups, part.lanes, part.len());
                }
                for part in &self.parts {
                    let groups = [&part.scan, &self.transform];
                    self.control.dispatch(
                        &mut pass,
                        scan_entry(Addressing::Arena, true),
                        &groups,
                        part.lanes,
                        part.len(),
                    );
                }
                let groups = [&self.reduce, &self.transform];
                self.control.dispatch_one(&mut pass, REDUCE, &groups);
                for part in &self.parts {
                    let groups = [&part.passes];
                    self.pipeline
                        .dispatch(&mut pass, SCALE, &groups, part.lanes, part.len());
                }
            }
            ctx.queue().submit([encoder.finish()]);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `optim::ALL_KERNELS` (validated by tests/integration/shaders.rs) holds only the core's kernels.
    #[test]
    fn unfused_kernel_validates_at_both_widths() {
        let checked = UNFUSED.validate().unwrap();
        assert_eq!(checked.storage_bindings, 3);
    }
}
