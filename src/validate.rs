//! The agreement battery: every kernel against its CPU reference over standard cases. Shared by
//! the integration tests and `bayesprop validate`, so both hold the kernels to the same bounds.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::optim::{OptimizerConfig, Row, TABLE};
use crate::ulp::max_ulp_distance;
use crate::{CpuOptimizer, Stepper};

/// Bound on adapters that run on the CPU (lavapipe, llvmpipe, WARP): they evaluate f32 `/` and
/// `sqrt` correctly rounded and never contract to FMA, exactly as the reference does, so the
/// results must be bit-identical. Measured: 0 ULP on lavapipe for every case of the battery.
pub const SOFTWARE_ULP_BOUND: u64 = 0;

/// Bound on hardware adapters, which may contract `a*b + c` to FMA and approximate `/` (WGSL
/// allows 2.5 ULP). Provisional: not yet measured on hardware (see the README).
pub const HARDWARE_ULP_BOUND: u64 = 4096;

/// One battery case: an optimizer config, a size, a number of steps and an input seed.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub config: OptimizerConfig,
    pub n: usize,
    pub steps: u64,
    pub seed: u64,
}

/// The largest ULP distance of one case, over θ and every state vector, after step 1 and after
/// the last step.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub case: Case,
    pub max_ulp: u64,
    /// Which vector and element, e.g. `theta[17] after step 100`.
    pub worst: String,
    pub bound: u64,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.max_ulp <= self.bound
    }
}

/// θ₀ with magnitudes spread log-uniformly over 1e-8 … 1e4 and random signs.
pub fn initial_theta(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let magnitude = 10f64.powf(rng.random_range(-8.0..4.0));
            let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            (sign * magnitude) as f32
        })
        .collect()
}

/// The gradient of step `t`. Each element has its own scale, log-uniform over 1e-8 … 1e4 and
/// fixed over steps, times a persistent bias plus noise. Every 7th element's gradient is always
/// 0 (a sparse row: with FixedPoint it must keep σ = 0 and θ fixed).
pub fn gradient(n: usize, seed: u64, t: u64) -> Vec<f32> {
    let mut scales = SmallRng::seed_from_u64(seed ^ 0x5eed_5ca1e);
    let mut noise = SmallRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ t);
    (0..n)
        .map(|i| {
            let scale = 10f64.powf(scales.random_range(-8.0..4.0));
            let bias: f64 = scales.random_range(-1.0..1.0);
            let g = scale * (bias + noise.random_range(-1.0..1.0));
            if i % 7 == 3 {
                0.0
            } else {
                g as f32
            }
        })
        .collect()
}

/// Size, steps and seed of a case whose row does not set them.
const CASE_N: usize = 4099;
const CASE_STEPS: u64 = 100;
const CASE_SEED: u64 = 2024;

/// The standard battery: every row of the optimizer table's battery, expanded. Bayes's rows
/// cover the regimes of SPEC §5 and the sizes that exercise the dispatch edges; the classic
/// optimizers' rows cover their defaults, every option alone and combined, and the regimes
/// (tiny and large lr, beta2 and alpha near 1).
///
/// Panics on a row the table's own tests reject (an unknown key or an invalid config): the
/// rows are code, not input.
pub fn standard_battery() -> Vec<Case> {
    let mut cases = Vec::new();
    for row in TABLE {
        for &line in row.battery {
            for settings in expand(line) {
                cases.push(
                    battery_case(row, &settings)
                        .unwrap_or_else(|e| panic!("battery row {} {line:?}: {e}", row.name)),
                );
            }
        }
    }
    cases
}

/// Every combination of a row's `a,b,c` value lists, as plain settings strings.
fn expand(line: &str) -> Vec<String> {
    line.split_whitespace()
        .fold(vec![String::new()], |prefixes, token| {
            let (key, values) = match token.split_once('=') {
                Some((key, values)) => (Some(key), values.split(',').collect()),
                None => (None, vec![token]),
            };
            prefixes
                .iter()
                .flat_map(|prefix| {
                    values.iter().map(move |value| {
                        let token = match key {
                            Some(key) => format!("{key}={value}"),
                            None => value.to_string(),
                        };
                        if prefix.is_empty() {
                            token
                        } else {
                            format!("{prefix} {token}")
                        }
                    })
                })
                .collect()
        })
}

