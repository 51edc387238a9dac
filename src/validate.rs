//! The agreement battery: every kernel against its CPU reference over standard cases, judged by
//! one [`Rule`] per kind of adapter. Shared by the integration tests and `bayesprop validate`,
//! so both hold the kernels to the same rules.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::StateFormat;
use crate::error::{Error, Result};
use crate::layout::{initial_state, GroupId, ParamGroups, Stored};
use crate::optim::{OptimizerConfig, Row, TABLE};
use crate::transform::GradTransform;
use crate::ulp::{max_ulp_distance, mean_ulps_from_exact};
use crate::{CpuOptimizer, CpuPath, Stepper};

/// The most one rounding on a hardware adapter may exceed the reference's, as WGSL allows it:
/// `sqrt` inherits `1.0 / inverseSqrt(x)`, 2 + 2.5 = 4.5 ULP against the reference's correctly
/// rounded ½ ULP, 9 times; `/` is 2.5 ULP, 5 times; `+ − ×` are correctly rounded on both, and
/// an FMA drops the product's rounding, which can only lower it.
pub const ROUNDING_RATIO: f64 = 9.0;

/// The reference's roundings err by ¼ ULP on average (uniformly within ±½), while an
/// approximation may sit at its bound every time: its mean error may be this much larger again.
pub const MEAN_TO_BOUND: f64 = 2.0;

/// The least mean reference error k scales, per √t: ½ ULP, so that where the reference happens
/// to be exact (a correctly rounded result errs ¼ ULP on average) a device still gets
/// k·½ = 9 ULP after step 1. That is the longest chain of approximate operations one step
/// holds, at WGSL's allowance: `bayes`'s σ* takes `sqrt` (4.5 ULP) of `1/x` (2.5, halved by
/// the root: 1.25), then σ/(1 + hσ) divides once more (2.5), 8.25 ULP in all. Measured on a
/// legal FMA emulation (tests/integration/hardware_rule.rs): with a ¼-ULP floor (one `sqrt` alone) σ after
/// step 1 of a stream of tiny first gradients came out 5.9 ULP against a limit of 4.5.
pub const ORACLE_FLOOR_ULPS: f64 = 0.5;

/// Below this many elements the mean of a vector is too small a sample: its elements' errors
/// spread about as widely as their mean, so a mean of n falls short of its expectation by
/// about 1/√n of it, and the floor grows by √(64/n) to cover that. Measured on a legal FMA
/// emulation (tests/integration/hardware_rule.rs): the battery's 1- and 3-element cases failed without
/// it, one σ of 6.7 ULP against a limit of 4.7.
pub const ORACLE_SAMPLE: usize = 64;

/// How each case of the battery is judged on an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Adapters that run on the CPU (lavapipe, llvmpipe, WARP): they evaluate f32 `/` and
    /// `sqrt` correctly rounded and never contract to FMA, exactly as the reference does, so
    /// the results must be bit-identical (0 ULP; -0 and +0 count as equal). Measured: 0 ULP on
    /// lavapipe for every case of the battery.
    Identical,
    /// Hardware adapters: per vector, after step 1 and the last, the device's mean distance
    /// from the f64 oracle is at most [`Rule::oracle_factor`] times the f32 reference's, or
    /// times [`Rule::oracle_floor`] where that is larger. The mean over the vector's elements,
    /// not each element: one element's reference error can be 0 by luck, and k·0 would bound
    /// nothing.
    Oracle,
}

impl Rule {
    /// The rule for an adapter: [`Rule::Identical`] for one that runs on the CPU.
    pub fn for_adapter(software: bool) -> Rule {
        if software {
            Rule::Identical
        } else {
            Rule::Oracle
        }
    }

    /// k after `t` steps: the reference's independent roundings add up like a random walk
    /// (√t) while an approximation biased one way adds up in line (t), so k grows by √t over
    /// the per-rounding `ROUNDING_RATIO × MEAN_TO_BOUND` = 18: 18 after step 1, 180 after 100.
    pub fn oracle_factor(t: u64) -> f64 {
        ROUNDING_RATIO * MEAN_TO_BOUND * (t as f64).sqrt()
    }

    /// The least mean reference error, in ULPs, that k scales after `t` steps of a vector of
    /// `n` elements: [`ORACLE_FLOOR_ULPS`]·√t, times √([`ORACLE_SAMPLE`]/n) below that size.
    pub fn oracle_floor(t: u64, n: usize) -> f64 {
        let short = (ORACLE_SAMPLE as f64 / n.max(1) as f64).max(1.0);
        ORACLE_FLOOR_ULPS * (t as f64 * short).sqrt()
    }

