//! `bayesprop demo`: show it learning.
//!
//! Trains a softmax regression and a one-hidden-layer MLP on the UCI optical digits (embedded,
//! see `data/README.md`), and a logistic regression on a sparse power-law problem generated from
//! a seed ([`sparse`]), with every optimizer of the comparison, each stepping on the chosen
//! device, each with a small sweep of its learning rate (η for the `bayes` family) picked
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
pub mod render;
pub mod sparse;
pub mod train;

use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::StateStorage;
use crate::error::Result;
use crate::optim::{settings, OptimizerConfig, TABLE};
use crate::GpuOptions;

pub use model::Model;
pub use regimes::{RegimeSettings, Regimes};
pub use render::fmt_value;
pub use train::{Run, Schedule, SigmaPoint};

pub use crate::device::OpenStepDevice;

/// One optimizer of the comparison, with the hyperparameter that is swept.
#[derive(Clone, Copy, Debug)]
pub struct Contender {
    /// Its name in the optimizer table.
    pub name: &'static str,
    /// The swept setting: `lr`, or `eta` for the `bayes` family.
    pub knob: &'static str,
    /// Settings every run of it gets, besides the swept one (defaults otherwise), as
    /// `KEY=VALUE` separated by spaces.
    pub fixed: &'static str,
    /// The full sweep, ascending, in half-decade steps; a budget may take the middle values.
    pub grid: [f64; 5],
}

/// Runs beside the table's rows: `bayes` without the bound on σ (SPEC §2), to show what the
/// bound does.
pub const ABLATIONS: [Contender; 1] = [Contender {
    name: "bayes",
    knob: "eta",
    fixed: "sigma_max=none",
    grid: crate::optim::ADAPTIVE_GRID,
}];

/// Rows in low-precision state (SPEC §6): `bayes`, `bayes_fp` and `adam` held in `bf16` and in
/// `q8`, with their rows' sweeps, beside their f32 rows.
pub const FORMATS: [Contender; 6] = [
    Contender::held("bayes", "eta", "state_format=bf16"),
    Contender::held("bayes", "eta", "state_format=q8"),
    Contender::held("bayes_fp", "eta", "state_format=bf16"),
    Contender::held("bayes_fp", "eta", "state_format=q8"),
    Contender::held("adam", "lr", "state_format=bf16"),
    Contender::held("adam", "lr", "state_format=q8"),
];

/// Every contender after the table's rows: the ablations, then the low-precision rows.
const EXTRAS: [Contender; ABLATIONS.len() + FORMATS.len()] = {
    let mut extras = [ABLATIONS[0]; ABLATIONS.len() + FORMATS.len()];
    let mut i = 0;
    while i < FORMATS.len() {
        extras[ABLATIONS.len() + i] = FORMATS[i];
        i += 1;
    }
    extras
};

/// The comparison: one contender per row of the optimizer table, with the row's sweep (every
/// setting but the swept one at its default; SGD with momentum 0.9), then the ablations and the
/// low-precision rows.
pub const CONTENDERS: [Contender; TABLE.len() + EXTRAS.len()] = {
    let mut contenders = [ABLATIONS[0]; TABLE.len() + EXTRAS.len()];
    let mut i = 0;
    while i < TABLE.len() {
        let row = &TABLE[i];
        contenders[i] = Contender {
            name: row.name,
            knob: row.demo.knob,
            fixed: row.demo.fixed,
            grid: row.demo.grid,
        };
        i += 1;
    }
    while i < contenders.len() {
        contenders[i] = EXTRAS[i - TABLE.len()];
        i += 1;
    }
    contenders
};

impl Contender {
    /// A low-precision row: the adaptive grid of `bayes`, `bayes_fp` and `adam`, with `fixed`
    /// naming the format.
    const fn held(name: &'static str, knob: &'static str, fixed: &'static str) -> Self {
        Contender {
            name,
            knob,
            fixed,
            grid: crate::optim::ADAPTIVE_GRID,
        }
    }

