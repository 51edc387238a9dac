//! One parameter group on the device: its arenas, split into buffers and bindings the device
//! allows, and the dispatches of its step. This module allocates and holds the group and moves
//! data in and out; [`plan`] cuts it up, [`bind`] makes its bind groups and [`encode`]
//! records its step.

use std::ops::Range;
use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::config::StateFormat;
use crate::error::{Error, Result};
use crate::gpu::buffers::{BufferRange, TensorBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::pipeline::{
    in_order, Addressing, ByWidth, Pipeline, Specialization, COMMIT, COUNT_SPAN, NORM_LANES, REDUCE,
};
use crate::gpu::segments::{self, Placed, RunPlan};
use crate::gpu::tracker::STATUS_BYTES;
use crate::held::{self, Held};
use crate::kernels::{scalars_bytes, Lanes, WINDOW, WINDOW_HEADER_BYTES, WINDOW_STATUS_OFFSET};
use crate::layout::{GroupSpec, Stored, TensorSpec};
use crate::reference::state_codec as codec;
use crate::transform::{NORM_BLOCK, PARTIAL_ALIGN};

mod bind;
mod encode;
mod plan;

use bind::*;
pub(crate) use plan::*;

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
    /// `None` in `q8`, whose update runs per block ([`Q8Piece`]); the part is still scanned.
    update: Option<wgpu::BindGroup>,
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
    /// In `q8`: the piece's scales and its dispatches of whole blocks.
    q8: Option<Q8Piece>,
}

/// A piece's state held in `q8` (see [`crate::kernels`] `q8_accessors`): the scales of every
/// slot (slot k's from `k * blocks`), and the piece's blocks cut into dispatches whose θ, g
/// and codes each fit one binding.
struct Q8Piece {
    scales: wgpu::Buffer,
    /// The piece's q8 blocks, over its tensors in order.
    blocks: u32,
    /// The group's index of the piece's first block (its scales' place in a checkpoint's).
    first_block: usize,
    /// Each block: its first element of the piece, length, flat index, and index among the
    /// piece's blocks (its scale's).
    block_list: Vec<[u64; 4]>,
    /// Bound by [`GpuGroup::bind`]: one per window, with its block count.
    dispatches: Vec<(u32, wgpu::BindGroup)>,
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
    /// In `q8`: the dispatches of whole blocks over the tensors (the runs are only scanned).
    q8: Vec<(u32, wgpu::BindGroup)>,
}

/// One dispatch of the update (and one of the scan) over a run's segment table.
struct Run {
    plan: RunPlan<wgpu::Buffer>,
    /// `None` in `q8`, whose update runs per block ([`Segments::q8`]).
    update: Option<wgpu::BindGroup>,
    table_update: wgpu::BindGroup,
    table_scan: wgpu::BindGroup,
    /// The count's table (no norm): up to [`COUNT_SPAN`] rows merged into one, and its rows.
    table_count: wgpu::BindGroup,
    count_rows: u32,
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
    /// How the state is held (SPEC §6), with what a held format's kernels read besides.
    format: StateFormat,
    held: Option<HeldState>,
}

