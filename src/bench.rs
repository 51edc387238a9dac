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
//!
//! The rows are planned ([`plan`]: which optimizer, size, device and case, and whether the
//! host can hold them), measured ([`measure`]) and reported ([`report`]: medians, speedups,
//! the table and JSON).

pub mod measure;
pub mod plan;
pub mod plot;
pub mod report;
pub mod roofline;
pub mod timing;
pub mod touch;

use serde::Serialize;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::optim::{NonFinitePolicy, OptimizerConfig};
pub use measure::cpu_name;
use measure::{load_average, measure, Measured};
pub use plan::{format_size, job_count, parse_size};
use plan::{host_bytes, memory_available, plan};
use report::{fill_speedups, row};

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
