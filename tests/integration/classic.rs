//! The classic optimizers of SPEC §3 (torch.optim's SGD, RMSprop, Adam and AdamW): three steps
//! against trajectories computed by hand, on the CPU reference and on the GPU; state allocated
//! only for the options that need it; invalid options rejected with errors that name the field.

use crate::common;

use bayesprop::optim::{AdamConfig, AdamVariant, RmspropConfig, SgdConfig, TABLE};
use bayesprop::{
    BayesConfig, CpuOptimizer, Error, GpuContext, GpuOptimizer, Optimizer, OptimizerConfig, Stepper,
};

const THETA0: [f32; 3] = [1.0, -2.0, 0.5];
/// The gradient of steps 1, 2, 3. Elements 1 and 2 shrink at step 2, so v falls below its
/// running maximum and amsgrad makes a difference.
const GRADS: [[f32; 3]; 3] = [[0.1, -0.2, 0.3], [0.2, 0.01, -0.01], [-0.3, 0.4, 0.05]];

/// One trajectory: θ after each of the 3 steps, and some state after step 3.
struct Trajectory {
    config: OptimizerConfig,
    theta: [[f64; 3]; 3],
    state: &'static [(&'static str, [f64; 3])],
}

// The expected numbers below were computed by hand, as a small f64 calculation (plain Python
// floats, 10 significant digits kept) of the update equations in the algorithm boxes of
// torch.optim's SGD, RMSprop, Adam and AdamW documentation, from THETA0 and GRADS above. Neither
// PyTorch nor this crate was run to get them. Example, sgd lr=0.1 wd=0.1 element 0, step 1:
// g = 0.1 + 0.1·1 = 0.2, θ = 1 − 0.1·0.2 = 0.98.

fn sgd_trajectories() -> Vec<Trajectory> {
    vec![
        Trajectory {
            config: SgdConfig {
                lr: 0.1,
                weight_decay: 0.1,
                ..Default::default()
            }
            .into(),
            theta: [
                [0.98, -1.96, 0.465],
                [0.9502, -1.9414, 0.46135],
                [0.970698, -1.961986, 0.4517365],
            ],
            state: &[],
        },
        Trajectory {
            config: SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                dampening: 0.5,
                ..Default::default()
            }
            .into(),
            // Step 1 takes b = g undamped (torch's first step); dampening acts from step 2.
            theta: [
                [0.99, -1.98, 0.47],
                [0.971, -1.9625, 0.4435],
                [0.9689, -1.96675, 0.41715],
            ],
            state: &[("b", [0.021, 0.0425, 0.2635])],
        },
        Trajectory {
            config: SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                nesterov: true,
                weight_decay: 0.1,
                ..Default::default()
            }
            .into(),
            theta: [
                [0.962, -1.924, 0.4335],
                [0.889522, -1.856944, 0.3988135],
                [0.891048882, -1.853727664, 0.3535196935],
            ],
            state: &[("b", [0.2175322, -0.2738544, 0.40339635])],
        },
    ]
}

fn rmsprop_trajectories() -> Vec<Trajectory> {
    vec![
        Trajectory {
            config: RmspropConfig {
                lr: 0.01,
                alpha: 0.9,
                ..Default::default()
            }
            .into(),
            theta: [
                [0.9683772334, -1.968377228, 0.4683772267],
                [0.9398058089, -1.970041585, 0.4694876525],
                [0.9657121947, -1.99887233, 0.4637329186],
            ],
            state: &[("v", [0.01341, 0.019249, 0.007549])],
        },
        Trajectory {
            config: RmspropConfig {
                lr: 0.01,
                alpha: 0.9,
                centered: true,
                momentum: 0.5,
                weight_decay: 0.1,
                ..Default::default()
            }
            .into(),
            theta: [
                [0.9666666722, -1.966666669, 0.4666666698],
                [0.9205228629, -1.934705623, 0.4463190933],
                [0.9144317503, -1.933497374, 0.4263052707],
            ],
            state: &[
                ("v", [0.01548522519, 0.02036144087, 0.01093901983]),
                ("a", [0.02210522868, -0.02854705626, 0.04111319096]),
                ("b", [0.6091112675, -0.1208249033, 2.001382263]),
            ],
        },
    ]
}

