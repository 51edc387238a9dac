//! The agreement battery: every kernel against its CPU reference over standard cases. Shared by
//! the integration tests and `bayesprop validate`, so both hold the kernels to the same bounds.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::error::Result;
use crate::optim::{
    AdamConfig, BayesConfig, OptimizerConfig, RmspropConfig, SgdConfig, SigmaInit, SigmaMax,
};
use crate::ulp::max_ulp_distance;
use crate::{CpuOptimizer, Stepper};

/// Bound on adapters that run on the CPU (lavapipe, llvmpipe, WARP): they evaluate f32 `/` and
/// `sqrt` correctly rounded and never contract to FMA, exactly as the reference does, so the
/// results must be bit-identical. Measured: 0 ULP on lavapipe for every case of the battery.
pub const SOFTWARE_ULP_BOUND: u64 = 0;

/// Bound on hardware adapters, which may contract `a*b + c` to FMA and approximate `/` (WGSL
/// allows 2.5 ULP). Provisional: not yet measured on hardware (see the README).
pub const HARDWARE_ULP_BOUND: u64 = 4096;

/// One battery case: an optimizer config, a size, a number of steps, an input seed and the
/// gradient stream.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub config: OptimizerConfig,
    pub n: usize,
    pub steps: u64,
    pub seed: u64,
    pub stream: Stream,
}

/// The gradients a case steps on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// [`gradient`]: a fixed scale per element, 1e-8 … 1e4.
    Standard,
    /// [`rising_gradient`]: tiny first gradients, then large ones.
    Rising,
}

impl Stream {
    /// The gradient of step `t`.
    pub fn gradient(self, n: usize, seed: u64, t: u64) -> Vec<f32> {
        match self {
            Stream::Standard => gradient(n, seed, t),
            Stream::Rising => rising_gradient(n, seed, t),
        }
    }
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

/// The gradient of step `t` for curvature that rises: each element's first 1 … 20 steps have a
/// scale log-uniform over 1e-17 … 1e-3 (round-off, or a rarely active feature), every later
/// step one over 1e-2 … 1e2, times a persistent bias plus noise. Every 5th element's early
/// gradients are exactly 0 instead (a sparse row that wakes up). Under `sigma_max = none` σ
/// starts far above the fixed point of the later curvature; this is where the bound binds.
pub fn rising_gradient(n: usize, seed: u64, t: u64) -> Vec<f32> {
    let mut scales = SmallRng::seed_from_u64(seed ^ 0x0d15_ea5e);
    let mut noise = SmallRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ t ^ 0xf00d);
    (0..n)
        .map(|i| {
            let tiny = 10f64.powf(scales.random_range(-17.0..-3.0));
            let large = 10f64.powf(scales.random_range(-2.0..2.0));
            let quiet: u64 = scales.random_range(1..=20);
            let bias: f64 = scales.random_range(-1.0..1.0);
            let scale = if t <= quiet { tiny } else { large };
            let g = scale * (bias + noise.random_range(-1.0..1.0));
            if i % 5 == 1 && t <= quiet {
                0.0
            } else {
                g as f32
            }
        })
        .collect()
}

fn bayes_case(name: String, config: BayesConfig, n: usize) -> Case {
    case(name, config, n)
}

fn case(name: String, config: impl Into<OptimizerConfig>, n: usize) -> Case {
    Case {
        name,
        config: config.into(),
        n,
        steps: 100,
        seed: 2024,
        stream: Stream::Standard,
    }
}

