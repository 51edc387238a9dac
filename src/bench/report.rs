//! A run's rows from its samples (medians, the roofline fraction, speedups), and the table
//! and JSON that `bayesprop bench` prints.

use crate::bench::measure::{Measured, Samples};
use crate::bench::plan::{format_size, Job};
use crate::bench::{Case, Report, Row, StepKind, MANY_TENSORS, MANY_TENSORS_LEN};
use crate::config::StateFormat;
use crate::device::StepDevice;
use crate::optim::NonFinitePolicy;

/// GPU rows: the step time of the CPU row of the same optimizer, size, case, policy and step
/// over their own.
pub(super) fn fill_speedups(rows: &mut [Row]) {
    fill_time_ratios(
        rows,
        |r| r.step_seconds_median,
        |r| r.device == "cpu",
        |r| r.device == "gpu",
        |r| {
            let (o, f, n, c, p, s) = (
                &r.optimizer,
                &r.state_format,
                r.n,
                &r.case,
                &r.policy,
                &r.step,
            );
            format!("{o} {f} {n} {c} {p} {s}")
        },
        |r, ratio| r.gpu_cpu_speedup = ratio,
    );
}

/// Fused training-step rows: the unfused row's step time over the fused one's, each relative
/// to its own touch (the same arrays, timed right after each step), so that load changing
/// between the two rows cancels, as in [`Report::scan_costs`]: a row's step time over its
/// touch's is its real bytes over its roofline fraction, times a factor the two rows share.
pub(super) fn fill_ratios(rows: &mut [Row]) {
    fill_time_ratios(
        rows,
        |r| r.bytes_per_element / r.roofline_fraction,
        |r| r.step == StepKind::Unfused.name(),
        |r| r.step == StepKind::Fused.name(),
        |r| {
            let (o, f, n, d, p) = (&r.optimizer, &r.state_format, r.n, &r.device, &r.policy);
            format!("{o} {f} {n} {d} {p}")
        },
        |r, ratio| r.unfused_over_fused = ratio,
    );
}

/// Sets, on each row `to` picks, the `time` of the row `from` picks with the same `key` over
/// its own.
fn fill_time_ratios(
    rows: &mut [Row],
    time: fn(&Row) -> f64,
    from: fn(&Row) -> bool,
    to: fn(&Row) -> bool,
    key: fn(&Row) -> String,
    set: fn(&mut Row, Option<f64>),
) {
    let sources: Vec<(String, f64)> = rows
        .iter()
        .filter(|r| from(r))
        .map(|r| (key(r), time(r)))
        .collect();
    for row in rows.iter_mut().filter(|r| to(r)) {
        let k = key(row);
        let own = time(row);
        let ratio = sources
            .iter()
            .find(|(s, _)| *s == k)
            .map(|(_, seconds)| seconds / own);
        set(row, ratio);
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => 0.5 * (values[n / 2 - 1] + values[n / 2]),
    }
}

/// The row of a job from all its passes: medians over the pooled samples.
pub(super) fn row(job: &Job, passes: &[Measured]) -> Row {
    let pooled = |f: fn(&Samples) -> &Vec<f64>| -> Vec<f64> {
        passes
            .iter()
            .flat_map(|m| f(&m.samples).iter().copied())
            .collect()
    };
    // Each touch was measured right after its step: their ratio shrugs off load changes.
    let ratios = |m: &Measured| -> Vec<f64> {
        let s = &m.samples;
        s.touch.iter().zip(&s.step).map(|(t, s)| t / s).collect()
    };
    let per_pass: Vec<f64> = passes.iter().map(|m| median(&mut ratios(m))).collect();
    // The touch moves the update's SPEC bytes; the step may move more (the scan, the
    // unfused passes), and is judged by what it really moves.
    let bytes_per_element = job.bytes_per_element();
    let touch_bytes = match job.device {
        // The CPU touches the state as held (codes and scales); the GPU holds f32 only.
        StepDevice::Reference | StepDevice::Cpu => {
            job.config.as_dyn().bytes_per_element_in(job.state_format)
        }
        StepDevice::Gpu => job.config.as_dyn().bytes_per_element() as f64,
    };
    let by_bytes = bytes_per_element / touch_bytes;
    let mut per_pass: Vec<f64> = per_pass.iter().map(|f| f * by_bytes).collect();
    let fraction = by_bytes * median(&mut passes.iter().flat_map(ratios).collect::<Vec<_>>());
    per_pass.sort_by(f64::total_cmp);
    let step = median(&mut pooled(|s| &s.step));
    let touch = median(&mut pooled(|s| &s.touch));
    let copy = median(&mut pooled(|s| &s.copy));
    let mut walls: Vec<f64> = passes
        .iter()
        .filter_map(|m| m.samples.wall_per_step)
        .collect();
    let wall = if walls.is_empty() {
        step
    } else {
        median(&mut walls)
    };
    let first = &passes[0];
    let n = job.n;
    let gb_per_second = bytes_per_element * n as f64 / step / 1e9;
    let roofline_gb_per_second = touch_bytes * n as f64 / touch / 1e9;
    Row {
        optimizer: job.name.clone(),
        n,
        device: job.device.name().to_string(),
        adapter: first.adapter.clone(),
        step_seconds_median: step,
        elements_per_second: n as f64 / step,
        bytes_per_element,
        gb_per_second,
        roofline_gb_per_second,
        roofline_fraction: fraction,
        roofline_fraction_min: per_pass[0],
        roofline_fraction_max: per_pass[per_pass.len() - 1],
        runs: passes.len(),
        copy_gb_per_second: 8.0 * n as f64 / copy / 1e9,
        case: job.case.name().to_string(),
        policy: job.policy.name().to_string(),
        timing: first.samples.timing.to_string(),
        wall_seconds_per_step: wall,
        gpu_cpu_speedup: None,
        workgroup_size: first.workgroup_size,
        vec4: first.vec4,
        step: job.step.name().to_string(),
        unfused_over_fused: None,
        state_format: job.state_format.name().to_string(),
    }
}

