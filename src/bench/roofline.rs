//! The roofline of a step, measured in the same run, on the same device and at the same size as
//! the optimizer: a "touch" that reads θ, g and k state vectors and writes θ and the states
//! back with one multiply-add each (exactly the bytes of an optimizer with k state vectors),
//! and a plain copy. CPU: the same loops in Rust, over the fast path's parallel chunks. GPU:
//! `shaders/touch.wgsl` and `copy_buffer_to_buffer`.
//!
//! `bench` touches the optimizer's own arrays (the touch adds 10⁻⁶·g: the values stay normal
//! and finite, and speed does not depend on them): on this kind of machine the bandwidth of
//! one allocation can differ from another's, so other arrays of the same size would measure
//! a different limit. [`CpuRoofline`] and [`GpuRoofline::new`] bring arrays of their own, for
//! the criterion benches.

use std::collections::HashMap;
use std::ops::Range;

use rayon::prelude::*;

use crate::bench::timing::PassTimer;
use crate::bench::touch;
use crate::cpu::PARALLEL_CHUNK;
use crate::error::{Error, Result};
use crate::gpu::pipeline::Pipeline;
use crate::gpu::{arena_parts, GpuContext, GpuOptimizer};
use crate::kernels::Lanes;

/// The touch's multiplier: small, so repeated touches keep every value normal and finite.
const SCALE: f32 = 1e-6;

/// The most state vectors a touch stands in for (the most any optimizer has).
pub const MAX_STATES: usize = touch::MAX_STATES as usize;

/// A deterministic vector of normal values in ±[0.5, 1.5)·`scale` (no denormals, no zeros),
/// cheap enough for 64M elements.
pub fn synthetic(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; n];
    out.par_chunks_mut(PARALLEL_CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut x = seed ^ (c as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            for v in chunk {
                // xorshift64
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let unit = (x >> 40) as f32 / (1u64 << 24) as f32;
                let sign = if x & 1 == 0 { 1.0 } else { -1.0 };
                *v = sign * (0.5 + unit) * scale;
            }
        });
    out
}

/// The CPU roofline's arrays at one size.
#[derive(Debug)]
pub struct CpuRoofline {
    theta: Vec<f32>,
    grad: Vec<f32>,
    /// Grown on demand to the most state vectors asked for.
    states: Vec<Vec<f32>>,
    copy: Vec<f32>,
}

impl CpuRoofline {
    pub fn new(n: usize) -> Self {
        CpuRoofline {
            theta: synthetic(n, 11, 1.0),
            grad: synthetic(n, 12, 1.0),
            states: Vec::new(),
            copy: vec![0.0; n],
        }
    }

    pub fn len(&self) -> usize {
        self.theta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.theta.is_empty()
    }

    /// Reads θ, g and `states` state vectors and writes θ and the states ([`touch_cpu`]).
    pub fn touch(&mut self, states: usize) {
        assert!(states <= MAX_STATES, "touch: {states} state vectors");
        let n = self.len();
        while self.states.len() < states {
            self.states
                .push(synthetic(n, 13 + self.states.len() as u64, 1.0));
        }
        let mut views: Vec<&mut [f32]> = self.states[..states]
            .iter_mut()
            .map(|v| &mut v[..])
            .collect();
        touch_cpu(&mut self.theta, &self.grad, &mut views);
    }

    /// Copies θ to another array ([`copy_cpu`]).
    pub fn copy(&mut self) {
        copy_cpu(&self.theta, &mut self.copy);
    }
}

/// Reads θ, g and the state vectors and writes θ and the states back, over the fast path's
/// parallel chunks: the bytes of an optimizer step with that many state vectors.
pub fn touch_cpu(theta: &mut [f32], grad: &[f32], states: &mut [&mut [f32]]) {
    assert!(
        states.len() <= MAX_STATES,
        "touch: {} state vectors",
        states.len()
    );
    let mut state_chunks: Vec<_> = states
        .iter_mut()
        .map(|v| v.chunks_mut(PARALLEL_CHUNK))
        .collect();
    let jobs: Vec<_> = theta
        .chunks_mut(PARALLEL_CHUNK)
        .zip(grad.chunks(PARALLEL_CHUNK))
        .map(|(theta, grad)| {
            let state: Vec<&mut [f32]> = state_chunks
                .iter_mut()
                .map(|c| c.next().expect("same length"))
                .collect();
            (theta, grad, state)
        })
        .collect();
    jobs.into_par_iter()
        .for_each(|(theta, grad, mut state)| touch_chunk(theta, grad, &mut state));
}

/// Reads and writes back every byte of `arrays` (a held state's codes and scales), unchanged
/// (an XOR with a zero the compiler cannot see), over chunks of the fast path's size.
pub fn touch_bytes_cpu(arrays: &mut [&mut [u8]]) {
    let zero = std::hint::black_box(0u8);
    for bytes in arrays.iter_mut() {
        bytes
            .par_chunks_mut(4 * PARALLEL_CHUNK)
            .for_each(|chunk| touch_bytes_chunk(chunk, zero));
    }
}

