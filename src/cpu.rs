//! `CpuOptimizer`: the same API as `GpuOptimizer`, with θ and state in host memory.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::optim::{NonFinitePolicy, OptimizerConfig, StepReport};
use crate::Stepper;

/// Which CPU implementation steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuPath {
    /// The reference, one thread, element by element: the yardstick.
    Reference,
    /// The reference's element update over cache-sized chunks on every core (rayon). The
    /// update is element-wise, so this is bit-identical to `Reference`.
    Parallel,
}

/// Elements per parallel job: 64 Ki f32 per array, so the ≤ 6 arrays of a job stay in L2.
const CHUNK: usize = 1 << 16;

/// One optimizer over one vector of parameters, in host memory.
#[derive(Clone, Debug)]
pub struct CpuOptimizer {
    config: OptimizerConfig,
    path: CpuPath,
    policy: NonFinitePolicy,
    /// Steps applied.
    t: u64,
    /// Step calls made, applied or not.
    calls: u64,
    reports: Vec<StepReport>,
    theta: Vec<f32>,
    /// One vector per state slot; empty where the options do not need that state.
    state: Vec<Vec<f32>>,
}

impl CpuOptimizer {
    /// The parallel path.
    pub fn new(config: impl Into<OptimizerConfig>, theta0: &[f32]) -> Result<Self> {
        Self::with_path(config, theta0, CpuPath::Parallel)
    }

    /// The single-threaded reference.
    pub fn reference(config: impl Into<OptimizerConfig>, theta0: &[f32]) -> Result<Self> {
        Self::with_path(config, theta0, CpuPath::Reference)
    }

    pub fn with_path(
        config: impl Into<OptimizerConfig>,
        theta0: &[f32],
        path: CpuPath,
    ) -> Result<Self> {
        let config = config.into();
        config.validate()?;
        let n = theta0.len();
        let state = config
            .as_dyn()
            .state_slots()
            .iter()
            .map(|slot| {
                if slot.used {
                    vec![slot.init; n]
                } else {
                    Vec::new()
                }
            })
            .collect();
        Ok(CpuOptimizer {
            config,
            path,
            policy: NonFinitePolicy::default(),
            t: 0,
            calls: 0,
            reports: Vec::new(),
            theta: theta0.to_vec(),
            state,
        })
    }

    pub fn path(&self) -> CpuPath {
        self.path
    }

    /// Sets the non-finite policy (builder style).
    pub fn with_nonfinite_policy(mut self, policy: NonFinitePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The update itself, on every element.
    fn update(&mut self, t: u64, grad: &[f32]) {
        let optimizer = self.config.as_dyn();
        match self.path {
            CpuPath::Reference => {
                let mut state: Vec<&mut [f32]> =
                    self.state.iter_mut().map(|v| &mut v[..]).collect();
                optimizer.reference_step(t, &mut self.theta, grad, &mut state);
            }
            CpuPath::Parallel => {
                // Cut θ, g and every used state vector at the same CHUNK boundaries.
                let mut state_chunks: Vec<_> =
                    self.state.iter_mut().map(|v| v.chunks_mut(CHUNK)).collect();
                let jobs: Vec<_> = self
                    .theta
                    .chunks_mut(CHUNK)
                    .zip(grad.chunks(CHUNK))
                    .map(|(theta, grad)| {
                        let state: Vec<&mut [f32]> = state_chunks
                            .iter_mut()
                            .map(|c| c.next().unwrap_or_default())
                            .collect();
                        (theta, grad, state)
                    })
                    .collect();
                jobs.into_par_iter().for_each(|(theta, grad, mut state)| {
                    optimizer.reference_step(t, theta, grad, &mut state)
                });
            }
        }
    }

    /// θ and every state value of element `i`.
    fn element(&self, i: usize) -> (f32, Vec<f32>) {
        let state = self
            .state
            .iter()
            .filter(|v| !v.is_empty())
            .map(|v| v[i])
            .collect();
        (self.theta[i], state)
    }

    fn restore_element(&mut self, i: usize, (theta, state): (f32, Vec<f32>)) {
        self.theta[i] = theta;
        for (v, value) in self.state.iter_mut().filter(|v| !v.is_empty()).zip(state) {
            v[i] = value;
        }
    }

    /// θ without a copy.
    pub fn theta_slice(&self) -> &[f32] {
        &self.theta
    }
}

impl Stepper for CpuOptimizer {
    fn len(&self) -> usize {
        self.theta.len()
    }

    fn steps_taken(&self) -> u64 {
        self.t
    }

    fn nonfinite_policy(&self) -> NonFinitePolicy {
        self.policy
    }

    fn set_nonfinite_policy(&mut self, policy: NonFinitePolicy) {
        self.policy = policy;
    }

    fn step_reports(&mut self) -> Result<Vec<StepReport>> {
        Ok(std::mem::take(&mut self.reports))
    }

    fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    fn set_config(&mut self, config: OptimizerConfig) -> Result<()> {
        config.validate()?;
        self.config.check_same_layout(&config)?;
        self.config = config;
        Ok(())
    }

    fn step(&mut self, grad: &[f32]) -> Result<()> {
        if grad.len() != self.theta.len() {
            return Err(Error::LengthMismatch {
                what: "gradient",
                got: grad.len(),
                expected: self.theta.len(),
            });
        }
        self.calls += 1;
        // The kernels' bit test (SPEC §4): an all-ones exponent is NaN or ±Inf.
        let nonfinite: Vec<usize> = (0..grad.len()).filter(|&i| !grad[i].is_finite()).collect();
        let count = nonfinite.len() as u64;
        let applied = self.policy.applies(count);
        if count > 0 {
            self.reports.push(StepReport {
                call: self.calls,
                nonfinite: count,
                applied,
            });
        }
        if !applied {
            return match self.policy {
                NonFinitePolicy::Error => Err(Error::NonFinite {
                    step: self.calls,
                    count,
                }),
                _ => Ok(()),
            };
        }
        // SkipElement: those elements keep their values; the update is element-wise, so
        // putting them back afterwards equals never touching them.
        let kept: Vec<_> = nonfinite.iter().map(|&i| (i, self.element(i))).collect();
        let t = self.t + 1;
        self.update(t, grad);
        for (i, values) in kept {
            self.restore_element(i, values);
        }
        self.t = t;
        Ok(())
    }

    fn theta(&self) -> Result<Vec<f32>> {
        Ok(self.theta.clone())
    }

    fn state(&self, name: &str) -> Result<Vec<f32>> {
        let slots = self.config.as_dyn().state_slots();
        match slots.iter().position(|s| s.name == name && s.used) {
            Some(i) => Ok(self.state[i].clone()),
            None => Err(Error::Unknown {
                what: "state",
                name: name.to_string(),
                known: self.config.used_state_names().join(", "),
            }),
        }
    }
}
