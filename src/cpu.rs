//! `CpuOptimizer`: the same API as `GpuOptimizer`, with θ and state in host memory.

use std::borrow::Cow;
use std::ops::Range;

use rayon::prelude::*;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::held::{Held, HeldSpan, Piece, HELD_CHUNK};
use crate::layout::{
    initial_state, GroupId, GroupSpec, Layout, ParamGroups, StateSource, Stored, TensorId,
};
use crate::optim::{NonFinitePolicy, OptimizerConfig, StepReport};
use crate::transform::{self, GradTransform, NormReport};
use crate::Stepper;

/// A step's gradient transform, known before any group updates: g ← g / scale · factor, and
/// the non-finite count of g / scale that the scan found in this group.
#[derive(Clone, Copy, Debug)]
struct Transformed {
    scale: f32,
    factor: f32,
    count: u64,
}

thread_local! {
    /// Each worker's transformed gradient of the chunk it is updating: the whole chunk at
    /// once, so that its update runs once, over all of it, as the plain step's does. (Blocks
    /// of 4 Ki elements, which stayed in L1, ran the fused step at 0.64-0.83 of the roofline
    /// at 64M, whole chunks at 0.80-0.91: `bench --training-step`, two alternating rounds.)
    /// Grown once per thread, never shrunk.
    static TRANSFORMED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Transformed {
    /// The reference's transformed gradient, whole: g / S · c, as the device computes it, or
    /// g itself without a transform.
    fn apply(this: Option<Self>, grad: &[f32]) -> std::borrow::Cow<'_, [f32]> {
        let Some(x) = this else {
            return std::borrow::Cow::Borrowed(grad);
        };
        let mut out = vec![0.0; grad.len()];
        crate::transform::transform_into(grad, x.scale, x.factor, &mut out);
        std::borrow::Cow::Owned(out)
    }

    /// Runs a chunk's `job` on g / S · c (in the worker's [`TRANSFORMED`] buffer), or on g
    /// itself without a transform.
    fn chunkwise<F>(
        this: Option<Self>,
        theta: &mut [f32],
        grad: &[f32],
        state: &mut [&mut [f32]],
        job: F,
    ) -> u64
    where
        F: Fn(&mut [f32], &[f32], &mut [&mut [f32]]) -> u64,
    {
        let Some(x) = this else {
            return job(theta, grad, state);
        };
        // `job` is an element update that starts no parallel work, so no other chunk's job
        // can run on this thread while the buffer is borrowed.
        TRANSFORMED.with_borrow_mut(|buffer| {
            if buffer.len() < grad.len() {
                buffer.resize(grad.len(), 0.0);
            }
            let g = &mut buffer[..grad.len()];
            crate::transform::transform_into(grad, x.scale, x.factor, g);
            job(theta, g, state)
        })
    }
}

/// Which CPU implementation steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuPath {
    /// The reference, one thread, with the non-finite check element by element: the
    /// yardstick. (Its update loops are the same SIMD loops as `Parallel`'s; tests/integration/fast_path.rs
    /// checks them against one element at a time.)
    Reference,
    /// The fast path: the reference's element update over cache-sized chunks on every core
    /// (rayon), with the non-finite check done per chunk while its gradient is in cache (or,
    /// under `SkipStep` and `Error`, in one parallel pass before the update).
    ///
    /// Bit-identical to `Reference`: the element functions are written branch-free, so their
    /// loops compile to SIMD without a second implementation, and SIMD `+ − × ÷ sqrt` round
    /// exactly as the scalar instructions do. Rust never contracts `a * b + c` to a fused
    /// multiply-add, so no FMA enters either path (tests/integration/fast_path.rs checks every optimizer).
    Parallel,
}

/// Elements per parallel job: 64 Ki f32 (256 KiB) per array, so that a job's gradient is
/// still in L2 when the update reads it again after the non-finite check.
pub const PARALLEL_CHUNK: usize = 1 << 16;

crate::reference::simd_fn! {
    /// NaN and ±Inf elements of `g`, by SPEC §4's bit test (an all-ones exponent), branch-free
    /// so that the loop vectorizes, at the widest SIMD the CPU has: the `skip-step` scan has to
    /// keep up with memory, and the `skip-element` check runs beside the update's arithmetic.
    pub fn count_nonfinite(g: &[f32]) -> u64 {
        count_portable(g)
    }
}

