//! `bayesprop demo`: show it learning.
//!
//! Trains a softmax regression and a one-hidden-layer MLP on the UCI optical digits (embedded,
//! see `data/README.md`), and a logistic regression on a sparse power-law problem generated from
//! a seed ([`sparse`]), with every optimizer of the comparison, each stepping on the chosen
//! device, each with a small sweep of its learning rate (η for `bayes` and `bayes_adam`) picked
//! on the validation split. Gradients are computed on the CPU by hand-derived backprop
//! ([`model`]). Then it measures the theory's regimes on a noisy quadratic ([`regimes`]) and
//! writes `loss.svg`, `sigma.svg`, `regimes.svg` and `results.md` ([`plots`], [`Report`]).
//!
//! Nothing is tuned to make one optimizer win: every optimizer gets the same data, θ₀,
//! minibatch order and number of steps, and a grid of the same size.

pub mod data;
pub mod model;
pub mod plots;
pub mod regimes;
pub mod sparse;
pub mod train;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{Error, Result};
use crate::optim::OptimizerConfig;
use crate::{CpuOptimizer, GpuContext, GpuOptimizer, Stepper};

pub use model::Model;
pub use regimes::{RegimeSettings, Regimes};
pub use train::{Run, Schedule, SigmaPoint};

/// Where the optimizers step.
#[derive(Clone, Debug)]
pub enum Device {
    /// [`CpuOptimizer`] (the parallel CPU path).
    Cpu,
    /// [`GpuOptimizer`] on this context's adapter.
    Gpu(GpuContext),
}

impl Device {
    /// A new optimizer over `theta0` on this device.
    pub fn optimizer(&self, config: OptimizerConfig, theta0: &[f32]) -> Result<Box<dyn Stepper>> {
        Ok(match self {
            Device::Cpu => Box::new(CpuOptimizer::new(config, theta0)?),
            Device::Gpu(ctx) => Box::new(GpuOptimizer::new(ctx, config, theta0)?),
        })
    }

    /// "cpu" or "gpu", for the table.
    pub fn short(&self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Gpu(_) => "gpu",
        }
    }

    /// A line that says what stepped.
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => format!(
                "cpu (CpuOptimizer, parallel path, {} threads)",
                rayon::current_num_threads()
            ),
            Device::Gpu(ctx) => {
                let a = ctx.adapter_info();
                format!(
                    "gpu ({}, {:?}, {:?}{})",
                    a.name,
                    a.backend,
                    a.device_type,
                    if ctx.is_software() {
                        ", software adapter"
                    } else {
                        ""
                    }
                )
            }
        }
    }
}

/// The device choice of `bayesprop demo --device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    Cpu,
    Gpu,
}

/// One optimizer of the comparison, with the hyperparameter that is swept.
#[derive(Clone, Copy, Debug)]
pub struct Contender {
    /// Its name in the optimizer table.
    pub name: &'static str,
    /// The swept setting: `lr`, or `eta` for `bayes` and `bayes_adam`.
    pub knob: &'static str,
    /// Settings every run of it gets, besides the swept one (defaults otherwise).
    pub fixed: &'static [(&'static str, &'static str)],
    /// The full sweep, ascending, in half-decade steps; a budget may take the middle values.
    pub grid: [f64; 5],
}

/// Half-decade grids centred where each family's learning rate works on these models (a
/// 500-step trial put each one's best value inside its grid on the digits models). `bayes` at
/// small η steps like RMSProp with lr η, so it gets the same grid as the Adam family.
const ADAPTIVE_GRID: [f64; 5] = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1];
const SGD_GRID: [f64; 5] = [3e-2, 1e-1, 3e-1, 1.0, 3.0];

/// The comparison: SPEC §2's `bayes`, its ablation without the bound and its `bayes_adam` preset
/// against SPEC §3's classics (every setting but the swept one at its default; SGD with
/// momentum 0.9).
pub const CONTENDERS: [Contender; 7] = [
    Contender {
        name: "bayes",
        knob: "eta",
        fixed: &[],
        grid: ADAPTIVE_GRID,
    },
    Contender {
        name: "bayes",
        knob: "eta",
        fixed: &[("sigma_max", "none")],
        grid: ADAPTIVE_GRID,
    },
    Contender {
        name: "bayes_adam",
        knob: "eta",
        fixed: &[],
        grid: ADAPTIVE_GRID,
    },
    Contender {
        name: "rmsprop",
        knob: "lr",
        fixed: &[],
        grid: ADAPTIVE_GRID,
    },
    Contender {
        name: "adam",
        knob: "lr",
        fixed: &[],
        grid: ADAPTIVE_GRID,
    },
    Contender {
        name: "adamw",
        knob: "lr",
        fixed: &[],
        grid: ADAPTIVE_GRID,
    },
    Contender {
        name: "sgd",
        knob: "lr",
        fixed: &[("momentum", "0.9")],
        grid: SGD_GRID,
    },
];

