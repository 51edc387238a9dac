//! One parameter group on the device: its arenas, split into buffers and bindings the device
//! allows, and the dispatches of its step.

use std::ops::Range;
use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::buffers::{BufferRange, TensorBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::pipeline::{
    in_order, scan_entry, Addressing, Pipeline, COMMIT, NORM_LANES, REDUCE,
};
use crate::gpu::segments::{self, Placed, RunPlan};
use crate::gpu::tracker::STATUS_BYTES;
use crate::kernels::{Lanes, WINDOW, WINDOW_HEADER_BYTES};
use crate::layout::{GroupSpec, Stored, TensorSpec};
use crate::transform::{NORM_BLOCK, PARTIAL_ALIGN};

/// A group's arena in single buffers the optimizer owns (see
/// [`crate::GpuOptimizer::whole_arena`]): handles for callers that run their own kernels over
/// the optimizer's arrays, such as `bench`'s roofline.
#[derive(Clone, Debug)]
#[cfg(feature = "bench")]
pub(crate) struct WholeArena {
    pub theta: wgpu::Buffer,
    pub grad: wgpu::Buffer,
    /// The used state vectors, in slot order.
    pub states: Vec<wgpu::Buffer>,
    /// Elements bound by the kernels: the arena padded to whole vec4s.
    pub bound: u64,
}

/// One of a group's per-element vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Vector {
    Theta,
    Grad,
    /// A state slot, by index.
    State(usize),
}

impl From<Stored> for Vector {
    fn from(which: Stored) -> Self {
        match which {
            Stored::Theta => Vector::Theta,
            Stored::State(k) => Vector::State(k),
        }
    }
}

/// A range of a piece bound for one dispatch at one lane width.
struct Part {
    /// Elements of the piece.
    range: Range<u64>,
    lanes: Lanes,
    update: wgpu::BindGroup,
    /// Bound by [`GpuGroup::bind_control`], once the partials are allocated.
    control: Option<wgpu::BindGroup>,
}

impl Part {
    /// Slots of the part's region of the partials: one per scan workgroup, then zeros up to
    /// the alignment (see [`crate::transform`]).
    fn partial_slots(&self) -> u64 {
        partial_slots(self.range.end - self.range.start, self.lanes)
    }
}

/// Where a group's θ and g live.
pub(crate) enum Placement {
    /// In buffers the optimizer owns, where θ₀ is uploaded.
    Owned,
    /// In one caller buffer of each kind, the arena from each offset.
    Arena(TensorBuffers),
    /// Each tensor wherever the caller keeps it (in the group's tensor order).
    Tensors(Vec<TensorBuffers>),
}

/// A stretch of the group's arena that lives in one buffer of each kind.
struct Piece {
    /// Elements of the group's arena.
    range: Range<usize>,
    /// `None` for tensors in the caller's buffers: then the piece holds only state.
    theta: Option<BufferRange>,
    grad: Option<BufferRange>,
    /// One buffer per state slot; `None` where the options do not need that state.
    state: Vec<Option<wgpu::Buffer>>,
    /// Element ranges of the piece that each fit one storage binding, over the piece's length
    /// padded to a multiple of 4 in buffers the optimizer owns (so that the vec4 width covers
    /// all of it; the padding is never read back).
    chunks: Vec<Range<u64>>,
    /// The chunks cut for the lane widths: a vec4 body and, where a length is not a multiple
    /// of 4 (in the caller's buffers), a scalar tail.
    parts: Vec<Part>,
    /// The control bind group that commits the step (its gradient binding is unused).
    commit: Option<wgpu::BindGroup>,
}

/// The tensors of a group in the caller's buffers, and the runs that step them (see
/// [`crate::gpu::segments`]).
struct Segments {
    /// The fused kernel and the scan over segment tables.
    pipeline: Arc<Pipeline>,
    scan: Arc<Pipeline>,
    /// Each tensor's arena range and where its θ and g are, in the group's tensor order.
    tensors: Vec<(Range<usize>, TensorBuffers)>,
    runs: Vec<Run>,
}

/// One dispatch of the update (and one of the scan) over a run's segment table.
struct Run {
    plan: RunPlan<wgpu::Buffer>,
    update: wgpu::BindGroup,
    table_update: wgpu::BindGroup,
    table_scan: wgpu::BindGroup,
    /// Bound by [`GpuGroup::bind_control`].
    control: Option<wgpu::BindGroup>,
}

