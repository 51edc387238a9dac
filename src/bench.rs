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
pub mod unfused;

use serde::Serialize;

use crate::config::StateFormat;
use crate::device::StepDevice;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::optim::{NonFinitePolicy, OptimizerConfig};
use crate::transform::GradTransform;
pub use measure::cpu_name;
use measure::{load_average, measure, Measured};
pub use plan::{format_size, job_count, parse_size};
use plan::{host_bytes, memory_available, plan};
use report::{fill_ratios, fill_speedups, row};

/// How the parameters are registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Case {
    /// One tensor of n elements.
    OneTensor,
    /// [`MANY_TENSORS`] tensors of [`MANY_TENSORS_LEN`] elements in one parameter group.
    ManyTensors,
    /// The same tensors with θ and g in the caller's buffers (GPU only,
    /// `GpuOptimizer::from_tensors_in`), each at the next 256-byte boundary as a framework's
    /// allocator places them: the segment tables against the arena.
    CallerTensors,
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
            Case::CallerTensors => "10000 tensors of 1000 in caller buffers",
        }
    }
}

/// What one step of a row does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StepKind {
    /// The optimizer's step alone (the matrix).
    Update,
    /// [`TRAINING_STEP`] set on the optimizer: unscaling and clipping in its own passes.
    Fused,
    /// [`TRAINING_STEP`] as PyTorch runs it: an unscale pass (read g, write g), a norm pass
    /// (read g), a scale pass (read g, write g), each a loop or kernel of its own, then the
    /// plain step.
    Unfused,
}

impl StepKind {
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Update => "update",
            StepKind::Fused => "fused training step",
            StepKind::Unfused => "unfused training step",
        }
    }
}

/// The training step of `--training-step` rows: a power-of-two loss scale (so unscaling is
/// exact) and a norm small enough that the bench's gradient is really clipped.
pub const TRAINING_STEP: GradTransform = GradTransform {
    grad_scale: 1024.0,
    clip_norm: Some(1e-3),
    max_consecutive_skips: None,
};

/// The optimizers of `--training-step` rows: the SPEC's own and the one PyTorch users run.
pub const TRAINING_STEP_OPTIMIZERS: [&str; 2] = ["bayes", "adam"];