/// What the kernels of a group whose state is held in `bf16` or `q8` read besides the codes:
/// the seed, and (bf16) each tensor's arena start and that minus its start in the group's
/// flat order (`held_tensors` in the generated WGSL, see [`crate::kernels`]); the slots and
/// tensors, to decode q8 codes read back.
struct HeldState {
    seed: u32,
    tensors: wgpu::Buffer,
    /// Per slot of the row, where used: whether it is signed and its start value.
    slots: Vec<Option<(bool, f32)>>,
    /// The group's tensors with their flat starts and first q8 blocks.
    pieces: Vec<held::Piece>,
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
        let format = spec.state_format;
        let pipeline = ctx.pipeline(
            optimizer.kernel(),
            slots.len() as u32,
            Addressing::Arena,
            format,
        )?;
        // The start codes, encoded on the host as the CPU optimizer encodes them.
        let held_codes = Held::new(spec, held::pieces(tensors.iter().copied()), spec.arena_len);
        // For the commit, the reduce and the bindings; a step's scan may be another variant.
        let control = ctx.control_pipeline(Addressing::Arena, false)?;
        let held_pieces = held::pieces(tensors.iter().copied());
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
                    // Two bf16 codes to a word.
                    let held_words = |k: usize| {
                        let codes = held_codes.as_ref()?.bf16_codes(k)?;
                        let mut piece = codes[range.clone()].to_vec();
                        piece.resize(bound.max(1).next_multiple_of(2), 0);
                        let words: Vec<u32> = piece
                            .chunks(2)
                            .map(|c| u32::from(c[0]) | (u32::from(c[1]) << 16))
                            .collect();
                        Some(words)
                    };
                    // Four q8 codes to a word, as the bytes are (little-endian).
                    let q8_words = |k: usize| {
                        let (codes, _) = held_codes.as_ref()?.q8_codes(k)?;
                        let mut piece = codes[range.clone()].to_vec();
                        piece.resize(bound.max(1).next_multiple_of(4), 0);
                        Some(piece)
                    };
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
                        .enumerate()
                        .map(|(k, slot)| {
                            if let Some(words) = slot.used.then(|| held_words(k)).flatten() {
                                return Some(device.create_buffer_init(
                                    &wgpu::util::BufferInitDescriptor {
                                        label: Some(slot.name),
                                        contents: bytemuck::cast_slice(&words),
                                        usage: storage,
                                    },
                                ));
                            }
                            if let Some(bytes) = slot.used.then(|| q8_words(k)).flatten() {
                                return Some(device.create_buffer_init(
                                    &wgpu::util::BufferInitDescriptor {
                                        label: Some(slot.name),
                                        contents: &bytes,
                                        usage: storage,
                                    },
                                ));
                            }
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
                    let q8 = match (&held_codes, format) {
                        (Some(codes), StateFormat::Q8) => {
                            Some(q8_piece(device, codes, &held_pieces, range, &limits)?)
                        }
                        _ => None,
                    };
                    Ok(Piece {
                        range: range.clone(),
                        theta,
                        grad,
                        state,
                        chunks: binding_chunks(bound as u64, &limits),
                        parts: Vec::new(),
                        commit: None,
                        q8,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((window, status, pieces))
        };
        let (window, status, pieces) = ctx.scoped("allocating buffers", allocate).and_then(|r| r).map_err(|e| match e {
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

        let held = held_codes.map(|_| {
            let mut table: Vec<[u32; 2]> = held::pieces(tensors.iter().copied())
                .iter()
                .map(|p| [p.range.start as u32, (p.range.start - p.flat) as u32])
                .collect();
            if table.is_empty() {
                table.push([0, 0]);
            }
            HeldState {
                slots: slots
                    .iter()
                    .map(|slot| slot.used.then(|| (held::is_signed(slot.name), slot.init)))
                    .collect(),
                seed: spec.state_seed,
                pieces: held_pieces.clone(),
                tensors: device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("bayesprop held tensors"),
                    contents: bytemuck::cast_slice(&table),
                    usage: wgpu::BufferUsages::STORAGE,
                }),
            }
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
            format,
            held,
        };
        group.check_held(&pieces, &limits)?;
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
                    format,
                )?,
                scan: ctx.control_pipeline(Addressing::Segments, false)?,
                tensors: tensors.iter().map(|t| t.range()).zip(buffers).collect(),
                runs: Vec::new(),
                q8: Vec::new(),
            };
            segments.runs = group.runs_for(ctx, &segments, &segments.tensors)?;
            segments.q8 = group.q8_over_tensors(ctx, &segments.tensors)?;
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
        let q8 = self.q8_over_tensors(ctx, &tensors)?;
        let segments = self.segments.as_mut().expect("checked above");
        (segments.tensors, segments.runs, segments.q8) = (tensors, runs, q8);
        Ok(true)
    }

    /// Slots of the partials the group's scan writes: one region per bound part or run.
    pub(crate) fn partial_slots(&self) -> u64 {
        self.parts().map(Part::partial_slots).sum::<u64>()
            + self.runs().map(|r| r.plan.partial_slots()).sum::<u64>()
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
        if self.held.is_some() {
            return None;
        }
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
            if let (Vector::State(k), Some(held)) = (vector, &self.held) {
                if self.format == StateFormat::Q8 {
                    return self.read_q8_decoded(ctx, k, held);
                }
                let words = piece.range.len().div_ceil(2);
                let words: Vec<u32> =
                    ctx.read_back("readback", words as u64 * 4, |e, staging| {
                        e.copy_buffer_to_buffer(&slice.buffer, 0, staging, 0, words as u64 * 4);
                    })?;
                let codes = words.iter().flat_map(|w| [w & 0xffff, w >> 16]);
                let values = codes.take(piece.range.len()).map(codec::bf16_decode);
                arena.extend(values);
                continue;
            }
            arena.extend(ctx.read_f32(&slice.buffer, slice.offset, piece.range.len())?);
        }
        Ok(arena)
    }