crate::reference::simd_fn! {
    /// The byte touch of one chunk, at the widest SIMD the CPU has.
    fn touch_bytes_chunk(bytes: &mut [u8], zero: u8) {
        for b in bytes.iter_mut() {
            *b ^= zero;
        }
    }
}

/// Copies `src` to `dst` (reads and writes 4 bytes per element), in parallel chunks.
pub fn copy_cpu(src: &[f32], dst: &mut [f32]) {
    dst.par_chunks_mut(PARALLEL_CHUNK)
        .zip(src.par_chunks(PARALLEL_CHUNK))
        .for_each(|(dst, src)| dst.copy_from_slice(src));
}

crate::reference::simd_fn! {
    /// The touch of one chunk: one fused loop over θ, g and the states, as an optimizer's loop
    /// is fused (so both stream the same arrays the same way), compiled for the same SIMD width
    /// as the optimizers' loops.
    fn touch_chunk(theta: &mut [f32], grad: &[f32], states: &mut [&mut [f32]]) {
        touch_fused(theta, grad, states)
    }
}

/// One loop per state count; the asserted lengths let the compiler drop bounds checks and
/// vectorize.
#[inline(always)]
fn touch_fused(theta: &mut [f32], grad: &[f32], states: &mut [&mut [f32]]) {
    let n = theta.len();
    assert!(grad.len() == n && states.iter().all(|s| s.len() == n));
    match states {
        [] => {
            for i in 0..n {
                theta[i] += SCALE * grad[i];
            }
        }
        [a] => {
            let a = &mut a[..n];
            for i in 0..n {
                let g = SCALE * grad[i];
                theta[i] += g;
                a[i] += g;
            }
        }
        [a, b] => {
            let (a, b) = (&mut a[..n], &mut b[..n]);
            for i in 0..n {
                let g = SCALE * grad[i];
                theta[i] += g;
                a[i] += g;
                b[i] += g;
            }
        }
        [a, b, c] => {
            let (a, b, c) = (&mut a[..n], &mut b[..n], &mut c[..n]);
            for i in 0..n {
                let g = SCALE * grad[i];
                theta[i] += g;
                a[i] += g;
                b[i] += g;
                c[i] += g;
            }
        }
        [a, b, c, d] => {
            let (a, b, c, d) = (&mut a[..n], &mut b[..n], &mut c[..n], &mut d[..n]);
            for i in 0..n {
                let g = SCALE * grad[i];
                theta[i] += g;
                a[i] += g;
                b[i] += g;
                c[i] += g;
                d[i] += g;
            }
        }
        _ => unreachable!("at most {MAX_STATES} state vectors"),
    }
}

/// `range` (in elements) of `buffer`, as a storage binding.
pub(super) fn binding<'a>(buffer: &'a wgpu::Buffer, range: &Range<u64>) -> wgpu::BufferBinding<'a> {
    wgpu::BufferBinding {
        buffer,
        offset: range.start * 4,
        size: wgpu::BufferSize::new((range.end - range.start) * 4),
    }
}

/// The touch kernel for one state count, bound over the roofline's buffers.
struct Touch {
    pipeline: Pipeline,
    /// One bind group per bound range, with its lane width.
    parts: Vec<(Range<u64>, Lanes, wgpu::BindGroup)>,
}

/// The GPU roofline: θ, g and state buffers (its own, or an optimizer's), and a copy
/// destination.
pub struct GpuRoofline {
    ctx: GpuContext,
    /// Elements bound: a multiple of 4.
    bound: u64,
    uniform: wgpu::Buffer,
    theta: wgpu::Buffer,
    grad: wgpu::Buffer,
    /// Own buffers grow on demand to the most state vectors asked for; an optimizer's are its
    /// used state vectors.
    states: Vec<wgpu::Buffer>,
    owns_states: bool,
    copy: wgpu::Buffer,
    /// Stands in for the state bindings a touch does not use.
    placeholder: wgpu::Buffer,
    touches: HashMap<usize, Touch>,
}