/// One case of `row` from a plain settings string: `n=N` is the size, the rest configure it.
fn battery_case(row: &Row, settings: &str) -> Result<Case> {
    let mut n = CASE_N;
    let mut config = (row.config)();
    for (key, value) in crate::optim::settings(settings) {
        if key == "n" {
            n = value.parse().map_err(|_| Error::Unknown {
                what: "battery size",
                name: value.to_string(),
                known: "a number of elements".into(),
            })?;
        } else {
            config.as_dyn_mut().set(key, value)?;
        }
    }
    config.validate()?;
    let settings = if settings.is_empty() {
        "defaults"
    } else {
        settings
    };
    Ok(Case {
        name: format!("{} {settings}", row.name),
        config,
        n,
        steps: CASE_STEPS,
        seed: CASE_SEED,
    })
}

/// Makes the optimizer under test from a config and θ₀.
pub type DeviceFactory<'a> = dyn FnMut(&OptimizerConfig, &[f32]) -> Result<Box<dyn Stepper>> + 'a;

/// Runs `case` on `device` and on the single-threaded reference, and compares θ and every
/// state vector after step 1 and after the last step.
pub fn run_case(case: &Case, bound: u64, device: &mut DeviceFactory<'_>) -> Result<Outcome> {
    let theta0 = initial_theta(case.n, case.seed);
    let mut subject = device(&case.config, &theta0)?;
    let mut reference = CpuOptimizer::reference(case.config.clone(), &theta0)?;
    let mut worst = (0u64, String::from("-"));
    for t in 1..=case.steps {
        let grad = gradient(case.n, case.seed, t);
        subject.step(&grad)?;
        reference.step(&grad)?;
        if t == 1 || t == case.steps {
            let mut vectors = vec![("theta", subject.theta()?, reference.theta()?)];
            for name in case.config.used_state_names() {
                vectors.push((name, subject.state(name)?, reference.state(name)?));
            }
            for (name, got, want) in vectors {
                let (ulp, at) = max_ulp_distance(&got, &want);
                if ulp > worst.0 {
                    worst = (ulp, format!("{name}[{at}] after step {t}"));
                }
            }
        }
    }
    Ok(Outcome {
        case: case.clone(),
        max_ulp: worst.0,
        worst: worst.1,
        bound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_expand_to_every_combination_in_order() {
        assert_eq!(expand(""), [""]);
        assert_eq!(expand("amsgrad n=3"), ["amsgrad n=3"]);
        assert_eq!(
            expand("eta=0,1 centered beta=2,3"),
            [
                "eta=0 centered beta=2",
                "eta=0 centered beta=3",
                "eta=1 centered beta=2",
                "eta=1 centered beta=3",
            ]
        );
    }

    #[test]
    fn case_names_and_sizes_come_from_the_rows() {
        let cases = standard_battery();
        let names: Vec<_> = cases.iter().map(|c| c.name.as_str()).collect();
        for name in [
            "bayes eta=1e-6 beta=0.999999 sigma_init=fixed_point",
            "bayes_adam defaults",
            "sgd momentum=0.9 nesterov",
            "adamw lr=10 amsgrad",
        ] {
            assert!(names.contains(&name), "{name} not in {names:?}");
        }
        let sizes = cases.iter().find(|c| c.name == "bayes n=1000003").unwrap();
        assert_eq!((sizes.n, sizes.steps), (1_000_003, CASE_STEPS));
        let nesterov = &cases[names
            .iter()
            .position(|&n| n == "sgd momentum=0.9 nesterov")
            .unwrap()];
        assert_eq!(
            nesterov.config,
            crate::optim::SgdConfig::builder()
                .momentum(0.9)
                .nesterov(true)
                .build()
                .unwrap()
                .into()
        );
        // Names are unique, so `validate`'s output and test failures point at one case.
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }
}
