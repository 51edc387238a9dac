//! Encoding: the per-step window of scalars and the dispatches of a step.

use super::*;

impl GpuGroup {
    /// Records the sum of every group's partials into the norm and clip factor.
    pub fn encode_reduce(&self, pass: &mut wgpu::ComputePass<'_>, reduce: &wgpu::BindGroup) {
        self.control
            .dispatch_one(pass, REDUCE, &[reduce, &self.transform_control]);
    }

    pub(super) fn parts(&self) -> impl Iterator<Item = &Part> {
        self.pieces.iter().flat_map(|p| &p.parts)
    }

    pub(super) fn runs(&self) -> impl Iterator<Item = &Run> {
        self.segments.iter().flat_map(|s| &s.runs)
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
        // t and the non-finite count (after the pad) are the status's, copied in later.
        bytes.extend_from_slice(bytemuck::cast_slice(&[
            base as u32,
            spec.policy as u32,
            u32::from(norm),
            0,
            0,
            0,
            0,
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

    /// Between the scan and the update: the status (t and the scan's count) into the window,
    /// where the update reads it as a uniform.
    pub fn copy_status(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.copy_buffer_to_buffer(
            &self.status,
            0,
            &self.window,
            WINDOW_STATUS_OFFSET,
            STATUS_BYTES,
        );
    }

    /// The variants of the update this step needs, compiled on first use: for the group's
    /// policy, whether g is unscaled and clipped, and the flags of the per-step scalars in
    /// `window` (as [`GpuGroup::window_bytes`] wrote it); and of the scan, if `scan`.
    pub fn variants(
        &self,
        ctx: &GpuContext,
        spec: &GroupSpec,
        window: &[u8],
        unscale: bool,
        clip: bool,
        scan: bool,
    ) -> Result<Variants> {
        let kernel = spec.config.as_dyn().kernel();
        let stride = scalars_bytes(kernel.scalars.len());
        let entries = window[WINDOW_HEADER_BYTES..].chunks(stride);
        let values = Specialization(
            [spec.policy as u32, u32::from(unscale), u32::from(clip)]
                .into_iter()
                .chain(kernel.flag_values(entries))
                .collect(),
        );
        // q8 steps caller tensors with the arena's pipeline (`q8_over_tensors`).
        let q8 = self.format == StateFormat::Q8;
        let arena = match self.parts().next().is_some() || q8 {
            true => Some(ctx.variant(&self.pipeline, &values)?),
            false => None,
        };
        let segments = match &self.segments {
            Some(segments) if !q8 => Some(ctx.variant(&segments.pipeline, &values)?),
            _ => None,
        };
        // The dividing scan is another control pipeline; the bind groups made with the
        // default one's layout fit it, as wgpu makes one layout of identical entries.
        let scan_of = |addressing, compiled: &Arc<Pipeline>| match (scan, unscale) {
            (false, _) => Ok(None),
            (true, false) => Ok(Some(compiled.clone())),
            (true, true) => ctx.control_pipeline(addressing, true).map(Some),
        };
        Ok(Variants {
            arena,
            segments,
            scan: scan_of(Addressing::Arena, &self.control)?,
            scan_segments: match &self.segments {
                Some(segments) => scan_of(Addressing::Segments, &segments.scan)?,
                None => None,
            },
        })
    }

    /// Records the group's scan: its non-finite count and, with clipping (`norm`), its
    /// partials, by `variants` (compiled with `scan`).
    pub fn encode_scan(&self, pass: &mut wgpu::ComputePass<'_>, norm: bool, variants: &Variants) {
        let scan = variants.scan.as_ref().expect("compiled with the scan");
        for part in self.parts() {
            let control = part.control.as_ref().expect("bound by bind_control");
            scan.dispatch_scan(
                pass,
                (Addressing::Arena, norm),
                &[control, &self.transform_control],
                part.lanes,
                part_len(part),
            );
        }
        if let Some(segments) = &self.segments {
            let scan = variants
                .scan_segments
                .as_ref()
                .expect("compiled with the scan");
            for run in &segments.runs {
                let control = run.control.as_ref().expect("bound by bind_control");
                let (table, rows) = match norm {
                    true => (&run.table_scan, run.rows()),
                    false => (&run.table_count, run.count_rows),
                };
                scan.dispatch_scan(
                    pass,
                    (Addressing::Segments, norm),
                    &[control, &self.transform_control, table],
                    run.plan.lanes,
                    rows,
                );
            }
        }
    }

    /// Records the fused update of every chunk, by `variants` (this step's, from
    /// [`GpuGroup::variants`]), and the commit of the step counter.
    pub fn encode_update(&self, pass: &mut wgpu::ComputePass<'_>, variants: &Variants) {
        for part in self.parts() {
            let Some(update) = &part.update else { continue };
            self.pipeline.dispatch_of(
                pass,
                variants
                    .arena
                    .as_ref()
                    .expect("compiled where there are parts"),
                &[update, &self.transform_update],
                part.lanes,
                part_len(part),
            );
        }
        self.encode_q8(pass, variants, false);
        if let Some(segments) = &self.segments {
            for run in &segments.runs {
                let Some(update) = &run.update else { continue };
                segments.pipeline.dispatch_rows_of(
                    pass,
                    variants.segments.as_ref().expect("compiled with segments"),
                    &[update, &self.transform_update, &run.table_update],
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
}

impl GpuGroup {
    /// Whether a step of the group first counts the elements whose new `q8` state would not
    /// be finite ([`GpuGroup::encode_q8_count`]): `q8` under SkipStep or Error.
    pub fn counts_q8_overflow(&self, spec: &GroupSpec) -> bool {
        self.format == StateFormat::Q8 && spec.policy.counts_first()
    }

    /// Records the count of the elements whose new `q8` state would not be finite, into the
    /// status (after the scan's count is in the window; the status goes into the window
    /// again before the update).
    pub fn encode_q8_count(&self, pass: &mut wgpu::ComputePass<'_>, variants: &Variants) {
        self.encode_q8(pass, variants, true);
    }

    /// Every `q8` dispatch of whole blocks, over the arena's pieces and over caller tensors,
    /// with its block count.
    pub(super) fn q8_dispatches(&self) -> impl Iterator<Item = &(u32, wgpu::BindGroup)> {
        let pieces = self.pieces.iter().flat_map(|p| &p.q8);
        let tensors = self.segments.iter().flat_map(|s| &s.q8);
        pieces.flat_map(|q8| &q8.dispatches).chain(tensors)
    }

    /// Records every `q8` dispatch of whole blocks: the step, or with `count` the count.
    fn encode_q8(&self, pass: &mut wgpu::ComputePass<'_>, variants: &Variants, count: bool) {
        for (blocks, update) in self.q8_dispatches() {
            let variant = variants.arena.as_ref().expect("compiled in q8");
            let groups = [update, &self.transform_update];
            self.pipeline
                .dispatch_q8(pass, variant, count, &groups, *blocks);
        }
    }
}

pub(super) fn part_len(part: &Part) -> u32 {
    (part.range.end - part.range.start) as u32
}

/// The compiled update of one step of a group, over its arena's parts and over its segment
/// tables where it has them, and its scan where it runs one.
pub(crate) struct Variants {
    arena: Option<Arc<ByWidth>>,
    segments: Option<Arc<ByWidth>>,
    scan: Option<Arc<Pipeline>>,
    scan_segments: Option<Arc<Pipeline>>,
}