    /// The words holding state slot `k`'s codes over `piece`, `per_word` codes to a word.
    fn read_code_words(
        &self,
        ctx: &GpuContext,
        piece: &Piece,
        k: usize,
        per_word: usize,
    ) -> Result<Vec<u32>> {
        let slice = self
            .vector(piece, Vector::State(k))
            .expect("the slot is used");
        let bytes = piece.range.len().div_ceil(per_word) as u64 * 4;
        ctx.read_back("reading state codes", bytes, |e, staging| {
            e.copy_buffer_to_buffer(&slice.buffer, 0, staging, 0, bytes);
        })
    }

    /// The bf16 codes of state slot `k` over the whole arena (two to a word on the device,
    /// per piece): what a checkpoint stores of a group held in `bf16`.
    pub fn read_codes(&self, ctx: &GpuContext, k: usize) -> Result<Vec<u16>> {
        let mut codes = Vec::new();
        for piece in &self.pieces {
            let words = self.read_code_words(ctx, piece, k, 2)?;
            let piece_codes = words.iter().flat_map(|w| [*w as u16, (w >> 16) as u16]);
            codes.extend(piece_codes.take(piece.range.len()));
        }
        Ok(codes)
    }

    /// State slot `k` of a group held in `q8`, decoded over the whole arena (the padding as
    /// the slot's start value, as the CPU's `Held` decodes it).
    fn read_q8_decoded(&self, ctx: &GpuContext, k: usize, held: &HeldState) -> Result<Vec<f32>> {
        let (codes, scales) = self.read_q8(ctx, k)?;
        let (signed, init) = held.slots[k].expect("the slot is used");
        let len = self.pieces.last().map_or(0, |p| p.range.end);
        let mut arena = vec![init; len];
        for piece in &held.pieces {
            for i in piece.range.clone() {
                let offset = i - piece.range.start;
                let a = scales[piece.first_block + offset / crate::config::STATE_Q8_BLOCK];
                let c = u32::from(codes[i]);
                arena[i] = match signed {
                    true => codec::q8_decode_s(c, a),
                    false => codec::q8_decode_u(c, a),
                };
            }
        }
        Ok(arena)
    }

    /// The q8 codes of state slot `k` over the whole arena (four to a word on the device, per
    /// piece) and its scales, block after block over the group's tensors: what a checkpoint
    /// stores of a group held in `q8`.
    pub fn read_q8(&self, ctx: &GpuContext, k: usize) -> Result<(Vec<u8>, Vec<f32>)> {
        let (mut codes, mut scales) = (Vec::new(), Vec::new());
        for piece in &self.pieces {
            let q8 = piece.q8.as_ref().expect("held in q8");
            let words = self.read_code_words(ctx, piece, k, 4)?;
            codes.extend(
                bytemuck::cast_slice::<u32, u8>(&words)
                    .iter()
                    .take(piece.range.len()),
            );
            let from = (k * q8.blocks as usize * 4) as u64;
            let bytes = u64::from(q8.blocks) * 4;
            let piece_scales: Vec<f32> =
                ctx.read_back("reading q8 scales", bytes, |e, staging| {
                    e.copy_buffer_to_buffer(&q8.scales, from, staging, 0, bytes);
                })?;
            scales.extend(piece_scales);
        }
        Ok((codes, scales))
    }