    /// One line for `validate`'s output.
    pub fn describe(self) -> String {
        match self {
            Rule::Identical => "bit-identical to the f32 CPU reference (0 ULP; software adapter: \
                                correctly rounded, no FMA)"
                .to_string(),
            Rule::Oracle => format!(
                "mean error from the f64 oracle <= {}·√t × max(the f32 reference's, \
                 {ORACLE_FLOOR_ULPS}·√(t·max(1, {ORACLE_SAMPLE}/n)) ULP), \
                 per vector after step 1 and the last (hardware adapter: FMA, 2.5-ULP division, \
                 4.5-ULP sqrt allowed)",
                ROUNDING_RATIO * MEAN_TO_BOUND
            ),
        }
    }
}

/// One battery case: an optimizer config, a size, a number of steps, an input seed and the
/// gradient stream.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub config: OptimizerConfig,
    /// Unscaling and clipping before the update (identity in most cases).
    pub transform: GradTransform,
    pub n: usize,
    pub steps: u64,
    pub seed: u64,
    pub stream: Stream,
    /// How the state is held (SPEC §6), and its `state_seed`.
    pub format: StateFormat,
    pub state_seed: u32,
}

impl Case {
    /// The case's one group of one tensor, θ₀ from the case's seed, its state in the case's
    /// format.
    pub fn groups(&self) -> Result<ParamGroups> {
        let theta0 = initial_theta(self.n, self.seed);
        let mut groups = ParamGroups::single(self.config.clone(), &theta0)?;
        groups.set_state_format(GroupId(0), self.format, self.state_seed)?;
        Ok(groups)
    }

    /// Whether `rule` judges this case: the oracle's error bound is for f32 state, so a case
    /// in another format is judged only bit for bit against the reference.
    pub fn judged_under(&self, rule: Rule) -> bool {
        self.format == StateFormat::F32 || rule == Rule::Identical
    }
}

/// The gradients a case steps on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// [`gradient`]: a fixed scale per element, 1e-8 … 1e4.
    Standard,
    /// [`rising_gradient`]: tiny first gradients, then large ones.
    Rising,
    /// [`flat_gradient`]: every element of one magnitude, so that a sum of squares rounds at
    /// every addition and its order shows in the bits (the other streams' few largest squares
    /// decide the norm's sum, which then rounds alike in most orders).
    Flat,
}

impl Stream {
    /// The gradient of step `t`.
    pub fn gradient(self, n: usize, seed: u64, t: u64) -> Vec<f32> {
        match self {
            Stream::Standard => gradient(n, seed, t),
            Stream::Rising => rising_gradient(n, seed, t),
            Stream::Flat => flat_gradient(n, seed, t),
        }
    }
}

/// Under [`Rule::Oracle`], the vector whose device error came closest to its limit (or went
/// furthest past it). Errors are means over the vector, in ULPs.
#[derive(Clone, Debug)]
pub struct OracleErrors {
    /// Which vector, e.g. `theta after step 100`.
    pub at: String,
    pub device: f64,
    pub reference: f64,
    pub limit: f64,
}

impl OracleErrors {
    /// The errors of one vector after step `t` under [`Rule::Oracle`], and its limit.
    pub fn measure(at: String, t: u64, device: &[f32], reference: &[f32], exact: &[f64]) -> Self {
        let reference = mean_ulps_from_exact(reference, exact);
        OracleErrors {
            at,
            device: mean_ulps_from_exact(device, exact),
            reference,
            limit: Rule::oracle_factor(t) * reference.max(Rule::oracle_floor(t, device.len())),
        }
    }

    pub fn passed(&self) -> bool {
        self.device <= self.limit
    }

    /// How far along its limit the device is: above 1 fails; NaN counts as past any limit.
    fn ratio(&self) -> f64 {
        match self.device / self.limit {
            r if r.is_nan() => f64::INFINITY,
            r => r,
        }
    }
}

/// Judges one vector after step `t` under `rule`, as `run_case` does, for tests that step a
/// device by hand; `Err` says by how much it fails.
pub fn judge(
    rule: Rule,
    t: u64,
    device: &[f32],
    reference: &[f32],
    exact: &[f64],
) -> std::result::Result<(), String> {
    match rule {
        Rule::Identical => match max_ulp_distance(device, reference) {
            (0, _) => Ok(()),
            (ulp, at) => Err(format!(
                "{ulp} ULP from the reference at [{at}] ({} vs {}), where it must be identical",
                device[at], reference[at]
            )),
        },
        Rule::Oracle => {
            let errors = OracleErrors::measure(String::new(), t, device, reference, exact);
            if errors.passed() {
                Ok(())
            } else {
                Err(format!(
                    "mean error from the oracle {:.3} ULP, over the limit {:.3} \
                     (reference {:.3} ULP)",
                    errors.device, errors.limit, errors.reference
                ))
            }
        }
    }
}