fn adam_trajectories() -> Vec<Trajectory> {
    vec![
        Trajectory {
            config: AdamConfig {
                lr: 0.1,
                weight_decay: 0.1,
                ..AdamConfig::adam()
            }
            .into(),
            theta: [
                [0.900000005, -1.900000002, 0.4000000029],
                [0.8007033204, -1.80835165, 0.3268810497],
                [0.7694517622, -1.77356294, 0.2572156794],
            ],
            state: &[
                ("m", [0.02030703325, -0.02668351652, 0.03931881052]),
                ("v", [0.0001723049991, 0.000240080985, 0.0001299915452]),
            ],
        },
        Trajectory {
            config: AdamConfig {
                lr: 0.1,
                beta2: 0.9,
                amsgrad: true,
                ..AdamConfig::adam()
            }
            .into(),
            theta: [
                [0.90000001, -1.900000005, 0.4000000033],
                [0.8049563547, -1.838334528, 0.3371253979],
                [0.8114257778, -1.872533118, 0.2796194964],
            ],
            state: &[
                ("m", [-0.0039, 0.0247, 0.0284]),
                ("v", [0.01341, 0.019249, 0.007549]),
                ("v_max", [0.01341, 0.019249, 0.009]),
            ],
        },
        Trajectory {
            // Decoupled: θ ← θ·(1 − 0.1·0.1) before each step, and m, v see the raw gradient.
            config: AdamConfig {
                lr: 0.1,
                weight_decay: 0.1,
                ..AdamConfig::adamw()
            }
            .into(),
            theta: [
                [0.89000001, -1.880000005, 0.3950000033],
                [0.7845818134, -1.797995765, 0.3265617309],
                [0.7833958965, -1.815296284, 0.2636187663],
            ],
            state: &[
                ("m", [-0.0039, 0.0247, 0.0284]),
                ("v", [0.00013994001, 0.00020001994, 9.241999e-05]),
            ],
        },
    ]
}

fn follow(stepper: &mut dyn Stepper, expected: &Trajectory, on: &str) {
    let name = format!("{on} {:?}", expected.config);
    for (t, (grad, theta)) in GRADS.iter().zip(&expected.theta).enumerate() {
        stepper.step(grad).unwrap();
        common::assert_close(
            &stepper.theta().unwrap(),
            theta,
            &format!("{name}: theta after step {}", t + 1),
        );
    }
    for (state, want) in expected.state {
        common::assert_close(
            &stepper.state(state).unwrap(),
            want,
            &format!("{name}: {state} after step 3"),
        );
    }
}

fn follow_everywhere(test: &str, trajectories: Vec<Trajectory>) {
    let ctx = common::gpu(test);
    for expected in &trajectories {
        let mut reference = CpuOptimizer::reference(expected.config.clone(), &THETA0).unwrap();
        follow(&mut reference, expected, "reference");
        if let Some(ctx) = &ctx {
            let mut gpu = GpuOptimizer::new(ctx, expected.config.clone(), &THETA0).unwrap();
            follow(&mut gpu, expected, "gpu");
        }
    }
}

#[test]
fn sgd_follows_the_hand_computed_trajectories() {
    follow_everywhere(
        "sgd_follows_the_hand_computed_trajectories",
        sgd_trajectories(),
    );
}

#[test]
fn rmsprop_follows_the_hand_computed_trajectories() {
    follow_everywhere(
        "rmsprop_follows_the_hand_computed_trajectories",
        rmsprop_trajectories(),
    );
}

#[test]
fn adam_and_adamw_follow_the_hand_computed_trajectories() {
    follow_everywhere(
        "adam_and_adamw_follow_the_hand_computed_trajectories",
        adam_trajectories(),
    );
}

/// Every device's stepper for `config`, from θ₀ = `THETA0`.
fn steppers(ctx: &Option<GpuContext>, config: &OptimizerConfig) -> Vec<Box<dyn Stepper>> {
    common::devices(ctx.as_ref())
        .into_iter()
        .map(|(_, mut make)| make(config.clone(), &THETA0))
        .collect()
}

