//! Tensors in the caller's buffers: each tensor's θ and gradient wherever the caller keeps them
//! (any buffer, any offset that is a multiple of 4 bytes), the state in the optimizer's arena.
//!
//! A step is still a handful of dispatches, not one per tensor, the way PyTorch's
//! `multi_tensor_apply` does it: the tensors that share a θ buffer, a gradient buffer, a state
//! binding and a lane width form a *run*, bound once, and a *segment table* gives each workgroup of the
//! run's dispatch its stretch of one tensor (`Block` in shaders/common.wgsl). The arithmetic per
//! element is the arena kernels' own (`update` in each shader), so the results are bit-identical
//! to the arena path; only the norm of a clipped step sums in another order (see
//! [`crate::transform`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::ops::Range;

use crate::error::{Error, Result};
use crate::gpu::buffers::TensorBuffers;
use crate::gpu::pipeline::ROW_LANES;
use crate::kernels::Lanes;
use crate::transform::PARTIAL_ALIGN;

/// One row of a segment table, as `Block` in shaders/common.wgsl: lane groups k < `count` at
/// θ[theta + k], g[grad + k] and state[state + k], indices into the run's bindings in units of
/// the run's lane width (1 or 4 elements).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Row {
    pub theta: u32,
    pub grad: u32,
    pub state: u32,
    pub count: u32,
}

/// Lane groups per row: one workgroup of the norm's scan, one partial sum.
const ROW_LEN: u64 = ROW_LANES as u64;

/// The rows of a count without the norm (`count_segments` in shaders/control.wgsl): up to
/// `span` whole rows whose gradients follow one another merged into one, so that a workgroup
/// checks `span` lane groups per invocation and reads one row for them (llvmpipe pays per
/// invocation; docs/performance.md). Only `grad` and `count` are meaningful.
pub fn count_rows(rows: &[Row], span: u32) -> Vec<Row> {
    let mut merged: Vec<Row> = Vec::new();
    for row in rows {
        match merged.last_mut() {
            Some(last)
                if last.count.is_multiple_of(ROW_LANES)
                    && last.count < span * ROW_LANES
                    && last.grad + last.count == row.grad =>
            {
                last.count += row.count
            }
            _ => merged.push(*row),
        }
    }
    merged
}

/// A tensor as the planner sees it: its θ and g as (buffer, byte offset), where its state
/// lies (a state binding and the element offset in it) and its length.
#[derive(Clone, Debug)]
pub struct Placed<B> {
    pub theta: (B, u64),
    pub grad: (B, u64),
    /// Which state binding (an index the caller gives meaning to).
    pub binding: usize,
    /// Element offset of the tensor's state in that binding.
    pub state: u64,
    pub len: u64,
    /// Elements per invocation: with [`Lanes::Four`], both byte offsets are multiples of 16,
    /// and `state` and `len` multiples of 4 (see [`by_lanes`]).
    pub lanes: Lanes,
}

impl<B: Clone> Placed<B> {
    /// The stretch from element `from`, `len` long.
    fn part(&self, from: u64, len: u64, lanes: Lanes) -> Self {
        Placed {
            theta: (self.theta.0.clone(), self.theta.1 + from * 4),
            grad: (self.grad.0.clone(), self.grad.1 + from * 4),
            state: self.state + from,
            len,
            lanes,
            ..self.clone()
        }
    }
}

/// Cuts a scalar stretch into a scalar head, a vec4 body and a scalar tail, where its θ, g and
/// state reach a 16-byte boundary together (they do for a framework's aligned allocations);
/// otherwise it stays scalar. Per element the arithmetic is the same at both widths.
pub fn by_lanes<B: Clone>(t: &Placed<B>) -> Vec<Placed<B>> {
    let phase = |elements: u64| elements % 4;
    let (theta, grad) = (t.theta.1 / 4, t.grad.1 / 4);
    if phase(theta) != phase(grad) || phase(theta) != phase(t.state) {
        return vec![t.part(0, t.len, Lanes::One)];
    }
    let head = ((4 - phase(t.state)) % 4).min(t.len);
    let body = (t.len - head) / 4 * 4;
    let tail = t.len - head - body;
    [
        (0, head, Lanes::One),
        (head, body, Lanes::Four),
        (head + body, tail, Lanes::One),
    ]
    .into_iter()
    .filter(|&(_, len, _)| len > 0)
    .map(|(from, len, lanes)| t.part(from, len, lanes))
    .collect()
}