/// Bytes one step really moves per element, every pass included: the update's (g read, θ
/// and each used state read and written, the state as `format` holds it), plus one more read
/// of g for the scan, which runs under `skip-step` and `error` (the non-finite count before
/// any element changes; not under `skip-element` or `propagate`) and under every policy when
/// `transform` clips (the norm); the unfused sequence adds its unscale (8), norm (4) and scale
/// (8) passes to a plain step. In `q8` under `skip-step` and `error`, an overflow undoes the
/// whole step, so the CPU first runs the update into scratch (reading g, θ and the codes),
/// which also counts the non-finite gradient elements when there is no transform (no scan).
pub fn bytes_per_element(
    config: &OptimizerConfig,
    format: StateFormat,
    policy: NonFinitePolicy,
    transform: &GradTransform,
    kind: StepKind,
) -> f64 {
    let update = config.as_dyn().bytes_per_element_in(format);
    let trial = format == StateFormat::Q8 && policy.counts_first();
    let passes = |transform: &GradTransform| {
        let trial_bytes = match trial {
            true => 8.0 + config.used_state_names().len() as f64 * format.element_bytes(),
            false => 0.0,
        };
        let scans = policy.counts_first() || transform.clip_norm.is_some();
        // Without a transform the trial's read of g is the count.
        let scan = match scans && !(trial && transform.is_identity()) {
            true => 4.0,
            false => 0.0,
        };
        scan + trial_bytes
    };
    match kind {
        StepKind::Update | StepKind::Fused => update + passes(transform),
        StepKind::Unfused => 8.0 + 4.0 + 8.0 + update + passes(&GradTransform::default()),
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Each optimizer by the name given (presets included) and its config.
    pub optimizers: Vec<(String, OptimizerConfig)>,
    pub sizes: Vec<usize>,
    pub devices: Vec<StepDevice>,
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
    /// Also, for each size and [`TRAINING_STEP_OPTIMIZERS`]: the fused training step against
    /// the unfused sequence, under the matrix's policy and under `skip-element`.
    pub training_step: bool,
    /// The training step of those rows ([`TRAINING_STEP`] by default). The unfused
    /// sequence runs its unscale, norm and scale passes whatever it holds.
    pub transform: GradTransform,
    /// The state formats of the matrix: its rows once per format (SPEC §6; `[F32]` by
    /// default). The extras and the training-step rows take the first.
    pub state_formats: Vec<StateFormat>,
    /// Other group options of every row, as `ParamGroups::set_group_option` reads them
    /// (e.g. `state_seed`).
    pub group_options: Vec<(String, String)>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            optimizers: OptimizerConfig::all_defaults()
                .into_iter()
                .map(|c| (c.name().to_string(), c))
                .collect(),
            sizes: vec![1 << 20, 16 << 20, 64 << 20],
            devices: StepDevice::ALL.to_vec(),
            steps: 10,
            repeat: 1,
            policy: NonFinitePolicy::SkipStep,
            extras: true,
            training_step: false,
            transform: TRAINING_STEP,
            state_formats: vec![StateFormat::F32],
            group_options: Vec::new(),
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
    /// Bytes really moved per parameter per step, every pass included (see
    /// [`bytes_per_element`]): `bayes` moves 28 under `skip-element`, 32 under `skip-step`;
    /// in `q8`, 16.06 under `skip-element`.
    pub bytes_per_element: f64,
    pub gb_per_second: f64,
    /// The touch of the optimizer's arrays (the update's SPEC bytes), measured in the same
    /// run on the same device.
    pub roofline_gb_per_second: f64,
    /// The step's share of the roofline by real bytes: the median over the run of
    /// (real bytes / step time) over (touch bytes / touch time), each touch measured right
    /// after its step, so that a change in machine load during the run cancels out. Close to
    /// `gb_per_second / roofline_gb_per_second`, which takes the medians separately.
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
    /// The non-finite policy (`skip-step` runs the GPU's scan pass; `skip-element` and
    /// `propagate` do not).
    pub policy: String,
    /// `timestamp-query` (device time of the pass) or `wall-clock`.
    pub timing: String,
    /// Steps submitted back to back, wall clock per step (host recording and submission
    /// included); equal to the median for CPU rows.
    pub wall_seconds_per_step: f64,
    /// GPU rows: the CPU row's step time over this one's (same optimizer, size, case, policy,
    /// step).
    pub gpu_cpu_speedup: Option<f64>,
    /// GPU rows: invocations per workgroup.
    pub workgroup_size: Option<u32>,
    /// GPU rows: whether kernels used vec4 loads and stores (else one element per invocation).
    pub vec4: Option<bool>,
    /// `update`, `fused training step` or `unfused training step` ([`StepKind`]).
    pub step: String,
    /// Fused training-step rows: the unfused row's step time over this one's (same
    /// optimizer, size, device, policy), each relative to the touch timed beside it, so that
    /// load changing between the two rows cancels.
    pub unfused_over_fused: Option<f64>,
    /// The state format (SPEC §6): `f32`, `bf16` or `q8`.
    pub state_format: String,
}

/// Every row of a run, and why GPU rows are missing if they are.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// One line saying why there are no GPU rows, when they were asked for.
    pub gpu_missing: Option<String>,
    /// One line per row that was planned but not measured, and why (a GPU row in a state
    /// format its kernels do not run).
    pub skipped: Vec<String>,
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
    let wants_gpu = options.devices.contains(&StepDevice::Gpu);
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
    let mut skipped = Vec::new();
    for pass in 0..passes {
        for (k, job) in jobs.iter().enumerate() {
            progress(pass * jobs.len() + k, total, &job.label());
            match measure(job, options.steps, ctx) {
                Ok(m) => measured[k].push(m),
                // The GPU kernels refuse a state format they cannot run yet: that row only
                // is skipped, and says why.
                Err(Error::Unsupported(why))
                    if job.device == StepDevice::Gpu && job.state_format != StateFormat::F32 =>
                {
                    if pass == 0 {
                        skipped.push(format!("{}: skipped: {why}", job.label()));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    progress(total, total, "done");
    let mut rows: Vec<Row> = jobs
        .iter()
        .zip(&measured)
        .filter(|(_, m)| !m.is_empty())
        .map(|(j, m)| row(j, m))
        .collect();
    fill_speedups(&mut rows);
    fill_ratios(&mut rows);
    let load = load_before.zip(load_average());
    Ok(Report {
        rows,
        gpu_missing,
        skipped,
        policy: options.policy,
        load,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::SgdConfig;

    fn sgd(momentum: f64) -> OptimizerConfig {
        OptimizerConfig::Sgd(SgdConfig {
            momentum,
            ..SgdConfig::default()
        })
    }

    const UNSCALE: GradTransform = GradTransform {
        grad_scale: 1024.0,
        clip_norm: None,
        max_consecutive_skips: None,
    };
    const CLIP: GradTransform = GradTransform {
        grad_scale: 1.0,
        clip_norm: Some(1.0),
        max_consecutive_skips: None,
    };

    /// Every policy × transform × momentum, each count worked out by hand from the passes:
    /// the update reads g and reads and writes θ and each state vector; the scan reads g.
    #[test]
    fn bytes_per_element_counts_every_pass() {
        use NonFinitePolicy::{Error, Propagate, SkipElement, SkipStep};
        use StepKind::{Fused, Unfused, Update};
        let none = GradTransform::default();
        let bayes = OptimizerConfig::default_for("bayes").unwrap();
        let bayes_fp = OptimizerConfig::default_for("bayes_fp").unwrap();
        let cases: &[(
            &str,
            OptimizerConfig,
            NonFinitePolicy,
            GradTransform,
            StepKind,
            usize,
        )] = &[
            // No momentum buffer: g, θ.
            ("sgd skip-step", sgd(0.0), SkipStep, none, Update, 16),
            ("sgd error", sgd(0.0), Error, none, Update, 16),
            ("sgd skip-element", sgd(0.0), SkipElement, none, Update, 12),
            // Propagate: no count, no scan; a clip still reads g for its norm.
            ("sgd propagate", sgd(0.0), Propagate, none, Update, 12),
            ("sgd propagate clip", sgd(0.0), Propagate, CLIP, Fused, 16),
            // Unscaling alone needs no norm, and skip-element no count: no scan.
            (
                "sgd skip-element unscale",
                sgd(0.0),
                SkipElement,
                UNSCALE,
                Fused,
                12,
            ),
            (
                "sgd skip-element clip",
                sgd(0.0),
                SkipElement,
                CLIP,
                Fused,
                16,
            ),
            ("sgd skip-step clip", sgd(0.0), SkipStep, CLIP, Fused, 16),
            (
                "sgd skip-element unfused",
                sgd(0.0),
                SkipElement,
                TRAINING_STEP,
                Unfused,
                32,
            ),
            (
                "sgd skip-step unfused",
                sgd(0.0),
                SkipStep,
                TRAINING_STEP,
                Unfused,
                36,
            ),
            // Momentum: g, θ, b.
            ("sgd+m skip-step", sgd(0.9), SkipStep, none, Update, 24),
            (
                "sgd+m skip-element",
                sgd(0.9),
                SkipElement,
                none,
                Update,
                20,
            ),
            (
                "sgd+m skip-element clip",
                sgd(0.9),
                SkipElement,
                CLIP,
                Fused,
                24,
            ),
            ("sgd+m error unscale", sgd(0.9), Error, UNSCALE, Fused, 24),
            (
                "sgd+m skip-element unfused",
                sgd(0.9),
                SkipElement,
                TRAINING_STEP,
                Unfused,
                40,
            ),
            // bayes: g, θ, m, v.
            ("bayes skip-step", bayes.clone(), SkipStep, none, Update, 32),
            (
                "bayes skip-element",
                bayes.clone(),
                SkipElement,
                none,
                Update,
                28,
            ),
            (
                "bayes skip-step fused",
                bayes.clone(),
                SkipStep,
                TRAINING_STEP,
                Fused,
                32,
            ),
            (
                "bayes skip-element fused",
                bayes.clone(),
                SkipElement,
                TRAINING_STEP,
                Fused,
                32,
            ),
            (
                "bayes skip-element unscale",
                bayes.clone(),
                SkipElement,
                UNSCALE,
                Fused,
                28,
            ),
            (
                "bayes skip-step unfused",
                bayes.clone(),
                SkipStep,
                TRAINING_STEP,
                Unfused,
                52,
            ),
            (
                "bayes skip-element unfused",
                bayes,
                SkipElement,
                TRAINING_STEP,
                Unfused,
                48,
            ),
            // bayes_fp: g, θ, one state vector.
            (
                "bayes_fp skip-step",
                bayes_fp.clone(),
                SkipStep,
                none,
                Update,
                24,
            ),
            (
                "bayes_fp skip-element",
                bayes_fp,
                SkipElement,
                none,
                Update,
                20,
            ),
        ];
        for (name, config, policy, transform, kind, bytes) in cases {
            assert_eq!(
                bytes_per_element(config, StateFormat::F32, *policy, transform, *kind),
                *bytes as f64,
                "{name}"
            );
        }
    }

    /// The state's bytes as held (SPEC §6's table for `bayes`), and the q8 trial pass under
    /// `skip-step` and `error`: g, θ and the codes read once more, in place of the scan
    /// without a transform, beside it with one.
    #[test]
    fn bytes_per_element_counts_the_state_as_held() {
        use NonFinitePolicy::{Error, SkipElement, SkipStep};
        use StateFormat::{Bf16, F32, Q8};
        use StepKind::{Fused, Update};
        let none = GradTransform::default();
        let bayes = OptimizerConfig::default_for("bayes").unwrap();
        let q8_state = 1.0 + 4.0 / 256.0;
        let cases = [
            (F32, SkipElement, none, Update, 28.0),
            (Bf16, SkipElement, none, Update, 20.0),
            (Bf16, SkipStep, none, Update, 24.0),
            (Q8, SkipElement, none, Update, 12.0 + 4.0 * q8_state),
            (
                Q8,
                SkipStep,
                none,
                Update,
                12.0 + 4.0 * q8_state + 8.0 + 2.0 * q8_state,
            ),
            (
                Q8,
                Error,
                none,
                Update,
                12.0 + 4.0 * q8_state + 8.0 + 2.0 * q8_state,
            ),
            (
                Q8,
                SkipStep,
                TRAINING_STEP,
                Fused,
                4.0 + 12.0 + 4.0 * q8_state + 8.0 + 2.0 * q8_state,
            ),
            (
                Q8,
                SkipElement,
                TRAINING_STEP,
                Fused,
                4.0 + 12.0 + 4.0 * q8_state,
            ),
        ];
        for (format, policy, transform, kind, bytes) in cases {
            assert_eq!(
                bytes_per_element(&bayes, format, policy, &transform, kind),
                bytes,
                "{format} {policy:?} {kind:?}"
            );
        }
        assert_eq!(Q8.element_bytes(), 1.015625);
        assert_eq!(bayes.as_dyn().bytes_per_element_in(Bf16), 20.0);
    }

    /// The host memory a row needs counts the state as held on the fast path, decoded beside
    /// it on the reference, and none on the GPU.
    #[test]
    fn host_bytes_count_the_state_as_held() {
        let n = 1 << 20;
        let job = |device, state_format| plan::Job {
            name: "bayes".into(),
            config: OptimizerConfig::default_for("bayes").unwrap(),
            n,
            device,
            case: Case::OneTensor,
            policy: NonFinitePolicy::SkipStep,
            step: StepKind::Update,
            transform: GradTransform::default(),
            state_format,
            group_options: Vec::new(),
        };
        let n = n as u64;
        let q8 = n + 4 * n / 256;
        let cases = [
            (StepDevice::Gpu, StateFormat::Q8, 12 * n),
            (StepDevice::Cpu, StateFormat::F32, 12 * n + 8 * n),
            (StepDevice::Cpu, StateFormat::Bf16, 12 * n + 4 * n),
            (StepDevice::Cpu, StateFormat::Q8, 12 * n + 2 * q8),
            (
                StepDevice::Reference,
                StateFormat::Bf16,
                12 * n + 4 * n + 8 * n,
            ),
            (
                StepDevice::Reference,
                StateFormat::Q8,
                12 * n + 2 * q8 + 20 * n,
            ),
        ];
        for (device, format, bytes) in cases {
            assert_eq!(
                host_bytes(&job(device, format)),
                bytes,
                "{device:?} {format}"
            );
        }
    }
}