#[test]
fn options_that_need_no_state_allocate_none() {
    let ctx = common::gpu("options_that_need_no_state_allocate_none");
    let sgd = SgdConfig::default;
    let rmsprop = RmspropConfig::default;
    let cases: Vec<(OptimizerConfig, &[&str])> = vec![
        (sgd().into(), &[]),
        (
            SgdConfig {
                momentum: 0.9,
                ..sgd()
            }
            .into(),
            &["b"],
        ),
        (rmsprop().into(), &["v"]),
        (
            RmspropConfig {
                centered: true,
                ..rmsprop()
            }
            .into(),
            &["v", "a"],
        ),
        (
            RmspropConfig {
                momentum: 0.9,
                ..rmsprop()
            }
            .into(),
            &["v", "b"],
        ),
        (
            RmspropConfig {
                centered: true,
                momentum: 0.9,
                ..rmsprop()
            }
            .into(),
            &["v", "a", "b"],
        ),
        (AdamConfig::adam().into(), &["m", "v"]),
        (AdamConfig::adamw().into(), &["m", "v"]),
        (
            AdamConfig {
                amsgrad: true,
                ..AdamConfig::adamw()
            }
            .into(),
            &["m", "v", "v_max"],
        ),
    ];
    for (config, used) in cases {
        assert_eq!(config.used_state_names(), used, "{config:?}");
        // Read θ, g and each used state; write θ and each used state.
        assert_eq!(
            config.as_dyn().bytes_per_element(),
            4 * (3 + 2 * used.len()),
            "{config:?}"
        );
        let slots = config.as_dyn().state_slots();
        for mut stepper in steppers(&ctx, &config) {
            // A step runs the kernel with placeholders bound to the unused slots.
            stepper.step(&GRADS[0]).unwrap();
            for slot in &slots {
                let read = stepper.state(slot.name);
                if used.contains(&slot.name) {
                    assert_eq!(read.unwrap().len(), THETA0.len());
                } else {
                    assert!(
                        matches!(&read, Err(Error::Unknown { what: "state", name, .. }) if name == slot.name),
                        "{config:?}: state {} is unused but reads as {read:?}",
                        slot.name
                    );
                }
            }
        }
    }
}

#[test]
fn sgd_momentum_starts_at_the_first_applied_step() {
    // A skipped step (non-finite gradient, default policy SkipStep) does not advance t, so
    // the buffer still starts as the gradient of the first step that is applied.
    let ctx = common::gpu("sgd_momentum_starts_at_the_first_applied_step");
    let config: OptimizerConfig = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        dampening: 0.5,
        ..Default::default()
    }
    .into();
    for mut stepper in steppers(&ctx, &config) {
        stepper.step(&[f32::NAN, 1.0, 1.0]).unwrap();
        stepper.step(&GRADS[0]).unwrap();
        assert_eq!(stepper.steps_taken().unwrap(), 1);
        assert_eq!(stepper.state("b").unwrap(), GRADS[0]);
    }
}

fn config_error(result: bayesprop::Result<impl std::fmt::Debug>) -> (&'static str, &'static str) {
    match result {
        Err(Error::Config {
            optimizer, field, ..
        }) => (optimizer, field),
        other => panic!("expected a Config error, got {other:?}"),
    }
}