impl Report {
    /// The rows as one JSON array of objects.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(&self.rows).expect("rows serialize")
    }

    /// The rows of the matrix (one tensor, the matrix's policy).
    pub fn matrix(&self) -> impl Iterator<Item = &Row> {
        self.rows
            .iter()
            .filter(|r| r.step == StepKind::Update.name())
            .filter(|r| r.case == Case::OneTensor.name() && r.policy == self.policy.name())
    }

    fn find(&self, like: &Row, n: usize, case: Case, policy: &str) -> Option<&Row> {
        let (optimizer, format, device) = (&like.optimizer, &like.state_format, &like.device);
        self.rows.iter().find(|r| {
            r.optimizer == *optimizer
                && r.state_format == *format
                && r.n == n
                && r.device == *device
                && r.case == case.name()
                && r.policy == policy
                && r.step == StepKind::Update.name()
        })
    }

    /// Step time of 10,000 tensors of 1,000 over one tensor of 10M, per device. Each row's
    /// time is taken relative to its own touch (the same arrays at the same size), so a change
    /// in machine load between the two rows cancels: the ratio of their roofline fractions.
    pub fn many_tensor_ratios(&self) -> Vec<(String, String, String, f64)> {
        let n = MANY_TENSORS * MANY_TENSORS_LEN;
        self.rows
            .iter()
            .filter(|r| r.case == Case::ManyTensors.name() || r.case == Case::CallerTensors.name())
            .filter_map(|many| {
                let one = self.find(many, n, Case::OneTensor, &many.policy)?;
                let ratio = one.roofline_fraction / many.roofline_fraction;
                Some((
                    many.optimizer.clone(),
                    many.device.clone(),
                    many.case.clone(),
                    ratio,
                ))
            })
            .collect()
    }

    /// The scan pass's cost per optimizer, size and device: step time under `SkipStep` (with
    /// the scan) over `SkipElement` (without), minus one; each relative to its own touch, as
    /// in [`Report::many_tensor_ratios`].
    pub fn scan_costs(&self) -> Vec<(String, usize, String, f64)> {
        self.rows
            .iter()
            .filter(|r| r.policy == NonFinitePolicy::SkipElement.name())
            .filter(|r| r.step == StepKind::Update.name())
            .filter_map(|without| {
                let with = self.find(
                    without,
                    without.n,
                    Case::OneTensor,
                    NonFinitePolicy::SkipStep.name(),
                )?;
                // Fractions count each row's own bytes (the scan's read of g in `with`); the
                // time relative to the touch is the fraction per byte.
                let per_byte = |r: &Row| r.roofline_fraction / r.bytes_per_element;
                let cost = per_byte(without) / per_byte(with) - 1.0;
                Some((
                    without.optimizer.clone(),
                    without.n,
                    without.device.clone(),
                    cost,
                ))
            })
            .collect()
    }

    /// The human-readable report: the table, then the many-tensor ratios and the scan costs.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let header = [
            "optimizer",
            "n",
            "device",
            "B/elem",
            "step ms",
            "Melem/s",
            "GB/s",
            "roof GB/s",
            "of roof",
            "copy GB/s",
            "GPU/CPU",
        ];
        let mut lines: Vec<[String; 11]> = vec![header.map(String::from)];
        let mut matrix: Vec<&Row> = self.matrix().collect();
        matrix.sort_by_key(|r| {
            (
                order_of(&r.optimizer, self),
                r.n,
                order_of_format(r),
                &r.device,
            )
        });
        for r in matrix {
            lines.push([
                match r.state_format.as_str() {
                    "f32" => r.optimizer.clone(),
                    format => format!("{} {format}", r.optimizer),
                },
                format_size(r.n),
                r.device.clone(),
                format!("{:.2}", r.bytes_per_element),
                format!("{:.3}", r.step_seconds_median * 1e3),
                format!("{:.0}", r.elements_per_second / 1e6),
                format!("{:.2}", r.gb_per_second),
                format!("{:.2}", r.roofline_gb_per_second),
                match r.runs {
                    1 => format!("{:.2}", r.roofline_fraction),
                    _ => format!(
                        "{:.2} ({:.2}-{:.2})",
                        r.roofline_fraction, r.roofline_fraction_min, r.roofline_fraction_max
                    ),
                },
                format!("{:.2}", r.copy_gb_per_second),
                r.gpu_cpu_speedup
                    .map_or("-".to_string(), |s| format!("{s:.2}x")),
            ]);
        }
        let widths: Vec<usize> = (0..11)
            .map(|c| {
                lines
                    .iter()
                    .map(|l| l[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let runs = self.rows.first().map_or(1, |r| r.runs);
        let _ = writeln!(
            out,
            "non-finite policy: {}; {runs} pass(es) pooled per row{}",
            self.policy.name(),
            if runs > 1 {
                "; of roof: median over all samples (lowest-highest pass)"
            } else {
                ""
            }
        );
        for (k, line) in lines.iter().enumerate() {
            let cells: Vec<String> = line
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, &w))| match c {
                    0 | 2 => format!("{cell:<w$}"),
                    _ => format!("{cell:>w$}"),
                })
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
            if k == 0 {
                let total = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
                let _ = writeln!(out, "{}", "-".repeat(total));
            }
        }
        for (optimizer, device, case, ratio) in self.many_tensor_ratios() {
            let _ = writeln!(
                out,
                "many tensors ({optimizer}, {device}): {case} takes {ratio:.2}x the step time of one tensor of 10M",
            );
        }
        for (optimizer, n, device, cost) in self.scan_costs() {
            let _ = writeln!(
                out,
                "scan pass ({optimizer}, {device}, n={}): skip-step costs {:+.1}% over skip-element",
                format_size(n),
                100.0 * cost
            );
        }
        for r in self
            .rows
            .iter()
            .filter(|r| r.step == StepKind::Fused.name())
        {
            let Some(u) = self.rows.iter().find(|u| {
                u.step == StepKind::Unfused.name()
                    && (&u.optimizer, u.n, &u.device, &u.policy)
                        == (&r.optimizer, r.n, &r.device, &r.policy)
            }) else {
                let _ = writeln!(
                    out,
                    "training step ({}, {}, n={}, {}): fused {:.3} ms, {} B/elem, {:.2} of roof; no unfused row on this device",
                    r.optimizer, r.device, format_size(r.n), r.policy,
                    r.step_seconds_median * 1e3, r.bytes_per_element, r.roofline_fraction
                );
                continue;
            };
            let _ = writeln!(
                out,
                "training step ({}, {}, n={}, {}): fused {:.3} ms, {} B/elem, {:.2} of roof; unfused {:.3} ms, {} B/elem, {:.2} of roof; unfused/fused {:.2}x (each against its touch)",
                r.optimizer, r.device, format_size(r.n), r.policy,
                r.step_seconds_median * 1e3, r.bytes_per_element, r.roofline_fraction,
                u.step_seconds_median * 1e3, u.bytes_per_element, u.roofline_fraction,
                r.unfused_over_fused.unwrap_or(f64::NAN)
            );
        }
        let timings: Vec<String> = {
            let mut t: Vec<String> = self
                .rows
                .iter()
                .map(|r| format!("{} rows: {}", r.device, r.timing))
                .collect();
            t.sort();
            t.dedup();
            t
        };
        if !timings.is_empty() {
            let _ = writeln!(out, "timing: {}", timings.join("; "));
        }
        for adapter in self.adapters() {
            let _ = writeln!(out, "{adapter}");
        }
        if let Some((before, after)) = &self.load {
            let _ = writeln!(
                out,
                "load average (1, 5, 15 min): {before} before, {after} after"
            );
        }
        if let Some(why) = &self.gpu_missing {
            let _ = writeln!(out, "{why}");
        }
        for line in &self.skipped {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    fn adapters(&self) -> Vec<String> {
        let mut seen: Vec<String> = self
            .rows
            .iter()
            .map(|r| match (r.workgroup_size, r.vec4) {
                (Some(w), Some(v)) => format!(
                    "{}: {} (workgroup size {w}, {})",
                    r.device,
                    r.adapter,
                    if v { "vec4" } else { "scalar" }
                ),
                _ => format!("{}: {}", r.device, r.adapter),
            })
            .collect();
        seen.sort();
        seen.dedup();
        seen
    }
}

/// State formats in SPEC order (`f32`, `bf16`, `q8`).
fn order_of_format(row: &Row) -> usize {
    StateFormat::ALL
        .iter()
        .position(|f| f.name() == row.state_format)
        .unwrap_or(usize::MAX)
}

/// Optimizers in the order the rows first name them.
fn order_of(optimizer: &str, report: &Report) -> usize {
    report
        .rows
        .iter()
        .position(|r| r.optimizer == optimizer)
        .unwrap_or(usize::MAX)
}