/// Counts in u32 lanes (four times as many per vector as u64), a block at a time so that no
/// count can overflow: 0.1 instead of 0.6 cycles per element on an AVX-512 EPYC.
#[inline(always)]
fn count_portable(g: &[f32]) -> u64 {
    g.chunks(1 << 20)
        .map(|block| {
            let count: u32 = block
                .iter()
                .map(|x| u32::from(x.to_bits() & 0x7f80_0000 == 0x7f80_0000))
                .sum();
            u64::from(count)
        })
        .sum()
}

thread_local! {
    /// Each worker's buffers for the span of held state it is stepping: the decoded state
    /// (one per slot) and a copy of θ. Grown once per thread, never shrunk.
    static HELD_SCRATCH: std::cell::RefCell<HeldScratch> =
        const { std::cell::RefCell::new(HeldScratch { theta: Vec::new(), state: Vec::new() }) };
}

struct HeldScratch {
    theta: Vec<f32>,
    state: Vec<Vec<f32>>,
}

/// One step of a held group on the fast path, span by span (see
/// [`CpuGroup::step_held_parallel`]).
struct SpanStep<'a> {
    optimizer: &'a dyn crate::optim::Optimizer,
    t: u64,
    policy: NonFinitePolicy,
    /// `q8` under a policy that tests: a new state that is not finite counts.
    overflow_counts: bool,
    xf: Option<Transformed>,
}

impl SpanStep<'_> {
    /// Decodes the span's state into the worker's scratch and runs `job` on the span, θ (or,
    /// for a `trial`, scratch's copy of it), the other one of the two (a copy of the old θ
    /// when `keep_theta`), g's chunk and the decoded state.
    fn with_state<R>(
        span: &mut HeldSpan,
        theta: &mut [f32],
        trial: bool,
        keep_theta: bool,
        job: impl FnOnce(&mut HeldSpan, &mut [f32], &mut [f32], &mut [&mut [f32]]) -> R,
    ) -> R {
        HELD_SCRATCH.with_borrow_mut(|scratch| {
            let HeldScratch {
                theta: copy,
                state: buffers,
            } = scratch;
            let n = theta.len();
            if buffers.len() < span.slots() {
                buffers.resize_with(span.slots(), Vec::new);
            }
            for v in buffers.iter_mut().chain([&mut *copy]) {
                if v.len() < n {
                    v.resize(n, 0.0);
                }
            }
            let mut state: Vec<&mut [f32]> = buffers[..span.slots()]
                .iter_mut()
                .enumerate()
                .map(|(k, v)| match span.used(k) {
                    true => {
                        let v = &mut v[..n];
                        span.decode(k, v);
                        v
                    }
                    false => &mut [][..],
                })
                .collect();
            let copy = &mut copy[..n];
            if trial || keep_theta {
                copy.copy_from_slice(theta);
            }
            match trial {
                true => job(span, copy, theta, &mut state),
                false => job(span, theta, copy, &mut state),
            }
        })
    }

    /// The update of one chunk, as the f32 fast path runs it under the group's policy.
    fn update(&self, theta: &mut [f32], grad: &[f32], state: &mut [&mut [f32]]) -> u64 {
        Transformed::chunkwise(
            self.xf,
            theta,
            grad,
            state,
            |theta, grad, state| match self.policy {
                NonFinitePolicy::SkipElement => {
                    CpuGroup::update_chunk(self.optimizer, self.t, theta, grad, state)
                }
                _ => {
                    self.optimizer.reference_step(self.t, theta, grad, state);
                    0
                }
            },
        )
    }

    /// A span's update into scratch, changing nothing: (the non-finite gradient elements if
    /// `count_grad`, the elements whose new state is not finite).
    fn trial(
        &self,
        span: &mut HeldSpan,
        theta: &mut [f32],
        grad: &[f32],
        count_grad: bool,
    ) -> (u64, u64) {
        let count = if count_grad { count_nonfinite(grad) } else { 0 };
        if count > 0 {
            return (count, 0);
        }
        Self::with_state(span, theta, true, false, |_, copy, _, state| {
            self.update(copy, grad, state);
            (0, overflowed(state).len() as u64)
        })
    }

    /// A span's step: decode, update, and encode the new values. Under `SkipElement`, an
    /// element whose new state is not finite (`q8`) gets its θ and state back, and counts.
    /// Returns (non-finite gradient elements, such elements).
    fn apply(&self, span: &mut HeldSpan, theta: &mut [f32], grad: &[f32]) -> (u64, u64) {
        let restores = self.overflow_counts && self.policy == NonFinitePolicy::SkipElement;
        Self::with_state(span, theta, false, restores, |span, theta, old, state| {
            let count = self.update(theta, grad, state);
            let bad = if restores {
                overflowed(state)
            } else {
                Vec::new()
            };
            for &j in &bad {
                theta[j] = old[j];
                for (k, v) in state.iter_mut().enumerate() {
                    if span.used(k) {
                        v[j] = span.decode_at(k, j);
                    }
                }
            }
            for (k, v) in state.iter().enumerate() {
                if span.used(k) {
                    span.encode(k, v);
                }
            }
            (count, bad.len() as u64)
        })
    }
}

