//! Measuring one row: the optimizer's steps, and the touch and copy of the same arrays on
//! the same device, alternating step by step.

use std::time::Instant;

use crate::bench::plan::Job;
use crate::bench::roofline::{copy_cpu, synthetic, touch_bytes_cpu, touch_cpu, GpuRoofline};
use crate::bench::timing::PassTimer;
use crate::bench::unfused::GpuUnfused;
use crate::bench::{Case, StepKind, MANY_TENSORS_LEN};
use crate::config::StateFormat;
use crate::cpu::{CpuOptimizer, CpuPath, PARALLEL_CHUNK};
use crate::device::StepDevice;
use crate::error::{Error, Result};
use crate::gpu::{BufferRange, GpuContext, GpuOptimizer, TensorBuffers};
use crate::layout::{GroupId, ParamGroups};
use crate::transform::{self, GradTransform, NORM_BLOCK};
use crate::Stepper;

/// `/proc/loadavg`'s first three fields (Linux).
pub(super) fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The parameters of a job: one tensor, or many of [`MANY_TENSORS_LEN`] elements, in the
/// job's state format with its group options.
pub(super) fn param_groups(job: &Job, theta0: &[f32]) -> Result<ParamGroups> {
    let mut groups = match job.case {
        Case::OneTensor => ParamGroups::single(job.config.clone(), theta0)?,
        Case::ManyTensors | Case::CallerTensors => {
            let mut groups = ParamGroups::new();
            let group = groups.add_group("params", job.config.clone())?;
            for (k, values) in theta0.chunks(MANY_TENSORS_LEN).enumerate() {
                groups.add_tensor(group, &format!("t{k}"), &[values.len()], values)?;
            }
            groups
        }
    };
    let format = ("state_format", job.state_format.name());
    let options = job.group_options.iter().map(|(k, v)| (&k[..], &v[..]));
    for (key, value) in options.chain([format]) {
        groups.set_group_option(GroupId(0), key, value)?;
    }
    Ok(groups)
}

/// The CPU, as `bench` names it in its rows.
pub fn cpu_name(threads: usize) -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let plural = if threads == 1 { "" } else { "s" };
    format!("{model}, {threads} thread{plural}")
}

/// Step, touch and copy times of one row, and how the device work was timed.
pub(super) struct Samples {
    pub(super) step: Vec<f64>,
    pub(super) touch: Vec<f64>,
    pub(super) copy: Vec<f64>,
    pub(super) wall_per_step: Option<f64>,
    pub(super) timing: &'static str,
}

/// One pass of one row: its samples and where they were taken.
pub(super) struct Measured {
    pub(super) samples: Samples,
    pub(super) adapter: String,
    pub(super) workgroup_size: Option<u32>,
    pub(super) vec4: Option<bool>,
}

