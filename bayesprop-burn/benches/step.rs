//! One optimizer step, burn's own Adam/AdamW against bayesprop's adam/adamw, on the same wgpu
//! device, model and gradients: a model of 128 small tensors and one with a 16.8M-element
//! tensor, under bayesprop's default non-finite policy (skip-step: a scan of g first) and
//! under propagate (no test, as burn's own optimizers), through both of the adapter's paths:
//! `module` (the fused step of the whole module, `BayespropConfig::init`) and `learner`
//! (burn's per-tensor trait in burn's `ModuleOptimizer`, `BayespropConfig::build`).
//! `cargo bench -p bayesprop-burn`; it ends with the rows as one JSON array.
//!
//! Each optimizer runs in blocks of steps, burn's and bayesprop's alternating, each block timed
//! with the device synchronised before and after (burn's fusion runs lazily); a row gives the
//! median time per step of each and the median (and range) of the blocks' ratios, which a
//! shared machine's load affects far less than the times. On a software adapter (lavapipe)
//! the figures show launch and fusion overheads, not GPU speed.

use std::time::Instant;

use bayesprop::optim::AdamConfig as OurAdam;
use bayesprop::NonFinitePolicy;
use bayesprop_burn::BayespropConfig;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Distribution, Tensor};

const LR: f64 = 1e-3;
const EPS: f64 = 1e-5;
const WEIGHT_DECAY: f64 = 1e-4;

#[derive(Module, Debug)]
struct Many {
    layers: Vec<Linear>,
}

#[derive(Module, Debug)]
struct Large {
    layer: Linear,
}

/// Fixed gradients, one per parameter, handed to every step: flat, with the parameter's dims.
struct Grads(Vec<(ParamId, Tensor<1>, Vec<usize>)>);

impl Grads {
    fn of<M: Module>(model: &M, device: &Device) -> Self {
        struct Make<'a>(&'a Device, Vec<(ParamId, Tensor<1>, Vec<usize>)>);
        impl ModuleVisitor for Make<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let dims = param.dims().to_vec();
                let n = dims.iter().product::<usize>();
                let g = Tensor::random([n], Distribution::Normal(0.0, 1e-2), self.0);
                self.1.push((param.id, g, dims));
            }
        }
        let mut make = Make(device, Vec::new());
        model.visit(&mut make);
        Grads(make.1)
    }

    fn params(&self) -> GradientsParams {
        let mut grads = GradientsParams::new();
        for (id, g, dims) in &self.0 {
            match dims[..] {
                [_] => grads.register(*id, g.clone()),
                [rows, cols] => grads.register(*id, g.clone().reshape([rows, cols])),
                _ => unreachable!("Linear layers have rank 1 and 2 parameters"),
            }
        }
        grads
    }

    fn tensors(&self) -> usize {
        self.0.len()
    }
}

/// Blocks of timed steps per optimizer, alternating burn's and bayesprop's: the ratio of each
/// pair of neighbouring blocks sees the same load, and the median of the ratios is reported.
const BLOCKS: usize = 5;

/// A model and the step that advances it.
struct Stepping<M, S> {
    model: Option<M>,
    step: S,
}

impl<M: Module, S: FnMut(M, GradientsParams) -> M> Stepping<M, S> {
    fn new(model: M, step: S) -> Self {
        Stepping {
            model: Some(model),
            step,
        }
    }

