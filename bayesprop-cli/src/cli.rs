//! The command line: argument parsing and the subcommands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use bayesprop::gpu::{enumerate_adapters, GpuOptions};
use bayesprop::optim::TABLE;
use bayesprop::validate::{self, Rule};
use bayesprop::StepDevice;
use bayesprop::{
    Checkpoint, Error, GpuContext, GpuOptimizer, GradTransform, GroupId, HyperSchedule,
    NonFinitePolicy, OptimizerConfig, ParamGroups, Result, StateFormat, StateStorage,
};
use clap::{Args, Parser, Subcommand};
use ndarray::{Array1, Array2};

#[derive(Parser, Debug)]
#[command(
    name = "bayesprop",
    version,
    about = "Fused GPU optimizer steps, checked against an exact CPU reference"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How the GPU is chosen and the kernels shaped: the same flags on every subcommand that
/// opens it. Each defaults to its environment variable (see `GpuOptions::from_env`).
#[derive(Args, Debug, Clone)]
struct GpuArgs {
    /// A case-insensitive part of the adapter's name (default: BAYESPROP_ADAPTER, else the
    /// best adapter).
    #[arg(long, value_name = "NAME")]
    adapter: Option<String>,
    /// Invocations per workgroup of every kernel (default: BAYESPROP_WORKGROUP_SIZE, else 256
    /// within the adapter's limits).
    #[arg(long, value_name = "W")]
    workgroup_size: Option<u32>,
    /// One element per GPU invocation (no vec4), to measure what vec4 gains (default:
    /// BAYESPROP_SCALAR_ONLY=1).
    #[arg(long)]
    scalar_only: bool,
}

impl GpuArgs {
    /// The environment's options, overridden by the flags given.
    fn options(&self) -> Result<GpuOptions> {
        let mut options = GpuOptions::try_from_env()?;
        if let Some(name) = &self.adapter {
            options.adapter_name = Some(name.clone());
        }
        if let Some(size) = self.workgroup_size {
            if size == 0 {
                return Err(Error::Unknown {
                    what: "workgroup size",
                    name: "0".into(),
                    known: "at least 1".into(),
                });
            }
            options.workgroup_size = Some(size);
        }
        options.scalar_only |= self.scalar_only;
        Ok(options)
    }

    fn context(&self) -> Result<GpuContext> {
        GpuContext::with_options(&self.options()?)
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the adapters, the one chosen (--adapter, WGPU_BACKEND, BAYESPROP_ADAPTER), and its
    /// key limits; with --params, the memory a model needs in each state format.
    Info(InfoArgs),
    /// Run every kernel against the CPU reference over the standard battery; exit 1 if a case
    /// exceeds its ULP bound, 2 if there is no adapter.
    Validate(ValidateArgs),
    /// Replay a gradient sequence: θ after every step, as a (T, N) f32 .npy.
    Replay(Box<ReplayArgs>),
    /// Train small models on the UCI digits with every optimizer; write loss.svg, sigma.svg,
    /// regimes.svg and results.md.
    Demo(DemoArgs),
    /// Step time of each optimizer on the reference, the fast CPU path and the GPU, against a
    /// roofline (touch of the same arrays, and a copy) measured in the same run.
    Bench(BenchArgs),
}

/// The names of the optimizer table, optimizers then presets, for the help of `--optimizer`.
fn optimizer_names() -> String {
    let optimizers = TABLE.iter().filter(|row| !row.preset);
    let presets = TABLE.iter().filter(|row| row.preset);
    let names: Vec<_> = optimizers.chain(presets).map(|row| row.name).collect();
    names.join(", ")
}

#[derive(Parser, Debug)]
struct InfoArgs {
    /// Instead of the adapters: the memory that N parameters need (θ, g and each optimizer's
    /// state in f32, bf16 and q8); K, M, G are binary (7G = 7·2^30). Needs no adapter.
    #[arg(long, value_name = "N")]
    params: Option<String>,
    /// With --params: also build each optimizer over N parameters on the adapter, step it
    /// once, and print what its allocations beyond θ and g really take, read from the
    /// device's memory allocator.
    #[arg(long, requires = "params")]
    measure: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Parser, Debug)]