pub(super) fn measure(job: &Job, steps: usize, gpu: Option<&GpuContext>) -> Result<Measured> {
    let n = job.n;
    let theta0 = synthetic(n, 1, 1.0);
    let grad = synthetic(n, 2, 1e-2);
    let groups = param_groups(job, &theta0)?;
    drop(theta0);
    let states = job.config.used_state_names().len();
    let (samples, adapter, workgroup_size, vec4) = match job.device {
        StepDevice::Reference | StepDevice::Cpu => {
            let (path, threads) = match job.device {
                StepDevice::Reference => (CpuPath::Reference, 1),
                _ => (CpuPath::Parallel, rayon::current_num_threads()),
            };
            let mut optimizer =
                CpuOptimizer::from_groups(&groups, path).with_nonfinite_policy(job.policy);
            drop(groups);
            let samples = match job.step {
                StepKind::Update => measure_cpu(&mut optimizer, &grad, steps, &mut plain_step)?,
                StepKind::Fused => {
                    optimizer.set_grad_transform(job.transform)?;
                    measure_cpu(&mut optimizer, &grad, steps, &mut plain_step)?
                }
                StepKind::Unfused => {
                    let mut work = vec![0.0f32; n];
                    let transform = job.transform;
                    let mut unfused =
                        |o: &mut CpuOptimizer, g: &[f32]| unfused_step(o, g, &transform, &mut work);
                    measure_cpu(&mut optimizer, &grad, steps, &mut unfused)?
                }
            };
            (samples, cpu_name(threads), None, None)
        }
        StepDevice::Gpu => {
            let ctx = gpu.expect("GPU jobs are planned only with a context");
            let owned = GpuOptimizer::from_groups(ctx, &groups)?;
            // A held format's buffers hold codes, which the touch kernel cannot stream as
            // f32: its roofline touches the arrays of the same optimizer in f32 instead (a
            // bandwidth; the row is judged by the bytes it really moves).
            let f32_twin = match job.state_format {
                StateFormat::F32 => None,
                _ => {
                    let mut f32_groups = groups.clone();
                    f32_groups.set_group_option(GroupId(0), "state_format", "f32")?;
                    Some(GpuOptimizer::from_groups(ctx, &f32_groups)?)
                }
            };
            // The roofline touches the owned arena: the same arrays, in buffers of its own.
            let (mut optimizer, owned) = match job.case {
                Case::CallerTensors => {
                    let places = caller_buffers(ctx, &groups)?;
                    let caller = GpuOptimizer::from_tensors_in(ctx, &groups, &places)?;
                    (caller, Some(owned))
                }
                _ => (owned, None),
            };
            optimizer.set_nonfinite_policy(job.policy);
            drop(groups);
            let unfused = match job.step {
                StepKind::Update => None,
                StepKind::Fused => {
                    optimizer.set_grad_transform(job.transform)?;
                    None
                }
                StepKind::Unfused => {
                    Some(GpuUnfused::over(ctx, &optimizer, &grad, &job.transform)?)
                }
            };
            let touched = f32_twin.as_ref().or(owned.as_ref()).unwrap_or(&optimizer);
            let mut roofline = GpuRoofline::over(ctx, touched)?;
            let mut step = GpuStep {
                optimizer: &mut optimizer,
                unfused: unfused.as_ref(),
            };
            let samples = measure_gpu(ctx, &mut step, &grad, &mut roofline, states, steps)?;
            let info = ctx.adapter_info();
            let adapter = format!("{} ({:?})", info.name, info.backend);
            (
                samples,
                adapter,
                Some(ctx.workgroup_size()),
                Some(!ctx.scalar_only()),
            )
        }
    };
    Ok(Measured {
        samples,
        adapter,
        workgroup_size,
        vec4,
    })
}

/// Where every tensor of `groups` is in two buffers of the caller's, θ and g, each tensor at
/// the next 256-byte boundary (θ₀ is written there).
fn caller_buffers(ctx: &GpuContext, groups: &ParamGroups) -> Result<Vec<TensorBuffers>> {
    let tensors = groups.layout().tensors();
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut end = 0u64;
    for t in tensors {
        let offset = end.next_multiple_of(256);
        offsets.push(offset);
        end = offset + t.len() as u64 * 4;
    }
    let device = ctx.device();
    let make = |label| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: end.max(4),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    let buffers = ctx.scoped("caller buffers", || {
        [make("caller theta"), make("caller grad")]
    })?;
    let mut theta0 = vec![0.0f32; (end / 4) as usize];
    for (t, &offset) in tensors.iter().zip(&offsets) {
        let at = (offset / 4) as usize;
        theta0[at..at + t.len()].copy_from_slice(&groups.arena_theta0(t.group)[t.range()]);
    }
    ctx.queue()
        .write_buffer(&buffers[0], 0, bytemuck::cast_slice(&theta0));
    let places = tensors
        .iter()
        .zip(&offsets)
        .map(|(t, &offset)| {
            let range = |buffer: &wgpu::Buffer| {
                BufferRange::new(buffer.clone(), offset, t.len() as u64 * 4)
            };
            TensorBuffers {
                theta: range(&buffers[0]),
                grad: range(&buffers[1]),
            }
        })
        .collect();
    Ok(places)
}

