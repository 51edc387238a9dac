//! SPEC §4: NaN and ±Inf gradients never reach the state, and each policy does exactly what it
//! says, on the reference, the parallel CPU path and the GPU.

use crate::common;

use bayesprop::validate::{gradient, initial_theta};
use bayesprop::{
    BayesConfig, CpuOptimizer, Error, GpuContext, GpuOptimizer, NonFinitePolicy, OptimizerConfig,
    StepReport, Stepper,
};

const N: usize = 1031;
const STEPS: u64 = 30;

/// Gradients with NaN, +Inf and -Inf injected at chosen elements and steps.
fn poisoned(t: u64) -> Vec<f32> {
    let mut g = gradient(N, 11, t);
    match t {
        3 => g[5] = f32::NAN,
        7 => {
            g[0] = f32::INFINITY;
            g[N - 1] = f32::NEG_INFINITY;
        }
        // Several steps in a row, more than the GPU's window of in-flight steps.
        12..=21 => g[100 + t as usize] = f32::NAN,
        _ => {}
    }
    g
}

fn count(g: &[f32]) -> u64 {
    g.iter().filter(|x| !x.is_finite()).count() as u64
}

/// Every optimizer, with the options that allocate all of its state.
fn configs() -> Vec<OptimizerConfig> {
    let with = |name, settings: &[(&str, &str)]| {
        OptimizerConfig::from_settings(name, settings.iter().copied()).unwrap()
    };
    vec![
        BayesConfig::default().into(),
        BayesConfig::bayes_adam().into(),
        with("sgd", &[("momentum", "0.9"), ("nesterov", "true")]),
        with("rmsprop", &[("momentum", "0.9"), ("centered", "true")]),
        with("adam", &[("amsgrad", "true"), ("weight_decay", "0.01")]),
        with("adamw", &[("amsgrad", "true")]),
    ]
}

#[test]
fn skip_step_equals_never_taking_the_step() {
    let ctx = common::gpu("skip_step_equals_never_taking_the_step");
    for (device, mut make) in common::devices(ctx.as_ref()) {
        for config in configs() {
            let theta0 = initial_theta(N, 11);
            let mut subject = make(config.clone(), &theta0);
            let mut clean = CpuOptimizer::reference(config.clone(), &theta0).unwrap();
            let mut expected_reports = Vec::new();
            for t in 1..=STEPS {
                let g = poisoned(t);
                subject.step(&g).unwrap();
                match count(&g) {
                    0 => clean.step(&g).unwrap(),
                    c => expected_reports.push(StepReport {
                        call: t,
                        group: 0,
                        nonfinite: c,
                        applied: false,
                    }),
                }
            }
            let what = format!("{device} {}", config.name());
            assert_eq!(subject.step_reports().unwrap(), expected_reports, "{what}");
            assert_eq!(
                subject.steps_taken().unwrap(),
                STEPS - 12,
                "{what}: skipped steps do not count"
            );
            common::assert_same_bits(
                &common::snapshot(&*subject),
                &common::snapshot(&clean),
                &what,
            );
            assert!(
                common::snapshot(&*subject)[0].iter().all(|x| x.is_finite()),
                "{what}"
            );
        }
    }
}

#[test]
fn skip_element_keeps_only_those_elements() {
    let ctx = common::gpu("skip_element_keeps_only_those_elements");
    let theta0 = initial_theta(N, 11);
    for config in configs() {
        skip_element_case(ctx.as_ref(), config, &theta0);
    }
}

fn skip_element_case(ctx: Option<&GpuContext>, config: OptimizerConfig, theta0: &[f32]) {
    let name = config.name();
    // The reference's own run, one step at a time, checking the skipped elements stay put.
    let mut reference = CpuOptimizer::reference(config.clone(), theta0)
        .unwrap()
        .with_nonfinite_policy(NonFinitePolicy::SkipElement);
    for t in 1..=STEPS {
        let g = poisoned(t);
        let before = common::snapshot(&reference);
        reference.step(&g).unwrap();
        let after = common::snapshot(&reference);
        for i in (0..N).filter(|&i| !g[i].is_finite()) {
            for (b, a) in before.iter().zip(&after) {
                assert_eq!(
                    b[i].to_bits(),
                    a[i].to_bits(),
                    "{name}: element {i} at step {t}"
                );
            }
        }
        let moved = (0..N)
            .filter(|&i| g[i] != 0.0 && before[0][i] != after[0][i])
            .count();
        assert!(moved > N / 2, "{name} step {t}: the other elements move");
    }
    assert_eq!(reference.steps_taken().unwrap(), STEPS);
    let expected = common::snapshot(&reference);
    let expected_reports = reference.step_reports().unwrap();
    assert_eq!(expected_reports.len(), 12);
    assert!(expected_reports.iter().all(|r| r.applied));

    for (device, mut make) in common::devices(ctx) {
        let mut subject = make(config.clone(), theta0);
        subject.set_nonfinite_policy(NonFinitePolicy::SkipElement);
        for t in 1..=STEPS {
            subject.step(&poisoned(t)).unwrap();
        }
        assert_eq!(
            subject.step_reports().unwrap(),
            expected_reports,
            "{name} on {device}"
        );
        assert_eq!(subject.steps_taken().unwrap(), STEPS, "{name} on {device}");
        common::assert_same_bits(
            &common::snapshot(&*subject),
            &expected,
            &format!("{name} on {device}"),
        );
    }
}

