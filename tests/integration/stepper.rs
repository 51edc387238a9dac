//! `Stepper` behaviour on every device: a gradient of the wrong length changes nothing, and
//! `set_config` between steps is validated, refused when it would change the state vectors,
//! and honoured from the next step on.

use crate::common;

use bayesprop::validate::{self, Oracle, Rule};
use bayesprop::{
    BayesConfig, CpuOptimizer, Error, GpuOptimizer, OptimizerConfig, SigmaInit, Stepper, Stored,
};

fn theta0(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37).sin()).collect()
}

fn grad(n: usize, t: u64) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 + 1.0) * 0.11 + t as f32 * 0.7).cos() * 0.5)
        .collect()
}

fn config() -> BayesConfig {
    BayesConfig::builder().eta(1e-2).build().unwrap()
}

fn check_length_mismatch(optimizer: &mut dyn Stepper, n: usize) {
    optimizer.step(&grad(n, 1)).unwrap();
    let before = optimizer.theta().unwrap();
    let sigma_before = optimizer.state("sigma").unwrap();
    let steps_before = optimizer.steps_taken().unwrap();
    for len in [0, n - 1, n + 1, 2 * n] {
        match optimizer.step(&vec![0.25; len]) {
            Err(Error::LengthMismatch { got, expected, .. }) => {
                assert_eq!((got, expected), (len, n));
            }
            other => panic!("gradient of {len} for {n}: expected LengthMismatch, got {other:?}"),
        }
    }
    let e = optimizer.step(&vec![0.25; n + 1]).unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains(&(n + 1).to_string()) && message.contains(&n.to_string()),
        "{message}"
    );
    assert_eq!(optimizer.theta().unwrap(), before, "θ changed");
    assert_eq!(optimizer.state("sigma").unwrap(), sigma_before, "σ changed");
    assert_eq!(
        optimizer.steps_taken().unwrap(),
        steps_before,
        "step counter changed"
    );
    // And the optimizer still steps afterwards.
    optimizer.step(&grad(n, 2)).unwrap();
    assert_eq!(optimizer.steps_taken().unwrap(), steps_before + 1);
    assert_ne!(optimizer.theta().unwrap(), before);
}

#[test]
fn cpu_step_with_wrong_length_changes_nothing() {
    let n = 17;
    check_length_mismatch(&mut CpuOptimizer::new(config(), &theta0(n)).unwrap(), n);
    check_length_mismatch(
        &mut CpuOptimizer::reference(config(), &theta0(n)).unwrap(),
        n,
    );
}

#[test]
fn gpu_step_with_wrong_length_changes_nothing() {
    let Some(ctx) = common::gpu("gpu_step_with_wrong_length_changes_nothing") else {
        return;
    };
    let n = 17;
    check_length_mismatch(
        &mut GpuOptimizer::new(&ctx, config(), &theta0(n)).unwrap(),
        n,
    );
}