/// The elements of a chunk some of whose new state values are not finite.
fn overflowed(state: &[&mut [f32]]) -> Vec<usize> {
    if state.iter().all(|v| count_nonfinite(v) == 0) {
        return Vec::new();
    }
    let n = state.iter().map(|v| v.len()).max().unwrap_or(0);
    (0..n)
        .filter(|&j| state.iter().any(|v| !v.is_empty() && !v[j].is_finite()))
        .collect()
}

/// One parameter group in host memory: its arena of θ and of each state.
#[derive(Clone, Debug)]
pub(crate) struct CpuGroup {
    /// Steps applied.
    pub t: u64,
    pub theta: Vec<f32>,
    /// One arena per state slot; empty where the options do not need that state. Under a
    /// `bf16` or `q8` state format every arena is empty between steps (the state is `held`)
    /// and holds the decoded values during one.
    pub state: Vec<Vec<f32>>,
    /// The state in `bf16` or `q8` (SPEC §6); `None` in `f32`.
    pub held: Option<Held>,
}

impl CpuGroup {
    fn new(spec: &GroupSpec, theta0: &[f32], pieces: Vec<Piece>) -> Self {
        let held = Held::new(spec, pieces, theta0.len());
        let state = match held {
            None => initial_state(&spec.config, theta0.len()),
            Some(_) => vec![Vec::new(); spec.config.as_dyn().state_slots().len()],
        };
        CpuGroup {
            t: 0,
            theta: theta0.to_vec(),
            state,
            held,
        }
    }

