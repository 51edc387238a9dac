//! One training run: a model's gradient on the CPU, the optimizer's step on the chosen device.

use std::time::Instant;

use indicatif::ProgressBar;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::config::StateStorage;
use crate::demo::data::{Samples, Split};
use crate::demo::model::Model;
use crate::demo::OpenStepDevice;
use crate::error::Result;
use crate::optim::OptimizerConfig;

/// Quantiles of σ recorded for `bayes` runs.
pub const SIGMA_QUANTILES: [f64; 5] = [0.05, 0.25, 0.5, 0.75, 0.95];

/// σ over the elements of θ at one step of a `bayes` run.
#[derive(Clone, Debug)]
pub struct SigmaPoint {
    pub step: usize,
    /// [`SIGMA_QUANTILES`] of σ over the elements with σ > 0.
    pub quantiles: [f64; 5],
    /// Elements still at σ = 0: those that have seen only zero gradients (e.g. the weights of
    /// pixels that are blank in every training image), which do not move.
    pub zero_fraction: f64,
    /// The median over those same elements of the curvature h = ŝ + λ the step used.
    pub median_h: f64,
    /// σ*(median h), the fixed point of the variance update at that curvature.
    pub sigma_star: f64,
}

/// What one run of one optimizer with one hyperparameter value produced.
#[derive(Clone, Debug)]
pub struct Run {
    /// The swept value (lr, or eta for bayes).
    pub value: f64,
    /// (step, mean cross-entropy on the whole training split), from step 0.
    pub curve: Vec<(usize, f64)>,
    /// Empty unless the optimizer is `bayes` (or a preset of it).
    pub sigma: Vec<SigmaPoint>,
    /// Steps taken (fewer than asked when the loss stopped being finite).
    pub steps: usize,
    /// Seconds spent in the training loop: gradients, steps, read-backs and the loss curve.
    pub wall_s: f64,
    /// The training loss became NaN or infinite; the run stopped there.
    pub diverged: bool,
    /// θ after the last step.
    pub theta: Vec<f32>,
    pub val_loss: f64,
    pub val_acc: f64,
}

impl Run {
    pub fn initial_loss(&self) -> f64 {
        self.curve.first().map_or(f64::NAN, |p| p.1)
    }

    pub fn final_loss(&self) -> f64 {
        self.curve.last().map_or(f64::NAN, |p| p.1)
    }
}

/// How to train: the same for every optimizer, so their runs differ only in the optimizer.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub steps: usize,
    pub batch: usize,
    /// Steps between points of the loss curve (and of σ's quantiles); steps 1, 2, 4, 8, … are
    /// recorded too, for the first moves on a log axis.
    pub eval_every: usize,
    /// Seed of the minibatch order (the same for every optimizer).
    pub seed: u64,
}

/// Minibatches of a fixed seeded order: a new permutation of the training rows each epoch.
struct Batches {
    order: Vec<usize>,
    next: usize,
    batch: usize,
    rng: SmallRng,
}

impl Batches {
    fn new(n: usize, batch: usize, seed: u64) -> Self {
        Batches {
            order: (0..n).collect(),
            next: n,
            batch: batch.clamp(1, n.max(1)),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    fn next_batch(&mut self) -> &[usize] {
        if self.next + self.batch > self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.next = 0;
        }
        let start = self.next;
        self.next += self.batch;
        &self.order[start..self.next]
    }
}

/// What every run of one model shares: the device, the model and its θ₀, the data and the
/// schedule. Only the optimizer differs between runs.
pub struct Task<'a> {
    pub device: &'a OpenStepDevice,
    pub model: Model,
    pub theta0: &'a [f32],
    pub data: &'a Split,
    pub schedule: &'a Schedule,
}

// `if let` on the table: irrefutable while `bayes` is its only row.
#[allow(irrefutable_let_patterns)]
/// Trains the task's model from its θ₀ with `config` stepping on the task's device, its state
/// held as `storage` says; `value` is the swept hyperparameter, recorded in the run.
pub fn train(
    task: &Task<'_>,
    config: &OptimizerConfig,
    storage: StateStorage,
    value: f64,
    progress: &ProgressBar,
) -> Result<Run> {
    let Task {
        device,
        model,
        theta0,
        data,
        schedule,
    } = *task;
    let train = &data.train;
    let mut optimizer = device.optimizer_stored(config.clone(), storage, theta0)?;
    let mut batches = Batches::new(train.len(), schedule.batch, schedule.seed);
    let mut theta = theta0.to_vec();
    let mut grad = vec![0.0f32; theta.len()];
    let eval = |theta: &[f32], set: &Samples| model.evaluate(theta, set.x.view(), &set.y);

    let start = Instant::now();
    let mut curve = vec![(0, eval(&theta, train).0)];
    let mut sigma = Vec::new();
    let mut steps = 0;
    let mut diverged = !curve[0].1.is_finite();
    while steps < schedule.steps && !diverged {
        let rows = batches.next_batch();
        let xb = train.x.select(ndarray::Axis(0), rows);
        let yb: Vec<usize> = rows.iter().map(|&i| train.y[i]).collect();
        model.loss_grad(&theta, xb.view(), &yb, Some(&mut grad));
        optimizer.step(&grad)?;
        theta = optimizer.theta()?;
        steps += 1;
        progress.inc(1);
        if steps % schedule.eval_every.max(1) == 0
            || steps.is_power_of_two()
            || steps == schedule.steps
        {
            let loss = eval(&theta, train).0;
            curve.push((steps, loss));
            diverged = !loss.is_finite();
            if let OptimizerConfig::Bayes(bayes) = optimizer.config() {
                let s = optimizer.state("s")?;
                let sigma_now = optimizer.state("sigma")?;
                sigma.push(sigma_point(bayes, steps, &s, &sigma_now));
            }
        }
    }
    let wall_s = start.elapsed().as_secs_f64();
    // Steps the loop did not take (a diverged run) still count as done for the progress bar.
    progress.inc((schedule.steps - steps) as u64);
    let (val_loss, val_acc) = eval(&theta, &data.validation);
    Ok(Run {
        value,
        curve,
        sigma,
        steps,
        wall_s,
        diverged,
        theta,
        val_loss: if diverged { f64::NAN } else { val_loss },
        val_acc,
    })
}

/// σ's quantiles and σ*(median h) at step `t` from the state vectors `s` and `sigma`.
fn sigma_point(
    config: &crate::optim::BayesConfig,
    t: usize,
    s: &[f32],
    sigma: &[f32],
) -> SigmaPoint {
    let c2 = if config.bias_correction {
        1.0 / (1.0 - config.beta.powf(t as f64))
    } else {
        1.0
    };
    let (mut sigmas, mut hs) = (Vec::new(), Vec::new());
    for (&sg, &sv) in sigma.iter().zip(s) {
        if sg > 0.0 {
            sigmas.push(f64::from(sg));
            hs.push(f64::from(sv) * c2 + config.weight_decay);
        }
    }
    let zero_fraction = 1.0 - sigmas.len() as f64 / sigma.len().max(1) as f64;
    let median_h = quantile(&mut hs, 0.5);
    sigmas.sort_by(f64::total_cmp);
    SigmaPoint {
        step: t,
        quantiles: SIGMA_QUANTILES.map(|q| quantile(&mut sigmas, q)),
        zero_fraction,
        median_h,
        sigma_star: config.sigma_star(median_h),
    }
}

/// The `q` quantile (nearest rank) of `v`, which it sorts; NaN for an empty slice.
pub(crate) fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}