/// The classic optimizers of SPEC §3: defaults, every option alone and combined, and the
/// regimes (tiny and large lr, beta2 and alpha near 1).
fn classic_battery() -> Vec<Case> {
    let sgd = SgdConfig::default;
    let momentum = SgdConfig {
        momentum: 0.9,
        ..sgd()
    };
    let sgd_rows = [
        ("defaults", sgd()),
        (
            "weight_decay=0.01",
            SgdConfig {
                weight_decay: 0.01,
                ..sgd()
            },
        ),
        ("momentum=0.9", momentum),
        (
            "momentum=0.9 dampening=0.5",
            SgdConfig {
                dampening: 0.5,
                ..momentum
            },
        ),
        (
            "momentum=0.9 nesterov",
            SgdConfig {
                nesterov: true,
                ..momentum
            },
        ),
        (
            "momentum=0.9 nesterov weight_decay=0.01",
            SgdConfig {
                nesterov: true,
                weight_decay: 0.01,
                ..momentum
            },
        ),
        (
            "lr=1e-8 momentum=0.9",
            SgdConfig {
                lr: 1e-8,
                ..momentum
            },
        ),
        (
            "lr=10 weight_decay=0.01",
            SgdConfig {
                lr: 10.0,
                weight_decay: 0.01,
                ..sgd()
            },
        ),
    ];
    let rmsprop = RmspropConfig::default;
    let rmsprop_rows = [
        ("defaults", rmsprop()),
        (
            "weight_decay=0.01",
            RmspropConfig {
                weight_decay: 0.01,
                ..rmsprop()
            },
        ),
        (
            "centered",
            RmspropConfig {
                centered: true,
                ..rmsprop()
            },
        ),
        (
            "momentum=0.9",
            RmspropConfig {
                momentum: 0.9,
                ..rmsprop()
            },
        ),
        (
            "centered momentum=0.9 weight_decay=0.01",
            RmspropConfig {
                centered: true,
                momentum: 0.9,
                weight_decay: 0.01,
                ..rmsprop()
            },
        ),
        (
            "alpha=0.999999",
            RmspropConfig {
                alpha: 0.999999,
                ..rmsprop()
            },
        ),
        (
            "lr=1e-8",
            RmspropConfig {
                lr: 1e-8,
                ..rmsprop()
            },
        ),
        (
            "lr=10 centered",
            RmspropConfig {
                lr: 10.0,
                centered: true,
                ..rmsprop()
            },
        ),
    ];
    let mut adam_rows = Vec::new();
    for base in [AdamConfig::adam(), AdamConfig::adamw()] {
        adam_rows.extend([
            ("defaults", base),
            (
                "weight_decay=0.1",
                AdamConfig {
                    weight_decay: 0.1,
                    ..base
                },
            ),
            (
                "amsgrad",
                AdamConfig {
                    amsgrad: true,
                    ..base
                },
            ),
            (
                "beta2=0.999999",
                AdamConfig {
                    beta2: 0.999999,
                    ..base
                },
            ),
            (
                "beta1=0 beta2=0",
                AdamConfig {
                    beta1: 0.0,
                    beta2: 0.0,
                    ..base
                },
            ),
            ("lr=1e-8", AdamConfig { lr: 1e-8, ..base }),
            (
                "lr=10 amsgrad",
                AdamConfig {
                    lr: 10.0,
                    amsgrad: true,
                    ..base
                },
            ),
        ]);
    }
    let named = |name: &str, config: OptimizerConfig| {
        case(format!("{} {name}", config.name()), config, 4099)
    };
    sgd_rows
        .into_iter()
        .map(|(name, c)| named(name, c.into()))
        .chain(
            rmsprop_rows
                .into_iter()
                .map(|(name, c)| named(name, c.into())),
        )
        .chain(adam_rows.into_iter().map(|(name, c)| named(name, c.into())))
        .chain([case("adam n=257".into(), AdamConfig::adam(), 257)])
        .collect()
}

