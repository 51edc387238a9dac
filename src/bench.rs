//! `bayesprop bench`: the step time of each optimizer on the reference, the fast CPU path and
//! the GPU, against the roofline measured in the same run, on the same device and at the same
//! size ([`roofline`]: a touch of exactly the optimizer's arrays, and a plain copy).
//!
//! Timing. CPU rows: wall clock around each step (the CPU path is synchronous). GPU rows: where
//! the device has timestamp queries (lavapipe does), device time of each step's pass (the
//! scan, update and commit dispatches) and of each touch pass; elsewhere wall clock over many
//! steps. GPU rows also carry the wall-clock time per step of steps submitted back to back
//! (`wall_seconds_per_step`), which adds the host's fixed cost of recording and submitting.
//! Optimizer, touch and copy alternate step by step, so a change in machine load during the
//! run affects them alike. Rows report medians.
//!
//! Speeds are only measured here and in `benches/`; no test asserts one.

pub mod plot;
pub mod roofline;
pub mod timing;
pub mod touch;

use std::time::Instant;

use serde::Serialize;

use crate::cpu::{CpuOptimizer, CpuPath};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuOptimizer};
use crate::layout::ParamGroups;
use crate::optim::{NonFinitePolicy, OptimizerConfig};
use crate::Stepper;
use roofline::{copy_cpu, synthetic, touch_cpu, GpuRoofline};
use timing::PassTimer;

/// How the parameters are registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Case {
    /// One tensor of n elements.
    OneTensor,
    /// [`MANY_TENSORS`] tensors of [`MANY_TENSORS_LEN`] elements in one parameter group.
    ManyTensors,
}

/// The many-tensor case: this many tensors …
pub const MANY_TENSORS: usize = 10_000;
/// … of this many elements, against one tensor of their total (10M).
pub const MANY_TENSORS_LEN: usize = 1_000;

impl Case {
    pub fn name(self) -> &'static str {
        match self {
            Case::OneTensor => "one tensor",
            Case::ManyTensors => "10000 tensors of 1000",
        }
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Each optimizer by the name given (presets included) and its config.
    pub optimizers: Vec<(String, OptimizerConfig)>,
    pub sizes: Vec<usize>,
    pub devices: Vec<Device>,
    /// Timed steps per row (after warm-up steps).
    pub steps: usize,
    /// Passes through every row; each row pools the samples of all its passes, so that the
    /// machine's changing load over the whole run weighs on every row alike.
    pub repeat: usize,
    /// The non-finite policy of the matrix. `SkipStep` (the default) makes the GPU run its
    /// scan pass and the CPU read g once more before the update; `SkipElement` needs neither.
    pub policy: NonFinitePolicy,
    /// Also, for the first optimizer: the many-tensor case against one tensor of 10M, and the
    /// scan pass's cost (each size again under the other one of `SkipStep` and
    /// `SkipElement`).
    pub extras: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            optimizers: OptimizerConfig::all_defaults()
                .into_iter()
                .map(|c| (c.name().to_string(), c))
                .collect(),
            sizes: vec![1 << 20, 16 << 20, 64 << 20],
            devices: Device::ALL.to_vec(),
            steps: 10,
            repeat: 1,
            policy: NonFinitePolicy::SkipStep,
            extras: true,
        }
    }
}