/// A run: tensors whose θ lie in one window of one buffer, whose g lie in one window of one
/// buffer, and whose state lies in one binding; one dispatch steps them all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunPlan<B> {
    pub theta: B,
    /// Bytes of the θ buffer bound: aligned start, end past the last element.
    pub theta_window: Range<u64>,
    pub grad: B,
    pub grad_window: Range<u64>,
    pub binding: usize,
    pub lanes: Lanes,
    pub rows: Vec<Row>,
}

impl<B> RunPlan<B> {
    /// Slots of the run's region of the norm's partials: one per row, zeros up to the
    /// alignment (see [`crate::transform`]).
    pub fn partial_slots(&self) -> u64 {
        (self.rows.len() as u64)
            .max(1)
            .next_multiple_of(PARTIAL_ALIGN as u64)
    }
}

/// What bounds a run's windows: the device's storage offset alignment and binding size, in
/// bytes.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub align: u64,
    pub max_binding: u64,
}

impl Limits {
    pub fn of(limits: &wgpu::Limits) -> Self {
        Limits {
            align: u64::from(limits.min_storage_buffer_offset_alignment).max(4),
            max_binding: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
        }
    }

    /// Window starts at this width: vec4 bindings start at multiples of 16 bytes too.
    fn align(&self, lanes: Lanes) -> u64 {
        match lanes {
            Lanes::One => self.align,
            Lanes::Four => self.align.next_multiple_of(16),
        }
    }

    /// The longest stretch of a tensor one window is sure to hold, wherever it starts: a
    /// whole number of lane groups.
    fn max_stretch(&self, lanes: Lanes) -> u64 {
        let width = u64::from(lanes.width());
        ((self.max_binding - self.align(lanes) + 4) / 4 / width * width).max(width)
    }
}

/// Groups `tensors` (in the order given) into runs, cutting a tensor where it would not fit
/// one window. Runs come in the order of their first tensor, rows in tensor order, so the plan
/// (and the norm's order) depends only on the tensors' places.
pub fn plan<B: Clone + Eq + Hash>(tensors: &[Placed<B>], limits: Limits) -> Vec<RunPlan<B>> {
    // Each run's stretches as (θ byte offset, g byte offset, state element, length); rows are
    // cut once the windows, and so the indices' origins, are final.
    let mut runs: Vec<(RunPlan<B>, Vec<[u64; 4]>)> = Vec::new();
    let mut open: HashMap<(B, B, usize, Lanes), usize> = HashMap::new();
    for t in tensors {
        let align = limits.align(t.lanes);
        let max_stretch = limits.max_stretch(t.lanes);
        let mut done = 0;
        while done < t.len {
            let len = (t.len - done).min(max_stretch);
            let (theta, grad) = (t.theta.1 + done * 4, t.grad.1 + done * 4);
            let theta_window = window(theta, len, align);
            let grad_window = window(grad, len, align);
            let key = (t.theta.0.clone(), t.grad.0.clone(), t.binding, t.lanes);
            let index = match open.get(&key) {
                Some(&r)
                    if span(&runs[r].0.theta_window, &theta_window) <= limits.max_binding
                        && span(&runs[r].0.grad_window, &grad_window) <= limits.max_binding =>
                {
                    r
                }
                _ => {
                    let run = RunPlan {
                        theta: t.theta.0.clone(),
                        theta_window: theta_window.clone(),
                        grad: t.grad.0.clone(),
                        grad_window: grad_window.clone(),
                        binding: t.binding,
                        lanes: t.lanes,
                        rows: Vec::new(),
                    };
                    runs.push((run, Vec::new()));
                    open.insert(key, runs.len() - 1);
                    runs.len() - 1
                }
            };
            let (run, stretches) = &mut runs[index];
            run.theta_window = union(&run.theta_window, &theta_window);
            run.grad_window = union(&run.grad_window, &grad_window);
            stretches.push([theta, grad, t.state + done, len]);
            done += len;
        }
    }
    runs.into_iter()
        .map(|(mut run, stretches)| {
            let (theta0, grad0) = (run.theta_window.start, run.grad_window.start);
            let width = u64::from(run.lanes.width());
            for [theta, grad, state, len] in stretches {
                let (theta, grad) = ((theta - theta0) / 4 / width, (grad - grad0) / 4 / width);
                let (state, len) = (state / width, len / width);
                for k in (0..len).step_by(ROW_LEN as usize) {
                    // Within one window of at most one binding: the indices fit a u32.
                    run.rows.push(Row {
                        theta: (theta + k) as u32,
                        grad: (grad + k) as u32,
                        state: (state + k) as u32,
                        count: (len - k).min(ROW_LEN) as u32,
                    });
                }
            }
            run
        })
        .collect()
}

/// The bytes a stretch needs bound: from its start aligned down, to its end.
fn window(offset: u64, len: u64, align: u64) -> Range<u64> {
    offset / align * align..offset + len * 4
}