impl GpuRoofline {
    /// θ, g and a copy destination of `n` elements of its own (padded to whole vec4s, as the
    /// optimizer's own buffers are).
    pub fn new(ctx: &GpuContext, n: usize) -> Result<Self> {
        use wgpu::util::DeviceExt;
        let device = ctx.device();
        let bound = n.max(1).next_multiple_of(4);
        let (theta, grad) = ctx.scoped("roofline buffers", || {
            let storage = |label: &str, values: &[f32]| {
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytemuck::cast_slice(values),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                })
            };
            (
                storage("roofline theta", &synthetic(bound, 11, 1.0)),
                storage("roofline grad", &synthetic(bound, 12, 1.0)),
            )
        })?;
        Self::assemble(ctx, bound as u64, theta, grad, Vec::new(), true)
    }

    /// Over the optimizer's own θ, g and state buffers (group 0, which must lie in single
    /// buffers the optimizer owns), with a copy destination of θ's size.
    pub fn over(ctx: &GpuContext, optimizer: &GpuOptimizer) -> Result<Self> {
        let arena = optimizer.whole_arena().ok_or_else(|| {
            Error::Layout("the roofline needs group 0 in single buffers the optimizer owns".into())
        })?;
        let bound = arena.bound.max(4);
        Self::assemble(ctx, bound, arena.theta, arena.grad, arena.states, false)
    }

    fn assemble(
        ctx: &GpuContext,
        bound: u64,
        theta: wgpu::Buffer,
        grad: wgpu::Buffer,
        states: Vec<wgpu::Buffer>,
        owns_states: bool,
    ) -> Result<Self> {
        use wgpu::util::DeviceExt;
        let device = ctx.device();
        let (uniform, copy, placeholder) = ctx.scoped("roofline buffers", || {
            let uniform = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("touch uniform"),
                contents: bytemuck::cast_slice(&[SCALE, 0.0, 0.0, 0.0]),
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let copy = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("roofline copy"),
                size: bound * 4,
                usage: wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let placeholder = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("roofline unused state"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            (uniform, copy, placeholder)
        })?;
        Ok(GpuRoofline {
            ctx: ctx.clone(),
            bound,
            uniform,
            theta,
            grad,
            states,
            owns_states,
            copy,
            placeholder,
            touches: HashMap::new(),
        })
    }

    fn prepare(&mut self, states: usize) -> Result<()> {
        assert!(states <= MAX_STATES, "touch: {states} state vectors");
        if self.touches.contains_key(&states) {
            return Ok(());
        }
        let ctx = self.ctx.clone();
        let device = ctx.device();
        let bound = self.bound;
        if !self.owns_states && states > self.states.len() {
            return Err(Error::Layout(format!(
                "the optimizer has {} state vectors, not {states}",
                self.states.len()
            )));
        }
        while self.states.len() < states {
            let seed = 13 + self.states.len() as u64;
            let buffer = ctx.scoped("roofline buffers", || {
                use wgpu::util::DeviceExt;
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("roofline state"),
                    contents: bytemuck::cast_slice(&synthetic(bound as usize, seed, 1.0)),
                    usage: wgpu::BufferUsages::STORAGE,
                })
            })?;
            self.states.push(buffer);
        }
        let touch = ctx.scoped("touch kernel", || {
            let pipeline = touch::pipeline(device, states as u32, ctx.workgroup_size());
            let parts = arena_parts(&ctx, bound)
                .into_iter()
                .map(|(range, lanes)| {
                    let state: Vec<_> = (0..MAX_STATES)
                        .map(|k| match k < states {
                            true => binding(&self.states[k], &range),
                            false => self.placeholder.as_entire_buffer_binding(),
                        })
                        .collect();
                    let buffers = [
                        (0, self.uniform.as_entire_buffer_binding()),
                        (2, binding(&self.theta, &range)),
                        (3, binding(&self.grad, &range)),
                    ];
                    let group = pipeline.bind(
                        device,
                        "bayesprop touch",
                        buffers.into_iter().chain((4..).zip(state)),
                    );
                    (range, lanes, group)
                })
                .collect();
            Touch { pipeline, parts }
        })?;
        self.touches.insert(states, touch);
        Ok(())
    }

    /// Submits one touch of θ, g and `states` state vectors (one pass, timed by `timer` if
    /// given). Does not wait.
    pub fn touch(&mut self, states: usize, timer: Option<&mut PassTimer>) -> Result<()> {
        self.prepare(states)?;
        let touch = &self.touches[&states];
        let ctx = &self.ctx;
        ctx.scoped("touch", || {
            let mut encoder = ctx.device().create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("bayesprop touch"),
                    timestamp_writes: timer.and_then(PassTimer::pass_writes),
                });
                for (range, lanes, group) in &touch.parts {
                    let n = (range.end - range.start) as u32;
                    touch.pipeline.dispatch(&mut pass, 0, &[group], *lanes, n);
                }
            }
            ctx.queue().submit([encoder.finish()]);
        })
    }

    /// Submits one copy of θ to another buffer (timed by `timer` if given). Does not wait.
    pub fn copy(&mut self, timer: Option<&mut PassTimer>) -> Result<()> {
        let ctx = &self.ctx;
        let bytes = self.bound * 4;
        ctx.scoped("copy", || {
            let mut encoder = ctx.device().create_command_encoder(&Default::default());
            let copy = |e: &mut wgpu::CommandEncoder| {
                e.copy_buffer_to_buffer(&self.theta, 0, &self.copy, 0, bytes)
            };
            match timer {
                Some(timer) => timer.span(&mut encoder, copy),
                None => copy(&mut encoder),
            }
            ctx.queue().submit([encoder.finish()]);
        })
    }
}
