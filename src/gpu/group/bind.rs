//! Binding: the bind groups of every part and run, and of the step control.

use super::*;

impl GpuGroup {
    /// The bindings of a piece's used state slots over `range`, which lies in binding chunk
    /// `chunk` (the placeholder for unused slots), in slot order. A held format binds the
    /// words of the whole chunk, then `held` (from [`GpuGroup::held_uniform`]) and the
    /// group's tensor table.
    pub(super) fn state_bindings<'a>(
        &'a self,
        piece: &'a Piece,
        chunk: &Range<u64>,
        range: &Range<u64>,
        held: Option<&'a wgpu::Buffer>,
    ) -> Vec<wgpu::BufferBinding<'a>> {
        let mut bindings: Vec<_> = piece
            .state
            .iter()
            .map(|b| match (b, held) {
                (Some(b), None) => slice_binding_owned(b, range),
                // Two codes to a word; chunks start at multiples of 4 (`check_held`).
                (Some(b), Some(_)) => wgpu::BufferBinding {
                    buffer: b,
                    offset: chunk.start * 2,
                    size: wgpu::BufferSize::new((chunk.end - chunk.start).div_ceil(2).max(1) * 4),
                },
                (None, _) => self.placeholder.as_entire_buffer_binding(),
            })
            .collect();
        if let (Some(uniform), Some(state)) = (held, &self.held) {
            bindings.push(uniform.as_entire_buffer_binding());
            bindings.push(state.tensors.as_entire_buffer_binding());
        }
        bindings
    }

    /// For a held format, the `Held` uniform of a dispatch whose state index 0 is element
    /// `start` of `piece`'s state, which lies in binding chunk `chunk`; `None` in `f32`.
    pub(super) fn held_uniform(
        &self,
        device: &wgpu::Device,
        piece: &Piece,
        chunk: &Range<u64>,
        start: u64,
    ) -> Option<wgpu::Buffer> {
        let held = self.held.as_ref()?;
        let base = piece.range.start as u64 + chunk.start;
        let values = [(start - chunk.start) as u32, base as u32, held.seed, 0];
        Some(
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("bayesprop held"),
                contents: bytemuck::cast_slice(&values),
                usage: wgpu::BufferUsages::UNIFORM,
            }),
        )
    }

    /// Binds the arena's dispatches of a piece (none for tensors in the caller's buffers).
    pub(super) fn bind(&self, device: &wgpu::Device, piece: &mut Piece, align: u64, vec4: bool) {
        let (Some(theta), Some(grad)) = (&piece.theta, &piece.grad) else {
            return;
        };
        let window = || self.window.as_entire_buffer_binding();
        let status = || self.status.as_entire_buffer_binding();
        let cuts: Vec<_> = piece
            .chunks
            .iter()
            .flat_map(|chunk| {
                let parts = parts_of(chunk, align, vec4).into_iter();
                parts.map(move |(range, lanes)| (chunk.clone(), range, lanes))
            })
            .collect();
        let q8 = piece.q8.is_some();
        piece.parts = cuts
            .into_iter()
            .map(|(chunk, range, lanes)| {
                if q8 {
                    // Scanned by parts; updated by blocks (below).
                    return Part {
                        range,
                        lanes,
                        update: None,
                        control: None,
                    };
                }
                let held = self.held_uniform(device, piece, &chunk, range.start);
                let state = self.state_bindings(piece, &chunk, &range, held.as_ref());
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
                    update: Some(update),
                    control: None,
                }
            })
            .collect();
        let Some(q8) = &piece.q8 else { return };
        // The piece's blocks at the same places in θ, g and the state.
        let at = |r: &BufferRange, p: u64| r.offset / 4 + p;
        let blocks: Vec<[u64; 6]> = q8
            .block_list
            .iter()
            .map(|&[p, len, flat, index]| [at(theta, p), at(grad, p), p, len, flat, index])
            .collect();
        let dispatches = self.bind_q8(device, piece, &theta.buffer, &grad.buffer, &blocks);
        if let Some(q8) = &mut piece.q8 {
            q8.dispatches = dispatches;
        }
    }

    /// The bind groups of `q8` dispatches over `blocks` of `piece` (see [`q8_windows`]; none
    /// in another format), θ and g in `theta` and `grad`: θ, g and each used slot's codes
    /// from the window's first element, its `Q8` uniform and block table, and the piece's
    /// scales. With each dispatch's block count.
    pub(super) fn bind_q8(
        &self,
        device: &wgpu::Device,
        piece: &Piece,
        theta: &wgpu::Buffer,
        grad: &wgpu::Buffer,
        blocks: &[[u64; 6]],
    ) -> Vec<(u32, wgpu::BindGroup)> {
        let (Some(q8), Some(held)) = (&piece.q8, &self.held) else {
            return Vec::new();
        };
        let used = (0..).zip(&held.slots).filter(|(_, s)| s.is_some());
        let used_bits = used.fold(0u32, |bits, (k, _)| bits | 1 << k);
        let uniform = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("bayesprop q8"),
            contents: bytemuck::cast_slice(&[held.seed, used_bits, q8.blocks, 0]),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let limits = device.limits();
        let align = u64::from(limits.min_storage_buffer_offset_alignment).max(4);
        let windows = q8_windows(blocks, align, limits.max_storage_buffer_binding_size);
        let f32s = |buffer, r: &Range<u64>| wgpu::BufferBinding {
            buffer,
            offset: r.start * 4,
            size: wgpu::BufferSize::new((r.end - r.start) * 4),
        };
        windows
            .iter()
            .map(|w| {
                let table = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("bayesprop q8 blocks"),
                    contents: bytemuck::cast_slice(&w.rows),
                    usage: wgpu::BufferUsages::STORAGE,
                });
                // Four codes to a word; windows start at multiples of 4 (and of the
                // storage offset alignment, in bytes).
                let codes = piece.state.iter().map(|b| match b {
                    Some(b) => wgpu::BufferBinding {
                        buffer: b,
                        offset: w.state.start,
                        size: wgpu::BufferSize::new((w.state.end - w.state.start).div_ceil(4) * 4),
                    },
                    None => self.placeholder.as_entire_buffer_binding(),
                });
                let bindings = [
                    self.window.as_entire_buffer_binding(),
                    self.status.as_entire_buffer_binding(),
                    f32s(theta, &w.theta),
                    f32s(grad, &w.grad),
                ]
                .into_iter()
                .chain(codes)
                .chain([
                    uniform.as_entire_buffer_binding(),
                    table.as_entire_buffer_binding(),
                    q8.scales.as_entire_buffer_binding(),
                ]);
                let update = self
                    .pipeline
                    .bind(device, "bayesprop q8 step", in_order(bindings));
                (w.blocks, update)
            })
            .collect()
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
}

pub(super) fn window_binding<'a>(
    buffer: &'a wgpu::Buffer,
    bytes: &Range<u64>,
) -> wgpu::BufferBinding<'a> {
    wgpu::BufferBinding {
        buffer,
        offset: bytes.start,
        size: wgpu::BufferSize::new(bytes.end - bytes.start),
    }
}

pub(super) fn slice_binding<'a>(
    slice: &'a BufferRange,
    elements: &Range<u64>,
) -> wgpu::BufferBinding<'a> {
    wgpu::BufferBinding {
        buffer: &slice.buffer,
        offset: slice.offset + elements.start * 4,
        size: wgpu::BufferSize::new((elements.end - elements.start).max(1) * 4),
    }
}

pub(super) fn slice_binding_owned<'a>(
    buffer: &'a wgpu::Buffer,
    elements: &Range<u64>,
) -> wgpu::BufferBinding<'a> {
    wgpu::BufferBinding {
        buffer,
        offset: elements.start * 4,
        size: wgpu::BufferSize::new((elements.end - elements.start).max(1) * 4),
    }
}