/// One case's result: the largest ULP distance from the reference over θ and every state
/// vector after step 1 and after the last step, and under [`Rule::Oracle`] the errors from the
/// oracle.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub case: Case,
    pub rule: Rule,
    pub max_ulp: u64,
    /// Which vector and element, e.g. `theta[17] after step 100`.
    pub worst: String,
    /// `Some` under [`Rule::Oracle`].
    pub oracle: Option<OracleErrors>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        match (self.rule, &self.oracle) {
            (Rule::Identical, _) => self.max_ulp == 0,
            (Rule::Oracle, Some(o)) => o.passed(),
            (Rule::Oracle, None) => false,
        }
    }

    /// The measure the rule judges and its limit, and where: for one line of a report.
    pub fn check(&self) -> (String, String) {
        match &self.oracle {
            Some(o) => (format!("{:.3} <= {:.3}", o.device, o.limit), o.at.clone()),
            None => (format!("{} <= 0", self.max_ulp), self.worst.clone()),
        }
    }
}

/// The f64 oracle of one vector: the optimizer's expressions from unrounded scalars, with
/// every state slot (unused ones empty), as the reference lays them out.
#[derive(Clone, Debug)]
pub struct Oracle {
    config: OptimizerConfig,
    t: u64,
    transform: GradTransform,
    theta: Vec<f64>,
    state: Vec<Vec<f64>>,
}

impl Oracle {
    pub fn new(config: &OptimizerConfig, theta0: &[f32]) -> Self {
        Oracle {
            config: config.clone(),
            t: 0,
            transform: GradTransform::default(),
            theta: theta0.iter().map(|&x| f64::from(x)).collect(),
            state: initial_state(config, theta0.len()),
        }
    }

    pub fn step(&mut self, grad: &[f32]) {
        self.t += 1;
        // SPEC §4b in f64: unscaled, then clipped by the norm of the finite elements.
        let scale = f64::from(self.transform.grad_scale);
        let mut grad: Vec<f64> = grad.iter().map(|&g| f64::from(g) / scale).collect();
        if let Some(m) = self.transform.clip_norm {
            let finite = grad.iter().filter(|u| u.is_finite());
            let norm = finite.map(|u| u * u).sum::<f64>().sqrt();
            let factor = (f64::from(m) / (norm + 1e-6)).min(1.0);
            grad.iter_mut().for_each(|u| *u *= factor);
        }
        let mut state: Vec<&mut [f64]> = self.state.iter_mut().map(|v| &mut v[..]).collect();
        self.config
            .as_dyn()
            .oracle_step(self.t, &mut self.theta, &grad, &mut state);
    }

    /// New hyperparameters from the next step on, as `Stepper::set_config`.
    pub fn set_config(&mut self, config: OptimizerConfig) {
        self.config = config;
    }

    /// Unscaling and clipping from the next step on, as `Stepper::set_grad_transform`.
    pub fn set_transform(&mut self, transform: GradTransform) {
        self.transform = transform;
    }

