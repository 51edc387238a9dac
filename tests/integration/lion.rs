//! `lion` (SPEC §3, Lion as lion-pytorch and optax): three steps against a trajectory computed by
//! hand, sign(0) = 0, decoupled weight decay, on the CPU reference and on the GPU; invalid
//! options rejected with errors that name the field.

use crate::common;

use bayesprop::optim::LionConfig;
use bayesprop::{CpuOptimizer, Error, GpuOptimizer, OptimizerConfig, Stepper};

const THETA0: [f32; 3] = [1.0, -2.0, 0.5];
/// The gradient of steps 1, 2, 3. At step 2 element 2's gradient is negative but the momentum
/// outweighs it in c, so the step follows m, not g.
const GRADS: [[f32; 3]; 3] = [[0.1, -0.2, 0.3], [0.2, 0.01, -0.01], [-0.3, 0.4, 0.05]];

// Computed by hand from SPEC §3's equations, lr = 0.1, β₁ = 0.9, β₂ = 0.99, from THETA0 and
// GRADS (neither lion-pytorch nor this crate was run). m₀ = 0, so step 1 moves along sign(g):
// θ₁ = [0.9, −1.9, 0.4], m₁ = 0.01·g = [0.001, −0.002, 0.003]. Step 2: c = 0.9·m₁ + 0.1·g =
// [0.0209, −0.0008, 0.0017]; m₂ = 0.99·m₁ + 0.01·g = [0.00299, −0.00188, 0.00287]. Step 3:
// c = [−0.027309, 0.038308, 0.007583]; m₃ = [−0.0000399, 0.0021388, 0.0033413].
const THETA: [[f64; 3]; 3] = [[0.9, -1.9, 0.4], [0.8, -1.8, 0.3], [0.9, -1.9, 0.2]];
const M3: [f64; 3] = [-0.0000399, 0.0021388, 0.0033413];

// The same with λ = 0.5, decoupled: each step first scales θ by 1 − lr·λ = 0.95, and m (hence
// every sign) is that of λ = 0: θ₁ = 0.95·θ₀ − 0.1·sign(c₁), and so on.
const THETA_DECAY: [[f64; 3]; 3] = [
    [0.85, -1.8, 0.375],
    [0.7075, -1.61, 0.25625],
    [0.772125, -1.6295, 0.1434375],
];

fn lion(lr: f64, beta1: f64, beta2: f64, weight_decay: f64) -> OptimizerConfig {
    LionConfig::builder()
        .lr(lr)
        .beta1(beta1)
        .beta2(beta2)
        .weight_decay(weight_decay)
        .build()
        .unwrap()
        .into()
}

/// The reference, and the GPU unless GPU tests are opted out.
fn steppers(test: &str, config: &OptimizerConfig, theta0: &[f32]) -> Vec<Box<dyn Stepper>> {
    let mut out: Vec<Box<dyn Stepper>> = vec![Box::new(
        CpuOptimizer::reference(config.clone(), theta0).unwrap(),
    )];
    if let Some(ctx) = common::gpu(test) {
        out.push(Box::new(
            GpuOptimizer::new(&ctx, config.clone(), theta0).unwrap(),
        ));
    }
    out
}

/// Steps `config` through GRADS on every stepper: θ after each step, then m after the last.
fn follow(test: &str, config: OptimizerConfig, theta: &[[f64; 3]; 3]) {
    for mut stepper in steppers(test, &config, &THETA0) {
        for (t, (grad, theta)) in GRADS.iter().zip(theta).enumerate() {
            stepper.step(grad).unwrap();
            common::assert_close(
                &stepper.theta().unwrap(),
                theta,
                &format!("θ after {}", t + 1),
            );
        }
        // With decay too: decoupled, it never enters g, so m is the same.
        common::assert_close(&stepper.state("m").unwrap(), &M3, "m after 3");
    }
}

#[test]
fn lion_follows_the_hand_computed_trajectory() {
    follow(
        "lion_follows_the_hand_computed_trajectory",
        lion(0.1, 0.9, 0.99, 0.0),
        &THETA,
    );
}

#[test]
fn weight_decay_is_decoupled_from_the_momentum() {
    follow(
        "weight_decay_is_decoupled_from_the_momentum",
        lion(0.1, 0.9, 0.99, 0.5),
        &THETA_DECAY,
    );
}

#[test]
fn a_zero_direction_leaves_theta_unchanged_to_the_bit() {
    // Step 1 with g = 0 and m = 0: c = 0. Then β₂ = 0 makes m₁ = g₁, and g₂ = −g₁ with β₁ = 0.5
    // gives c = 0.5·m₁ − 0.5·g₁ = 0 exactly (binary fractions), although g₂ ≠ 0.
    let theta0 = [1.0, -0.0, 0.0, 0.5];
    let g1 = [0.25, -0.5, 0.125, 0.0];
    let g2 = g1.map(|g: f32| -g);
    let config = lion(0.1, 0.5, 0.0, 0.0);
    for mut stepper in steppers(
        "a_zero_direction_leaves_theta_unchanged_to_the_bit",
        &config,
        &theta0,
    ) {
        stepper.step(&[0.0; 4]).unwrap();
        let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(stepper.theta().unwrap()),
            bits(theta0.to_vec()),
            "g = 0"
        );
        stepper.step(&g1).unwrap();
        let theta1 = stepper.theta().unwrap();
        assert_eq!(theta1, [0.9, 0.1, -0.1, 0.5]);
        stepper.step(&g2).unwrap();
        assert_eq!(bits(stepper.theta().unwrap()), bits(theta1), "c = 0, g ≠ 0");
        assert_eq!(stepper.state("m").unwrap(), g2, "β₂ = 0: m is the last g");
    }
}

#[test]
fn lion_has_its_defaults_and_rejects_what_spec_rules_out() {
    let default = OptimizerConfig::default_for("lion").unwrap();
    assert_eq!(default, lion(1e-4, 0.9, 0.99, 0.0));
    assert_eq!(default.used_state_names(), ["m"]);
    assert_eq!(default.as_dyn().bytes_per_element(), 20);

    for (key, value) in [
        ("lr", "-1"),
        ("beta1", "1"),
        ("beta2", "-0.1"),
        ("weight_decay", "-1e-3"),
        ("weight_decay", "1e40"),
        ("lr", "nan"),
    ] {
        match OptimizerConfig::from_settings("lion", [(key, value)]) {
            Err(Error::Config {
                optimizer, field, ..
            }) => assert_eq!((optimizer, field), ("lion", key), "{key}={value}"),
            other => panic!("{key}={value}: expected a Config error, got {other:?}"),
        }
    }
    match OptimizerConfig::from_settings("lion", [("eps", "1e-8")]) {
        Err(Error::UnknownOption {
            optimizer,
            key,
            known,
        }) => {
            assert_eq!((optimizer, key.as_str()), ("lion", "eps"));
            assert_eq!(known, "lr, beta1, beta2, weight_decay");
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
}