#[test]
fn invalid_options_give_errors_that_name_the_field() {
    let sgd = SgdConfig::builder;
    let rmsprop = RmspropConfig::builder;
    let adam = || AdamConfig::builder(AdamVariant::Adam);
    let adamw = || AdamConfig::builder(AdamVariant::AdamW);
    let cases = [
        (config_error(sgd().lr(-0.1).build()), ("sgd", "lr")),
        (config_error(sgd().lr(f64::NAN).build()), ("sgd", "lr")),
        (
            config_error(sgd().momentum(-0.9).build()),
            ("sgd", "momentum"),
        ),
        (
            config_error(sgd().dampening(f64::INFINITY).build()),
            ("sgd", "dampening"),
        ),
        (
            config_error(sgd().weight_decay(-1e-4).build()),
            ("sgd", "weight_decay"),
        ),
        // torch: "Nesterov momentum requires a momentum and zero dampening".
        (
            config_error(sgd().nesterov(true).build()),
            ("sgd", "nesterov"),
        ),
        (
            config_error(sgd().nesterov(true).momentum(0.9).dampening(0.1).build()),
            ("sgd", "nesterov"),
        ),
        (config_error(rmsprop().lr(-1.0).build()), ("rmsprop", "lr")),
        (
            config_error(rmsprop().alpha(-0.5).build()),
            ("rmsprop", "alpha"),
        ),
        (
            config_error(rmsprop().eps(-1e-8).build()),
            ("rmsprop", "eps"),
        ),
        (
            config_error(rmsprop().momentum(-0.1).build()),
            ("rmsprop", "momentum"),
        ),
        (
            config_error(rmsprop().weight_decay(f64::NAN).build()),
            ("rmsprop", "weight_decay"),
        ),
        (config_error(adam().beta1(1.0).build()), ("adam", "beta1")),
        (config_error(adam().beta1(-0.1).build()), ("adam", "beta1")),
        (config_error(adam().beta2(1.0).build()), ("adam", "beta2")),
        (config_error(adam().eps(-1e-8).build()), ("adam", "eps")),
        (
            config_error(adam().lr(f64::INFINITY).build()),
            ("adam", "lr"),
        ),
        (
            config_error(adam().weight_decay(-0.01).build()),
            ("adam", "weight_decay"),
        ),
        (config_error(adamw().beta2(1.5).build()), ("adamw", "beta2")),
        // Finite in f64, but the factor 1 − lr·λ the kernel gets in f32 would not be.
        (
            config_error(adamw().lr(1e30).weight_decay(1e30).build()),
            ("adamw", "weight_decay"),
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got, want);
    }

    // The valid edges are accepted, as torch accepts them.
    sgd().lr(0.0).nesterov(true).momentum(0.9).build().unwrap();
    rmsprop().alpha(0.0).eps(0.0).build().unwrap();
    adam().beta1(0.0).beta2(0.0).eps(0.0).build().unwrap();

    // The CLI's `--set`: unparsable values name the field, unknown keys are `Unknown`.
    assert_eq!(
        config_error(OptimizerConfig::from_settings("adam", [("beta1", "0.9x")])),
        ("adam", "beta1")
    );
    assert_eq!(
        config_error(OptimizerConfig::from_settings("sgd", [("nesterov", "yes")])),
        ("sgd", "nesterov")
    );
    assert_eq!(
        config_error(OptimizerConfig::from_settings(
            "sgd",
            [("nesterov", "true")]
        )),
        ("sgd", "nesterov")
    );
    match OptimizerConfig::from_settings("rmsprop", [("amsgrad", "true")]) {
        Err(Error::UnknownOption {
            optimizer,
            key,
            known,
        }) => {
            assert_eq!((optimizer, key.as_str()), ("rmsprop", "amsgrad"));
            assert!(known.contains("centered"), "{known}");
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
    match OptimizerConfig::default_for("no_such_optimizer") {
        Err(Error::Unknown { what, known, .. }) => {
            assert_eq!(what, "optimizer");
            // the table's optimizers, then its presets
            let optimizers = TABLE.iter().filter(|row| !row.preset);
            let presets = TABLE.iter().filter(|row| row.preset);
            let names: Vec<_> = optimizers.chain(presets).map(|row| row.name).collect();
            assert_eq!(known, names.join(", "));
            for name in [
                "bayes", "sgd", "rmsprop", "adam", "adamw", "lion", "bayes_fp",
            ] {
                assert!(names.contains(&name), "{name} in {known}");
            }
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
}

#[test]
fn every_name_has_torchs_defaults_and_settings_keep_the_variant() {
    let names: Vec<_> = OptimizerConfig::all_defaults()
        .iter()
        .map(|c| c.name())
        .collect();
    let optimizers: Vec<_> = TABLE.iter().filter(|r| !r.preset).map(|r| r.name).collect();
    assert_eq!(
        names, optimizers,
        "every optimizer row is its default's name"
    );
    for config in OptimizerConfig::all_defaults() {
        assert_eq!(OptimizerConfig::default_for(config.name()).unwrap(), config);
        config.validate().unwrap();
    }
    assert_eq!(
        OptimizerConfig::default_for("bayes_adam").unwrap(),
        BayesConfig::bayes_adam().into()
    );
    assert_eq!(
        OptimizerConfig::default_for("sgd").unwrap(),
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
        .into()
    );
    assert_eq!(
        OptimizerConfig::default_for("rmsprop").unwrap(),
        RmspropConfig {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
        }
        .into()
    );
    let adam = AdamConfig::adam();
    assert_eq!(
        (adam.lr, adam.beta1, adam.beta2, adam.eps, adam.weight_decay),
        (1e-3, 0.9, 0.999, 1e-8, 0.0)
    );
    assert!(!adam.amsgrad);
    assert_eq!(
        AdamConfig::adamw(),
        AdamConfig {
            variant: AdamVariant::AdamW,
            weight_decay: 1e-2,
            ..adam
        }
    );
    // adam and adamw share one kernel; the difference is in the uniforms.
    assert_eq!(adam.kernel().name, AdamConfig::adamw().kernel().name);
    assert_ne!(adam.uniform_bytes(1), AdamConfig::adamw().uniform_bytes(1));

    let config = OptimizerConfig::from_settings(
        "adamw",
        [("weight_decay", "0.5"), ("amsgrad", "true"), ("lr", "3e-4")],
    )
    .unwrap();
    assert_eq!(
        config,
        AdamConfig {
            lr: 3e-4,
            weight_decay: 0.5,
            amsgrad: true,
            ..AdamConfig::adamw()
        }
        .into()
    );
    assert_eq!(config.name(), "adamw");
}