impl Run {
    /// Rows of the segment table: one workgroup each.
    fn rows(&self) -> u32 {
        self.plan.rows.len() as u32
    }

    fn grad(&self) -> wgpu::BufferBinding<'_> {
        window_binding(&self.plan.grad, &self.plan.grad_window)
    }
}

fn window_binding<'a>(buffer: &'a wgpu::Buffer, bytes: &Range<u64>) -> wgpu::BufferBinding<'a> {
    wgpu::BufferBinding {
        buffer,
        offset: bytes.start,
        size: wgpu::BufferSize::new(bytes.end - bytes.start),
    }
}

pub(crate) struct GpuGroup {
    pipeline: Arc<Pipeline>,
    control: Arc<Pipeline>,
    /// The window of per-step scalars (`Window` in `shaders/fused.wgsl`).
    window: wgpu::Buffer,
    /// The step counter and non-finite count (`Status`).
    pub status: wgpu::Buffer,
    pieces: Vec<Piece>,
    /// With tensors in the caller's buffers.
    segments: Option<Segments>,
    /// The optimizer's transform buffer, as group 1 of the update and of the control.
    transform_update: wgpu::BindGroup,
    transform_control: wgpu::BindGroup,
    /// A 16-byte stand-in for bindings a kernel never touches: unused state slots, the
    /// gradient of the commit and of `reduce`.
    placeholder: wgpu::Buffer,
}

/// Splits `n` elements into ranges whose bytes fit one storage binding and whose offsets meet
/// the device's storage offset alignment. Where a binding holds [`NORM_CHUNK`] elements or
/// more, chunks are whole multiples of it: each chunk's partial sums of the norm then fill
/// its region of the partials without padding, and the regions join into exactly the one the
/// CPU reference sums (see [`crate::transform`]), so clipping stays bit-identical.
fn binding_chunks(n: u64, limits: &wgpu::Limits) -> Vec<Range<u64>> {
    let align = (limits.min_storage_buffer_offset_alignment as u64 / 4).max(1);
    let max_binding = limits.max_storage_buffer_binding_size / 4;
    let per_chunk = match max_binding >= NORM_CHUNK && NORM_CHUNK.is_multiple_of(align) {
        true => max_binding / NORM_CHUNK * NORM_CHUNK,
        false => (max_binding / align * align).max(align),
    };
    (0..n.div_ceil(per_chunk))
        .map(|c| c * per_chunk..((c + 1) * per_chunk).min(n))
        .collect()
}

/// Slots of the region of norm partials that the scan of `len` bound elements at width
/// `lanes` writes: one per workgroup, then zeros up to the alignment (see
/// [`crate::transform`]).
pub(crate) fn partial_slots(len: u64, lanes: Lanes) -> u64 {
    len.div_ceil(u64::from(NORM_LANES * lanes.width()))
        .max(1)
        .next_multiple_of(PARTIAL_ALIGN as u64)
}

/// The dispatches over `n` elements in buffers the device binds whole: every binding chunk
/// cut into a vec4 body and a scalar tail (no vec4 under `scalar_only`), as the arena's
/// kernels bind them (for `bench`'s kernels over the optimizer's own buffers).
#[cfg(feature = "bench")]
pub(crate) fn arena_parts(ctx: &GpuContext, n: u64) -> Vec<(Range<u64>, Lanes)> {
    let limits = ctx.limits();
    let align = (limits.min_storage_buffer_offset_alignment as u64 / 4).max(1);
    binding_chunks(n, &limits)
        .iter()
        .flat_map(|chunk| parts_of(chunk, align, !ctx.scalar_only()))
        .collect()
}

/// Elements whose norm partials fill whole aligned regions: [`NORM_BLOCK`] elements per
/// partial, [`PARTIAL_ALIGN`] partials per region alignment (65,536).
const NORM_CHUNK: u64 = (NORM_BLOCK * PARTIAL_ALIGN) as u64;

/// Cuts a chunk into a vec4 body and a scalar tail. The tail starts at a multiple of `align`
/// elements (the storage offset alignment) past the chunk's start, which is aligned; with
/// `vec4` false the whole chunk is scalar.
fn parts_of(chunk: &Range<u64>, align: u64, vec4: bool) -> Vec<(Range<u64>, Lanes)> {
    let len = chunk.end - chunk.start;
    let step = if align.is_multiple_of(4) {
        align
    } else {
        align * 4
    };
    let body = match (vec4, len % 4) {
        (false, _) => 0,
        (true, 0) => len,
        (true, _) => len / step * step,
    };
    let split = chunk.start + body;
    [
        (chunk.start..split, Lanes::Four),
        (split..chunk.end, Lanes::One),
    ]
    .into_iter()
    .filter(|(r, _)| !r.is_empty())
    .collect()
}

