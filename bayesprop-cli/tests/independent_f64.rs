//! `replay` of `bayes`, `bayes_fp` and `lion` against float64 implementations of their rules
//! (docs/rules.md §2, §2b, §3) written here, element by element, without the crate's reference,
//! oracle or scalar code: a wrong expression in the crate would not be copied into the check.
//! Also the step bound of §2 on `replay`'s own outputs, and a proof that the check can fail.

mod common;

use common::cli::bayesprop;
use common::TempDir;

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2};
use ndarray_npy::{read_npy, write_npy};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Largest path-relative error allowed for every optimizer (docs/numerics.md).
const TOLERANCE: f64 = 1e-5;

/// Rounding slack of the step bound, in ULPs of θ. The f32 update θ − σ·g rounds to half an
/// ULP of the result. σ·g rounds too, a few ULPs of the step; that stays below an ULP of θ
/// because θ₀ here is drawn from [−1, 1] and steps are ~η, and where the step is large the
/// margin η²·|g|/2 between σ*·|g| and the bound covers it. Measured: 0.498 ULP at worst.
const BOUND_SLACK_ULPS: f64 = 0.5;

/// Elements of each stream and steps of the replay.
const N_RISING: usize = 200;
const N_SPARSE: usize = 200;
const STEPS: usize = 60;

/// A magnitude drawn log-uniformly from [10^lo, 10^hi], with a random sign.
fn signed_log_uniform(rng: &mut SmallRng, lo: f64, hi: f64) -> f32 {
    let magnitude = 10f64.powf(rng.random_range(lo..hi));
    (if rng.random_bool(0.5) {
        magnitude
    } else {
        -magnitude
    }) as f32
}

/// θ₀ and the gradients: columns `..N_RISING` are the rising stream, the rest the sparse one.
///
/// Rising: each element's first 1–20 gradients are tiny (1e-17…1e-3), a fifth of the elements
/// starting with exact zeros, then 1e-2…1e2: the case where σ*(tiny h) would outlive the tiny
/// curvature. Sparse: nine steps in ten are 0, the others span 1e-12…1e2.
fn streams() -> (Array1<f32>, Array2<f32>) {
    let mut rng = SmallRng::seed_from_u64(0xF64);
    let n = N_RISING + N_SPARSE;
    let theta0 = Array1::from_shape_fn(n, |_| rng.random_range(-1.0f32..1.0));
    let mut grads = Array2::<f32>::zeros((STEPS, n));
    for i in 0..N_RISING {
        let tiny_steps = rng.random_range(1..=20);
        let zero_steps = if i % 5 == 0 {
            rng.random_range(1..=tiny_steps)
        } else {
            0
        };
        for k in 0..STEPS {
            grads[(k, i)] = if k < zero_steps {
                0.0
            } else if k < tiny_steps {
                signed_log_uniform(&mut rng, -17.0, -3.0)
            } else {
                signed_log_uniform(&mut rng, -2.0, 2.0)
            };
        }
    }
    for i in N_RISING..n {
        for k in 0..STEPS {
            if rng.random_bool(0.1) {
                grads[(k, i)] = signed_log_uniform(&mut rng, -12.0, 2.0);
            }
        }
    }
    (theta0, grads)
}

/// The rules in float64, state per element, hyperparameters as the user wrote them.
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// §2 with bias correction, `sigma_init = fixed_point`, λ = 0, no momentum.
    Bayes {
        beta: f64,
        eta: f64,
        eps: f64,
        bounded: bool,
    },
    /// §2b with bias correction, λ = 0, no momentum.
    BayesFp { beta: f64, eta: f64, eps: f64 },
    /// §3, decoupled weight decay, sign(0) = 0.
    Lion {
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
    },
}

/// σ*(h) = η²/2 + η·sqrt(η²/4 + 1/(h + eps²)).
fn fixed_point(h: f64, eta: f64, eps: f64) -> f64 {
    eta * eta / 2.0 + eta * (eta * eta / 4.0 + 1.0 / (h + eps * eps)).sqrt()
}

impl Rule {
    /// (η, β) for the step bound, for the rules that have one.
    fn bound_parameters(self) -> Option<(f64, f64)> {
        match self {
            Rule::Bayes { beta, eta, .. } | Rule::BayesFp { beta, eta, .. } => Some((eta, beta)),
            Rule::Lion { .. } => None,
        }
    }