    /// Every state arena as f32 (decoded from `held` if there is one).
    fn decoded(&self) -> Cow<'_, [Vec<f32>]> {
        match &self.held {
            None => Cow::Borrowed(&self.state[..]),
            Some(held) => Cow::Owned(held.decode()),
        }
    }

    /// Bytes the state takes as held.
    fn state_bytes(&self) -> usize {
        match &self.held {
            None => self.state.iter().map(|v| 4 * v.len()).sum(),
            Some(held) => held.bytes(),
        }
    }

    /// Runs `job` on every `PARALLEL_CHUNK` of θ, g and the state vectors (unused ones
    /// empty) in parallel, and sums what the jobs return.
    fn for_each_chunk<F>(&mut self, grad: &[f32], job: F) -> u64
    where
        F: Fn(&mut [f32], &[f32], &mut [&mut [f32]]) -> u64 + Sync,
    {
        // Cut θ, g and every used state vector at the same boundaries.
        let mut state_chunks: Vec<_> = self
            .state
            .iter_mut()
            .map(|v| v.chunks_mut(PARALLEL_CHUNK))
            .collect();
        let jobs: Vec<_> = self
            .theta
            .chunks_mut(PARALLEL_CHUNK)
            .zip(grad.chunks(PARALLEL_CHUNK))
            .map(|(theta, grad)| {
                let state: Vec<&mut [f32]> = state_chunks
                    .iter_mut()
                    .map(|c| c.next().unwrap_or_default())
                    .collect();
                (theta, grad, state)
            })
            .collect();
        jobs.into_par_iter()
            .map(|(theta, grad, mut state)| job(theta, grad, &mut state))
            .sum()
    }

    /// `step` on the fast path. Under `SkipElement` each job checks its own chunk just before
    /// updating it; under `SkipStep` and `Error` the whole group must be checked before any
    /// element changes, which costs one more parallel read of g (the transform's scan, when
    /// there is one, has counted already). Each job transforms its chunk while it is in cache.
    fn step_parallel(&mut self, spec: &GroupSpec, grad: &[f32], xf: Option<Transformed>) -> u64 {
        let t = self.t + 1;
        let config = spec.config_at(t);
        let optimizer = config.as_dyn();
        if spec.policy != NonFinitePolicy::SkipElement {
            if spec.policy.counts_first() {
                let count: u64 = match xf {
                    Some(x) => x.count,
                    None => grad.par_chunks(PARALLEL_CHUNK).map(count_nonfinite).sum(),
                };
                if count > 0 {
                    return count;
                }
            }
            self.t = t;
            return self.for_each_chunk(grad, |theta, grad, state| {
                Transformed::chunkwise(xf, theta, grad, state, |theta, grad, state| {
                    optimizer.reference_step(t, theta, grad, state);
                    0
                })
            });
        }
        self.t = t;
        self.for_each_chunk(grad, |theta, grad, state| {
            Transformed::chunkwise(xf, theta, grad, state, |theta, grad, state| {
                Self::update_chunk(optimizer, t, theta, grad, state)
            })
        })
    }

    fn vector(&self, which: Stored) -> &Vec<f32> {
        match which {
            Stored::Theta => &self.theta,
            Stored::State(k) => &self.state[k],
        }
    }

    fn vector_mut(&mut self, which: Stored) -> &mut Vec<f32> {
        match which {
            Stored::Theta => &mut self.theta,
            Stored::State(k) => &mut self.state[k],
        }
    }

    /// One chunk's update under `SkipElement`: the non-finite elements keep their values.
    fn update_chunk(
        optimizer: &dyn crate::optim::Optimizer,
        t: u64,
        theta: &mut [f32],
        grad: &[f32],
        state: &mut [&mut [f32]],
    ) -> u64 {
        // The transformed g's test is g / S's: c is finite and in [0, 1].
        let count = count_nonfinite(grad);
        if count == 0 {
            optimizer.reference_step(t, theta, grad, state);
            return 0;
        }
        // The rare chunk with non-finite gradients: those elements keep their values.
        let kept: Vec<(usize, f32, Vec<f32>)> = (0..grad.len())
            .filter(|&i| !grad[i].is_finite())
            .map(|i| {
                (
                    i,
                    theta[i],
                    state
                        .iter()
                        .filter(|v| !v.is_empty())
                        .map(|v| v[i])
                        .collect(),
                )
            })
            .collect();
        optimizer.reference_step(t, theta, grad, state);
        for (i, th, values) in kept {
            theta[i] = th;
            for (v, value) in state.iter_mut().filter(|v| !v.is_empty()).zip(values) {
                v[i] = value;
            }
        }
        count
    }

    /// θ and every used state value of element `i`.
    fn element(&self, i: usize) -> (f32, Vec<f32>) {
        let state = self
            .state
            .iter()
            .filter(|v| !v.is_empty())
            .map(|v| v[i])
            .collect();
        (self.theta[i], state)
    }

    fn restore_element(&mut self, i: usize, (theta, state): (f32, Vec<f32>)) {
        self.theta[i] = theta;
        for (v, value) in self.state.iter_mut().filter(|v| !v.is_empty()).zip(state) {
            v[i] = value;
        }
    }

    /// One step of the group, under its non-finite policy. Returns the count of non-finite
    /// gradient elements it saw (under `q8`, with the elements whose new state overflowed).
    fn step(
        &mut self,
        spec: &GroupSpec,
        path: CpuPath,
        grad: &[f32],
        xf: Option<Transformed>,
    ) -> u64 {
        let Some(mut held) = self.held.take() else {
            return self.step_f32(spec, path, grad, xf);
        };
        let count = match path {
            CpuPath::Reference => self.step_held(&mut held, spec, path, grad, xf),
            CpuPath::Parallel => self.step_held_parallel(&mut held, spec, grad, xf),
        };
        self.held = Some(held);
        count
    }

    /// `step` of a group whose state is held in `bf16` or `q8` (SPEC §6): decode, the f32
    /// step, encode at the applied step. A step that is not applied encodes nothing. Under
    /// `q8` (every policy but `Propagate`) an element whose new state is not finite counts
    /// as a non-finite gradient element: `SkipElement` puts back its θ and state, the other
    /// policies undo the whole step. An element kept under `SkipElement` is re-encoded with
    /// its old value, which counts in its block's maximum (exact in `bf16`, whose decoded
    /// values encode to their own codes).
    fn step_held(
        &mut self,
        held: &mut Held,
        spec: &GroupSpec,
        path: CpuPath,
        grad: &[f32],
        xf: Option<Transformed>,
    ) -> u64 {
        let parallel = path == CpuPath::Parallel;
        self.state = held.decode();
        let overflow_counts = held.format() == crate::config::StateFormat::Q8
            && spec.policy != NonFinitePolicy::Propagate;
        let before = overflow_counts.then(|| (self.theta.clone(), self.state.clone()));
        let t0 = self.t;
        let mut count = self.step_f32(spec, path, grad, xf);
        if self.t != t0 {
            if let Some((theta0, state0)) = before {
                let state = &self.state;
                let bad: Vec<usize> = (0..self.theta.len())
                    .filter(|&i| state.iter().any(|v| !v.is_empty() && !v[i].is_finite()))
                    .collect();
                if !bad.is_empty() {
                    count += bad.len() as u64;
                    if spec.policy == NonFinitePolicy::SkipElement {
                        for i in bad {
                            self.theta[i] = theta0[i];
                            for (v, old) in self.state.iter_mut().zip(&state0) {
                                if !v.is_empty() {
                                    v[i] = old[i];
                                }
                            }
                        }
                    } else {
                        self.theta = theta0;
                        self.t = t0;
                    }
                }
            }
            if self.t != t0 {
                held.encode(&self.state, self.t, parallel);
            }
        }
        for v in &mut self.state {
            *v = Vec::new();
        }
        count
    }

    /// `step_held` on the fast path, with the same bits: decode, update and encode fused per
    /// span of whole q8 blocks ([`Held::spans_mut`]) while it is in cache, on every core,
    /// in the worker's [`HELD_SCRATCH`] (no arena-sized buffers). An overflow under
    /// `SkipStep` or `Error` undoes the whole step, so under `q8` those policies first run
    /// the update into scratch to count the overflows (and the non-finite gradient elements,
    /// in the same read of g), and apply it only if there are none.
    fn step_held_parallel(
        &mut self,
        held: &mut Held,
        spec: &GroupSpec,
        grad: &[f32],
        xf: Option<Transformed>,
    ) -> u64 {
        let t = self.t + 1;
        let config = spec.config_at(t);
        let step = SpanStep {
            optimizer: config.as_dyn(),
            t,
            policy: spec.policy,
            overflow_counts: held.format() == crate::config::StateFormat::Q8
                && spec.policy != NonFinitePolicy::Propagate,
            xf,
        };
        if spec.policy.counts_first() {
            let known = xf.map(|x| x.count);
            let (count, overflow) = match (known, step.overflow_counts) {
                (Some(count), _) if count > 0 => (count, 0),
                (_, true) => self.for_each_span(held, t, grad, |span, theta, grad| {
                    step.trial(span, theta, grad, known.is_none())
                }),
                (None, false) => (
                    grad.par_chunks(PARALLEL_CHUNK).map(count_nonfinite).sum(),
                    0,
                ),
                (Some(_), false) => (0, 0),
            };
            if count > 0 {
                return count;
            }
            if overflow > 0 {
                return overflow;
            }
        }
        self.t = t;
        let (count, overflow) = self.for_each_span(held, t, grad, |span, theta, grad| {
            step.apply(span, theta, grad)
        });
        count + overflow
    }

    /// Runs `job` on every span of the held state (keyed at step `t`) with its θ and g, in
    /// parallel, and sums what the jobs return.
    fn for_each_span<F>(&mut self, held: &mut Held, t: u64, grad: &[f32], job: F) -> (u64, u64)
    where
        F: Fn(&mut HeldSpan, &mut [f32], &[f32]) -> (u64, u64) + Sync,
    {
        let spans = held.spans_mut(t, HELD_CHUNK);
        let mut theta = &mut self.theta[..];
        let jobs: Vec<_> = spans
            .into_iter()
            .map(|span| {
                let (mine, rest) = std::mem::take(&mut theta).split_at_mut(span.range().len());
                theta = rest;
                let g = &grad[span.range()];
                (span, mine, g)
            })
            .collect();
        jobs.into_par_iter()
            .map(|(mut span, theta, grad)| job(&mut span, theta, grad))
            .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    /// `step` of a group whose state is `f32`, in `self.state`.
    fn step_f32(
        &mut self,
        spec: &GroupSpec,
        path: CpuPath,
        grad: &[f32],
        xf: Option<Transformed>,
    ) -> u64 {
        match path {
            CpuPath::Reference => self.step_reference(spec, &Transformed::apply(xf, grad)),
            CpuPath::Parallel => self.step_parallel(spec, grad, xf),
        }
    }

    /// `step` on the reference path: one thread, element by element.
    fn step_reference(&mut self, spec: &GroupSpec, grad: &[f32]) -> u64 {
        // The kernels' bit test (SPEC §4): an all-ones exponent is NaN or ±Inf. Propagate
        // tests nothing.
        let nonfinite: Vec<usize> = match spec.policy {
            NonFinitePolicy::Propagate => Vec::new(),
            _ => (0..grad.len()).filter(|&i| !grad[i].is_finite()).collect(),
        };
        let count = nonfinite.len() as u64;
        if !spec.policy.applies(count) {
            return count;
        }
        // SkipElement: those elements keep their values; the update is element-wise, so
        // putting them back afterwards equals never touching them.
        let kept: Vec<_> = nonfinite.iter().map(|&i| (i, self.element(i))).collect();
        self.t += 1;
        let mut state: Vec<&mut [f32]> = self.state.iter_mut().map(|v| &mut v[..]).collect();
        let config = spec.config_at(self.t);
        config
            .as_dyn()
            .reference_step(self.t, &mut self.theta, grad, &mut state);
        for (i, values) in kept {
            self.restore_element(i, values);
        }
        count
    }
}