struct ValidateArgs {
    /// Only the battery's cases of this name of the optimizer table (default: every name).
    #[arg(long, value_name = "NAME", help = format!(
        "Only the battery's cases of this optimizer (default: all): {}", optimizer_names()
    ))]
    optimizer: Option<String>,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Parser, Debug)]
struct BenchArgs {
    /// An optimizer name (presets included), or `all`: every optimizer in the table.
    #[arg(long, default_value = "all", help = format!(
        "An optimizer name, or `all`: every optimizer of the table [default: all]: {}",
        optimizer_names()
    ))]
    optimizer: String,
    /// Parameter counts, comma-separated; K, M, G are binary (16M = 16·2^20).
    #[arg(long, default_value = "1M,16M,64M")]
    sizes: String,
    /// reference, cpu, gpu or all.
    #[arg(long, default_value = "all", value_parser = devices)]
    device: Devices,
    /// Timed steps per row (after warm-up); medians are reported.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Passes through every row, pooled per row (the spread of the roofline fraction over
    /// passes is shown), so that load changing during a long run weighs on all rows alike.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Print one JSON array of the rows instead of the table.
    #[arg(long)]
    json: bool,
    /// Also draw throughput against N for each device (SVG).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Non-finite policy of the matrix: skip-step runs the scan pass, skip-element tests each
    /// element in the update, propagate tests nothing.
    #[arg(long, default_value = "skip-step")]
    nonfinite: NonFinitePolicy,
    /// Only the matrix: no many-tensor case, no scan-pass cost.
    #[arg(long)]
    matrix_only: bool,
    /// Also the training step (unscale by 1024, clip to norm 1e-3, or as the two flags below
    /// say) of bayes and adam at each size: fused into the optimizer's passes against
    /// PyTorch's unfused sequence, under the matrix's policy and skip-element.
    #[arg(long)]
    training_step: bool,
    /// The loss scale S > 0 of `--training-step` rows [1024].
    #[arg(long, value_name = "S", allow_hyphen_values = true)]
    grad_scale: Option<String>,
    /// The clipping norm M > 0 of `--training-step` rows, `inf` to compute the norm without
    /// clipping, or `off` for no norm at all [1e-3]. With the loss scale, it separates what
    /// unscaling and the norm each cost in the fused step.
    #[arg(long, value_name = "M", allow_hyphen_values = true)]
    clip_norm: Option<String>,
    /// A group option of every row, e.g. `--set state_format=f32,bf16,q8 --set state_seed=7`:
    /// `state_format` takes a comma-separated list, the matrix's rows once per format (SPEC
    /// §6; the extras and training-step rows take the first).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// The devices of `bench --device`: one, or `all`.