/// Cuts the arena into pieces of at most `max` elements, only where a tensor starts, so no
/// tensor straddles two buffers.
fn pieces_of(arena_len: usize, tensors: &[&TensorSpec], max: usize) -> Result<Vec<Range<usize>>> {
    let mut starts = vec![0];
    for t in tensors {
        if t.len() > max {
            return Err(Error::TooLarge {
                what: "a tensor",
                needed: t.len() as u64 * 4,
                allowed: max as u64 * 4,
                limit: "max_buffer_size",
            });
        }
        if t.range().end - starts.last().unwrap() > max {
            starts.push(t.offset);
        }
    }
    let ends = starts.iter().skip(1).copied().chain([arena_len]);
    Ok(starts
        .iter()
        .copied()
        .zip(ends)
        .map(|(s, e)| s..e)
        .collect())
}

fn slice_binding<'a>(slice: &'a BufferRange, elements: &Range<u64>) -> wgpu::BufferBinding<'a> {
    wgpu::BufferBinding {
        buffer: &slice.buffer,
        offset: slice.offset + elements.start * 4,
        size: wgpu::BufferSize::new((elements.end - elements.start).max(1) * 4),
    }
}

impl GpuGroup {
    /// Allocates the group's state (and θ and g, unless `external`), uploads θ₀, and binds
    /// every chunk.
    pub fn new(
        ctx: &GpuContext,
        spec: &GroupSpec,
        tensors: &[&TensorSpec],
        theta0: &[f32],
        placement: Placement,
        transform: &wgpu::Buffer,
    ) -> Result<Self> {
        let limits = ctx.limits();
        let max_elements = (limits.max_buffer_size / 4) as usize;
        let optimizer = spec.config.as_dyn();
        let slots = optimizer.state_slots();
        let pipeline = ctx.pipeline(optimizer.kernel(), slots.len() as u32, Addressing::Arena)?;
        let control = ctx.control_pipeline(Addressing::Arena)?;
        let (external, caller_tensors) = match placement {
            Placement::Owned => (None, None),
            Placement::Arena(ext) => (Some(ext), None),
            // Checked by the optimizer (`segments::check`), over every group at once.
            Placement::Tensors(buffers) => {
                debug_assert_eq!(buffers.len(), tensors.len());
                (None, Some(buffers))
            }
        };
        let ranges = match &external {
            Some(_) if spec.arena_len > max_elements => {
                return Err(Error::TooLarge {
                    what: "a group in external buffers",
                    needed: spec.arena_len as u64 * 4,
                    allowed: limits.max_buffer_size,
                    limit: "max_buffer_size",
                })
            }
            Some(_) => std::iter::once(0..spec.arena_len).collect(),
            None => pieces_of(spec.arena_len, tensors, max_elements)?,
        };
        if let Some(ext) = &external {
            check_external(ext, spec.arena_len, &limits)?;
        }

        let device = ctx.device();
        let storage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let window_bytes = WINDOW_HEADER_BYTES + WINDOW * optimizer.uniform_bytes(1).len();
        let own_theta_grad = if caller_tensors.is_some() { 0 } else { 2 };
        let needed: u64 = 4
            * spec.arena_len as u64
            * (own_theta_grad + slots.iter().filter(|s| s.used).count() as u64);
        let allocate = || {
            let window = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bayesprop window"),
                size: window_bytes as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            // Zeroed at creation: t = 0, no non-finite gradients.
            let status = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bayesprop status"),
                size: STATUS_BYTES,
                usage: storage,
                mapped_at_creation: false,
            });
            let pieces: Vec<Piece> = ranges
                .iter()
                .map(|range| {
                    // Owned buffers are padded to whole vec4s (a zero-length binding is invalid
                    // too), within the device's buffer size.
                    let bound = match &external {
                        Some(_) => range.len(),
                        None => range.len().max(1).next_multiple_of(4).min(max_elements),
                    };
                    let size = (bound.max(1) * 4) as u64;
                    let (theta, grad) = match &external {
                        Some(ext) => (Some(ext.theta.clone()), Some(ext.grad.clone())),
                        None if caller_tensors.is_some() => (None, None),
                        None => {
                            let values = &theta0[range.clone()];
                            let theta =
                                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                                    label: Some("bayesprop theta"),
                                    contents: bytemuck::cast_slice(&padded(values, bound)),
                                    usage: storage,
                                });
                            let grad = device.create_buffer(&wgpu::BufferDescriptor {
                                label: Some("bayesprop grad"),
                                size,
                                usage: storage,
                                mapped_at_creation: false,
                            });
                            (
                                Some(BufferRange::whole(theta)),
                                Some(BufferRange::whole(grad)),
                            )
                        }
                    };
                    let state = slots
                        .iter()
                        .map(|slot| {
                            slot.used.then(|| match slot.init {
                                // New buffers are zeroed; upload only a start that is not 0.
                                0.0 => device.create_buffer(&wgpu::BufferDescriptor {
                                    label: Some(slot.name),
                                    size,
                                    usage: storage,
                                    mapped_at_creation: false,
                                }),
                                init => {
                                    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                                        label: Some(slot.name),
                                        contents: bytemuck::cast_slice(&vec![init; bound.max(1)]),
                                        usage: storage,
                                    })
                                }
                            })
                        })
                        .collect();
                    Piece {
                        range: range.clone(),
                        theta,
                        grad,
                        state,
                        chunks: binding_chunks(bound as u64, &limits),
                        parts: Vec::new(),
                        commit: None,
                    }
                })
                .collect();
            (window, status, pieces)
        };
        let (window, status, pieces) = ctx.scoped("allocating buffers", allocate).map_err(|e| match e {
            Error::Device { what, source } if is_out_of_memory(&what, &source) => Error::Device {
                what: format!(
                    "group `{}` needs {needed} bytes of device memory, which the device refused ({what})",
                    spec.name
                ),
                source,
            },
            other => other,
        })?;
        let placeholder = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bayesprop unused binding"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });

        let transform_update = pipeline.bind_transform(device, transform);
        let transform_control = control.bind_transform(device, transform);
        let mut group = GpuGroup {
            pipeline,
            control,
            window,
            status,
            pieces: Vec::new(),
            segments: None,
            transform_update,
            transform_control,
            placeholder,
        };
        group.pieces = ctx.scoped("binding buffers", || {
            let mut pieces = pieces;
            let align = (limits.min_storage_buffer_offset_alignment as u64 / 4).max(1);
            for piece in &mut pieces {
                group.bind(device, piece, align, !ctx.scalar_only());
            }
            pieces
        })?;
        if let Some(buffers) = caller_tensors {
            let mut segments = Segments {
                pipeline: ctx.pipeline(
                    optimizer.kernel(),
                    slots.len() as u32,
                    Addressing::Segments,
                )?,
                scan: ctx.control_pipeline(Addressing::Segments)?,
                tensors: tensors.iter().map(|t| t.range()).zip(buffers).collect(),
                runs: Vec::new(),
            };
            segments.runs = group.runs_for(ctx, &segments, &segments.tensors)?;
            group.segments = Some(segments);
        }
        Ok(group)
    }

    /// Where the caller's tensors are now (the same tensors, in the same order, checked by
    /// the optimizer), when they moved: re-plans the runs and says whether anything moved.
    /// The control must be bound again after.
    pub fn set_tensor_buffers(
        &mut self,
        ctx: &GpuContext,
        buffers: &[TensorBuffers],
    ) -> Result<bool> {
        let Some(segments) = &self.segments else {
            return Err(Error::Layout(
                "tensor buffers can only be set on an optimizer built with tensors in the \
                 caller's buffers"
                    .into(),
            ));
        };
        debug_assert_eq!(buffers.len(), segments.tensors.len());
        if segments.tensors.iter().map(|(_, b)| b).eq(buffers) {
            return Ok(false);
        }
        let tensors: Vec<_> = segments
            .tensors
            .iter()
            .map(|(range, _)| range.clone())
            .zip(buffers.iter().cloned())
            .collect();
        // Planned before anything is replaced: on a device error the old places and runs stay.
        let runs = self.runs_for(ctx, segments, &tensors)?;
        let segments = self.segments.as_mut().expect("checked above");
        (segments.tensors, segments.runs) = (tensors, runs);
        Ok(true)
    }

    /// Plans the runs of `tensors` (each one's arena range and places) over the group's
    /// state bindings, and binds each run's update and segment table with `segments`'
    /// pipelines.
    fn runs_for(
        &self,
        ctx: &GpuContext,
        segments: &Segments,
        tensors: &[(Range<usize>, TensorBuffers)],
    ) -> Result<Vec<Run>> {
        // The state bindings: every chunk of every piece, in order.
        let bindings: Vec<(usize, Range<u64>)> = self
            .pieces
            .iter()
            .enumerate()
            .flat_map(|(p, piece)| piece.chunks.iter().map(move |c| (p, c.clone())))
            .collect();
        let mut placed = Vec::new();
        for (range, buffers) in tensors {
            let (p, piece) = self
                .pieces
                .iter()
                .enumerate()
                .find(|(_, piece)| piece.range.start <= range.start && range.end <= piece.range.end)
                .expect("a tensor lies in one piece");
            let local =
                (range.start - piece.range.start) as u64..(range.end - piece.range.start) as u64;
            for (binding, (_, chunk)) in bindings.iter().enumerate().filter(|(_, (q, _))| *q == p) {
                let (start, end) = (local.start.max(chunk.start), local.end.min(chunk.end));
                if start >= end {
                    continue;
                }
                let skip = (start - local.start) * 4;
                let stretch = Placed {
                    theta: (buffers.theta.buffer.clone(), buffers.theta.offset + skip),
                    grad: (buffers.grad.buffer.clone(), buffers.grad.offset + skip),
                    binding,
                    state: start - chunk.start,
                    len: end - start,
                    lanes: Lanes::One,
                };
                match ctx.scalar_only() {
                    true => placed.push(stretch),
                    false => placed.extend(segments::by_lanes(&stretch)),
                }
            }
        }
        let plans = segments::plan(&placed, segments::Limits::of(&ctx.limits()));
        let device = ctx.device();
        ctx.scoped("binding the caller's tensors", || {
            plans
                .into_iter()
                .map(|plan| {
                    let (p, chunk) = &bindings[plan.binding];
                    let table = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("bayesprop segment table"),
                        contents: bytemuck::cast_slice(&plan.rows),
                        usage: wgpu::BufferUsages::STORAGE,
                    });
                    let state = self.state_bindings(&self.pieces[*p], chunk);
                    let update = {
                        let theta = window_binding(&plan.theta, &plan.theta_window);
                        let grad = window_binding(&plan.grad, &plan.grad_window);
                        segments.pipeline.bind(
                            device,
                            "bayesprop step over tensors",
                            in_order(
                                [
                                    self.window.as_entire_buffer_binding(),
                                    self.status.as_entire_buffer_binding(),
                                    theta,
                                    grad,
                                ]
                                .into_iter()
                                .chain(state),
                            ),
                        )
                    };
                    Run {
                        table_update: segments.pipeline.bind_table(device, &table),
                        table_scan: segments.scan.bind_table(device, &table),
                        plan,
                        update,
                        control: None,
                    }
                })
                .collect::<Vec<_>>()
        })
    }

    /// The bindings of a piece's used state slots over `range` (the placeholder for unused
    /// ones), in slot order.
    fn state_bindings<'a>(
        &'a self,
        piece: &'a Piece,
        range: &Range<u64>,
    ) -> Vec<wgpu::BufferBinding<'a>> {
        piece
            .state
            .iter()
            .map(|b| match b {
                Some(b) => slice_binding_owned(b, range),
                None => self.placeholder.as_entire_buffer_binding(),
            })
            .collect()
    }

    /// Binds the arena's dispatches of a piece (none for tensors in the caller's buffers).
    fn bind(&self, device: &wgpu::Device, piece: &mut Piece, align: u64, vec4: bool) {
        let (Some(theta), Some(grad)) = (&piece.theta, &piece.grad) else {
            return;
        };
        let window = || self.window.as_entire_buffer_binding();
        let status = || self.status.as_entire_buffer_binding();
        let cuts: Vec<_> = piece
            .chunks
            .iter()
            .flat_map(|chunk| parts_of(chunk, align, vec4))
            .collect();
        piece.parts = cuts
            .into_iter()
            .map(|(range, lanes)| {
                let state = self.state_bindings(piece, &range);
                let theta = slice_binding(theta, &range);
                let grad = slice_binding(grad, &range);
                let update = self.pipeline.bind(
                    device,
                    "bayesprop step",
                    in_order([window(), status(), theta, grad].into_iter().chain(state)),
                );
                Part {
                    range,
                    lanes,
                    update,
                    control: None,
                }
            })
            .collect();
    }

    /// Slots of the partials the group's scan writes: one region per bound part or run.
    pub(crate) fn partial_slots(&self) -> u64 {
        self.parts().map(Part::partial_slots).sum::<u64>()
            + self.runs().map(|r| r.plan.partial_slots()).sum::<u64>()
    }

    fn runs(&self) -> impl Iterator<Item = &Run> {
        self.segments.iter().flat_map(|s| &s.runs)
    }

    /// Binds the scan of every part to its region of `partials`, from slot `base` on, and
    /// the commit; returns the slot after the group's last region. With `base` = `None`
    /// every part binds the first [`PARTIAL_ALIGN`] slots, which a scan without clipping
    /// never writes.
    pub fn bind_control(
        &mut self,
        device: &wgpu::Device,
        partials: &wgpu::Buffer,
        base: Option<u64>,
    ) -> u64 {
        let mut next = base.unwrap_or(0);
        let first_region = wgpu::BufferBinding {
            buffer: partials,
            offset: 0,
            size: wgpu::BufferSize::new(PARTIAL_ALIGN as u64 * 4),
        };
        let window = self.window.as_entire_buffer_binding();
        let status = self.status.as_entire_buffer_binding();
        let mut region = |slots: u64| {
            let region = match base {
                Some(_) => wgpu::BufferBinding {
                    buffer: partials,
                    offset: next * 4,
                    size: wgpu::BufferSize::new(slots * 4),
                },
                None => first_region.clone(),
            };
            next += slots;
            region
        };
        for piece in &mut self.pieces {
            for part in &mut piece.parts {
                let grad = piece.grad.as_ref().expect("a piece with parts binds g");
                let grad = slice_binding(grad, &part.range);
                let region = region(part.partial_slots());
                part.control = Some(self.control.bind(
                    device,
                    "bayesprop control",
                    in_order([window.clone(), status.clone(), grad, region]),
                ));
            }
            // The commit's gradient and partials are unused.
            piece.commit = Some(self.control.bind(
                device,
                "bayesprop commit",
                in_order([
                    window.clone(),
                    status.clone(),
                    self.placeholder.as_entire_buffer_binding(),
                    first_region.clone(),
                ]),
            ));
        }
        if let Some(segments) = &mut self.segments {
            for run in &mut segments.runs {
                let region = region(run.plan.partial_slots());
                run.control = Some(segments.scan.bind(
                    device,
                    "bayesprop control over tensors",
                    in_order([window.clone(), status.clone(), run.grad(), region]),
                ));
            }
        }
        next
    }

    /// The bind group of `reduce`, over every region of `partials` (the group's own window,
    /// status and gradient are bound, unused).
    pub fn bind_reduce(&self, device: &wgpu::Device, partials: &wgpu::Buffer) -> wgpu::BindGroup {
        self.control.bind(
            device,
            "bayesprop norm",
            in_order([
                self.window.as_entire_buffer_binding(),
                self.status.as_entire_buffer_binding(),
                self.placeholder.as_entire_buffer_binding(),
                partials.as_entire_buffer_binding(),
            ]),
        )
    }

    /// Records the sum of every group's partials into the norm and clip factor.
    pub fn encode_reduce(&self, pass: &mut wgpu::ComputePass<'_>, reduce: &wgpu::BindGroup) {
        self.control
            .dispatch_one(pass, REDUCE, &[reduce, &self.transform_control]);
    }

    fn parts(&self) -> impl Iterator<Item = &Part> {
        self.pieces.iter().flat_map(|p| &p.parts)
    }

    /// The window uniform for a step: header (with `norm`, whether the scan writes partial
    /// sums of squares), then the scalars of every t in `steps`, schedules applied.
    pub fn window_bytes(
        &self,
        spec: &GroupSpec,
        base: u64,
        steps: std::ops::RangeInclusive<u64>,
        norm: bool,
    ) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(WINDOW_HEADER_BYTES + WINDOW * 64);
        bytes.extend_from_slice(bytemuck::cast_slice(&[
            base as u32,
            spec.policy as u32,
            u32::from(norm),
            0,
        ]));
        for t in steps {
            bytes.extend_from_slice(&spec.config_at(t).as_dyn().uniform_bytes(t));
        }
        bytes
    }

    /// The uniform buffer a step's window is copied into.
    pub fn window_buffer(&self) -> &wgpu::Buffer {
        &self.window
    }

    /// Before the pass: the non-finite count is per step; t carries over.
    pub fn clear_count(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.clear_buffer(&self.status, 4, Some(4));
    }

    /// Records the group's scan: its non-finite count and, with clipping (`norm`), its
    /// partials.
    pub fn encode_scan(&self, pass: &mut wgpu::ComputePass<'_>, norm: bool) {
        for part in self.parts() {
            let control = part.control.as_ref().expect("bound by bind_control");
            self.control.dispatch(
                pass,
                scan_entry(Addressing::Arena, norm),
                &[control, &self.transform_control],
                part.lanes,
                part_len(part),
            );
        }
        if let Some(segments) = &self.segments {
            for run in &segments.runs {
                let control = run.control.as_ref().expect("bound by bind_control");
                segments.scan.dispatch_rows(
                    pass,
                    scan_entry(Addressing::Segments, norm),
                    &[control, &self.transform_control, &run.table_scan],
                    run.plan.lanes,
                    run.rows(),
                );
            }
        }
    }

    /// Records the fused update of every chunk and the commit of the step counter.
    pub fn encode_update(&self, pass: &mut wgpu::ComputePass<'_>) {
        for part in self.parts() {
            self.pipeline.dispatch(
                pass,
                0,
                &[&part.update, &self.transform_update],
                part.lanes,
                part_len(part),
            );
        }
        if let Some(segments) = &self.segments {
            for run in &segments.runs {
                segments.pipeline.dispatch_rows(
                    pass,
                    0,
                    &[&run.update, &self.transform_update, &run.table_update],
                    run.plan.lanes,
                    run.rows(),
                );
            }
        }
        if let Some(commit) = self.pieces.first().and_then(|p| p.commit.as_ref()) {
            self.control
                .dispatch_one(pass, COMMIT, &[commit, &self.transform_control]);
        }
    }

    /// Where a vector of the piece lives (`None` for an unused state slot, and for θ and g
    /// of tensors in the caller's buffers).
    fn vector(&self, piece: &Piece, vector: Vector) -> Option<BufferRange> {
        match vector {
            Vector::Theta => piece.theta.clone(),
            Vector::Grad => piece.grad.clone(),
            Vector::State(k) => piece.state[k].clone().map(BufferRange::whole),
        }
    }

    /// The buffer range holding `range` of the arena, which lies in one piece when `range` is
    /// a tensor's.
    pub fn slice_of(&self, vector: Vector, range: &Range<usize>) -> Option<BufferRange> {
        if let (Some(segments), Vector::Theta | Vector::Grad) = (&self.segments, vector) {
            // In arena order, so ends never decrease: the first tensor reaching range.end is
            // the only one that can hold it.
            let first = segments.tensors.partition_point(|(t, _)| t.end < range.end);
            let (tensor, buffers) = segments
                .tensors
                .get(first)
                .filter(|(t, _)| t.start <= range.start)?;
            let buffers = match vector {
                Vector::Theta => &buffers.theta,
                _ => &buffers.grad,
            };
            let from = (range.start - tensor.start) as u64 * 4;
            return Some(buffers.sub(from, range.len() as u64 * 4));
        }
        let piece = self
            .pieces
            .iter()
            .find(|p| p.range.start <= range.start && range.end <= p.range.end)?;
        let from = (range.start - piece.range.start) as u64 * 4;
        Some(
            self.vector(piece, vector)?
                .sub(from, range.len() as u64 * 4),
        )
    }

    /// θ, g and the used state buffers of an arena that lives in one buffer of each kind the
    /// optimizer owns, with the bound length (padded to whole vec4s); `None` otherwise. For
    /// `bench`, whose roofline touches the optimizer's own buffers.
    #[cfg(feature = "bench")]
    pub fn whole_arena(&self) -> Option<WholeArena> {
        let [piece] = &self.pieces[..] else {
            return None;
        };
        let (Some(theta), Some(grad)) = (&piece.theta, &piece.grad) else {
            return None;
        };
        if theta.offset != 0 || grad.offset != 0 {
            return None;
        }
        Some(WholeArena {
            theta: theta.buffer.clone(),
            grad: grad.buffer.clone(),
            states: piece.state.iter().flatten().cloned().collect(),
            bound: piece.chunks.last().map_or(0, |c| c.end),
        })
    }

    /// Reads a whole vector of the arena back to the host.
    pub fn read_arena(&self, ctx: &GpuContext, vector: Vector) -> Result<Vec<f32>> {
        if let Some(tensors) = self.caller_tensors(vector) {
            let len = self.pieces.last().map_or(0, |p| p.range.end);
            let mut arena = vec![0.0; len];
            for (range, slice) in tensors {
                let values = ctx.read_f32(&slice.buffer, slice.offset, range.len())?;
                arena[range].copy_from_slice(&values);
            }
            return Ok(arena);
        }
        let mut arena = Vec::new();
        for piece in &self.pieces {
            let slice = self.vector(piece, vector).expect("the slot is used");
            arena.extend(ctx.read_f32(&slice.buffer, slice.offset, piece.range.len())?);
        }
        Ok(arena)
    }

    /// Overwrites a whole vector of the arena from the host.
    pub fn write_arena(&self, queue: &wgpu::Queue, vector: Vector, arena: &[f32]) {
        if let Some(tensors) = self.caller_tensors(vector) {
            for (range, slice) in tensors {
                if !range.is_empty() {
                    let values = bytemuck::cast_slice(&arena[range]);
                    queue.write_buffer(&slice.buffer, slice.offset, values);
                }
            }
            return;
        }
        for piece in &self.pieces {
            let slice = self.vector(piece, vector).expect("the slot is used");
            let values = &arena[piece.range.clone()];
            if !values.is_empty() {
                queue.write_buffer(&slice.buffer, slice.offset, bytemuck::cast_slice(values));
            }
        }
    }

    /// Each tensor's arena range and where θ or g (`vector`) lives, for tensors in the
    /// caller's buffers; `None` otherwise, or for a state vector.
    fn caller_tensors(
        &self,
        vector: Vector,
    ) -> Option<impl Iterator<Item = (Range<usize>, &BufferRange)>> {
        let segments = self.segments.as_ref()?;
        let grad = match vector {
            Vector::Theta => false,
            Vector::Grad => true,
            Vector::State(_) => return None,
        };
        Some(
            segments
                .tensors
                .iter()
                .map(move |(range, b)| (range.clone(), if grad { &b.grad } else { &b.theta })),
        )
    }

    /// Sets the device's step counter (for restoring a checkpoint).
    pub fn write_step_counter(&self, queue: &wgpu::Queue, t: u64) {
        queue.write_buffer(&self.status, 0, bytemuck::cast_slice(&[t as u32, 0]));
    }

    /// How many storage bindings the group's vectors are split into.
    pub fn chunk_count(&self) -> usize {
        self.pieces.iter().map(|p| p.chunks.len()).sum()
    }

    /// How many update dispatches a step records (vec4 bodies and scalar tails, or runs of
    /// the caller's tensors).
    pub fn dispatch_count(&self) -> usize {
        self.pieces.iter().map(|p| p.parts.len()).sum::<usize>() + self.runs().count()
    }

    /// How many buffers each of the group's vectors is split into.
    pub fn piece_count(&self) -> usize {
        self.pieces.len()
    }
}