/// Parameter groups in host memory.
#[derive(Clone, Debug)]
pub struct CpuOptimizer {
    path: CpuPath,
    pub(crate) layout: Layout,
    pub(crate) groups: Vec<CpuGroup>,
    /// Step calls made, applied or not.
    calls: u64,
    reports: Vec<StepReport>,
    norms: Vec<NormReport>,
    /// Step calls in a row in which some group skipped.
    consecutive_skips: u64,
}

impl CpuOptimizer {
    /// One vector of parameters with one config, on the parallel path.
    pub fn new(config: impl Into<OptimizerConfig>, theta0: &[f32]) -> Result<Self> {
        Self::with_path(config, theta0, CpuPath::Parallel)
    }

    /// One vector of parameters with one config, on the single-threaded reference.
    pub fn reference(config: impl Into<OptimizerConfig>, theta0: &[f32]) -> Result<Self> {
        Self::with_path(config, theta0, CpuPath::Reference)
    }

    pub fn with_path(
        config: impl Into<OptimizerConfig>,
        theta0: &[f32],
        path: CpuPath,
    ) -> Result<Self> {
        Ok(Self::from_groups(
            &ParamGroups::single(config.into(), theta0)?,
            path,
        ))
    }

    /// Every group and tensor of `groups`.
    pub fn from_groups(groups: &ParamGroups, path: CpuPath) -> Self {
        CpuOptimizer {
            path,
            layout: groups.layout().clone(),
            groups: groups
                .groups()
                .iter()
                .enumerate()
                .map(|(g, spec)| {
                    CpuGroup::new(
                        spec,
                        groups.arena_theta0(GroupId(g)),
                        crate::held::pieces(groups.layout().tensors_of(g)),
                    )
                })
                .collect(),
            calls: 0,
            reports: Vec::new(),
            norms: Vec::new(),
            consecutive_skips: 0,
        }
    }