fn union(a: &Range<u64>, b: &Range<u64>) -> Range<u64> {
    a.start.min(b.start)..a.end.max(b.end)
}

fn span(a: &Range<u64>, b: &Range<u64>) -> u64 {
    let u = union(a, b);
    u.end - u.start
}

/// Refuses caller buffers the kernels cannot use, for tensors given as (name, length,
/// buffers): an offset that is not a multiple of 4, a buffer without STORAGE usage, a range
/// of another length than the tensor's or outside its buffer, and a tensor's θ that overlaps any other θ or gradient (of any tensor: the step
/// would read what it writes). Gradients may overlap one another; they are only read.
pub fn check(tensors: &[(&str, usize, &TensorBuffers)]) -> Result<()> {
    let mut spans = Vec::with_capacity(2 * tensors.len());
    for &(name, len, buffers) in tensors {
        for (theta, slice) in [(true, &buffers.theta), (false, &buffers.grad)] {
            let what = if theta { "θ" } else { "gradient" };
            let fail = |problem: String| Err(Error::Layout(format!("tensor `{name}`: {problem}")));
            if !slice.offset.is_multiple_of(4) {
                return fail(format!(
                    "the {what} offset {} is not a multiple of 4 bytes",
                    slice.offset
                ));
            }
            if !slice.buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
                return fail(format!("the {what} buffer needs STORAGE usage"));
            }
            let bytes = len as u64 * 4;
            if slice.size != bytes {
                return fail(format!(
                    "the {what} range holds {} bytes; the tensor's {len} elements are {bytes}",
                    slice.size
                ));
            }
            slice.check_holds(&format!("tensor `{name}`'s {what}"), bytes)?;
            let end = slice.offset + bytes;
            if len > 0 {
                spans.push((&slice.buffer, slice.offset..end, theta, name));
            }
        }
    }
    // By buffer, then start: a θ overlaps something iff it overlaps the span that reaches
    // furthest among those before it, or the next one.
    spans.sort_by(|a, b| (a.0, a.1.start).cmp(&(b.0, b.1.start)));
    let mut reach: Option<(usize, u64)> = None;
    for (k, (buffer, range, theta, name)) in spans.iter().enumerate() {
        if let Some((j, end)) = reach.filter(|&(j, _)| spans[j].0 == *buffer) {
            let other = &spans[j];
            if range.start < end && (*theta || other.2) {
                let (a, b) = (
                    if other.2 { "θ" } else { "gradient" },
                    if *theta { "θ" } else { "gradient" },
                );
                return Err(Error::Layout(format!(
                    "the {a} of tensor `{}` and the {b} of tensor `{name}` overlap in one buffer \
                     (bytes {}..{} and {}..{})",
                    other.3, other.1.start, other.1.end, range.start, range.end
                )));
            }
        }
        let furthest = match reach {
            Some((j, end)) if spans[j].0 == *buffer && end >= range.end => (j, end),
            _ => (k, range.end),
        };
        reach = Some(furthest);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        align: 256,
        max_binding: 1 << 20,
    };

    fn placed(theta: (u8, u64), grad: (u8, u64), state: u64, len: u64) -> Placed<u8> {
        Placed {
            theta,
            grad,
            binding: 0,
            state,
            len,
            lanes: Lanes::One,
        }
    }

    /// Every element of every tensor, as (θ buffer, θ byte offset, g buffer, g byte offset,
    /// state index), from the plan's rows.
    fn elements(runs: &[RunPlan<u8>]) -> Vec<(u8, u64, u8, u64, u64)> {
        let mut out = Vec::new();
        for run in runs {
            let width = u64::from(run.lanes.width());
            for row in &run.rows {
                assert!(row.count as u64 <= ROW_LEN && row.count > 0);
                for e in 0..row.count as u64 * width {
                    let (k, lane) = (e / width, e % width);
                    let theta =
                        run.theta_window.start + ((row.theta as u64 + k) * width + lane) * 4;
                    let grad = run.grad_window.start + ((row.grad as u64 + k) * width + lane) * 4;
                    assert!(theta + 4 <= run.theta_window.end);
                    assert!(grad + 4 <= run.grad_window.end);
                    let state = (row.state as u64 + k) * width + lane;
                    out.push((run.theta, theta, run.grad, grad, state));
                }
            }
            let align = LIMITS.align(run.lanes);
            assert_eq!(run.theta_window.start % align, 0);
            assert_eq!(run.grad_window.start % align, 0);
            assert!(run.theta_window.end - run.theta_window.start <= LIMITS.max_binding);
            assert!(run.grad_window.end - run.grad_window.start <= LIMITS.max_binding);
        }
        out.sort();
        out
    }

    fn expected(tensors: &[Placed<u8>]) -> Vec<(u8, u64, u8, u64, u64)> {
        let mut out: Vec<_> = tensors
            .iter()
            .flat_map(|t| {
                (0..t.len).map(move |k| {
                    (
                        t.theta.0,
                        t.theta.1 + 4 * k,
                        t.grad.0,
                        t.grad.1 + 4 * k,
                        t.state + k,
                    )
                })
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn tensors_sharing_buffers_share_a_run_and_every_element_is_placed_once() {
        // Odd offsets (4 bytes past alignment), lengths not multiples of 4 or of a row.
        let tensors = [
            placed((0, 4), (1, 12), 0, 300),
            placed((0, 4 + 1200 * 4), (1, 2000), 304, 7),
            placed((2, 36), (1, 9000), 312, 513),
        ];
        let runs = plan(&tensors, LIMITS);
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(runs[0].rows.len(), 2 + 1);
        assert_eq!(runs[1].rows.len(), 3);
        assert_eq!(elements(&runs), expected(&tensors));
    }

    #[test]
    fn a_window_wider_than_one_binding_starts_a_new_run_and_long_tensors_are_cut() {
        let len = LIMITS.max_binding / 4 + 1000; // longer than one binding
        let tensors = [
            placed((0, 8), (1, 0), 0, 10),
            placed((0, 4 * (1 << 19)), (1, 64), 16, 10),
            placed((3, 4), (4, 8), 32, len),
        ];
        let runs = plan(&tensors, LIMITS);
        assert_eq!(
            runs.len(),
            4,
            "{:?}",
            runs.iter()
                .map(|r| (r.theta, r.theta_window.clone()))
                .collect::<Vec<_>>()
        );
        assert_eq!(elements(&runs), expected(&tensors));
    }

    #[test]
    fn aligned_stretches_get_a_vec4_body_between_scalar_ends() {
        let tensors = [
            // θ, g and state 2 elements past a 16-byte boundary: 2 scalar, 1000 vec4, 1 scalar.
            placed((0, 8), (1, 4104), 2, 1003),
            // out of phase: all scalar
            placed((0, 4), (1, 8), 1008, 9),
            // aligned from the start, whole vec4s
            placed((0, 64), (1, 32), 1020, 8),
        ];
        let split: Vec<_> = tensors.iter().flat_map(by_lanes).collect();
        let shape: Vec<_> = split.iter().map(|p| (p.len, p.lanes)).collect();
        assert_eq!(
            shape,
            [
                (2, Lanes::One),
                (1000, Lanes::Four),
                (1, Lanes::One),
                (9, Lanes::One),
                (8, Lanes::Four)
            ]
        );
        let runs = plan(&split, LIMITS);
        assert_eq!(runs.len(), 2);
        // The first body's 1,000 elements are 250 lane groups, one row; the last tensor's 8
        // another.
        assert_eq!(runs[1].rows.len(), 2);
        assert_eq!(runs[1].rows[0].count, 250);
        assert_eq!(elements(&runs), expected(&tensors));
    }

    #[test]
    fn runs_keep_the_order_of_their_first_tensor() {
        let tensors = [
            placed((5, 0), (5, 4096), 0, 3),
            placed((1, 0), (2, 0), 4, 3),
            placed((5, 12), (5, 4108), 8, 3),
        ];
        let runs = plan(&tensors, LIMITS);
        assert_eq!(runs.iter().map(|r| r.theta).collect::<Vec<_>>(), vec![5, 1]);
        assert_eq!(runs[0].rows[1].state, 8);
        assert_eq!(elements(&runs), expected(&tensors));
    }

    /// A count's rows: whole rows whose gradients follow one another merge, up to `span`
    /// rows; a gap, a short row or a full merge starts another. Every lane group is kept once.
    #[test]
    fn count_rows_merge_whole_contiguous_rows() {
        let row = |grad, count| Row {
            theta: 0,
            grad,
            state: 0,
            count,
        };
        let rows = [
            row(0, 256),
            row(256, 256),
            row(512, 256),
            row(768, 10), // a tensor's last, short row
            row(778, 256),
            row(2000, 256), // a gap
            row(2256, 256),
        ];
        let merged = count_rows(&rows, 2);
        let spans: Vec<(u32, u32)> = merged.iter().map(|r| (r.grad, r.count)).collect();
        assert_eq!(spans, vec![(0, 512), (512, 266), (778, 256), (2000, 512)]);
        let total = |rows: &[Row]| rows.iter().map(|r| r.count).sum::<u32>();
        assert_eq!(total(&merged), total(&rows));
        assert_eq!(count_rows(&rows, 1), rows.to_vec());
    }
}