impl Contender {
    /// The row's name in tables and legends: the optimizer, then its fixed settings
    /// (`bayes sigma_max=none`, `sgd momentum=0.9`).
    pub fn label(&self) -> String {
        let mut label = self.name.to_string();
        for (key, value) in self.fixed {
            label.push_str(&format!(" {key}={value}"));
        }
        label
    }

    /// The `k` values in the middle of the grid (all five for k ≥ 5, the middle one for k ≤ 1):
    /// half-decade steps around the grid's centre.
    pub fn sweep(&self, k: usize) -> Vec<f64> {
        let k = k.clamp(1, self.grid.len());
        let first = (self.grid.len() - k) / 2;
        self.grid[first..first + k].to_vec()
    }

    /// The validated config for one value of the sweep.
    pub fn config(&self, value: f64) -> Result<OptimizerConfig> {
        let value = format!("{value:e}");
        let settings = self
            .fixed
            .iter()
            .copied()
            .chain(std::iter::once((self.knob, value.as_str())));
        OptimizerConfig::from_settings(self.name, settings)
    }
}

/// How much work the demo does.
#[derive(Clone, Debug)]
pub struct Budget {
    /// `quick`, `full`, or a caller's name for its own budget.
    pub name: String,
    /// Steps per run (both models).
    pub steps: usize,
    pub batch: usize,
    /// Units of the MLP's hidden layer.
    pub hidden: usize,
    /// Steps between points of the loss curves.
    pub eval_every: usize,
    /// Values of each optimizer's sweep (the middle ones of its 5-value grid).
    pub sweep: usize,
    /// The models to train (softmax regression and the MLP unless a caller narrows it).
    pub models: Vec<Model>,
    /// The optimizers to compare ([`CONTENDERS`] unless a caller narrows it).
    pub contenders: Vec<Contender>,
    pub regimes: RegimeSettings,
}

impl Budget {
    /// `--quick`: 3-value sweeps, short runs; under a minute in a release build on two cores.
    pub fn quick() -> Self {
        Budget {
            name: "quick".into(),
            steps: 500,
            batch: 64,
            hidden: 64,
            eval_every: 10,
            sweep: 3,
            models: vec![Model::Softmax, Model::Mlp { hidden: 64 }, Model::Sparse],
            contenders: CONTENDERS.to_vec(),
            regimes: RegimeSettings {
                h: 1.0,
                hessian: 1e-6,
                replicas: 512,
                steps: 400,
                etas: 11,
                eta_min: 1e-3,
                eta_max: 1e2,
            },
        }
    }

    /// The default: 5-value sweeps and longer runs.
    pub fn full() -> Self {
        Budget {
            name: "full".into(),
            steps: 2000,
            eval_every: 25,
            sweep: 5,
            hidden: 128,
            models: vec![Model::Softmax, Model::Mlp { hidden: 128 }, Model::Sparse],
            regimes: RegimeSettings {
                replicas: 2048,
                steps: 1500,
                etas: 21,
                ..Budget::quick().regimes
            },
            ..Budget::quick()
        }
    }

    fn total_steps(&self) -> u64 {
        let runs: usize = self
            .contenders
            .iter()
            .map(|c| c.sweep(self.sweep).len())
            .sum();
        (self.models.len() * runs * self.steps) as u64 + self.regimes.total_steps()
    }
}

/// Everything `run` needs besides the device.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub budget: Budget,
    /// Seed of the split, θ₀, the minibatch order and the quadratic's noise.
    pub seed: u64,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

/// The sweep of one optimizer on one model.
#[derive(Clone, Debug)]
pub struct Sweep {
    /// One entry per value: the run, or why it could not run.
    pub runs: Vec<(f64, Result<Run, String>)>,
    /// Index in `runs` of the value with the lowest validation loss; `None` when every value
    /// diverged or failed.
    pub chosen: Option<usize>,
    /// Test-split loss and accuracy of the chosen run (read once, after choosing).
    pub test_loss: f64,
    pub test_acc: f64,
}

impl Sweep {
    pub fn chosen_run(&self) -> Option<&Run> {
        self.chosen.and_then(|i| self.runs[i].1.as_ref().ok())
    }