    pub fn path(&self) -> CpuPath {
        self.path
    }

    /// Sets the non-finite policy of every group (builder style).
    pub fn with_nonfinite_policy(mut self, policy: NonFinitePolicy) -> Self {
        self.set_nonfinite_policy(policy);
        self
    }

    /// A tensor's θ.
    pub fn tensor_values(&self, id: TensorId) -> Result<Vec<f32>> {
        let t = self.layout.tensor(id)?;
        Ok(self.groups[t.group.0].theta[t.range()].to_vec())
    }

    /// A tensor's state vector by its SPEC name, e.g. `sigma`, the posterior variance.
    pub fn tensor_state(&self, id: TensorId, name: &str) -> Result<Vec<f32>> {
        let t = self.layout.tensor(id)?;
        match self.layout.state_source(t.group, name)? {
            StateSource::Slot(slot) => {
                let group = &self.groups[t.group.0];
                Ok(match &group.held {
                    None => group.state[slot][t.range()].to_vec(),
                    Some(held) => held.decode_slot_in(slot, t.range()),
                })
            }
            StateSource::Derived => self.derived(t.group, name, t.range()),
        }
    }

    /// A derived vector of `range` of a group's arena.
    fn derived(&self, group: GroupId, name: &str, range: Range<usize>) -> Result<Vec<f32>> {
        let arenas = &self.groups[group.0];
        let decoded = arenas.decoded();
        let stored: Vec<&[f32]> = decoded
            .iter()
            .map(|v| {
                if v.is_empty() {
                    &v[..]
                } else {
                    &v[range.clone()]
                }
            })
            .collect();
        self.layout.derive_state(group, name, arenas.t, &stored)
    }

    /// Bytes of optimizer state held over every group (arenas, padding included): 4 per
    /// element of each used slot in `f32`, 2 in `bf16`, 1 and 4 per 256-element block in
    /// `q8` (SPEC §6).
    pub fn state_bytes(&self) -> usize {
        self.groups.iter().map(CpuGroup::state_bytes).sum()
    }