    /// Overwrites the q8 codes and scales of state slot `k` (as [`GpuGroup::read_q8`] gives
    /// them, from a checkpoint).
    pub fn write_q8(&self, queue: &wgpu::Queue, k: usize, codes: &[u8], scales: &[f32]) {
        for piece in &self.pieces {
            let q8 = piece.q8.as_ref().expect("held in q8");
            let slice = self
                .vector(piece, Vector::State(k))
                .expect("the slot is used");
            let mut bytes = codes[piece.range.clone()].to_vec();
            bytes.resize(bytes.len().next_multiple_of(4), 0);
            if !bytes.is_empty() {
                queue.write_buffer(&slice.buffer, 0, &bytes);
            }
            let blocks = q8.first_block..q8.first_block + q8.blocks as usize;
            if !blocks.is_empty() {
                let from = (k * q8.blocks as usize * 4) as u64;
                queue.write_buffer(&q8.scales, from, bytemuck::cast_slice(&scales[blocks]));
            }
        }
    }

    /// Overwrites the bf16 codes of state slot `k` over the whole arena (from a checkpoint).
    pub fn write_codes(&self, queue: &wgpu::Queue, k: usize, codes: &[u16]) {
        for piece in &self.pieces {
            let slice = self
                .vector(piece, Vector::State(k))
                .expect("the slot is used");
            let words: Vec<u32> = codes[piece.range.clone()]
                .chunks(2)
                .map(|pair| u32::from(pair[0]) | pair.get(1).map_or(0, |&hi| u32::from(hi) << 16))
                .collect();
            if !words.is_empty() {
                queue.write_buffer(&slice.buffer, 0, bytemuck::cast_slice(&words));
            }
        }
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

    /// How the group's state is held.
    pub fn format(&self) -> StateFormat {
        self.format
    }

    /// Refuses a held format where a binding chunk would not start at a multiple of 4
    /// elements of its piece (a vec4's lanes would then not own whole words, nor lie in one
    /// tensor), or where its words would not start at the device's storage offset alignment.
    fn check_held(&self, pieces: &[Piece], limits: &wgpu::Limits) -> Result<()> {
        if self.held.is_none() {
            return Ok(());
        }
        let align = u64::from(limits.min_storage_buffer_offset_alignment);
        let chunks = pieces.iter().flat_map(|p| &p.chunks);
        match chunks
            .into_iter()
            .find(|c| c.start % 4 != 0 || (c.start * 2) % align != 0)
        {
            None => Ok(()),
            Some(chunk) => Err(Error::Unsupported(format!(
                "state_format {}: a binding chunk at element {} does not start at whole \
                 vec4s and aligned words on this device (min_storage_buffer_offset_alignment \
                 {align})",
                self.format, chunk.start
            ))),
        }
    }

    /// How many storage bindings the group's vectors are split into.
    pub fn chunk_count(&self) -> usize {
        self.pieces.iter().map(|p| p.chunks.len()).sum()
    }

    /// How many update dispatches a step records (vec4 bodies and scalar tails, or runs of
    /// the caller's tensors).
    pub fn dispatch_count(&self) -> usize {
        let parts = self.parts().filter(|p| p.update.is_some()).count();
        let runs = self.runs().filter(|r| r.update.is_some()).count();
        parts + runs + self.q8_dispatches().count()
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

/// A piece's `q8` state on the device: the scales of every slot (from the host's start
/// codes) and its blocks planned into dispatches (see [`Q8Piece`]). Refuses a tensor that
/// does not start at a multiple of 4 elements (its codes would share a word with another's),
/// and a device whose bindings cannot hold a block.
fn q8_piece(
    device: &wgpu::Device,
    codes: &Held,
    held_pieces: &[held::Piece],
    range: &Range<usize>,
    limits: &wgpu::Limits,
) -> Result<Q8Piece> {
    use crate::config::STATE_Q8_BLOCK;
    let tensors: Vec<&held::Piece> = held_pieces
        .iter()
        .filter(|p| range.start <= p.range.start && p.range.end <= range.end)
        .collect();
    let first_block = tensors.first().map_or(0, |t| t.first_block);
    // (first element of the piece, length, flat index, the piece's block index)
    let mut blocks: Vec<[u64; 4]> = Vec::new();
    for t in &tensors {
        if t.range.start % 4 != 0 {
            return Err(Error::Unsupported(format!(
                "state_format q8: a tensor at arena element {} does not start at a multiple \
                 of 4 elements",
                t.range.start
            )));
        }
        for start in t.range.clone().step_by(STATE_Q8_BLOCK) {
            let len = (t.range.end - start).min(STATE_Q8_BLOCK);
            let flat = t.flat + (start - t.range.start);
            let index = blocks.len() as u64;
            blocks.push([(start - range.start) as u64, len as u64, flat as u64, index]);
        }
    }
    // A dispatch's bindings start at the storage offset alignment at or before its first
    // block, and must hold at least that block.
    let align = u64::from(limits.min_storage_buffer_offset_alignment).max(4);
    if 4 * STATE_Q8_BLOCK as u64 + align > limits.max_storage_buffer_binding_size {
        return Err(Error::Unsupported(format!(
            "state_format q8: a binding of {} bytes cannot hold a q8 block at its aligned \
             offset (min_storage_buffer_offset_alignment {align})",
            limits.max_storage_buffer_binding_size
        )));
    }
    let piece_blocks = blocks.len();
    let slots = codes.slots();
    let mut scales = Vec::with_capacity(slots * piece_blocks.max(1));
    for k in 0..slots {
        match codes.q8_codes(k) {
            Some((_, s)) => scales.extend_from_slice(&s[first_block..first_block + piece_blocks]),
            None => scales.resize(scales.len() + piece_blocks, 0.0),
        }
    }
    scales.resize(scales.len().max(1), 0.0);
    Ok(Q8Piece {
        scales: device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("bayesprop q8 scales"),
            contents: bytemuck::cast_slice(&scales),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        }),
        blocks: piece_blocks as u32,
        first_block,
        block_list: blocks,
        dispatches: Vec::new(),
    })
}

/// One q8 dispatch's bindings, in elements of θ's and g's buffers and of the piece's state,
/// its block table (`Q8Stretch` in the generated WGSL: per stretch of consecutive blocks of
/// one tensor, θ, g and state index of its first element in the bindings, its length, flat
/// index, first scale index, and its first block among the dispatch's), and its block count.
/// A row per stretch, not per block: 32 bytes per 256-element block were 0.125 bytes of
/// device memory per parameter.
pub(super) struct Q8Window {
    pub theta: Range<u64>,
    pub grad: Range<u64>,
    pub state: Range<u64>,
    pub rows: Vec<[u32; 8]>,
    pub blocks: u32,
}

/// Cuts `blocks` (θ's and g's first element in their buffers, the state's in the piece,
/// length, flat index, scale index) into dispatches whose bindings start at the storage
/// offset alignment (`align` bytes) and hold at most `max` bytes each: θ and g 4 bytes an
/// element, the codes one. `q8_piece` checked that one block fits. A block that continues
/// the row before it (whole blocks of one tensor, contiguous everywhere) lengthens that row.
pub(super) fn q8_windows(blocks: &[[u64; 6]], align: u64, max: u64) -> Vec<Q8Window> {
    use crate::config::STATE_Q8_BLOCK;
    let down = |bytes: u64| bytes / align * align;
    let mut windows: Vec<Q8Window> = Vec::new();
    for &[theta, grad, state, len, flat, index] in blocks {
        let fits = |w: &Q8Window| {
            4 * (theta + len - w.theta.start) <= max
                && 4 * (grad + len - w.grad.start) <= max
                && state + len - w.state.start <= max
        };
        if !windows.last().is_some_and(fits) {
            windows.push(Q8Window {
                theta: down(4 * theta) / 4..theta,
                grad: down(4 * grad) / 4..grad,
                state: down(state)..state,
                rows: Vec::new(),
                blocks: 0,
            });
        }
        let w = windows.last_mut().expect("one window at least");
        (w.theta.end, w.grad.end, w.state.end) = (theta + len, grad + len, state + len);
        let at = |p: u64, r: &Range<u64>| (p - r.start) as u32;
        let (t, g, s) = (at(theta, &w.theta), at(grad, &w.grad), at(state, &w.state));
        let block = STATE_Q8_BLOCK as u32;
        let continues = |r: &[u32; 8]| {
            let n = r[3];
            n.is_multiple_of(block)
                && [r[0] + n, r[1] + n, r[2] + n, r[4] + n, r[5] + n / block]
                    == [t, g, s, flat as u32, index as u32]
        };
        match w.rows.last_mut() {
            Some(row) if continues(row) => row[3] += len as u32,
            _ => w
                .rows
                .push([t, g, s, len as u32, flat as u32, index as u32, w.blocks, 0]),
        }
        w.blocks += 1;
    }
    windows
}