/// One measurement: an optimizer at one size on one device, with the roofline of that device
/// at that size measured alongside. The first ten fields are the `--json` interface.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub optimizer: String,
    /// Parameters (over all tensors).
    pub n: usize,
    /// `reference`, `cpu` or `gpu`.
    pub device: String,
    /// The GPU adapter and backend, or the CPU and its threads.
    pub adapter: String,
    pub step_seconds_median: f64,
    pub elements_per_second: f64,
    /// Bytes moved per parameter per step, per SPEC (e.g. 28 for `bayes`).
    pub bytes_per_element: usize,
    pub gb_per_second: f64,
    /// The touch of the same arrays, measured in the same run on the same device.
    pub roofline_gb_per_second: f64,
    /// The step's share of the roofline: the median over the run of touch time over step
    /// time, each touch measured right after its step, so that a change in machine load
    /// during the run cancels out. Close to `gb_per_second / roofline_gb_per_second`, which
    /// takes the medians separately.
    pub roofline_fraction: f64,
    /// The lowest and highest roofline fraction of a single pass (`--repeat`).
    pub roofline_fraction_min: f64,
    pub roofline_fraction_max: f64,
    /// Passes pooled into this row.
    pub runs: usize,
    /// A plain copy on the same device (8 bytes per element: read and write).
    pub copy_gb_per_second: f64,
    /// `one tensor` or `10000 tensors of 1000`.
    pub case: String,
    /// The non-finite policy (`skip-step` runs the GPU's scan pass; `skip-element` does not).
    pub policy: String,
    /// `timestamp-query` (device time of the pass) or `wall-clock`.
    pub timing: String,
    /// Steps submitted back to back, wall clock per step (host recording and submission
    /// included); equal to the median for CPU rows.
    pub wall_seconds_per_step: f64,
    /// GPU rows: the CPU row's step time over this one's (same optimizer, size, case, policy).
    pub gpu_cpu_speedup: Option<f64>,
    /// GPU rows: invocations per workgroup.
    pub workgroup_size: Option<u32>,
    /// GPU rows: whether kernels used vec4 loads and stores (else one element per invocation).
    pub vec4: Option<bool>,
}

/// Every row of a run, and why GPU rows are missing if they are.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// One line saying why there are no GPU rows, when they were asked for.
    pub gpu_missing: Option<String>,
    /// The matrix's non-finite policy.
    pub policy: NonFinitePolicy,
    /// The machine's load average (1, 5, 15 minutes) before and after the run, where the OS
    /// tells it: other work on the machine slows both the steps and the roofline.
    pub load: Option<(String, String)>,
}

/// `/proc/loadavg`'s first three fields (Linux).
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The memory the kernel can give without swapping (`MemAvailable` in `/proc/meminfo`, Linux),
/// in bytes.
fn memory_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Host bytes a row holds at its peak (see `measure`): the gradient and θ₀'s copy in the
/// groups, then on the CPU the optimizer's θ and state and the roofline's copy target.
fn host_bytes(job: &Job) -> u64 {
    let vectors = match job.device {
        Device::Reference | Device::Cpu => 3 + job.config.used_state_names().len(),
        Device::Gpu => 3,
    };
    4 * job.n as u64 * vectors as u64
}

/// One row to measure.
#[derive(Clone, Debug)]
struct Job {
    name: String,
    config: OptimizerConfig,
    n: usize,
    device: Device,
    case: Case,
    policy: NonFinitePolicy,
}

impl Job {
    fn label(&self) -> String {
        format!(
            "{} n={} {} {} {}",
            self.name,
            format_size(self.n),
            self.device.name(),
            self.case.name(),
            self.policy.name()
        )
    }
}

/// Parses `1M`, `16M`, `64K` (binary: M = 2^20, K = 2^10) or a plain count.
pub fn parse_size(text: &str) -> Result<usize> {
    let t = text.trim();
    let (digits, unit) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|d| d.checked_mul(unit))
        .filter(|&n| n > 0)
        .ok_or_else(|| Error::Unknown {
            what: "size",
            name: text.to_string(),
            known: "a positive count, or one with K, M or G (binary: 16M = 16·2^20)".into(),
        })
}

/// `4G` for 4·2^30, `16M` for 16·2^20, `64K` for 64·2^10, `10e6` for 10^7, or the plain count.
pub fn format_size(n: usize) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}G", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}M", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}K", n >> 10),
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}e6", n / 1_000_000),
        n => n.to_string(),
    }
}