    /// Each group's applied step count.
    pub fn group_steps(&self) -> Vec<u64> {
        self.groups.iter().map(|g| g.t).collect()
    }

    /// θ of the single vector, without a copy (group 0's arena).
    pub fn theta_slice(&self) -> &[f32] {
        &self.groups[0].theta
    }

    /// Group 0's arena in place: θ, the used f32 state vectors in slot order, and the bytes
    /// of a held state (codes and scales; then the f32 vectors are empty), for `bench`'s
    /// roofline, which touches the optimizer's own arrays (not public: writing them would
    /// bypass every step's rules).
    #[cfg(feature = "bench")]
    pub(crate) fn arena_mut(&mut self) -> (&mut [f32], Vec<&mut [f32]>, Vec<&mut [u8]>) {
        let group = &mut self.groups[0];
        let states = group
            .state
            .iter_mut()
            .filter(|v| !v.is_empty())
            .map(|v| &mut v[..])
            .collect();
        let held = group.held.as_mut().map_or(Vec::new(), Held::bytes_mut);
        (&mut group.theta, states, held)
    }

    /// A vector (θ, or a state by name) of every tensor, flat in registration order.
    fn gather(&self, name: Option<&str>) -> Result<Vec<f32>> {
        let arenas = self
            .groups
            .iter()
            .enumerate()
            .map(|(g, group)| match name {
                None => Ok(Cow::Borrowed(&group.theta[..])),
                Some(n) => match self.layout.state_source(GroupId(g), n)? {
                    StateSource::Slot(slot) => Ok(match &group.held {
                        None => Cow::Borrowed(&group.state[slot][..]),
                        Some(held) => Cow::Owned(held.decode_slot(slot)),
                    }),
                    StateSource::Derived => Ok(Cow::Owned(self.derived(
                        GroupId(g),
                        n,
                        0..group.theta.len(),
                    )?)),
                },
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.layout.flatten(&arenas))
    }
}

impl Stepper for CpuOptimizer {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    crate::layout_setters!();

    /// The step count of group 0 (see [`CpuOptimizer::group_steps`] for every group).
    fn steps_taken(&self) -> Result<u64> {
        Ok(self.groups.first().map_or(0, |g| g.t))
    }

    fn step_reports(&mut self) -> Result<Vec<StepReport>> {
        Ok(std::mem::take(&mut self.reports))
    }

    fn norm_reports(&mut self) -> Result<Vec<NormReport>> {
        Ok(std::mem::take(&mut self.norms))
    }

    fn set_grad_transform(&mut self, transform: GradTransform) -> Result<()> {
        self.layout.set_transform(transform)?;
        self.consecutive_skips = 0;
        Ok(())
    }

    /// `grad` holds every tensor's gradient, flat in registration order. Every group steps
    /// under its own policy; the first `NonFinitePolicy::Error` is returned after all have.
    fn step(&mut self, grad: &[f32]) -> Result<()> {
        self.layout.check_gradient(grad)?;
        let transform = self.layout.transform;
        if let Some(limit) = transform.max_consecutive_skips {
            if self.consecutive_skips >= limit {
                return Err(Error::TooManySkips { count: limit });
            }
        }
        self.calls += 1;
        let arenas: Vec<_> = (0..self.groups.len())
            .map(|g| self.layout.arena_of(g, grad))
            .collect();
        // The transform's scan: every group's non-finite count and partial sums of squares in
        // one read of g, reduced in the order the device follows (see `transform`).
        let transformed: Option<Vec<Transformed>> = (!transform.is_identity()).then(|| {
            let parallel = self.path == CpuPath::Parallel;
            let scans: Vec<(u64, Vec<f32>)> = arenas
                .iter()
                .zip(&self.layout.groups)
                .map(|(a, spec)| {
                    // Without a norm, a `SkipElement` group needs no count before its update
                    // either (each chunk counts its own), so it is not read twice; the device
                    // skips its scan likewise.
                    if transform.clip_norm.is_none() && !spec.policy.counts_first() {
                        return (0, Vec::new());
                    }
                    transform::scan_arena(a, transform.grad_scale, parallel, PARALLEL_CHUNK)
                })
                .collect();
            let partials: Vec<f32> = scans.iter().flat_map(|(_, p)| p.iter().copied()).collect();
            let (norm, factor) = transform::norm_and_factor(
                transform::reduce_partials(&partials),
                transform.clip_norm,
            );
            if transform.clip_norm.is_some() {
                self.norms.push(NormReport {
                    call: self.calls,
                    norm,
                    factor,
                });
            }
            scans
                .iter()
                .map(|(count, _)| Transformed {
                    scale: transform.grad_scale,
                    factor,
                    count: *count,
                })
                .collect()
        });
        let mut error = None;
        let mut skipped = false;
        for (g, (group, spec)) in self.groups.iter_mut().zip(&self.layout.groups).enumerate() {
            let xf = transformed.as_ref().map(|x| x[g]);
            let count = group.step(spec, self.path, &arenas[g], xf);
            if count > 0 {
                let (report, raised) = StepReport::of(self.calls, g, count, spec.policy);
                skipped |= !report.applied;
                self.reports.push(report);
                error = error.or(raised);
            }
        }
        self.consecutive_skips = if skipped {
            self.consecutive_skips + 1
        } else {
            0
        };
        error.map_or(Ok(()), Err)
    }