    /// The row's name in tables and legends: the optimizer, then its fixed settings
    /// (`bayes sigma_max=none`, `sgd momentum=0.9`).
    pub fn label(&self) -> String {
        if self.fixed.is_empty() {
            self.name.to_string()
        } else {
            format!("{} {}", self.name, self.fixed)
        }
    }

    /// The `k` values in the middle of the grid (all five for k ≥ 5, the middle one for k ≤ 1):
    /// half-decade steps around the grid's centre.
    pub fn sweep(&self, k: usize) -> Vec<f64> {
        let k = k.clamp(1, self.grid.len());
        let first = (self.grid.len() - k) / 2;
        self.grid[first..first + k].to_vec()
    }

    /// The validated config for one value of the sweep (its fixed settings but the storage
    /// options, which [`Contender::storage`] reads).
    pub fn config(&self, value: f64) -> Result<OptimizerConfig> {
        let value = format!("{value:e}");
        let (_, fixed) = StateStorage::split(settings(self.fixed))?;
        let knob = std::iter::once((self.knob, value.as_str()));
        OptimizerConfig::from_settings(self.name, fixed.into_iter().chain(knob))
    }

    /// How its state is held: `state_format` and `state_seed` of its fixed settings (f32 and
    /// 0 when it names none).
    pub fn storage(&self) -> Result<StateStorage> {
        StateStorage::split(settings(self.fixed)).map(|(storage, _)| storage)
    }

    /// Whether it holds its state in a low-precision format (one of [`FORMATS`]).
    pub fn is_low_precision(&self) -> bool {
        self.storage()
            .is_ok_and(|s| s.format != crate::StateFormat::F32)
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
    /// Hold every contender's state this way (`demo --set state_format=…`), instead of each
    /// contender's own (f32 but for the [`FORMATS`] rows).
    pub storage: Option<StateStorage>,
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
    /// How every optimizer's state was held, when the run forced it (`demo --set`).
    pub storage: Option<StateStorage>,
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
pub fn run(device: &OpenStepDevice, options: &DemoOptions) -> Result<Report> {
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
            // An optimizer missing from the table, or a state format the device does not
            // hold, is skipped as a whole, with the reason.
            let storage = match options.storage {
                Some(forced) => Ok(forced),
                None => contender.storage(),
            };
            let supported = OptimizerConfig::default_for(contender.name).and_then(|config| {
                let storage = storage?;
                device.optimizer_stored(config, storage, &theta0[..1])?;
                Ok(storage)
            });
            let storage = match supported {
                Ok(storage) => storage,
                Err(e) => {
                    progress.inc((values.len() * budget.steps) as u64);
                    entries.push(Entry {
                        model,
                        contender,
                        outcome: Outcome::Skipped(e.to_string()),
                    });
                    continue;
                }
            };
            let mut runs = Vec::new();
            for value in values {
                progress.set_message(format!(
                    "{model} {} {}={value:e}",
                    contender.label(),
                    contender.knob
                ));
                let result = contender
                    .config(value)
                    .and_then(|config| train::train(&task, &config, storage, value, &progress));
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
        device_short: device.device().name(),
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
        storage: options.storage,
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

/// `bayesprop demo`: runs on the chosen device, prints the results table and writes the
/// figures and `results.md` into `out`. The GPU is opened with `gpu`; `storage`, when given,
/// holds every contender's state that way.
pub fn main(
    device: crate::StepDevice,
    gpu: &GpuOptions,
    out: &Path,
    quick: bool,
    storage: Option<StateStorage>,
) -> Result<()> {
    let device = device.open(gpu)?;
    let options = DemoOptions {
        budget: if quick {
            Budget::quick()
        } else {
            Budget::full()
        },
        seed: 0,
        progress: true,
        storage,
    };
    let held = storage.map_or(String::new(), |s| format!(", every state held as {s}"));
    eprintln!(
        "bayesprop demo ({} budget) on {}{held}",
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