/// The standard battery: the regimes of SPEC §5 at one size, then the sizes that exercise the
/// dispatch edges (1, not a multiple of the workgroup, one past it, > 65,535 workgroups / 4),
/// then the classic optimizers with every option.
pub fn standard_battery() -> Vec<Case> {
    let mut cases = Vec::new();
    let betas = [0.0, 0.9, 0.999, 0.999999];
    for eta in [0.0, 1e-6, 1e-3, 1.0, 1e3] {
        for beta in betas {
            for sigma_init in [SigmaInit::FixedPoint, SigmaInit::Value(1e-2)] {
                if eta == 0.0 && sigma_init == SigmaInit::FixedPoint {
                    continue; // a configuration error by SPEC §2
                }
                // The bound needs eta > 0 (SPEC §2); eta = 0 runs unbounded.
                let sigma_max = if eta == 0.0 {
                    SigmaMax::None
                } else {
                    SigmaMax::FixedPoint
                };
                let config = BayesConfig {
                    eta,
                    beta,
                    sigma_init,
                    sigma_max,
                    ..BayesConfig::default()
                };
                cases.push(bayes_case(bayes_name(&config), config, 4099));
            }
        }
    }
    // Unbounded, and both bounds on streams whose curvature rises after tiny first gradients.
    for eta in [1e-6, 1e-3, 1.0, 1e3] {
        for sigma_init in [SigmaInit::FixedPoint, SigmaInit::Value(1e-2)] {
            for sigma_max in [SigmaMax::FixedPoint, SigmaMax::None] {
                let config = BayesConfig {
                    eta,
                    sigma_init,
                    sigma_max,
                    ..BayesConfig::default()
                };
                if sigma_max == SigmaMax::None {
                    cases.push(bayes_case(bayes_name(&config), config, 4099));
                }
                let mut rising =
                    bayes_case(format!("{} rising", bayes_name(&config)), config, 4099);
                rising.stream = Stream::Rising;
                cases.push(rising);
            }
        }
    }
    for (name, config) in [
        ("momentum=0.9 (bayes_adam)", BayesConfig::bayes_adam()),
        (
            "weight_decay=0.01 sigma_max=none",
            BayesConfig {
                weight_decay: 0.01,
                sigma_max: SigmaMax::None,
                ..Default::default()
            },
        ),
        (
            "weight_decay=0.01 momentum=0.9",
            BayesConfig {
                weight_decay: 0.01,
                momentum: 0.9,
                ..Default::default()
            },
        ),
    ] {
        let mut rising = bayes_case(format!("bayes {name} rising"), config, 4099);
        rising.stream = Stream::Rising;
        cases.push(rising);
    }
    let options = [
        (
            "weight_decay=0.01",
            BayesConfig {
                weight_decay: 0.01,
                ..Default::default()
            },
        ),
        ("momentum=0.9 (bayes_adam)", BayesConfig::bayes_adam()),
        (
            "bias_correction=false",
            BayesConfig {
                bias_correction: false,
                ..Default::default()
            },
        ),
        (
            "seed form (no bias correction, σ₀=1e-3, no bound)",
            BayesConfig {
                bias_correction: false,
                sigma_init: SigmaInit::Value(1e-3),
                sigma_max: SigmaMax::None,
                ..Default::default()
            },
        ),
    ];
    for (name, config) in options {
        cases.push(bayes_case(format!("bayes {name}"), config, 4099));
    }
    for n in [1, 3, 255, 256, 257, 1_000_003] {
        cases.push(bayes_case(
            format!("bayes n={n}"),
            BayesConfig::default(),
            n,
        ));
    }
    cases.extend(classic_battery());
    cases
}

/// `bayes eta=… beta=… sigma_init=… sigma_max=none`, beta and sigma_max only where they are
/// not the default.
fn bayes_name(config: &BayesConfig) -> String {
    let init = match config.sigma_init {
        SigmaInit::FixedPoint => "fixed_point".to_string(),
        SigmaInit::Value(v) => format!("{v}"),
    };
    let bound = match config.sigma_max {
        SigmaMax::FixedPoint => "",
        SigmaMax::None => " sigma_max=none",
    };
    let beta = if config.beta == BayesConfig::default().beta {
        String::new()
    } else {
        format!(" beta={}", config.beta)
    };
    format!("bayes eta={:e}{beta} sigma_init={init}{bound}", config.eta)
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
        let grad = case.stream.gradient(case.n, case.seed, t);
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
