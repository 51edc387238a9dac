//! The theory's regimes, measured: `bayes` on a noisy 1-D quadratic of known curvature.
//!
//! Every element of θ is its own copy (a replica) of one 1-D problem: the loss ½·H·θ² seen
//! through gradients g = H·θ + ξ with noise ξ ~ N(0, h). The curvature that `bayes` estimates,
//! the EMA of g², then converges to h + H²·E\[θ²\] ≈ h (H is tiny, see [`RegimeSettings`]), so at
//! its fixed point σ*(h) the step is Δθ = −σ*(h)·g, and the mean step size |Δθ|/|g| should trace
//! σ*(h) = η²/2 + η·sqrt(η²/4 + 1/h): η/sqrt(h) (RMSProp with lr η) for small η, η² (SGD with
//! lr η²) for η²h/4 ≫ 1.

use indicatif::ProgressBar;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::demo::OpenStepDevice;
use crate::error::Result;
use crate::optim::{BayesConfig, OptimizerConfig};

/// The experiment's knobs.
#[derive(Clone, Debug)]
pub struct RegimeSettings {
    /// Variance of the gradient noise: the curvature `bayes` sees (its EMA of g²).
    pub h: f64,
    /// The loss's own second derivative H. It is kept ≪ 1/η²: `bayes` never steps with less
    /// than η² (σ ≥ η²), so with H = h its large-η regime (η²h ≫ 4) would be unstable SGD on
    /// this very quadratic. The SGD-like regime is the one where gradient noise dominates the
    /// curvature of the loss.
    pub hessian: f64,
    /// Independent copies of the problem, stepped together as the elements of one θ.
    pub replicas: usize,
    /// Steps per η at least; |Δθ|/|g| is averaged over the second half of them. Small η gets
    /// more (see [`RegimeSettings::steps_for`]).
    pub steps: usize,
    /// The η values, log-spaced from `eta_min` to `eta_max` inclusive.
    pub etas: usize,
    pub eta_min: f64,
    pub eta_max: f64,
}

impl RegimeSettings {
    pub fn eta_values(&self) -> Vec<f64> {
        let n = self.etas.max(1);
        let (lo, hi) = (self.eta_min.log10(), self.eta_max.log10());
        (0..n)
            .map(|i| {
                let f = if n == 1 {
                    0.5
                } else {
                    i as f64 / (n - 1) as f64
                };
                10f64.powf(lo + f * (hi - lo))
            })
            .collect()
    }

    /// Steps for one η. Near its fixed point σ relaxes by a factor ≈ 1 − 2η·sqrt(h) per step,
    /// so small η needs ≈ 3/(η·sqrt(h)) steps (six time constants, three before the averaging
    /// window opens), capped at ten times `steps`.
    pub fn steps_for(&self, eta: f64) -> usize {
        let relax = (3.0 / (eta * self.h.sqrt())).ceil();
        let cap = 10 * self.steps;
        if relax.is_finite() {
            (relax as usize).clamp(self.steps, cap.max(self.steps))
        } else {
            cap
        }
    }

    pub fn total_steps(&self) -> u64 {
        self.eta_values()
            .into_iter()
            .map(|eta| self.steps_for(eta) as u64)
            .sum()
    }
}

/// One η: the measured mean step size and the theory's fixed point.
#[derive(Clone, Debug)]
pub struct RegimePoint {
    pub eta: f64,
    /// Σ|Δθ| / Σ|g| over the replicas and the second half of the steps.
    pub measured: f64,
    /// σ*(h) for this η.
    pub sigma_star: f64,
    /// Steps taken at this η.
    pub steps: usize,
}

#[derive(Clone, Debug)]
pub struct Regimes {
    pub settings: RegimeSettings,
    pub points: Vec<RegimePoint>,
}

/// A standard normal deviate (Box–Muller).
fn normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln(u1) is finite
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Runs `bayes` (default β, bias correction and fixed-point start) at every η on `device`.
pub fn measure(
    device: &OpenStepDevice,
    settings: &RegimeSettings,
    seed: u64,
    progress: &ProgressBar,
) -> Result<Regimes> {
    let n = settings.replicas.max(1);
    let mut points = Vec::new();
    for (k, eta) in settings.eta_values().into_iter().enumerate() {
        let config = BayesConfig::builder().eta(eta).build()?;
        let mut optimizer = device.optimizer(OptimizerConfig::from(config), &vec![0.0; n])?;
        let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(k as u64));
        let mut theta = vec![0.0f32; n];
        let mut grad = vec![0.0f32; n];
        let (mut moved, mut pushed) = (0.0f64, 0.0f64);
        let noise = settings.h.sqrt();
        let steps = settings.steps_for(eta);
        for t in 1..=steps {
            for (g, &th) in grad.iter_mut().zip(&theta) {
                *g = (settings.hessian * f64::from(th) + noise * normal(&mut rng)) as f32;
            }
            optimizer.step(&grad)?;
            let next = optimizer.theta()?;
            if 2 * t > steps {
                for ((&a, &b), &g) in theta.iter().zip(&next).zip(&grad) {
                    moved += f64::from(b - a).abs();
                    pushed += f64::from(g).abs();
                }
            }
            theta = next;
            progress.inc(1);
        }
        points.push(RegimePoint {
            eta,
            measured: moved / pushed,
            sigma_star: config.sigma_star(settings.h),
            steps,
        });
    }
    Ok(Regimes {
        settings: settings.clone(),
        points,
    })
}
