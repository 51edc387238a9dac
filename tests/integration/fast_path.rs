//! The fast CPU path (`CpuPath::Parallel`: SIMD loops over parallel chunks) gives exactly the
//! reference's bits, for every optimizer config of the standard battery (so every optimizer
//! in the table and its options), across chunk boundaries and under every non-finite policy.
//! No FMA is involved anywhere on the CPU, so the claim is bit identity, not a tolerance.

use crate::common;

use bayesprop::cpu::PARALLEL_CHUNK;
use bayesprop::validate::{gradient, initial_theta, standard_battery};
use bayesprop::{CpuOptimizer, CpuPath, GradTransform, NonFinitePolicy, OptimizerConfig, Stepper};

/// Crosses two chunk boundaries, and its last chunk is not a multiple of any SIMD width.
const N: usize = 2 * PARALLEL_CHUNK + 1001;
const STEPS: u64 = 3;

/// Every distinct config of the battery: each optimizer of the table, with its options.
fn configs() -> Vec<(String, OptimizerConfig)> {
    let mut seen: Vec<(String, OptimizerConfig)> = Vec::new();
    for case in standard_battery() {
        if !seen.iter().any(|(_, c)| *c == case.config) {
            seen.push((case.name, case.config));
        }
    }
    let names: Vec<&str> = seen.iter().map(|(_, c)| c.name()).collect();
    for config in OptimizerConfig::all_defaults() {
        assert!(
            names.contains(&config.name()),
            "the battery has no case of {}",
            config.name()
        );
    }
    seen
}

#[test]
fn parallel_path_equals_the_reference_bit_for_bit() {
    let theta0 = initial_theta(N, 5);
    let grads: Vec<Vec<f32>> = (1..=STEPS).map(|t| gradient(N, 5, t)).collect();
    for (name, config) in configs() {
        let mut fast = CpuOptimizer::with_path(config.clone(), &theta0, CpuPath::Parallel).unwrap();
        let mut reference = CpuOptimizer::reference(config, &theta0).unwrap();
        for g in &grads {
            fast.step(g).unwrap();
            reference.step(g).unwrap();
        }
        common::assert_same_bits(
            &common::snapshot(&fast),
            &common::snapshot(&reference),
            &name,
        );
    }
}

/// The SIMD loop of a whole vector against the same update one element at a time (1-element
/// slices take the loop's scalar remainder): the SIMD width changes no bit.
#[test]
fn simd_loops_equal_one_element_at_a_time() {
    let n = 1003;
    let theta0 = initial_theta(n, 8);
    for (name, config) in configs() {
        let optimizer = config.as_dyn();
        let slots = optimizer.state_slots();
        let fresh = |slot: &bayesprop::optim::StateSlot| match slot.used {
            true => vec![slot.init; n],
            false => Vec::new(),
        };
        let (mut theta_a, mut theta_b) = (theta0.clone(), theta0.clone());
        let mut state_a: Vec<Vec<f32>> = slots.iter().map(fresh).collect();
        let mut state_b = state_a.clone();
        for t in 1..=STEPS {
            let g = gradient(n, 8, t);
            let mut whole: Vec<&mut [f32]> = state_a.iter_mut().map(|v| &mut v[..]).collect();
            optimizer.reference_step(t, &mut theta_a, &g, &mut whole);
            for i in 0..n {
                let mut one: Vec<&mut [f32]> = state_b
                    .iter_mut()
                    .map(|v| match v.is_empty() {
                        true => &mut v[..],
                        false => &mut v[i..i + 1],
                    })
                    .collect();
                optimizer.reference_step(t, &mut theta_b[i..i + 1], &g[i..i + 1], &mut one);
            }
        }
        let a: Vec<Vec<f32>> = std::iter::once(theta_a).chain(state_a).collect();
        let b: Vec<Vec<f32>> = std::iter::once(theta_b).chain(state_b).collect();
        common::assert_same_bits(&a, &b, &name);
    }
}

/// Non-finite gradients in some chunks and not others: every policy gives the reference's
/// bits, step counts and reports, without and with unscaling and clipping (then the norms
/// too).
#[test]
fn parallel_path_handles_non_finite_gradients_as_the_reference() {
    let theta0 = initial_theta(N, 6);
    let poisoned = |t: u64| {
        let mut g = gradient(N, 6, t);
        if t == 2 {
            g[7] = f32::NAN;
            g[PARALLEL_CHUNK + 3] = f32::INFINITY;
            g[N - 1] = f32::NEG_INFINITY;
        }
        g
    };
    let clipped = GradTransform {
        grad_scale: 256.0,
        clip_norm: Some(3.0),
        ..GradTransform::default()
    };
    let cases = OptimizerConfig::all_defaults()
        .into_iter()
        .flat_map(|c| NonFinitePolicy::ALL.map(|p| (c.clone(), p)))
        .flat_map(|(c, p)| [GradTransform::default(), clipped].map(|x| (c.clone(), p, x)));
    for (config, policy, transform) in cases {
        {
            let what = format!("{} {} {transform:?}", config.name(), policy.name());
            let make = |path| {
                let mut o = CpuOptimizer::with_path(config.clone(), &theta0, path)
                    .unwrap()
                    .with_nonfinite_policy(policy);
                o.set_grad_transform(transform).unwrap();
                o
            };
            let (mut fast, mut reference) = (make(CpuPath::Parallel), make(CpuPath::Reference));
            for t in 1..=4 {
                let g = poisoned(t);
                let (a, b) = (fast.step(&g), reference.step(&g));
                assert_eq!(a.is_err(), b.is_err(), "{what}: step {t}");
            }
            assert_eq!(
                fast.steps_taken().unwrap(),
                reference.steps_taken().unwrap(),
                "{what}"
            );
            assert_eq!(
                fast.step_reports().unwrap(),
                reference.step_reports().unwrap(),
                "{what}"
            );
            assert_eq!(
                fast.norm_reports().unwrap(),
                reference.norm_reports().unwrap(),
                "{what}"
            );
            common::assert_same_bits(
                &common::snapshot(&fast),
                &common::snapshot(&reference),
                &what,
            );
        }
    }
}