    /// Whether the chosen value is the smallest or largest one tried (the grid may be too
    /// narrow for this optimizer).
    pub fn chosen_at_edge(&self) -> bool {
        self.chosen
            .is_some_and(|i| self.runs.len() > 1 && (i == 0 || i + 1 == self.runs.len()))
    }
}

/// What happened to one optimizer on one model.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The optimizer could not be configured (e.g. it is not in the optimizer table yet).
    Skipped(String),
    Trained(Sweep),
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub model: Model,
    pub contender: Contender,
    pub outcome: Outcome,
}

impl Entry {
    /// The chosen run, if any.
    pub fn chosen(&self) -> Option<&Run> {
        match &self.outcome {
            Outcome::Trained(sweep) => sweep.chosen_run(),
            Outcome::Skipped(_) => None,
        }
    }
}

/// Everything the demo measured.
#[derive(Clone, Debug)]
pub struct Report {
    pub device: String,
    pub device_short: &'static str,
    pub budget: Budget,
    pub seed: u64,
    pub split_sizes: (usize, usize, usize),
    pub entries: Vec<Entry>,
    pub regimes: Result<Regimes, String>,
    pub wall_s: f64,
}

fn progress_bar(enabled: bool, total: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {percent:>3}% {pos}/{len} steps  {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Trains every model with every optimizer on `device` and measures the regimes. An optimizer
/// that cannot be configured is reported as skipped; a run that fails is reported with its
/// error; neither stops the demo.
pub fn run(device: &Device, options: &DemoOptions) -> Result<Report> {
    let start = Instant::now();
    let budget = &options.budget;
    let digits = data::split(&data::load_digits()?, options.seed);
    let sparse = sparse::generate(options.seed);
    let schedule = Schedule {
        steps: budget.steps,
        batch: budget.batch,
        eval_every: budget.eval_every,
        seed: options.seed.wrapping_add(1),
    };
    let progress = progress_bar(options.progress, budget.total_steps());
    let mut entries = Vec::new();
    for &model in &budget.models {
        let theta0 = model.init(options.seed.wrapping_add(2));
        let data = match model {
            Model::Sparse => &sparse,
            Model::Softmax | Model::Mlp { .. } => &digits,
        };
        let task = train::Task {
            device,
            model,
            theta0: &theta0,
            data,
            schedule: &schedule,
        };
        for &contender in &budget.contenders {
            let values = contender.sweep(budget.sweep);
            // An optimizer missing from the table is skipped as a whole, with the reason.
            if let Err(e) = OptimizerConfig::default_for(contender.name) {
                progress.inc((values.len() * budget.steps) as u64);
                entries.push(Entry {
                    model,
                    contender,
                    outcome: Outcome::Skipped(e.to_string()),
                });
                continue;
            }
            let mut runs = Vec::new();
            for value in values {
                progress.set_message(format!(
                    "{model} {} {}={value:e}",
                    contender.label(),
                    contender.knob
                ));
                let result = contender
                    .config(value)
                    .and_then(|config| train::train(&task, &config, value, &progress));
                if result.is_err() {
                    progress.inc(budget.steps as u64);
                }
                runs.push((value, result.map_err(|e| e.to_string())));
            }
            entries.push(Entry {
                model,
                contender,
                outcome: Outcome::Trained(choose(model, runs, data)),
            });
        }
    }
    progress.set_message("regimes: bayes on a noisy quadratic");
    let regimes = regimes::measure(device, &budget.regimes, options.seed, &progress)
        .map_err(|e| e.to_string());
    progress.finish_and_clear();
    Ok(Report {
        device: device.describe(),
        device_short: device.short(),
        budget: budget.clone(),
        seed: options.seed,
        split_sizes: (
            digits.train.len(),
            digits.validation.len(),
            digits.test.len(),
        ),
        entries,
        regimes,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// Picks the value with the lowest validation loss (never the test set), then reads the test
/// split for that run only.
fn choose(model: Model, runs: Vec<(f64, Result<Run, String>)>, data: &data::Split) -> Sweep {
    let chosen = runs
        .iter()
        .enumerate()
        .filter_map(|(i, (_, r))| r.as_ref().ok().map(|r| (i, r.val_loss)))
        .filter(|(_, loss)| loss.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i);
    let (test_loss, test_acc) = match chosen.and_then(|i| runs[i].1.as_ref().ok()) {
        Some(run) => model.evaluate(&run.theta, data.test.x.view(), &data.test.y),
        None => (f64::NAN, f64::NAN),
    };
    Sweep {
        runs,
        chosen,
        test_loss,
        test_acc,
    }
}

/// A hyperparameter value as the tables and legends print it.
pub fn fmt_value(v: f64) -> String {
    match format!("{v:e}") {
        one if one == "1e0" => "1".into(),
        s => s,
    }
}

impl Report {
    /// The results table (markdown), one row per model and optimizer.
    pub fn results_table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "| model | optimizer | device | chosen | val loss | final train loss | test acc | steps | wall (s) | sweep wall (s) |"
        );
        let _ = writeln!(t, "|---|---|---|---|---:|---:|---:|---:|---:|---:|");
        for e in &self.entries {
            let (model, name) = (e.model, e.contender.label());
            let dev = self.device_short;
            match &e.outcome {
                Outcome::Skipped(why) => {
                    let _ = writeln!(
                        t,
                        "| {model} | {name} | {dev} | skipped: {} | | | | | | |",
                        why.replace('|', "\\|")
                    );
                }
                Outcome::Trained(sweep) => {
                    let sweep_wall: f64 = sweep
                        .runs
                        .iter()
                        .filter_map(|(_, r)| r.as_ref().ok())
                        .map(|r| r.wall_s)
                        .sum();
                    match sweep.chosen_run() {
                        Some(run) => {
                            let edge = if sweep.chosen_at_edge() { " *" } else { "" };
                            let _ = writeln!(
                                t,
                                "| {model} | {name} | {dev} | {}={}{edge} | {:.4} | {:.4} | {:.1}% | {} | {:.2} | {:.2} |",
                                e.contender.knob,
                                fmt_value(run.value),
                                run.val_loss,
                                run.final_loss(),
                                100.0 * sweep.test_acc,
                                run.steps,
                                run.wall_s,
                                sweep_wall
                            );
                        }
                        None => {
                            let why = sweep
                                .runs
                                .iter()
                                .find_map(|(_, r)| r.as_ref().err().cloned())
                                .unwrap_or_else(|| "diverged at every value".into());
                            let _ = writeln!(
                                t,
                                "| {model} | {name} | {dev} | failed: {} | | | | | | {sweep_wall:.2} |",
                                why.replace('|', "\\|")
                            );
                        }
                    }
                }
            }
        }
        t
    }

    /// Validation loss at every value of every sweep.
    pub fn sweep_table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "| model | optimizer | value: validation loss (chosen in bold) |"
        );
        let _ = writeln!(t, "|---|---|---|");
        for e in &self.entries {
            let Outcome::Trained(sweep) = &e.outcome else {
                continue;
            };
            let cells: Vec<String> = sweep
                .runs
                .iter()
                .enumerate()
                .map(|(i, (v, r))| {
                    let v = format!("{}={}", e.contender.knob, fmt_value(*v));
                    let cell = match r {
                        Ok(run) if run.diverged => format!("{v}: diverged at step {}", run.steps),
                        Ok(run) => format!("{v}: {:.4}", run.val_loss),
                        Err(err) => format!("{v}: error ({})", err.replace('|', "\\|")),
                    };
                    if Some(i) == sweep.chosen {
                        format!("**{cell}**")
                    } else {
                        cell
                    }
                })
                .collect();
            let _ = writeln!(
                t,
                "| {} | {} | {} |",
                e.model,
                e.contender.label(),
                cells.join("; ")
            );
        }
        t
    }

    /// The whole `results.md`.
    pub fn markdown(&self) -> String {
        let b = &self.budget;
        let (tr, va, te) = self.split_sizes;
        let mut md = String::new();
        let _ = writeln!(md, "# bayesprop demo: results ({} budget)\n", b.name);
        let _ = writeln!(md, "- Device: {}", self.device);
        let _ = writeln!(
            md,
            "- Data: UCI optical handwritten digits (8×8, 10 classes, {} samples; `data/README.md`), pixels scaled to [0, 1], split {tr} train / {va} validation / {te} test (seed {}).",
            tr + va + te,
            self.seed
        );
        let models: Vec<String> = b
            .models
            .iter()
            .map(|m| format!("{m} ({} parameters)", m.num_params()))
            .collect();
        let _ = writeln!(
            md,
            "- Sparse problem: a seeded synthetic logistic regression (`src/demo/sparse.rs`): {} binary features whose frequencies follow a power law, 0.5·(j + 1)^−0.8 (98% of features are on in fewer than 5% of samples, half in fewer than 0.35%), labels drawn from sigmoid(x·w + b) with w ~ N(0, 1.5²); split {} train / {} validation / {} test.",
            sparse::FEATURES,
            sparse::TRAIN,
            sparse::VALIDATION,
            sparse::TEST
        );
        let _ = writeln!(
            md,
            "- Models: {}; mean cross-entropy, gradients by hand-derived backprop on the CPU.",
            models.join(", ")
        );
        let _ = writeln!(
            md,
            "- Training: {} steps per run, minibatches of {} in the same seeded order and from the same θ₀ for every optimizer; every optimizer steps on the device above.",
            b.steps, b.batch
        );
        let _ = writeln!(
            md,
            "- Sweep: {} values of each optimizer's learning rate (`eta` for bayes and bayes_adam; the same grid for bayes and the Adam family); the value with the lowest validation loss is chosen; the test split is read only for the chosen run. `*` marks a chosen value at either end of the values tried (the best may lie outside them). Other settings are the torch.optim defaults (adamw: weight_decay 1e-2), sgd has momentum 0.9.",
            b.sweep
        );
        let _ = writeln!(
            md,
            "- Final train loss: on the whole training split after the last step. Wall: seconds in the training loop of the chosen run (gradients, steps, read-backs, loss curve); sweep wall: all its values.\n"
        );
        md.push_str(&self.results_table());
        md.push_str("\n## Sweeps\n\n");
        md.push_str(&self.sweep_table());
        md.push_str("\n## Regimes (regimes.svg)\n\n");
        match &self.regimes {
            Ok(r) => {
                let s = &r.settings;
                let _ = writeln!(
                    md,
                    "bayes (defaults, β = 0.999, fixed-point start) on {} replicas of a noisy 1-D quadratic: gradients g = H·θ + ξ, ξ ~ N(0, h), h = {}, H = {:e} (the loss's own curvature, kept tiny so that SGD with lr η² stays stable: with H = h the η²h ≫ 4 regime would diverge, since σ ≥ η²); at least {} steps per η, more for small η so that σ has relaxed (column \"steps\"); |Δθ|/|g| = Σ|Δθ| / Σ|g| over the second half of the steps. σ*(h) is the fixed point of the variance update.\n",
                    s.replicas, s.h, s.hessian, s.steps
                );
                let _ = writeln!(md, "| η | steps | measured \\|Δθ\\|/\\|g\\| | σ*(h) | measured / σ*(h) | η² (SGD-like) | η/√h (RMSProp-like) |");
                let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|");
                for p in &r.points {
                    let _ = writeln!(
                        md,
                        "| {:.3e} | {} | {:.4e} | {:.4e} | {:.4} | {:.3e} | {:.3e} |",
                        p.eta,
                        p.steps,
                        p.measured,
                        p.sigma_star,
                        p.measured / p.sigma_star,
                        p.eta * p.eta,
                        p.eta / s.h.sqrt()
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(md, "failed: {e}");
            }
        }
        let _ = writeln!(md, "\nTotal wall time: {:.1} s.", self.wall_s);
        md
    }

    /// Writes `loss.svg`, `sigma.svg`, `regimes.svg` and `results.md` into `dir` (created if
    /// needed) and returns their paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
        let paths = [
            dir.join("loss.svg"),
            dir.join("sigma.svg"),
            dir.join("regimes.svg"),
            dir.join("results.md"),
        ];
        plots::loss(&paths[0], self)?;
        plots::sigma(&paths[1], self)?;
        plots::regimes(&paths[2], self)?;
        std::fs::write(&paths[3], self.markdown()).map_err(|e| Error::file(&paths[3], e))?;
        Ok(paths.to_vec())
    }
}

/// `bayesprop demo`: runs on the chosen device, prints the results table and writes the
/// figures and `results.md` into `out`.
pub fn main(device: DeviceKind, out: &Path, quick: bool) -> Result<()> {
    let device = match device {
        DeviceKind::Cpu => Device::Cpu,
        DeviceKind::Gpu => Device::Gpu(GpuContext::new()?),
    };
    let options = DemoOptions {
        budget: if quick {
            Budget::quick()
        } else {
            Budget::full()
        },
        seed: 0,
        progress: true,
    };
    eprintln!(
        "bayesprop demo ({} budget) on {}",
        options.budget.name,
        device.describe()
    );
    let report = run(&device, &options)?;
    println!("{}", report.results_table());
    for path in report.write(out)? {
        println!("wrote {}", path.display());
    }
    println!("total {:.1} s", report.wall_s);
    Ok(())
}