fn check_set_config_refusals(optimizer: &mut dyn Stepper, n: usize) {
    optimizer.step(&grad(n, 1)).unwrap();
    let original = optimizer.config().clone();
    let with_momentum = BayesConfig {
        momentum: 0.9,
        ..config()
    };
    match optimizer.set_config(with_momentum.into()) {
        Err(
            e @ Error::Config {
                field: "config", ..
            },
        ) => {
            let message = e.to_string();
            assert!(message.contains("momentum"), "{message}");
            assert!(!message.contains('\n'), "multi-line: {message}");
        }
        other => panic!("turning momentum on: expected Error::Config, got {other:?}"),
    }
    assert_eq!(optimizer.config(), &original);
    // Invalid configs are refused before anything changes (built directly: `build` refuses).
    for (field, invalid) in [
        (
            "eta",
            BayesConfig {
                eta: -1.0,
                ..config()
            },
        ),
        (
            "beta",
            BayesConfig {
                beta: 1.0,
                ..config()
            },
        ),
        (
            "eps",
            BayesConfig {
                eps: f64::NAN,
                ..config()
            },
        ),
        (
            "sigma_init",
            BayesConfig {
                eta: 0.0,
                ..config()
            },
        ),
        // Invalid and with another state layout: either refusal is fine, but not Ok.
        (
            "momentum",
            BayesConfig {
                momentum: 1.0,
                ..config()
            },
        ),
    ] {
        match optimizer.set_config(invalid.into()) {
            Err(Error::Config { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: expected Error::Config, got {other:?}"),
        }
        assert_eq!(optimizer.config(), &original);
    }
    optimizer.step(&grad(n, 2)).unwrap();
    assert_eq!(optimizer.steps_taken().unwrap(), 2);
}

#[test]
fn cpu_set_config_refuses_momentum_and_invalid_configs() {
    let n = 9;
    check_set_config_refusals(&mut CpuOptimizer::new(config(), &theta0(n)).unwrap(), n);
}

#[test]
fn gpu_set_config_refuses_momentum_and_invalid_configs() {
    let Some(ctx) = common::gpu("gpu_set_config_refuses_momentum_and_invalid_configs") else {
        return;
    };
    let n = 9;
    check_set_config_refusals(
        &mut GpuOptimizer::new(&ctx, config(), &theta0(n)).unwrap(),
        n,
    );
}

#[test]
fn set_config_turning_momentum_off_is_refused() {
    let n = 5;
    let mut optimizer = CpuOptimizer::new(BayesConfig::bayes_adam(), &theta0(n)).unwrap();
    optimizer.step(&grad(n, 1)).unwrap();
    assert!(matches!(
        optimizer.set_config(BayesConfig::default().into()),
        Err(Error::Config {
            field: "config",
            ..
        })
    ));
    // Another β₁ > 0 keeps the layout.
    optimizer
        .set_config(
            BayesConfig {
                momentum: 0.5,
                ..BayesConfig::bayes_adam()
            }
            .into(),
        )
        .unwrap();
}

/// θ after 3 steps at eta = 1e-2, then 3 at `eta_after`, with `sigma_init` Value so that a
/// change of eta shows at once.
fn schedule(optimizer: &mut dyn Stepper, n: usize, eta_after: f64) -> (Vec<f32>, Vec<f32>) {
    for t in 1..=3 {
        optimizer.step(&grad(n, t)).unwrap();
    }
    let before = optimizer.theta().unwrap();
    let changed = BayesConfig {
        eta: eta_after,
        ..base_for_schedule()
    };
    optimizer.set_config(changed.into()).unwrap();
    assert_eq!(optimizer.config(), &OptimizerConfig::Bayes(changed));
    for t in 4..=6 {
        optimizer.step(&grad(n, t)).unwrap();
    }
    (before, optimizer.theta().unwrap())
}

fn base_for_schedule() -> BayesConfig {
    BayesConfig::builder()
        .eta(1e-2)
        .sigma_init(SigmaInit::Value(1e-3))
        .build()
        .unwrap()
}

/// The reference run with the same change, and one without it.
fn reference_runs(n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut changed = CpuOptimizer::reference(base_for_schedule(), &theta0(n)).unwrap();
    let (before, after) = schedule(&mut changed, n, 0.3);
    let mut unchanged = CpuOptimizer::reference(base_for_schedule(), &theta0(n)).unwrap();
    let (_, same) = schedule(&mut unchanged, n, 1e-2);
    assert_ne!(
        after, same,
        "the eta change made no difference to the reference"
    );
    (before, after, same)
}

#[test]
fn cpu_honours_eta_changes_between_steps() {
    let n = 33;
    let (ref_before, ref_after, _) = reference_runs(n);
    let mut cpu = CpuOptimizer::new(base_for_schedule(), &theta0(n)).unwrap();
    let (before, after) = schedule(&mut cpu, n, 0.3);
    assert_eq!(before, ref_before);
    assert_eq!(after, ref_after, "parallel CPU path after the change");
}

#[test]
fn gpu_honours_eta_changes_between_steps() {
    let Some(ctx) = common::gpu("gpu_honours_eta_changes_between_steps") else {
        return;
    };
    let rule = Rule::for_adapter(ctx.is_software());
    let n = 33;
    let (ref_before, ref_after, ref_same) = reference_runs(n);
    let (oracle_before, oracle_after) = oracle_run(n);
    let mut gpu = GpuOptimizer::new(&ctx, base_for_schedule(), &theta0(n)).unwrap();
    let (before, after) = schedule(&mut gpu, n, 0.3);
    if let Err(why) = validate::judge(rule, 3, &before, &ref_before, &oracle_before) {
        panic!("before the change: {why}");
    }
    if let Err(why) = validate::judge(rule, 6, &after, &ref_after, &oracle_after) {
        panic!("after the change: {why}");
    }
    // Honoured, not just close: the rule the GPU run passed refuses the run without the change.
    assert!(
        validate::judge(rule, 6, &ref_same, &ref_after, &oracle_after).is_err(),
        "the rule cannot tell the run without the change from the run with it"
    );
}

/// θ of the f64 oracle after the schedule's 3 steps before the change and 3 after it.
fn oracle_run(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut oracle = Oracle::new(&base_for_schedule().into(), &theta0(n));
    for t in 1..=3 {
        oracle.step(&grad(n, t));
    }
    let before = oracle.vector(Stored::Theta).to_vec();
    oracle.set_config(
        BayesConfig {
            eta: 0.3,
            ..base_for_schedule()
        }
        .into(),
    );
    for t in 4..=6 {
        oracle.step(&grad(n, t));
    }
    (before, oracle.vector(Stored::Theta).to_vec())
}