fn seconds(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// The touch and the copy of the optimizer's own arrays (group 0's arena, which is all of
/// them in every case `bench` measures).
fn touch_and_copy(optimizer: &mut CpuOptimizer, grad: &[f32], copy: &mut [f32]) -> (f64, f64) {
    let (theta, mut states, mut held) = optimizer.arena_mut();
    // The gradient is the arena itself in every case bench measures (no padding).
    let grad = &grad[..theta.len()];
    let start = Instant::now();
    touch_cpu(theta, grad, &mut states);
    // A held state's codes and scales, where the f32 state vectors are empty.
    touch_bytes_cpu(&mut held);
    let touch = seconds(start);
    let start = Instant::now();
    copy_cpu(theta, copy);
    (touch, seconds(start))
}

type CpuStep<'a> = dyn FnMut(&mut CpuOptimizer, &[f32]) -> Result<()> + 'a;

fn plain_step(optimizer: &mut CpuOptimizer, grad: &[f32]) -> Result<()> {
    optimizer.step(grad)
}

/// The training step as PyTorch runs it, each pass a parallel loop of its own over the whole
/// gradient: `GradScaler.unscale_` (read g, write g / S: into `work`, so the raw gradient
/// stays the same step after step), `clip_grad_norm_`'s norm (read) and scale (read, write),
/// then the plain step on the result.
fn unfused_step(
    optimizer: &mut CpuOptimizer,
    grad: &[f32],
    transform: &GradTransform,
    work: &mut [f32],
) -> Result<()> {
    use rayon::prelude::*;
    let scale = transform.grad_scale;
    work.par_chunks_mut(PARALLEL_CHUNK)
        .zip(grad.par_chunks(PARALLEL_CHUNK))
        .for_each(|(w, g)| transform::transform_into(g, scale, 1.0, w));
    // The same blocks as the fused scan, so both sides sum at full SIMD width.
    let partials: Vec<f32> = work
        .par_chunks(NORM_BLOCK)
        .map(|block| transform::block_partial(block, 1.0).1)
        .collect();
    let (_, factor) =
        transform::norm_and_factor(transform::reduce_partials(&partials), transform.clip_norm);
    work.par_chunks_mut(PARALLEL_CHUNK)
        .for_each(|w| w.iter_mut().for_each(|x| *x *= factor));
    optimizer.step(work)
}

fn measure_cpu(
    optimizer: &mut CpuOptimizer,
    grad: &[f32],
    steps: usize,
    step: &mut CpuStep,
) -> Result<Samples> {
    let mut copy = vec![0.0f32; optimizer.theta_slice().len()];
    // Warm-up: page faults of fresh arrays, caches, rayon's threads.
    step(optimizer, grad)?;
    touch_and_copy(optimizer, grad, &mut copy);
    let mut samples = Samples {
        step: Vec::with_capacity(steps),
        touch: Vec::with_capacity(steps),
        copy: Vec::with_capacity(steps),
        wall_per_step: None,
        timing: "wall-clock",
    };
    for _ in 0..steps {
        let start = Instant::now();
        step(optimizer, grad)?;
        samples.step.push(seconds(start));
        let (touch, copied) = touch_and_copy(optimizer, grad, &mut copy);
        samples.touch.push(touch);
        samples.copy.push(copied);
    }
    Ok(samples)
}

fn wait(ctx: &GpuContext) -> Result<()> {
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .map(drop)
        .map_err(|e| Error::device_from("waiting for the device", e))
}

/// What one GPU row steps: the optimizer, after the unfused passes in unfused rows.
struct GpuStep<'a> {
    optimizer: &'a mut GpuOptimizer,
    unfused: Option<&'a GpuUnfused>,
}