/// Whether a device error is the device's refusal of memory.
fn is_out_of_memory(what: &str, source: &Option<crate::error::DeviceErrorSource>) -> bool {
    let text = match source {
        Some(source) => {
            if let Some(wgpu::Error::OutOfMemory { .. }) = source.downcast_ref::<wgpu::Error>() {
                return true;
            }
            format!("{what}: {source}")
        }
        None => what.to_string(),
    };
    text.to_lowercase().contains("memory")
}

fn part_len(part: &Part) -> u32 {
    (part.range.end - part.range.start) as u32
}

/// `values` followed by zeros up to `len` elements (at least one element).
fn padded(values: &[f32], len: usize) -> Vec<f32> {
    let mut out = values.to_vec();
    out.resize(len.max(values.len()).max(1), 0.0);
    out
}

fn slice_binding_owned<'a>(
    buffer: &'a wgpu::Buffer,
    elements: &Range<u64>,
) -> wgpu::BufferBinding<'a> {
    wgpu::BufferBinding {
        buffer,
        offset: elements.start * 4,
        size: wgpu::BufferSize::new((elements.end - elements.start).max(1) * 4),
    }
}

fn check_external(ext: &TensorBuffers, arena_len: usize, limits: &wgpu::Limits) -> Result<()> {
    let align = limits.min_storage_buffer_offset_alignment as u64;
    for (what, slice) in [("θ", &ext.theta), ("gradient", &ext.grad)] {
        if !slice.offset.is_multiple_of(align) {
            return Err(Error::Layout(format!(
                "the {what} buffer's offset {} is not a multiple of min_storage_buffer_offset_alignment ({align})",
                slice.offset
            )));
        }
        if !slice.buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::Layout(format!(
                "the {what} buffer needs STORAGE usage"
            )));
        }
        slice.check_holds(&format!("the group's {what} arena"), arena_len as u64 * 4)?;
    }
    Ok(())
}