    /// Seconds per step over `steps` steps, the device synchronised after each. burn's
    /// fusion is lazy: steps queued back to back on the same gradients were fused into one
    /// kernel (a block's 5 Adam steps reading and writing m, v and θ once), which no training
    /// loop allows, since each step's θ feeds the next forward pass. Synchronising each step
    /// stands in for that pass.
    fn time(&mut self, grads: &Grads, device: &Device, steps: usize) -> f64 {
        device.sync().expect("device");
        let start = Instant::now();
        for _ in 0..steps {
            let model = self.model.take().expect("a model");
            self.model = Some((self.step)(model, grads.params()));
            device.sync().expect("device");
        }
        start.elapsed().as_secs_f64() / steps as f64
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// burn's and bayesprop's step, `warm` untimed steps each, then [`BLOCKS`] alternating blocks
/// of `steps`: the median seconds per step of each, and the median and range of the ratios.
fn race<M: Module + Clone>(
    model: &M,
    grads: &Grads,
    device: &Device,
    (warm, steps): (usize, usize),
    burn: impl FnMut(M, GradientsParams) -> M,
    ours: impl FnMut(M, GradientsParams) -> M,
) -> [f64; 5] {
    let (mut burn, mut ours) = (
        Stepping::new(model.clone(), burn),
        Stepping::new(model.clone(), ours),
    );
    burn.time(grads, device, warm);
    ours.time(grads, device, warm);
    let (mut t_burn, mut t_ours, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..BLOCKS {
        let b = burn.time(grads, device, steps);
        let o = ours.time(grads, device, steps);
        t_burn.push(b);
        t_ours.push(o);
        ratios.push(o / b);
    }
    let (low, high) = (
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max),
    );
    [median(t_burn), median(t_ours), median(ratios), low, high]
}

/// One row of the comparison, as the JSON array at the end prints it.
#[derive(serde::Serialize)]
struct Row {
    model: String,
    tensors: usize,
    elements: usize,
    optimizer: &'static str,
    policy: &'static str,
    /// `module` (the fused step of the whole module) or `learner` (burn's per-tensor trait).
    path: &'static str,
    burn_ms: f64,
    bayesprop_ms: f64,
    ratio_median: f64,
    ratio_min: f64,
    ratio_max: f64,
}

/// bayesprop's `adam` or `adamw` with burn's ε (and weight decay), and `policy`.
fn ours(adamw: bool, policy: NonFinitePolicy) -> BayespropConfig {
    let config = match adamw {
        false => OurAdam {
            eps: EPS,
            ..OurAdam::adam()
        },
        true => OurAdam {
            eps: EPS,
            weight_decay: WEIGHT_DECAY,
            ..OurAdam::adamw()
        },
    };
    BayespropConfig::new(config).with_nonfinite_policy(policy)
}

fn compare<M: Module + Clone>(
    name: &str,
    model: M,
    (device, inner): (&Device, &Device),
    runs: (usize, usize),
    policy: NonFinitePolicy,
    rows: &mut Vec<Row>,
) {
    let grads = Grads::of(&model, inner);
    let elements: usize = model.num_params();
    for (optimizer, adamw) in [("adam", false), ("adamw", true)] {
        if !wanted("BAYESPROP_BENCH_OPTIMIZER", optimizer) {
            continue;
        }
        let burn_optim = || match adamw {
            false => AdamConfig::new().with_epsilon(EPS as f32).init(),
            true => AdamWConfig::new()
                .with_epsilon(EPS as f32)
                .with_weight_decay(WEIGHT_DECAY as f32)
                .init(),
        };
        for path in ["module", "learner"] {
            if !wanted("BAYESPROP_BENCH_PATH", path) {
                continue;
            }
            let mut burn = burn_optim();
            let burn_step = |m, g| burn.step(LR, m, g);
            let [burn_s, ours_s, ratio, low, high] = match path {
                "module" => {
                    let mut optim = ours(adamw, policy).init();
                    race(&model, &grads, device, runs, burn_step, |m, g| {
                        optim.step(LR, m, g)
                    })
                }
                _ => {
                    let mut optim =
                        ModuleOptimizer::from(ours(adamw, policy).build().expect("a valid config"));
                    race(&model, &grads, device, runs, burn_step, |m, g| {
                        optim.step(LR, m, g)
                    })
                }
            };
            let row = Row {
                model: name.to_string(),
                tensors: grads.tensors(),
                elements,
                optimizer,
                policy: policy.name(),
                path,
                burn_ms: burn_s * 1e3,
                bayesprop_ms: ours_s * 1e3,
                ratio_median: ratio,
                ratio_min: low,
                ratio_max: high,
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} ({:.2}–{:.2}) |",
                row.model,
                row.tensors,
                row.elements,
                row.optimizer,
                row.policy,
                row.path,
                row.burn_ms,
                row.bayesprop_ms,
                row.ratio_median,
                row.ratio_min,
                row.ratio_max
            );
            rows.push(row);
        }
    }
}

/// Whether the row's `value` is wanted: the environment variable `var` (a comma-separated
/// list) names it, or is unset. `cargo bench` passes its own arguments, so filters are
/// variables, e.g. `BAYESPROP_BENCH_MODEL=large BAYESPROP_BENCH_POLICY=skip-step`.
fn wanted(var: &str, value: &str) -> bool {
    match std::env::var(var) {
        Ok(list) => list.split(',').any(|v| v.trim() == value),
        Err(_) => true,
    }
}

fn main() {
    let device = bayesprop_burn::init_device().expect("burn's wgpu device");
    let ctx = bayesprop_burn::shared_context(&device).expect("shared");
    let info = ctx.adapter_info();
    println!(
        "adapter: {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );
    if ctx.is_software() {
        println!("software adapter: these figures show launch and fusion overheads, not GPU speed");
    }
    device.seed(1);
    let inner = device.clone();
    let device = device.autodiff();
    println!("\n| model | tensors | elements | optimizer | policy | path | burn (ms/step) | bayesprop (ms/step) | bayesprop/burn: median (range) |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut rows = Vec::new();
    let many = Many {
        layers: (0..64)
            .map(|_| LinearConfig::new(32, 32).init(&device))
            .collect(),
    };
    let large = Large {
        layer: LinearConfig::new(4096, 4096).init(&device),
    };
    let devices = (&device, &inner);
    for policy in [NonFinitePolicy::SkipStep, NonFinitePolicy::Propagate] {
        if !wanted("BAYESPROP_BENCH_POLICY", policy.name()) {
            continue;
        }
        if wanted("BAYESPROP_BENCH_MODEL", "many") {
            let name = "64 × Linear(32, 32)";
            compare(name, many.clone(), devices, (3, 20), policy, &mut rows);
        }
        if wanted("BAYESPROP_BENCH_MODEL", "large") {
            let name = "Linear(4096, 4096)";
            compare(name, large.clone(), devices, (2, 5), policy, &mut rows);
        }
    }
    println!(
        "\n{}",
        serde_json::to_string_pretty(&rows).expect("rows serialize")
    );
}