#[derive(Clone, Debug)]
struct Devices(Vec<StepDevice>);
fn devices(text: &str) -> Result<Devices> {
    match text {
        "all" => Ok(Devices(StepDevice::ALL.to_vec())),
        one => Ok(Devices(vec![one.parse()?])),
    }
}
#[derive(Parser, Debug)]
struct DemoArgs {
    /// Where the optimizers step.
    #[arg(long, default_value_t = StepDevice::Cpu)]
    device: StepDevice,
    /// Folder for the figures and results.md (created if needed).
    #[arg(long, default_value = "bayesprop-demo")]
    out: PathBuf,
    /// Short runs and 3-value sweeps (well under a minute in a release build).
    #[arg(long)]
    quick: bool,
    /// Hold every optimizer's state this way: `--set state_format=q8 --set state_seed=7`
    /// (f32, bf16, q8). Without it, the f32 rows and the bf16/q8 rows of bayes, bayes_fp and
    /// adam.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Parser, Debug)]
struct ReplayArgs {
    /// Optimizer name (SPEC §2–§3).
    #[arg(long, help = format!("Optimizer name (SPEC §2–§3): {}", optimizer_names()))]
    optimizer: String,
    /// A hyperparameter by its SPEC name, e.g. `--set eta=1e-2 --set sigma_init=fixed_point`,
    /// or how the state is held: `--set state_format=q8 --set state_seed=7` (f32, bf16, q8).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// θ₀: f32, shape (N,).
    #[arg(long)]
    params: PathBuf,
    /// Gradients: f32, shape (T, N).
    #[arg(long)]
    grads: PathBuf,
    /// Where to write θ after each step: f32, shape (T, N).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = StepDevice::Gpu)]
    device: StepDevice,
    /// What a step does with NaN or ±Inf gradients (SPEC §4): skip-step, skip-element or
    /// error (stop with exit 2, naming the step).
    #[arg(long, default_value = "skip-step")]
    nonfinite: NonFinitePolicy,
    /// Resume from this checkpoint (θ, state and step count; saved by any device).
    #[arg(long)]
    state_in: Option<PathBuf>,
    /// Save a checkpoint here after the last step (safetensors, written atomically).
    #[arg(long)]
    state_out: Option<PathBuf>,
    /// Divide every gradient by S > 0 first (a loss scale) [1, or the checkpoint's].
    #[arg(long, value_name = "S", allow_hyphen_values = true)]
    grad_scale: Option<String>,
    /// Clip the global norm of the unscaled gradient (finite elements) to M > 0, as
    /// torch.nn.utils.clip_grad_norm_ [off, or the checkpoint's]; `inf` only measures it.
    #[arg(long, value_name = "M", allow_hyphen_values = true)]
    clip_norm: Option<String>,
    /// Multiply a float hyperparameter by a factor of the applied step t, e.g.
    /// `eta:cosine:warmup=10,total=100,final=0.1`; KIND is constant, linear:warmup=W,
    /// cosine:warmup=W,total=T,final=F or step:every=K,gamma=G. Repeatable, one per
    /// hyperparameter; replaces the checkpoint's schedule of that hyperparameter.
    #[arg(long = "schedule", value_name = "HYPER:KIND[:k=v,...]")]
    schedules: Vec<String>,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// A flag's number, with an error that names the flag.
fn number_flag(command: &'static str, flag: &'static str, value: &str) -> Result<f32> {
    value
        .trim()
        .parse::<f32>()
        .map_err(|_| Error::config(command, flag, value, "a number"))
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Info(args) => match &args.params {
            Some(n) => memory(
                bayesprop::bench::parse_size(n)?,
                args.measure.then_some(&args.gpu),
            ),
            None => info(&args.gpu),
        },
        Command::Validate(args) => validate(&args),
        Command::Replay(args) => replay(&args),
        Command::Demo(a) => demo(&a),
        Command::Bench(args) => bench(&args),
    }
}

fn demo(args: &DemoArgs) -> Result<ExitCode> {
    let (storage, rest) = StateStorage::split(key_values(&args.settings, "state_format=q8")?)?;
    if let Some((key, _)) = rest.first() {
        return Err(Error::Unknown {
            what: "demo --set option",
            name: key.to_string(),
            known: StateStorage::KEYS.join(", "),
        });
    }
    let storage = (!args.settings.is_empty()).then_some(storage);
    bayesprop::demo::main(
        args.device,
        &args.gpu.options()?,
        &args.out,
        args.quick,
        storage,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `info --params N`: per optimizer (defaults) the state bytes per parameter and the memory
/// of N parameters in each format, θ and g (f32 in every format) included.
fn memory(n: usize, measure: Option<&GpuArgs>) -> Result<ExitCode> {
    const GIB: f64 = (1u64 << 30) as f64;
    println!(
        "memory of {n} parameters: θ and g in f32 ({:.2} GiB), the state as held (SPEC §6)",
        8.0 * n as f64 / GIB
    );
    println!(
        "{:<10} {:>26} {:>38}",
        "optimizer", "state bytes per parameter", "total GiB (θ, g, state)"
    );
    println!(
        "{:<10} {:>8} {:>8} {:>8} {:>12} {:>12} {:>12}",
        "", "f32", "bf16", "q8", "f32", "bf16", "q8"
    );
    for config in OptimizerConfig::all_defaults() {
        let state = StateFormat::ALL.map(|f| config.state_bytes(f, n));
        let per = state.map(|b| format!("{:.3}", b as f64 / n as f64));
        let total = state.map(|b| format!("{:.2}", (8 * n + b) as f64 / GIB));
        println!(
            "{:<10} {:>8} {:>8} {:>8} {:>12} {:>12} {:>12}",
            config.name(),
            per[0],
            per[1],
            per[2],
            total[0],
            total[1],
            total[2]
        );
    }
    if let Some(gpu) = measure {
        measured_memory(n, gpu)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `info --params N --measure`: each optimizer (defaults) over N parameters on the adapter,
/// its device allocations beyond θ and g per parameter, by the allocator's report.
fn measured_memory(n: usize, gpu: &GpuArgs) -> Result<ExitCode> {
    let ctx = GpuContext::with_options(&gpu.options()?)?;
    println!(
        "\nmeasured on {}: the optimizer's device allocations beyond θ and g (state, scales, \
         tables, window, status), bytes per parameter",
        ctx.adapter_info().name
    );
    println!("{:<10} {:>8} {:>8} {:>8}", "optimizer", "f32", "bf16", "q8");
    for config in OptimizerConfig::all_defaults() {
        let mut cells = Vec::new();
        for format in StateFormat::ALL {
            let mut groups = ParamGroups::single(config.clone(), &vec![0.0; n])?;
            groups.set_group_option(GroupId(0), "state_format", format.name())?;
            cells.push(match bayesprop::gpu::measure_allocations(&ctx, &groups) {
                Ok(Some(allocated)) => format!("{:.3}", allocated.optimizer as f64 / n as f64),
                Ok(None) => "no report".to_string(),
                Err(Error::Unsupported(_)) => "refused".to_string(),
                Err(e) => return Err(e),
            });
        }
        println!(
            "{:<10} {:>8} {:>8} {:>8}",
            config.name(),
            cells[0],
            cells[1],
            cells[2]
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn info(gpu: &GpuArgs) -> Result<ExitCode> {
    let options = gpu.options()?;
    println!("adapters found (best first):");
    for a in enumerate_adapters(&options) {
        println!(
            "  {} | {:?} | {:?} | {} {}",
            a.name, a.backend, a.device_type, a.driver, a.driver_info
        );
    }
    let ctx = GpuContext::with_options(&options)?;
    let (a, l) = (ctx.adapter_info(), ctx.limits());
    println!("chosen: {} ({:?}, {:?})", a.name, a.backend, a.device_type);
    println!(
        "  max_storage_buffer_binding_size     {}",
        l.max_storage_buffer_binding_size
    );
    println!(
        "  max_buffer_size                     {}",
        l.max_buffer_size
    );
    println!(
        "  max_compute_workgroups_per_dimension {}",
        l.max_compute_workgroups_per_dimension
    );
    println!(
        "  max_compute_invocations_per_workgroup {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  min_storage_buffer_offset_alignment {}",
        l.min_storage_buffer_offset_alignment
    );
    println!(
        "  max_storage_buffers_per_shader_stage {}",
        l.max_storage_buffers_per_shader_stage
    );
    let names: Vec<_> = bayesprop::optim::ALL_KERNELS
        .iter()
        .map(|k| k.name)
        .collect();
    println!("kernels: {}", names.join(", "));
    Ok(ExitCode::SUCCESS)
}

fn validate(args: &ValidateArgs) -> Result<ExitCode> {
    let gpu = &args.gpu;
    // An unknown name is an error that lists the table's, before the adapter is opened.
    if let Some(name) = &args.optimizer {
        OptimizerConfig::default_for(name)?;
    }
    for kernel in bayesprop::optim::ALL_KERNELS {
        let checked = kernel.validate()?;
        println!(
            "naga: {} ok (uniform block {} bytes, {} storage bindings)",
            kernel.name, checked.uniform_size, checked.storage_bindings
        );
    }
    let ctx = gpu.context()?;
    let rule = Rule::for_adapter(ctx.is_software());
    println!(
        "adapter: {} ({:?}, {:?})",
        ctx.adapter_info().name,
        ctx.adapter_info().backend,
        ctx.adapter_info().device_type,
    );
    println!("rule: {}", rule.describe());
    let measure = match rule {
        Rule::Identical => "max ULP <= bound",
        Rule::Oracle => "mean ULP <= limit",
    };
    println!(
        "{:<64} {:>9} {:>5} {:>8} {:>22}  {:<28} result",
        "case", "n", "steps", "max ULP", measure, "worst at"
    );
    let start = Instant::now();
    let mut failed = 0;
    let cases = validate::standard_battery().into_iter().filter(|case| {
        let name = case.name.split(' ').next();
        args.optimizer
            .as_deref()
            .is_none_or(|only| name == Some(only))
    });
    for case in cases {
        if !case.judged_under(rule) {
            println!(
                "{:<64} {:>9} {:>5} {:>8} {:>22}  {:<28} not judged ({} state: bit for bit on a \
                 software adapter only)",
                case.name, case.n, case.steps, "-", "-", "-", case.format
            );
            continue;
        }
        let outcome = validate::run_case(&case, rule, &mut |groups| {
            Ok(Box::new(GpuOptimizer::from_groups(&ctx, groups)?))
        })?;
        let verdict = if outcome.passed() { "ok" } else { "FAIL" };
        failed += usize::from(!outcome.passed());
        let (check, at) = outcome.check();
        println!(
            "{:<64} {:>9} {:>5} {:>8} {check:>22}  {at:<28} {verdict}",
            case.name, case.n, case.steps, outcome.max_ulp
        );
    }
    println!(
        "validate: {failed} case(s) over their bound, {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Reads an f32 array of `D`'s rank; `expected` names the shape in errors, e.g. "(T, N)".
fn read_npy<D: ndarray::Dimension>(path: &Path, expected: &str) -> Result<ndarray::Array<f32, D>> {
    ndarray_npy::read_npy(path).map_err(|e| {
        Error::file(
            path,
            format!("{e} (expected an f32 array of shape {expected})"),
        )
    })
}

/// `--set KEY=VALUE` arguments as pairs.
fn key_values<'a>(settings: &'a [String], example: &str) -> Result<Vec<(&'a str, &'a str)>> {
    settings
        .iter()
        .map(|s| {
            s.split_once('=').ok_or_else(|| Error::Unknown {
                what: "--set argument",
                name: s.clone(),
                known: format!("only KEY=VALUE forms, e.g. {example}"),
            })
        })
        .collect()
}

fn replay(args: &ReplayArgs) -> Result<ExitCode> {
    let settings = key_values(&args.settings, "eta=1e-3")?;
    // state_format and state_seed say how the state is held (SPEC §6); the rest are the
    // optimizer's hyperparameters.
    let (storage, settings) = StateStorage::split(settings)?;
    let config = OptimizerConfig::from_settings(&args.optimizer, settings)?;
    // Every flag is checked before anything is read or written.
    let schedules = args
        .schedules
        .iter()
        .map(|s| s.parse::<HyperSchedule>())
        .collect::<Result<Vec<_>>>()?;
    let grad_scale = args
        .grad_scale
        .as_deref()
        .map(|v| number_flag("replay", "--grad-scale", v))
        .transpose()?;
    let clip_norm = args
        .clip_norm
        .as_deref()
        .map(|v| number_flag("replay", "--clip-norm", v))
        .transpose()?;
    let with_flags = |mut transform: GradTransform| {
        transform.grad_scale = grad_scale.unwrap_or(transform.grad_scale);
        transform.clip_norm = clip_norm.or(transform.clip_norm);
        transform.validate().map(|()| transform)
    };
    with_flags(GradTransform::default())?;
    let theta0: Array1<f32> = read_npy(&args.params, "(N,)")?;
    let grads: Array2<f32> = read_npy(&args.grads, "(T, N)")?;
    let n = theta0.len();
    if grads.ncols() != n {
        return Err(Error::file(
            &args.grads,
            format!(
                "shape {:?} does not match θ₀ of {n} elements: expected (T, {n})",
                grads.shape()
            ),
        ));
    }
    let theta0 = theta0.to_vec();
    let mut optimizer = args
        .device
        .open(&args.gpu.options()?)?
        .optimizer_stored(config, storage, &theta0)?;
    optimizer.set_nonfinite_policy(args.nonfinite);
    let mut transform = GradTransform::default();
    if let Some(path) = &args.state_in {
        // θ, state and step counts; the saved transform and schedules unless flags say
        // otherwise. The config and policy stay those of the flags, as before.
        let checkpoint = Checkpoint::load(path)?;
        optimizer.restore(&checkpoint)?;
        transform = checkpoint.transform;
        for (g, saved) in checkpoint.groups.iter().enumerate() {
            for schedule in &saved.schedules {
                optimizer.set_group_schedule(GroupId(g), schedule.clone())?;
            }
        }
    }
    optimizer.set_grad_transform(with_flags(transform)?)?;
    for schedule in schedules {
        optimizer.set_schedule(schedule)?;
    }
    let mut out = Array2::<f32>::zeros(grads.dim());
    for (grad, mut row) in grads.rows().into_iter().zip(out.rows_mut()) {
        optimizer.step(&grad.to_vec())?;
        // Reading θ waits for the step anyway; learning its non-finite count here makes the
        // Error policy stop at the same step on every device.
        optimizer.step_reports()?;
        row.assign(&Array1::from(optimizer.theta()?));
    }
    ndarray_npy::write_npy(&args.out, &out).map_err(|e| Error::file(&args.out, e))?;
    if let Some(path) = &args.state_out {
        optimizer.checkpoint()?.save(path)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The training step of `bench --training-step` rows: the flags over [`bench::TRAINING_STEP`].
fn bench_transform(args: &BenchArgs) -> Result<GradTransform> {
    let mut transform = bayesprop::bench::TRAINING_STEP;
    if let Some(v) = &args.grad_scale {
        transform.grad_scale = number_flag("bench", "--grad-scale", v)?;
    }
    transform.clip_norm = match args.clip_norm.as_deref().map(str::trim) {
        None => transform.clip_norm,
        Some("off") => None,
        Some(v) => Some(number_flag("bench", "--clip-norm", v)?),
    };
    transform.validate().map(|()| transform)
}
/// The adapter the GPU rows run on, in one line; on an OpenGL adapter (what wgpu falls back
/// to without a Vulkan driver, e.g. Mesa's llvmpipe for GL), how to get the Vulkan one.
fn adapter_line(ctx: &GpuContext) -> String {
    let a = ctx.adapter_info();
    let mut line = format!(
        "bench: GPU rows on {} ({:?}, {:?})",
        a.name, a.backend, a.device_type
    );
    if a.backend == bayesprop::wgpu::Backend::Gl {
        line.push_str(
            "; this is an OpenGL adapter, whose compute is far slower than Vulkan's: install a \
             Vulkan driver (without a GPU: `apt-get install -y mesa-vulkan-drivers`, lavapipe)",
        );
    }
    line
}

fn bench(args: &BenchArgs) -> Result<ExitCode> {
    use bayesprop::bench::{self, BenchOptions};
    let optimizers = match args.optimizer.as_str() {
        "all" => OptimizerConfig::all_defaults()
            .into_iter()
            .map(|c| (c.name().to_string(), c))
            .collect(),
        name => vec![(name.to_string(), OptimizerConfig::default_for(name)?)],
    };
    let sizes = args
        .sizes
        .split(',')
        .map(bench::parse_size)
        .collect::<Result<Vec<_>>>()?;
    let mut state_formats = vec![StateFormat::F32];
    let mut group_options = Vec::new();
    for (key, value) in key_values(&args.settings, "state_format=f32,q8")? {
        match key.trim() {
            "state_format" => {
                state_formats = value
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<Vec<StateFormat>>>()?
            }
            key => group_options.push((key.to_string(), value.to_string())),
        }
    }
    // Every option is checked before anything is measured.
    let mut check = StateStorage::default();
    for (key, value) in &group_options {
        check.set_option(key, value)?;
    }
    let options = BenchOptions {
        optimizers,
        sizes,
        state_formats,
        group_options,
        devices: args.device.0.clone(),
        steps: args.steps,
        repeat: args.repeat,
        policy: args.nonfinite,
        extras: !args.matrix_only,
        training_step: args.training_step,
        transform: bench_transform(args)?,
    };
    let gpu = if options.devices.contains(&StepDevice::Gpu) {
        args.gpu.context().map_err(|e| e.to_string())
    } else {
        Err("not asked for".to_string())
    };
    if let Ok(ctx) = &gpu {
        eprintln!("{}", adapter_line(ctx));
    }
    let total = bench::job_count(&options, gpu.is_ok());
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
            .expect("a valid template"),
    );
    let report = bench::run(
        &options,
        gpu.as_ref().map_err(Clone::clone),
        &mut |k, _, label| {
            bar.set_position(k as u64);
            bar.set_message(label.to_string());
        },
    )?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", report.json());
        if let Some(why) = &report.gpu_missing {
            eprintln!("{why}");
        }
        for line in &report.skipped {
            eprintln!("{line}");
        }
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = &args.plot {
        bench::plot::throughput(path, &report)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