#[test]
fn error_policy_reports_the_count_and_changes_nothing() {
    let ctx = common::gpu("error_policy_reports_the_count_and_changes_nothing");
    for (device, mut make) in common::devices(ctx.as_ref()) {
        let theta0 = initial_theta(N, 11);
        let mut subject = make(BayesConfig::default().into(), &theta0);
        subject.set_nonfinite_policy(NonFinitePolicy::Error);
        // Steps 1–2 clean, 3 poisoned: the error comes from step 3 itself on the CPU, or from
        // the first later call that learns of it on the GPU. Either way it names step 3 and
        // one element, and that call changes nothing.
        let mut errors = Vec::new();
        for t in 1..=5 {
            if let Err(e) = subject.step(&poisoned(t)) {
                errors.push((t, e));
            }
        }
        if let Err(e) = subject.step_reports() {
            errors.push((0, e));
        }
        assert_eq!(errors.len(), 1, "{device}: {errors:?}");
        let (call, error) = &errors[0];
        assert!(
            matches!(
                error,
                Error::NonFinite {
                    step: 3,
                    group: 0,
                    count: 1
                }
            ),
            "{device}: {error}"
        );
        assert!(error.to_string().contains("1 non-finite"), "{error}");
        // The reference that skipped step 3 and also lost the call that returned the error.
        let mut expected = CpuOptimizer::reference(BayesConfig::default(), &theta0).unwrap();
        for t in (1..=5).filter(|&t| t != 3 && t != *call) {
            expected.step(&poisoned(t)).unwrap();
        }
        common::assert_same_bits(
            &common::snapshot(&*subject),
            &common::snapshot(&expected),
            device,
        );
    }
}

#[test]
fn policies_parse_from_their_cli_names() {
    for policy in NonFinitePolicy::ALL {
        assert_eq!(policy.name().parse::<NonFinitePolicy>().unwrap(), policy);
    }
    assert!(matches!(
        "skip".parse::<NonFinitePolicy>(),
        Err(Error::Unknown { .. })
    ));
}

#[test]
fn skip_step_with_many_steps_in_flight() {
    // Gradients made beforehand, so steps are submitted faster than the device runs them and
    // the window of in-flight steps fills up, with skips among them.
    let Some(ctx) = common::gpu("skip_step_with_many_steps_in_flight") else {
        return;
    };
    let n = 1 << 20;
    let theta0 = initial_theta(n, 5);
    let grads: Vec<Vec<f32>> = (1..=24u64)
        .map(|t| {
            let mut g = gradient(n, 5, t);
            if t % 3 == 0 {
                g[(t as usize * 7919) % n] = f32::NAN;
            }
            g
        })
        .collect();
    let config = BayesConfig::bayes_adam();
    let mut gpu = GpuOptimizer::new(&ctx, config, &theta0).unwrap();
    let mut clean = CpuOptimizer::new(config, &theta0).unwrap();
    for g in &grads {
        gpu.step(g).unwrap();
        if count(g) == 0 {
            clean.step(g).unwrap();
        }
    }
    assert_eq!(gpu.steps_taken().unwrap(), 16);
    common::assert_same_bits(
        &common::snapshot(&gpu),
        &common::snapshot(&clean),
        "gpu, many in flight",
    );
}

/// `Propagate` tests nothing: NaN and ±Inf flow into θ and the state exactly as the update's
/// arithmetic carries them, every step is applied and nothing is reported. On every device the
/// result is the reference's, NaN for NaN (any NaN: payloads are not part of SPEC) and every
/// number bit for bit; on clean gradients it is `SkipStep`'s step.
#[test]
fn propagate_lets_non_finite_values_flow_as_the_reference_does() {
    let ctx = common::gpu("propagate_lets_non_finite_values_flow_as_the_reference_does");
    let same = |a: f32, b: f32| (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits();
    for (device, mut make) in common::devices(ctx.as_ref()) {
        for config in configs() {
            let theta0 = initial_theta(N, 11);
            let what = format!("{device} {}", config.name());
            let mut subject = make(config.clone(), &theta0);
            subject.set_nonfinite_policy(NonFinitePolicy::Propagate);
            let mut reference = CpuOptimizer::reference(config.clone(), &theta0)
                .unwrap()
                .with_nonfinite_policy(NonFinitePolicy::Propagate);
            let mut clean = make(config.clone(), &theta0);
            for t in 1..=STEPS {
                let g = poisoned(t);
                subject.step(&g).unwrap();
                reference.step(&g).unwrap();
                if t < 3 {
                    clean.step(&g).unwrap();
                }
                if t == 2 {
                    // Before the first NaN: the same bits as the default policy.
                    common::assert_same_bits(
                        &common::snapshot(&*subject),
                        &common::snapshot(&*clean),
                        &format!("{what}: clean steps"),
                    );
                }
            }
            assert_eq!(subject.step_reports().unwrap(), Vec::new(), "{what}");
            assert_eq!(subject.steps_taken().unwrap(), STEPS, "{what}");
            let (got, want) = (common::snapshot(&*subject), common::snapshot(&reference));
            for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                let differ = a.iter().zip(b).position(|(&x, &y)| !same(x, y));
                assert_eq!(differ, None, "{what}: vector {k}");
            }
            // The NaN of step 3 reached θ at element 5.
            assert!(got[0][5].is_nan(), "{what}: θ[5] = {}", got[0][5]);
        }
    }
}