    pub fn vector(&self, which: Stored) -> &[f64] {
        match which {
            Stored::Theta => &self.theta,
            Stored::State(k) => &self.state[k],
        }
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

/// Uniform in (−1, 1), full mantissas: see [`Stream::Flat`].
pub fn flat_gradient(n: usize, seed: u64, t: u64) -> Vec<f32> {
    let mut noise = SmallRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ t ^ 0xf1a7);
    (0..n).map(|_| noise.random_range(-1.0f32..1.0)).collect()
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

/// One case of `row` from a plain settings string: `n=N` is the size, `grad_scale=S` and
/// `clip_norm=M` the gradient transform (SPEC §4b), the rest configure the optimizer.
fn battery_case(row: &Row, settings: &str) -> Result<Case> {
    let mut n = CASE_N;
    let mut stream = Stream::Standard;
    let mut config = (row.config)();
    let mut transform = GradTransform::default();
    let (mut format, mut state_seed) = (StateFormat::F32, 0);
    fn number<T: std::str::FromStr>(what: &'static str, value: &str) -> Result<T> {
        value.parse().map_err(|_| Error::Unknown {
            what,
            name: value.to_string(),
            known: "a number".into(),
        })
    }
    for (key, value) in crate::optim::settings(settings) {
        match key {
            "n" => n = number("battery size", value)?,
            "grad_scale" => transform.grad_scale = number("battery grad_scale", value)?,
            "clip_norm" => transform.clip_norm = Some(number("battery clip_norm", value)?),
            "state_format" => format = value.parse()?,
            "state_seed" => state_seed = crate::config::parse_state_seed(value)?,
            "stream" => {
                stream = match value {
                    "standard" => Stream::Standard,
                    "rising" => Stream::Rising,
                    "flat" => Stream::Flat,
                    _ => {
                        return Err(Error::Unknown {
                            what: "battery stream",
                            name: value.to_string(),
                            known: "standard, rising, flat".into(),
                        })
                    }
                }
            }
            _ => config.as_dyn_mut().set(key, value)?,
        }
    }
    config.validate()?;
    transform.validate()?;
    let settings = if settings.is_empty() {
        "defaults"
    } else {
        settings
    };
    Ok(Case {
        name: format!("{} {settings}", row.name),
        config,
        transform,
        n,
        steps: CASE_STEPS,
        seed: CASE_SEED,
        stream,
        format,
        state_seed,
    })
}

/// Makes the optimizer under test from a case's groups ([`Case::groups`]).
pub type DeviceFactory<'a> = dyn FnMut(&ParamGroups) -> Result<Box<dyn Stepper>> + 'a;

/// Runs `case` on `device`, on the single-threaded reference and, under [`Rule::Oracle`], on
/// the f64 oracle, and compares θ and every used state vector after step 1 and after the last
/// step. A case that `rule` does not judge ([`Case::judged_under`]) is refused.
pub fn run_case(case: &Case, rule: Rule, device: &mut DeviceFactory<'_>) -> Result<Outcome> {
    if !case.judged_under(rule) {
        return Err(Error::Unsupported(format!(
            "validate case `{}`: {} state is judged only bit for bit (on a software adapter)",
            case.name, case.format
        )));
    }
    let theta0 = initial_theta(case.n, case.seed);
    let groups = case.groups()?;
    let mut subject = device(&groups)?;
    let mut reference = CpuOptimizer::from_groups(&groups, CpuPath::Reference);
    let mut oracle = (rule == Rule::Oracle).then(|| {
        let mut oracle = Oracle::new(&case.config, &theta0);
        oracle.set_transform(case.transform);
        oracle
    });
    let vectors = reference.layout().groups()[0].vectors();
    subject.set_grad_transform(case.transform)?;
    reference.set_grad_transform(case.transform)?;
    let mut worst = (0u64, String::from("-"));
    let mut closest: Option<OracleErrors> = None;
    for t in 1..=case.steps {
        let grad = case.stream.gradient(case.n, case.seed, t);
        subject.step(&grad)?;
        reference.step(&grad)?;
        if let Some(oracle) = &mut oracle {
            oracle.step(&grad);
        }
        if t != 1 && t != case.steps {
            continue;
        }
        for &(name, which) in &vectors {
            let (got, want) = match which {
                Stored::Theta => (subject.theta()?, reference.theta()?),
                Stored::State(_) => (subject.state(name)?, reference.state(name)?),
            };
            let (ulp, at) = max_ulp_distance(&got, &want);
            if ulp > worst.0 {
                worst = (ulp, format!("{name}[{at}] after step {t}"));
            }
            if let Some(oracle) = &oracle {
                let at = format!("{name} after step {t}");
                let errors = OracleErrors::measure(at, t, &got, &want, oracle.vector(which));
                if closest.as_ref().is_none_or(|c| errors.ratio() > c.ratio()) {
                    closest = Some(errors);
                }
            }
        }
    }
    Ok(Outcome {
        case: case.clone(),
        rule,
        max_ulp: worst.0,
        worst: worst.1,
        oracle: closest,
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
        // Every row has a case with its state held in bf16, then one in q8, judged only bit
        // for bit.
        for row in TABLE {
            let held = cases
                .iter()
                .find(|c| {
                    c.name.starts_with(&format!("{} ", row.name)) && c.format != StateFormat::F32
                })
                .unwrap_or_else(|| panic!("{}: no bf16 case", row.name));
            assert_eq!(held.format, StateFormat::Bf16);
            assert!(held.judged_under(Rule::Identical) && !held.judged_under(Rule::Oracle));
            assert_eq!(
                held.groups().unwrap().groups()[0].state_format,
                StateFormat::Bf16
            );
            let e = run_case(held, Rule::Oracle, &mut |_| unreachable!()).unwrap_err();
            assert!(e.to_string().contains("bit for bit"), "{e}");
            // And one in q8, which the GPU kernels step by blocks.
            let q8 = cases
                .iter()
                .find(|c| {
                    c.name.starts_with(&format!("{} ", row.name)) && c.format == StateFormat::Q8
                })
                .unwrap_or_else(|| panic!("{}: no q8 case", row.name));
            assert!(q8.judged_under(Rule::Identical) && !q8.judged_under(Rule::Oracle));
        }
        // Names are unique, so `validate`'s output and test failures point at one case.
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }
}