/// The rows `run` will measure, in order: by size (so the roofline arrays of one size are
/// made once), then optimizer, then device.
fn plan(options: &BenchOptions, has_gpu: bool) -> Vec<Job> {
    let devices: Vec<Device> = options
        .devices
        .iter()
        .copied()
        .filter(|&d| d != Device::Gpu || has_gpu)
        .collect();
    let job = |(name, config): &(String, OptimizerConfig), n, device, case, policy| Job {
        name: name.clone(),
        config: config.clone(),
        n,
        device,
        case,
        policy,
    };
    let mut jobs = Vec::new();
    for &n in &options.sizes {
        for optimizer in &options.optimizers {
            for &device in &devices {
                jobs.push(job(optimizer, n, device, Case::OneTensor, options.policy));
            }
        }
        if let (true, Some(first)) = (options.extras, options.optimizers.first()) {
            // The scan pass's cost: the same step with and without it.
            let other = match options.policy {
                NonFinitePolicy::SkipElement => NonFinitePolicy::SkipStep,
                _ => NonFinitePolicy::SkipElement,
            };
            for &device in devices.iter().filter(|&&d| d != Device::Reference) {
                jobs.push(job(first, n, device, Case::OneTensor, other));
            }
        }
    }
    if let (true, Some(first)) = (options.extras, options.optimizers.first()) {
        let n = MANY_TENSORS * MANY_TENSORS_LEN;
        for case in [Case::OneTensor, Case::ManyTensors] {
            for &device in devices.iter().filter(|&&d| d != Device::Reference) {
                jobs.push(job(first, n, device, case, options.policy));
            }
        }
    }
    jobs
}

/// How many rows `run` will measure (for a progress bar).
pub fn job_count(options: &BenchOptions, has_gpu: bool) -> usize {
    plan(options, has_gpu).len()
}

