//! Which rows `bench` measures, in which order, and whether the host can hold them.

use crate::bench::{
    bytes_per_element, BenchOptions, Case, StepKind, MANY_TENSORS, MANY_TENSORS_LEN,
    TRAINING_STEP_OPTIMIZERS,
};
use crate::config::StateFormat;
use crate::device::StepDevice;
use crate::error::{Error, Result};
use crate::optim::{NonFinitePolicy, OptimizerConfig};
use crate::transform::GradTransform;

/// The memory the kernel can give without swapping (`MemAvailable` in `/proc/meminfo`, Linux),
/// in bytes.
pub(super) fn memory_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Host bytes a row holds at its peak (see `measure`): the gradient and θ₀'s copy in the
/// groups, then on the CPU the optimizer's θ and state and the roofline's copy target. State
/// in `bf16` or `q8` is held as such; the reference decodes it to f32 arenas during a step
/// (and under `q8` with a testing policy keeps a copy of θ and those arenas to restore).
pub(super) fn host_bytes(job: &Job) -> u64 {
    let n = job.n as u64;
    let vectors = 3 + usize::from(job.step == StepKind::Unfused) as u64;
    let slots = job.config.used_state_names().len() as u64;
    let held = slots * job.state_format.slot_bytes(job.n) as u64;
    let state = match (job.device, job.state_format) {
        (StepDevice::Gpu, _) => 0,
        (_, StateFormat::F32) => 4 * n * slots,
        (StepDevice::Cpu, _) => held,
        (StepDevice::Reference, StateFormat::Bf16) => held + 4 * n * slots,
        (StepDevice::Reference, StateFormat::Q8) => held + 8 * n * slots + 4 * n,
    };
    4 * n * vectors + state
}

/// One row to measure.
#[derive(Clone, Debug)]
pub(super) struct Job {
    pub(super) name: String,
    pub(super) config: OptimizerConfig,
    pub(super) n: usize,
    pub(super) device: StepDevice,
    pub(super) case: Case,
    pub(super) policy: NonFinitePolicy,
    pub(super) step: StepKind,
    pub(super) transform: GradTransform,
    pub(super) state_format: StateFormat,
    /// Other group options (`ParamGroups::set_group_option`).
    pub(super) group_options: Vec<(String, String)>,
}

impl Job {
    pub(super) fn label(&self) -> String {
        format!(
            "{} {} n={} {} {} {} {}",
            self.name,
            self.state_format,
            format_size(self.n),
            self.device.name(),
            self.case.name(),
            self.policy.name(),
            self.step.name()
        )
    }

    /// Bytes this row's step really moves per element. On the GPU, q8 under `skip-step` and
    /// `error` reads g once more than on the CPU: the scan counts the non-finite gradient
    /// elements before the q8 count (the trial), where the CPU's trial counts them in its own
    /// read of g. (Each block's second pass re-reads its θ, g and codes from cache: 1.3 KiB
    /// per block in f32 θ and g, not counted.)
    pub(super) fn bytes_per_element(&self) -> f64 {
        let bytes = bytes_per_element(
            &self.config,
            self.state_format,
            self.policy,
            &self.transform,
            self.step,
        );
        let identity = self.step == StepKind::Unfused || self.transform.is_identity();
        let gpu_scan = self.device == StepDevice::Gpu
            && self.state_format == StateFormat::Q8
            && self.policy.counts_first()
            && identity;
        bytes + if gpu_scan { 4.0 } else { 0.0 }
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
pub(super) fn plan(options: &BenchOptions, has_gpu: bool) -> Vec<Job> {
    let devices: Vec<StepDevice> = options
        .devices
        .iter()
        .copied()
        .filter(|&d| d != StepDevice::Gpu || has_gpu)
        .collect();
    let first_format = options
        .state_formats
        .first()
        .copied()
        .unwrap_or(StateFormat::F32);
    let job = |(name, config): &(String, OptimizerConfig), n, device, case, policy| Job {
        name: name.clone(),
        config: config.clone(),
        n,
        device,
        case,
        policy,
        step: StepKind::Update,
        transform: GradTransform::default(),
        state_format: first_format,
        group_options: options.group_options.clone(),
    };
    let mut jobs = Vec::new();
    for &n in &options.sizes {
        for optimizer in &options.optimizers {
            for &state_format in &options.state_formats {
                for &device in &devices {
                    jobs.push(Job {
                        state_format,
                        ..job(optimizer, n, device, Case::OneTensor, options.policy)
                    });
                }
            }
        }
        if let (true, Some(first)) = (options.extras, options.optimizers.first()) {
            // The scan pass's cost: the same step with and without it.
            let other = match options.policy {
                NonFinitePolicy::SkipElement => NonFinitePolicy::SkipStep,
                _ => NonFinitePolicy::SkipElement,
            };
            for &device in devices.iter().filter(|&&d| d != StepDevice::Reference) {
                jobs.push(job(first, n, device, Case::OneTensor, other));
            }
        }
    }
    if let (true, Some(first)) = (options.extras, options.optimizers.first()) {
        let n = MANY_TENSORS * MANY_TENSORS_LEN;
        for case in [Case::OneTensor, Case::ManyTensors, Case::CallerTensors] {
            for &device in devices.iter().filter(|&&d| d != StepDevice::Reference) {
                if case != Case::CallerTensors || device == StepDevice::Gpu {
                    jobs.push(job(first, n, device, case, options.policy));
                }
            }
        }
    }
    if options.training_step {
        let policies = if options.policy == NonFinitePolicy::SkipElement {
            vec![options.policy]
        } else {
            vec![options.policy, NonFinitePolicy::SkipElement]
        };
        for &n in &options.sizes {
            for name in TRAINING_STEP_OPTIMIZERS {
                let config = OptimizerConfig::default_for(name).expect("a known optimizer");
                let optimizer = (name.to_string(), config);
                for &device in devices.iter().filter(|&&d| d != StepDevice::Reference) {
                    for &policy in &policies {
                        for step in [StepKind::Fused, StepKind::Unfused] {
                            jobs.push(Job {
                                step,
                                transform: options.transform,
                                ..job(&optimizer, n, device, Case::OneTensor, policy)
                            });
                        }
                    }
                }
            }
        }
    }
    jobs
}

/// How many rows `run` will measure (for a progress bar).
pub fn job_count(options: &BenchOptions, has_gpu: bool) -> usize {
    plan(options, has_gpu).len()
}