    /// θ after each step, in f64.
    fn run(self, theta0: ArrayView1<f32>, grads: ArrayView2<f32>) -> Array2<f64> {
        let n = theta0.len();
        let mut theta: Vec<f64> = theta0.iter().map(|&x| f64::from(x)).collect();
        // s of bayes and bayes_fp, m of lion; σ of bayes.
        let mut ema = vec![0.0f64; n];
        let mut sigma = vec![0.0f64; n];
        let mut out = Array2::zeros((grads.nrows(), n));
        for (k, row) in grads.rows().into_iter().enumerate() {
            let t = k as i32 + 1;
            for (i, &g) in row.iter().enumerate() {
                let g = f64::from(g);
                match self {
                    Rule::Bayes {
                        beta,
                        eta,
                        eps,
                        bounded,
                    } => {
                        ema[i] = beta * ema[i] + (1.0 - beta) * g * g;
                        let h = ema[i] / (1.0 - beta.powi(t));
                        let star = fixed_point(h, eta, eps);
                        if sigma[i] == 0.0 && h > 0.0 {
                            sigma[i] = star;
                        }
                        if sigma[i] > 0.0 {
                            sigma[i] = sigma[i] / (1.0 + h * sigma[i]) + eta * eta;
                            if bounded {
                                sigma[i] = sigma[i].min(star);
                            }
                            theta[i] -= sigma[i] * g;
                        }
                    }
                    Rule::BayesFp { beta, eta, eps } => {
                        ema[i] = beta * ema[i] + (1.0 - beta) * g * g;
                        let h = ema[i] / (1.0 - beta.powi(t));
                        theta[i] -= fixed_point(h, eta, eps) * g;
                    }
                    Rule::Lion {
                        lr,
                        beta1,
                        beta2,
                        weight_decay,
                    } => {
                        theta[i] *= 1.0 - lr * weight_decay;
                        let c = beta1 * ema[i] + (1.0 - beta1) * g;
                        // f64::signum(0.0) is 1; the rule's sign(0) is 0.
                        let sign = if c > 0.0 {
                            1.0
                        } else if c < 0.0 {
                            -1.0
                        } else {
                            0.0
                        };
                        theta[i] -= lr * sign;
                        ema[i] = beta2 * ema[i] + (1.0 - beta2) * g;
                    }
                }
            }
            out.row_mut(k).assign(&Array1::from(theta.clone()));
        }
        out
    }
}

/// One `replay` configuration and what the step bound should do on it.
struct Case {
    name: &'static str,
    optimizer: &'static str,
    set: &'static [&'static str],
    rule: Rule,
    bound: Bound,
}

#[derive(PartialEq)]
enum Bound {
    /// λ = 0, no momentum, σ ≤ σ*: every step obeys the bound.
    Holds,
    /// `sigma_max=none` on the rising stream: some step must break it, or the check is blind.
    Broken,
    /// No bound in the rules.
    None,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "bayes defaults",
            optimizer: "bayes",
            set: &[],
            rule: Rule::Bayes {
                beta: 0.999,
                eta: 1e-3,
                eps: 1e-8,
                bounded: true,
            },
            bound: Bound::Holds,
        },
        Case {
            name: "bayes sigma_max=none",
            optimizer: "bayes",
            set: &["--set", "sigma_max=none"],
            rule: Rule::Bayes {
                beta: 0.999,
                eta: 1e-3,
                eps: 1e-8,
                bounded: false,
            },
            bound: Bound::Broken,
        },
        Case {
            name: "bayes eta=1e-2 beta=0.9",
            optimizer: "bayes",
            set: &["--set", "eta=1e-2", "--set", "beta=0.9"],
            rule: Rule::Bayes {
                beta: 0.9,
                eta: 1e-2,
                eps: 1e-8,
                bounded: true,
            },
            bound: Bound::Holds,
        },
        Case {
            name: "bayes_fp defaults",
            optimizer: "bayes_fp",
            set: &[],
            rule: Rule::BayesFp {
                beta: 0.999,
                eta: 1e-3,
                eps: 1e-8,
            },
            bound: Bound::Holds,
        },
        Case {
            name: "bayes_fp eta=1e-2",
            optimizer: "bayes_fp",
            set: &["--set", "eta=1e-2"],
            rule: Rule::BayesFp {
                beta: 0.999,
                eta: 1e-2,
                eps: 1e-8,
            },
            bound: Bound::Holds,
        },
        Case {
            name: "lion defaults",
            optimizer: "lion",
            set: &[],
            rule: Rule::Lion {
                lr: 1e-4,
                beta1: 0.9,
                beta2: 0.99,
                weight_decay: 0.0,
            },
            bound: Bound::None,
        },
        Case {
            name: "lion weight_decay=0.1 lr=1e-3",
            optimizer: "lion",
            set: &["--set", "weight_decay=0.1", "--set", "lr=1e-3"],
            rule: Rule::Lion {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.99,
                weight_decay: 0.1,
            },
            bound: Bound::None,
        },
    ]
}

