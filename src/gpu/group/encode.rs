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
}

pub(super) fn part_len(part: &Part) -> u32 {
    (part.range.end - part.range.start) as u32
}