    fn theta(&self) -> Result<Vec<f32>> {
        self.gather(None)
    }

    fn state(&self, name: &str) -> Result<Vec<f32>> {
        self.gather(Some(name))
    }

    fn checkpoint(&self) -> Result<Checkpoint> {
        // θ and f32 state as f32; bf16 and q8 state as held, never decoded (SPEC §6).
        let arenas: Vec<Vec<(String, Vec<f32>)>> = self
            .groups
            .iter()
            .zip(self.layout.groups())
            .map(|(group, spec)| {
                spec.f32_vectors()
                    .into_iter()
                    .map(|(name, which)| (name.to_string(), group.vector(which).clone()))
                    .collect()
            })
            .collect();
        let mut checkpoint = Checkpoint::from_arenas(&self.layout, &self.group_steps(), &arenas);
        for (tensor, (g, piece)) in checkpoint.tensors.iter_mut().zip(self.pieces()) {
            if let Some(held) = &self.groups[g].held {
                tensor.held = held.export(piece, &self.slot_names(g));
            }
        }
        Ok(checkpoint)
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let arenas = checkpoint.to_arenas(&self.layout)?;
        self.consecutive_skips = 0;
        let live = self.groups.iter_mut().zip(self.layout.groups());
        for ((group, spec), (steps, vectors)) in live.zip(arenas) {
            group.t = steps;
            for ((_, which), values) in spec.f32_vectors().into_iter().zip(vectors) {
                *group.vector_mut(which) = values;
            }
        }
        for (saved, (g, piece)) in checkpoint.tensors.iter().zip(self.pieces()) {
            if let Some(held) = &mut self.groups[g].held {
                held.import(piece, &saved.held);
            }
        }
        Ok(())
    }
}

impl CpuOptimizer {
    /// Each tensor's group and its index among the group's tensors, in registration order.
    fn pieces(&self) -> Vec<(usize, usize)> {
        let mut seen = vec![0; self.groups.len()];
        self.layout
            .tensors()
            .iter()
            .map(|t| {
                let g = t.group.0;
                seen[g] += 1;
                (g, seen[g] - 1)
            })
            .collect()
    }

    /// The SPEC names of group `g`'s state slots, in slot order.
    fn slot_names(&self, g: usize) -> Vec<&'static str> {
        let config = &self.layout.groups()[g].config;
        config
            .as_dyn()
            .state_slots()
            .iter()
            .map(|s| s.name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every non-finite pattern counts, no finite one does, across the counting blocks and
    /// at every position within a SIMD vector.
    #[test]
    fn count_nonfinite_counts_exactly_the_all_ones_exponents() {
        let n = 3 * (1 << 20) + 17;
        let mut g: Vec<f32> = (0..n).map(|i| (i as f32).sin() * 1e3).collect();
        let finite_edges = [f32::MAX, f32::MIN, f32::MIN_POSITIVE, 1e-45, -0.0, 0.0];
        for (k, &x) in finite_edges.iter().enumerate() {
            g[k * 7 + 1] = x;
        }
        let bad = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::from_bits(0xff80_0001),
        ];
        let positions: Vec<usize> = (0..41).map(|k| (k * 77_777 + k) % n).collect();
        for (k, &i) in positions.iter().enumerate() {
            g[i] = bad[k % bad.len()];
        }
        let expected = g.iter().filter(|x| !x.is_finite()).count() as u64;
        assert_eq!(expected, 41);
        assert_eq!(count_nonfinite(&g), expected);
        assert_eq!(count_portable(&g), expected);
        assert_eq!(count_nonfinite(&g[..0]), 0);
        assert_eq!(count_nonfinite(&g[positions[5]..positions[5] + 1]), 1);
    }
}