/// θ after each step from `replay` of `case` on `device`.
fn replay(dir: &TempDir, case: &Case, device: &str) -> Array2<f32> {
    let out = format!("out-{device}.npy");
    let mut args = vec![
        "replay",
        "--optimizer",
        case.optimizer,
        "--params",
        "params.npy",
        "--grads",
        "grads.npy",
        "--out",
        &out,
        "--device",
        device,
    ];
    args.extend_from_slice(case.set);
    let output = bayesprop(&args, dir.path());
    assert!(
        output.status.success(),
        "{}: replay --device {device} failed: {:?}\nstderr: {}",
        case.name,
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    read_npy(dir.join(&out)).unwrap()
}

/// The largest |θ_f32 − θ_f64| over max(|θᵢ|, RMS of θ at that step), over every step.
fn path_relative_error(got: ArrayView2<f32>, exact: ArrayView2<f64>) -> f64 {
    let mut worst = 0.0f64;
    for (row, exact) in got.rows().into_iter().zip(exact.rows()) {
        let rms = (exact.iter().map(|x| x * x).sum::<f64>() / exact.len() as f64).sqrt();
        for (&x, &e) in row.iter().zip(exact) {
            worst = worst.max((f64::from(x) - e).abs() / e.abs().max(rms));
        }
    }
    worst
}

/// The spacing of f32 at |x|.
fn ulp(x: f32) -> f64 {
    let a = x.abs();
    f64::from(f32::from_bits(a.to_bits() + 1)) - f64::from(a)
}

/// How each stream fared against the step bound |Δθ| ≤ η/sqrt((1 − β)·c2) + η²·|g|.
#[derive(Default, Debug)]
struct BoundReport {
    /// Largest excess over the bound, in ULPs of θ (negative: every step is inside it).
    worst_excess_ulps: f64,
    /// Steps that exceed the bound by more than the slack, and the largest |Δθ| / bound.
    broken: usize,
    worst_ratio: f64,
}

fn step_bound(
    theta0: ArrayView1<f32>,
    grads: ArrayView2<f32>,
    thetas: ArrayView2<f32>,
    (eta, beta): (f64, f64),
) -> BoundReport {
    let mut report = BoundReport {
        worst_excess_ulps: f64::NEG_INFINITY,
        ..BoundReport::default()
    };
    let mut previous = theta0.to_owned();
    for (k, (g, now)) in grads.rows().into_iter().zip(thetas.rows()).enumerate() {
        let c2 = 1.0 / (1.0 - beta.powi(k as i32 + 1));
        let base = eta / ((1.0 - beta) * c2).sqrt();
        for ((&g, &before), &after) in g.iter().zip(&previous).zip(now) {
            let step = (f64::from(after) - f64::from(before)).abs();
            let bound = base + eta * eta * f64::from(g).abs();
            let excess = (step - bound) / ulp(before).max(ulp(after));
            report.worst_excess_ulps = report.worst_excess_ulps.max(excess);
            if excess > BOUND_SLACK_ULPS {
                report.broken += 1;
            }
            report.worst_ratio = report.worst_ratio.max(step / bound);
        }
        previous = now.to_owned();
    }
    report
}

/// Replays every case on `devices`, checks each against its f64 rule and the step bound, and
/// returns the outputs, case by case, device by device.
fn check(devices: &[&str]) -> Vec<Vec<Array2<f32>>> {
    let dir = TempDir::new("f64", &devices.join("-"));
    let (theta0, grads) = streams();
    write_npy(dir.join("params.npy"), &theta0).unwrap();
    write_npy(dir.join("grads.npy"), &grads).unwrap();
    let parts = [
        ("rising", s![.., ..N_RISING]),
        ("sparse", s![.., N_RISING..]),
    ];
    let mut all = Vec::new();
    let mut exacts = Vec::new();
    for case in cases() {
        let exact = case.rule.run(theta0.view(), grads.view());
        let mut outputs = Vec::new();
        for &device in devices {
            let got = replay(&dir, &case, device);
            assert_eq!(got.dim(), grads.dim(), "{}: {device}: shape", case.name);
            for (stream, columns) in parts {
                let error = path_relative_error(got.slice(columns), exact.slice(columns));
                eprintln!(
                    "{:<30} {device:<9} {stream}: path-relative error {error:.2e}",
                    case.name
                );
                assert!(
                    error <= TOLERANCE,
                    "{}: {device}: {stream} stream: path-relative error {error:.3e} > {TOLERANCE:e}",
                    case.name
                );
            }
            if let Some(parameters) = case.rule.bound_parameters() {
                check_bound(&case, device, &theta0, &grads, &got, parameters);
            }
            outputs.push(got);
        }
        all.push(outputs);
        exacts.push(exact);
    }
    // The check can tell the rules apart: bayes's outputs against the f64 rule without the
    // bound (cases 0 and 1) must fail it on the rising stream.
    let rising = parts[0].1;
    let confused = path_relative_error(all[0][0].slice(rising), exacts[1].slice(rising));
    eprintln!("bayes defaults against the f64 rule of sigma_max=none: {confused:.2e}");
    assert!(
        confused > 100.0 * TOLERANCE,
        "the f64 check cannot tell sigma_max=none from the default: {confused:.3e}"
    );
    all
}

fn check_bound(
    case: &Case,
    device: &str,
    theta0: &Array1<f32>,
    grads: &Array2<f32>,
    got: &Array2<f32>,
    parameters: (f64, f64),
) {
    let columns = [("rising", 0..N_RISING), ("sparse", N_RISING..theta0.len())];
    for (stream, range) in columns {
        let report = step_bound(
            theta0.slice(s![range.clone()]),
            grads.slice(s![.., range.clone()]),
            got.slice(s![.., range]),
            parameters,
        );
        eprintln!(
            "{:<30} {device:<9} {stream}: step bound: worst excess {:.3} ULP of θ, \
             {} of {} steps broken, largest |Δθ|/bound {:.3e}",
            case.name,
            report.worst_excess_ulps,
            report.broken,
            grads.nrows() * theta0.len() / 2,
            report.worst_ratio
        );
        match case.bound {
            Bound::Holds => assert_eq!(
                report.broken, 0,
                "{}: {device}: {stream}: the step bound broke (worst excess {:.3} ULP of θ, \
                 |Δθ|/bound up to {:.3e})",
                case.name, report.worst_excess_ulps, report.worst_ratio
            ),
            Bound::Broken if stream == "rising" => assert!(
                report.broken > 0 && report.worst_ratio > 2.0,
                "{}: {device}: the step bound never broke on the rising stream, so the check \
                 could not see a missing bound: {report:?}",
                case.name
            ),
            Bound::Broken | Bound::None => {}
        }
    }
}

fn assert_same_outputs(outputs: &[Vec<Array2<f32>>], devices: &[&str]) {
    for (case, outputs) in cases().iter().zip(outputs) {
        for (device, got) in devices.iter().zip(outputs).skip(1) {
            common::assert_same_bits_flat(
                outputs[0].as_slice().unwrap(),
                got.as_slice().unwrap(),
                &format!("{}: {device} vs {}", case.name, devices[0]),
            );
        }
    }
}

#[test]
fn cpu_devices_agree_with_float64_and_each_other() {
    let devices = ["reference", "cpu"];
    let outputs = check(&devices);
    assert_same_outputs(&outputs, &devices);
}

#[test]
fn gpu_agrees_with_float64_and_the_reference() {
    let Some(ctx) = common::gpu("gpu_agrees_with_float64_and_the_reference") else {
        return;
    };
    let devices = ["reference", "gpu"];
    let outputs = check(&devices);
    // Hardware may contract to FMA and approximate division: there the f64 check above is the
    // whole contract; an IEEE adapter must also match the reference bit for bit.
    if ctx.is_software() {
        assert_same_outputs(&outputs, &devices);
    } else {
        eprintln!("hardware adapter: gpu held to float64 only, not to the reference's bits");
    }
}