impl GpuStep<'_> {
    /// Submits one step from the gradient already on the device; with `timers`, the
    /// unfused passes (when there are any) on the first and the step's pass on the second.
    fn submit(&mut self, timers: Option<(&mut PassTimer, &mut PassTimer)>) -> Result<()> {
        let (before, step) = timers.unzip();
        if let Some(unfused) = self.unfused {
            unfused.submit(before)?;
        }
        if let Some(step) = step {
            step.time_next_step(self.optimizer);
        }
        self.optimizer.step_device()
    }
}

fn measure_gpu(
    ctx: &GpuContext,
    step: &mut GpuStep,
    grad: &[f32],
    roofline: &mut GpuRoofline,
    states: usize,
    steps: usize,
) -> Result<Samples> {
    // The gradient is uploaded once, then steps read it in place, as in a training loop whose
    // gradients are computed on the device (the unfused passes rewrite it from their own copy
    // every step). Warm-up: pipelines, first use of the buffers.
    step.optimizer.step(grad)?;
    step.submit(None)?;
    roofline.touch(states, None)?;
    roofline.copy(None)?;
    step.optimizer.step_reports()?;
    wait(ctx)?;
    // A timer holds at most `PassTimer::MAX_INTERVALS`: time the steps in batches of that
    // many, reading each batch back before the next.
    let batch = steps.min(PassTimer::MAX_INTERVALS as usize);
    let capacity = batch as u32;
    let timers = (
        PassTimer::new(ctx, capacity),
        PassTimer::new(ctx, capacity),
        PassTimer::new(ctx, capacity),
        PassTimer::new(ctx, capacity),
    );
    let mut samples =
        if let (Some(mut before), Some(mut update), Some(mut touch), Some(mut copy)) = timers {
            let mut samples = Samples {
                step: Vec::with_capacity(steps),
                touch: Vec::with_capacity(steps),
                copy: Vec::with_capacity(steps),
                wall_per_step: None,
                timing: "timestamp-query",
            };
            for start in (0..steps).step_by(batch) {
                for _ in start..steps.min(start + batch) {
                    step.submit(Some((&mut before, &mut update)))?;
                    roofline.touch(states, Some(&mut touch))?;
                    roofline.copy(Some(&mut copy))?;
                }
                let updates = update.take_seconds(ctx)?;
                // A row without unfused passes timed none: its steps are the update alone.
                let befores = before.take_seconds(ctx)?;
                samples.step.extend(
                    updates
                        .iter()
                        .zip(befores.iter().chain(std::iter::repeat(&0.0)))
                        .map(|(u, b)| u + b),
                );
                samples.touch.extend(touch.take_seconds(ctx)?);
                samples.copy.extend(copy.take_seconds(ctx)?);
            }
            samples
        } else {
            // No timestamps: wall clock over rounds of steps, each round waited for at its end.
            let rounds = steps.min(5);
            let per_round = steps.div_ceil(rounds);
            let mut samples = Samples {
                step: Vec::new(),
                touch: Vec::new(),
                copy: Vec::new(),
                wall_per_step: None,
                timing: "wall-clock",
            };
            for _ in 0..rounds {
                let start = Instant::now();
                for _ in 0..per_round {
                    step.submit(None)?;
                }
                wait(ctx)?;
                samples.step.push(seconds(start) / per_round as f64);
                let start = Instant::now();
                for _ in 0..per_round {
                    roofline.touch(states, None)?;
                }
                wait(ctx)?;
                samples.touch.push(seconds(start) / per_round as f64);
                let start = Instant::now();
                for _ in 0..per_round {
                    roofline.copy(None)?;
                }
                wait(ctx)?;
                samples.copy.push(seconds(start) / per_round as f64);
            }
            samples
        };
    wait(ctx)?;
    let start = Instant::now();
    for _ in 0..steps {
        step.submit(None)?;
    }
    step.optimizer.step_reports()?;
    wait(ctx)?;
    samples.wall_per_step = Some(seconds(start) / steps as f64);
    Ok(samples)
}
