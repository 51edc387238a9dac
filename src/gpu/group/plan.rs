//! Planning: how a group's arena is cut into buffers, bindings and lane-width parts the
//! device allows, and into runs of caller tensors.

use super::*;

impl GpuGroup {
    /// Plans the runs of `tensors` (each one's arena range and places) over the group's
    /// state bindings, and binds each run's update and segment table with `segments`'
    /// pipelines.
    pub(super) fn runs_for(
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
                    let piece = &self.pieces[*p];
                    let held = self.held_uniform(device, piece, chunk, chunk.start);
                    let state = self.state_bindings(piece, chunk, chunk, held.as_ref());
                    // q8 steps the tensors by blocks (`q8_over_tensors`); the run is scanned.
                    let update = piece.q8.is_none().then(|| {
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
                    });
                    let count_rows = segments::count_rows(&plan.rows, COUNT_SPAN);
                    let count_table =
                        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                            label: Some("bayesprop segment count table"),
                            contents: bytemuck::cast_slice(&count_rows),
                            usage: wgpu::BufferUsages::STORAGE,
                        });
                    Run {
                        table_update: segments.pipeline.bind_table(device, &table),
                        table_scan: segments.scan.bind_table(device, &table),
                        table_count: segments.scan.bind_table(device, &count_table),
                        count_rows: count_rows.len() as u32,
                        plan,
                        update,
                        control: None,
                    }
                })
                .collect::<Vec<_>>()
        })
    }
}

impl GpuGroup {
    /// In `q8`, the dispatches of whole blocks over `tensors` (each one's arena range and
    /// places in the caller's buffers): per tensor, its piece's blocks with θ and g where the
    /// caller keeps them. None in another format.
    pub(super) fn q8_over_tensors(
        &self,
        ctx: &GpuContext,
        tensors: &[(Range<usize>, TensorBuffers)],
    ) -> Result<Vec<(u32, wgpu::BindGroup)>> {
        if self.format != StateFormat::Q8 {
            return Ok(Vec::new());
        }
        let device = ctx.device();
        ctx.scoped("binding the caller's tensors in q8", || {
            let mut dispatches = Vec::new();
            for (range, buffers) in tensors {
                let piece = self
                    .pieces
                    .iter()
                    .find(|p| p.range.start <= range.start && range.end <= p.range.end)
                    .expect("a tensor lies in one piece");
                let q8 = piece.q8.as_ref().expect("held in q8");
                let local = (range.start - piece.range.start) as u64;
                let end = local + range.len() as u64;
                let blocks: Vec<[u64; 6]> = q8
                    .block_list
                    .iter()
                    .filter(|b| local <= b[0] && b[0] < end)
                    .map(|&[p, len, flat, index]| {
                        let at = |r: &BufferRange| r.offset / 4 + (p - local);
                        [at(&buffers.theta), at(&buffers.grad), p, len, flat, index]
                    })
                    .collect();
                dispatches.extend(self.bind_q8(
                    device,
                    piece,
                    &buffers.theta.buffer,
                    &buffers.grad.buffer,
                    &blocks,
                ));
            }
            dispatches
        })
    }
}

/// Splits `n` elements into ranges whose bytes fit one storage binding and whose offsets meet
/// the device's storage offset alignment. Where a binding holds [`NORM_CHUNK`] elements or
/// more, chunks are whole multiples of it: each chunk's partial sums of the norm then fill
/// its region of the partials without padding, and the regions join into exactly the one the
/// CPU reference sums (see [`crate::transform`]), so clipping stays bit-identical.
pub(super) fn binding_chunks(n: u64, limits: &wgpu::Limits) -> Vec<Range<u64>> {
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
pub(super) const NORM_CHUNK: u64 = (NORM_BLOCK * PARTIAL_ALIGN) as u64;

/// Cuts a chunk into a vec4 body and a scalar tail. The tail starts at a multiple of `align`
/// elements (the storage offset alignment) past the chunk's start, which is aligned; with
/// `vec4` false the whole chunk is scalar.
pub(super) fn parts_of(chunk: &Range<u64>, align: u64, vec4: bool) -> Vec<(Range<u64>, Lanes)> {
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
pub(super) fn pieces_of(
    arena_len: usize,
    tensors: &[&TensorSpec],
    max: usize,
) -> Result<Vec<Range<usize>>> {
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

pub(super) fn check_external(
    ext: &TensorBuffers,
    arena_len: usize,
    limits: &wgpu::Limits,
) -> Result<()> {
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

/// `values` followed by zeros up to `len` elements (at least one element).
pub(super) fn padded(values: &[f32], len: usize) -> Vec<f32> {
    let mut out = values.to_vec();
    out.resize(len.max(values.len()).max(1), 0.0);
    out
}