/// Measures every row of `options`. GPU rows need `gpu`; without it `gpu_missing` (the reason,
/// one line) is reported instead. `progress` is called before each row with its index, the
/// count and a label.
pub fn run(
    options: &BenchOptions,
    gpu: std::result::Result<&GpuContext, String>,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Report> {
    for (what, count) in [
        ("step count", options.steps),
        ("repeat count", options.repeat),
    ] {
        if count == 0 {
            return Err(Error::Unknown {
                what,
                name: "0".into(),
                known: "at least 1".into(),
            });
        }
    }
    let wants_gpu = options.devices.contains(&Device::Gpu);
    let gpu_missing = match (&gpu, wants_gpu) {
        (Err(why), true) => Some(format!("GPU rows skipped: {why}")),
        _ => None,
    };
    let ctx = gpu.ok();
    let jobs = plan(options, ctx.is_some());
    if let Some(available) = memory_available() {
        for job in &jobs {
            let needed = host_bytes(job);
            if needed > available {
                return Err(Error::HostMemory {
                    what: format!("the row {}", job.label()),
                    needed,
                    available,
                });
            }
        }
    }
    let load_before = load_average();
    let passes = options.repeat;
    let total = passes * jobs.len();
    let mut measured: Vec<Vec<Measured>> = jobs.iter().map(|_| Vec::new()).collect();
    for pass in 0..passes {
        for (k, job) in jobs.iter().enumerate() {
            progress(pass * jobs.len() + k, total, &job.label());
            measured[k].push(measure(job, options.steps, ctx)?);
        }
    }
    progress(total, total, "done");
    let mut rows: Vec<Row> = jobs.iter().zip(&measured).map(|(j, m)| row(j, m)).collect();
    fill_speedups(&mut rows);
    let load = load_before.zip(load_average());
    Ok(Report {
        rows,
        gpu_missing,
        policy: options.policy,
        load,
    })
}

fn fill_speedups(rows: &mut [Row]) {
    let cpu: Vec<Row> = rows.iter().filter(|r| r.device == "cpu").cloned().collect();
    for row in rows.iter_mut().filter(|r| r.device == "gpu") {
        row.gpu_cpu_speedup = cpu
            .iter()
            .find(|c| {
                (&c.optimizer, c.n, &c.case, &c.policy)
                    == (&row.optimizer, row.n, &row.case, &row.policy)
            })
            .map(|c| c.step_seconds_median / row.step_seconds_median);
    }
}

/// The parameters of a job: one tensor, or many of [`MANY_TENSORS_LEN`] elements.
fn param_groups(job: &Job, theta0: &[f32]) -> Result<ParamGroups> {
    match job.case {
        Case::OneTensor => ParamGroups::single(job.config.clone(), theta0),
        Case::ManyTensors => {
            let mut groups = ParamGroups::new();
            let group = groups.add_group("params", job.config.clone())?;
            for (k, values) in theta0.chunks(MANY_TENSORS_LEN).enumerate() {
                groups.add_tensor(group, &format!("t{k}"), &[values.len()], values)?;
            }
            Ok(groups)
        }
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
struct Samples {
    step: Vec<f64>,
    touch: Vec<f64>,
    copy: Vec<f64>,
    wall_per_step: Option<f64>,
    timing: &'static str,
}

/// One pass of one row: its samples and where they were taken.
struct Measured {
    samples: Samples,
    adapter: String,
    workgroup_size: Option<u32>,
    vec4: Option<bool>,
}

fn measure(job: &Job, steps: usize, gpu: Option<&GpuContext>) -> Result<Measured> {
    let n = job.n;
    let theta0 = synthetic(n, 1, 1.0);
    let grad = synthetic(n, 2, 1e-2);
    let groups = param_groups(job, &theta0)?;
    drop(theta0);
    let states = job.config.used_state_names().len();
    let (samples, adapter, workgroup_size, vec4) = match job.device {
        Device::Reference | Device::Cpu => {
            let (path, threads) = match job.device {
                Device::Reference => (CpuPath::Reference, 1),
                _ => (CpuPath::Parallel, rayon::current_num_threads()),
            };
            let mut optimizer =
                CpuOptimizer::from_groups(&groups, path).with_nonfinite_policy(job.policy);
            drop(groups);
            let samples = measure_cpu(&mut optimizer, &grad, steps)?;
            (samples, cpu_name(threads), None, None)
        }
        Device::Gpu => {
            let ctx = gpu.expect("GPU jobs are planned only with a context");
            let mut optimizer =
                GpuOptimizer::from_groups(ctx, &groups)?.with_nonfinite_policy(job.policy);
            drop(groups);
            let mut roofline = GpuRoofline::over(ctx, &optimizer)?;
            let samples = measure_gpu(ctx, &mut optimizer, &grad, &mut roofline, states, steps)?;
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

/// The row of a job from all its passes: medians over the pooled samples.
fn row(job: &Job, passes: &[Measured]) -> Row {
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
    let mut per_pass: Vec<f64> = passes.iter().map(|m| median(&mut ratios(m))).collect();
    let fraction = median(&mut passes.iter().flat_map(ratios).collect::<Vec<_>>());
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
    let bytes_per_element = job.config.as_dyn().bytes_per_element();
    let bytes = (bytes_per_element * n) as f64;
    let gb_per_second = bytes / step / 1e9;
    let roofline_gb_per_second = bytes / touch / 1e9;
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
    }
}

fn seconds(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// The touch and the copy of the optimizer's own arrays (group 0's arena, which is all of
/// them in every case `bench` measures).
fn touch_and_copy(optimizer: &mut CpuOptimizer, grad: &[f32], copy: &mut [f32]) -> (f64, f64) {
    let (theta, mut states) = optimizer.arena_mut();
    // The gradient is the arena itself in every case bench measures (no padding).
    let grad = &grad[..theta.len()];
    let start = Instant::now();
    touch_cpu(theta, grad, &mut states);
    let touch = seconds(start);
    let start = Instant::now();
    copy_cpu(theta, copy);
    (touch, seconds(start))
}

fn measure_cpu(optimizer: &mut CpuOptimizer, grad: &[f32], steps: usize) -> Result<Samples> {
    let mut copy = vec![0.0f32; optimizer.theta_slice().len()];
    // Warm-up: page faults of fresh arrays, caches, rayon's threads.
    optimizer.step(grad)?;
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
        optimizer.step(grad)?;
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
        .map_err(|e| Error::Device(format!("waiting for the device: {e}")))
}

fn measure_gpu(
    ctx: &GpuContext,
    optimizer: &mut GpuOptimizer,
    grad: &[f32],
    roofline: &mut GpuRoofline,
    states: usize,
    steps: usize,
) -> Result<Samples> {
    // The gradient is uploaded once, then steps read it in place, as in a training loop whose
    // gradients are computed on the device. Warm-up: pipelines, first use of the buffers.
    optimizer.step(grad)?;
    optimizer.step_device()?;
    roofline.touch(states, None)?;
    roofline.copy(None)?;
    optimizer.step_reports()?;
    wait(ctx)?;
    // A timer holds at most `PassTimer::MAX_INTERVALS`: time the steps in batches of that
    // many, reading each batch back before the next.
    let batch = steps.min(PassTimer::MAX_INTERVALS as usize);
    let capacity = batch as u32;
    let timers = (
        optimizer.time_passes(capacity),
        PassTimer::new(ctx, capacity),
        PassTimer::new(ctx, capacity),
    );
    let mut samples = if let (true, Some(mut touch), Some(mut copy)) = timers {
        let mut samples = Samples {
            step: Vec::with_capacity(steps),
            touch: Vec::with_capacity(steps),
            copy: Vec::with_capacity(steps),
            wall_per_step: None,
            timing: "timestamp-query",
        };
        for start in (0..steps).step_by(batch) {
            for _ in start..steps.min(start + batch) {
                optimizer.step_device()?;
                roofline.touch(states, Some(&mut touch))?;
                roofline.copy(Some(&mut copy))?;
            }
            samples.step.extend(optimizer.pass_seconds()?);
            samples.touch.extend(touch.take_seconds(ctx)?);
            samples.copy.extend(copy.take_seconds(ctx)?);
        }
        optimizer.time_passes(0);
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
                optimizer.step_device()?;
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
        optimizer.step_device()?;
    }
    optimizer.step_reports()?;
    wait(ctx)?;
    samples.wall_per_step = Some(seconds(start) / steps as f64);
    Ok(samples)
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
            .filter(|r| r.case == Case::OneTensor.name() && r.policy == self.policy.name())
    }

    fn find(
        &self,
        optimizer: &str,
        n: usize,
        device: &str,
        case: Case,
        policy: &str,
    ) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.optimizer == optimizer
                && r.n == n
                && r.device == device
                && r.case == case.name()
                && r.policy == policy
        })
    }

    /// Step time of 10,000 tensors of 1,000 over one tensor of 10M, per device. Each row's
    /// time is taken relative to its own touch (the same arrays at the same size), so a change
    /// in machine load between the two rows cancels: the ratio of their roofline fractions.
    pub fn many_tensor_ratios(&self) -> Vec<(String, String, f64)> {
        let n = MANY_TENSORS * MANY_TENSORS_LEN;
        self.rows
            .iter()
            .filter(|r| r.case == Case::ManyTensors.name())
            .filter_map(|many| {
                let one = self.find(
                    &many.optimizer,
                    n,
                    &many.device,
                    Case::OneTensor,
                    &many.policy,
                )?;
                let ratio = one.roofline_fraction / many.roofline_fraction;
                Some((many.optimizer.clone(), many.device.clone(), ratio))
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
            .filter_map(|without| {
                let with = self.find(
                    &without.optimizer,
                    without.n,
                    &without.device,
                    Case::OneTensor,
                    NonFinitePolicy::SkipStep.name(),
                )?;
                let cost = without.roofline_fraction / with.roofline_fraction - 1.0;
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
            "step ms",
            "Melem/s",
            "GB/s",
            "roof GB/s",
            "of roof",
            "copy GB/s",
            "GPU/CPU",
        ];
        let mut lines: Vec<[String; 10]> = vec![header.map(String::from)];
        let mut matrix: Vec<&Row> = self.matrix().collect();
        matrix.sort_by(|a, b| {
            (order_of(&a.optimizer, self), a.n, &a.device).cmp(&(
                order_of(&b.optimizer, self),
                b.n,
                &b.device,
            ))
        });
        for r in matrix {
            lines.push([
                r.optimizer.clone(),
                format_size(r.n),
                r.device.clone(),
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
        let widths: Vec<usize> = (0..10)
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
        for (optimizer, device, ratio) in self.many_tensor_ratios() {
            let _ = writeln!(
                out,
                "many tensors ({optimizer}, {device}): {} takes {ratio:.2}x the step time of one tensor of 10M",
                Case::ManyTensors.name()
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

/// Optimizers in the order the rows first name them.
fn order_of(optimizer: &str, report: &Report) -> usize {
    report
        .rows
        .iter()
        .position(|r| r.optimizer == optimizer)
        .unwrap_or(usize::MAX)
}
