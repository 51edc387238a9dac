//! The adapter against bayesprop's own optimizer: every step bit for bit, state as burn
//! tensors, resume, aliasing and errors.

mod common;

use bayesprop::{OptimizerConfig, Stepper, TensorId};
use bayesprop_burn::{BayesConfig, BayespropConfig, Error};
use common::{bits, flat, flat_grads, grads, host, ranks, reference, Mlp};

const LR: f64 = 3e-3;

#[test]
fn every_optimizer_of_the_table_steps_burns_parameters_as_bayesprop_does() {
    let device = common::device();
    for mut config in OptimizerConfig::all_defaults() {
        // burn's learning rate replaces the config's; bayes has none and ignores it.
        let _ = config.as_dyn_mut().set("lr", &LR.to_string());
        let mut model = Mlp::new(&device);
        let ids = ranks(&model);
        let mut expected = reference(&device, &model, &config);
        let mut optim = BayespropConfig::new(config.clone()).init();
        for t in 0..6 {
            let g = grads(&model, &device, t);
            expected.step(&flat_grads(&g, &ids)).unwrap();
            model = optim.try_step(LR, model, g).unwrap();
        }
        let name = config.name();
        assert_eq!(
            bits(&flat(&model)),
            bits(&expected.theta().unwrap()),
            "{name}: θ after 6 steps through burn vs bayesprop's own step"
        );
        let derived = config.as_dyn().derived_state_names().iter().copied();
        for state in config.used_state_names().into_iter().chain(derived) {
            let (weight, _) = ids[0];
            let through_burn = host(optim.state::<2>(weight, state).unwrap());
            let own = expected.tensor_state(TensorId(0), state).unwrap();
            assert_eq!(bits(&through_burn), bits(&own), "{name}: state {state}");
        }
    }
}

#[test]
fn sigma_reads_back_as_a_burn_tensor_of_the_parameters_shape() {
    let device = common::device();
    let mut model = Mlp::new(&device);
    let mut optim = BayesConfig::new().with_eta(1e-3).init();
    for t in 0..3 {
        let g = grads(&model, &device, t);
        model = optim.step(LR, model, g);
    }
    let sigma = optim.sigma::<2>(model.a.weight.id).unwrap();
    assert_eq!(sigma.dims(), [common::INPUTS, 7]);
    let values = host(sigma);
    // An element whose gradient was 0 at every step (a dead ReLU, depending on the draw of
    // the weights, which tests running in parallel share) keeps σ = 0: no belief yet.
    assert!(
        values.iter().all(|s| s.is_finite() && *s >= 0.0),
        "{values:?}"
    );
    assert!(
        values.iter().filter(|&&s| s > 0.0).count() > values.len() / 2,
        "{values:?}"
    );
    let bias = optim.sigma::<1>(model.b.bias.as_ref().unwrap().id).unwrap();
    assert_eq!(bias.dims(), [common::OUTPUTS]);
    let err = optim.sigma::<1>(model.a.weight.id).unwrap_err();
    assert!(err.to_string().contains("rank 2"), "{err}");
}

#[test]
fn a_loaded_run_goes_on_bit_identically_and_a_clone_keeps_its_values() {
    let device = common::device();
    let dir = std::env::temp_dir().join(format!("bayesprop-burn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("optim.safetensors");

    let mut model = Mlp::new(&device);
    let mut optim = BayesConfig::new().with_momentum(0.9).init();
    for t in 0..3 {
        let g = grads(&model, &device, t);
        model = optim.step(LR, model, g);
    }
    optim.save(&path).unwrap();
    // A clone shares burn's buffers: stepping the original must not change it.
    let snapshot = model.clone();
    let at_save = flat(&snapshot);
    for t in 3..6 {
        let g = grads(&model, &device, t);
        model = optim.step(LR, model, g);
    }
    assert_eq!(bits(&flat(&snapshot)), bits(&at_save), "the clone changed");
    assert_ne!(
        bits(&flat(&model)),
        bits(&at_save),
        "the model did not move"
    );

    let mut resumed = BayesConfig::new().with_momentum(0.9).init();
    resumed.load(&path).unwrap();
    let mut other = snapshot;
    for t in 3..6 {
        let g = grads(&other, &device, t);
        other = resumed.step(LR, other, g);
    }
    assert_eq!(bits(&flat(&other)), bits(&flat(&model)), "θ after resume");
    let weight = model.a.weight.id;
    assert_eq!(
        bits(&host(resumed.sigma::<2>(weight).unwrap())),
        bits(&host(optim.sigma::<2>(weight).unwrap())),
        "σ after resume"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_an_error_and_the_module_comes_back_unchanged() {
    let device = common::device();
    let optim = BayesConfig::new().init();
    assert!(matches!(
        optim.sigma::<2>(burn::module::ParamId::new()),
        Err(Error::NotStarted(_))
    ));
    assert!(BayespropConfig::named("no_such_optimizer").is_err());

    let model = Mlp::new(&device);
    let before = flat(&model);
    let mut invalid = BayesConfig::new().with_eta(-1.0).init();
    let g = grads(&model, &device, 0);
    let failed = invalid.try_step(LR, model, g).unwrap_err();
    assert!(failed.to_string().contains("eta"), "{failed}");
    assert_eq!(bits(&flat(&failed.module)), bits(&before));

    // The arena holds the first step's parameters: another module's are refused.
    let mut optim = BayesConfig::new().init();
    let model = failed.module;
    let g = grads(&model, &device, 0);
    let model = optim.step(LR, model, g);
    let stranger = Mlp::new(&device);
    let before = flat(&stranger);
    let g = grads(&stranger, &device, 0);
    let failed = optim.try_step(LR, stranger, g).unwrap_err();
    assert!(matches!(failed.error, Error::Parameters(_)), "{failed}");
    assert_eq!(bits(&flat(&failed.module)), bits(&before));
    drop(model);
}

#[test]
fn burns_learning_rate_sets_lr_or_the_hyperparameter_named() {
    let device = common::device();
    let eta = |optim: &bayesprop_burn::BayespropOptimizer| match optim.config() {
        OptimizerConfig::Bayes(c) => c.eta,
        other => panic!("{other:?}"),
    };
    let lr = |optim: &bayesprop_burn::BayespropOptimizer| match optim.config() {
        OptimizerConfig::Adam(c) => c.lr,
        other => panic!("{other:?}"),
    };
    let mut model = Mlp::new(&device);

    // bayes has no lr: by default burn's is ignored; named, it sets η every step.
    let mut plain = BayespropConfig::bayes().init();
    let mut driven = BayespropConfig::bayes().with_lr_as("eta").init();
    for (t, step_lr) in [(0, 1e-3), (1, 5e-4)] {
        let (g, h) = (grads(&model, &device, t), grads(&model, &device, t));
        model = plain.step(step_lr, model, g);
        model = driven.step(step_lr, model, h);
        assert_eq!(eta(&driven), step_lr);
    }
    assert_eq!(eta(&plain), bayesprop::BayesConfig::default().eta);

    // adam's lr follows burn's unless told otherwise.
    let mut followed = BayespropConfig::adam().init();
    let mut kept = BayespropConfig::adam().without_lr().init();
    let (g, h) = (grads(&model, &device, 2), grads(&model, &device, 2));
    model = followed.step(0.25, model, g);
    model = kept.step(0.25, model, h);
    assert_eq!(lr(&followed), 0.25);
    assert_eq!(lr(&kept), 1e-3);

    // An unknown name is an error, and the module comes back unchanged.
    let before = flat(&model);
    let mut wrong = BayespropConfig::bayes().with_lr_as("etta").init();
    let g = grads(&model, &device, 3);
    let failed = wrong.try_step(LR, model, g).unwrap_err();
    assert!(failed.to_string().contains("etta"), "{failed}");
    assert_eq!(bits(&flat(&failed.module)), bits(&before));
}

#[test]
fn a_clone_held_across_steps_keeps_its_values_and_the_step_is_bayesprops() {
    let device = common::device();
    common::check_clones_held(&device, |config| {
        let mut optim = BayespropConfig::new(config).init();
        Box::new(move |model, grads| {
            optim
                .try_step(LR, model, grads)
                .unwrap_or_else(|e| panic!("{e}"))
        })
    });
}

/// The fused training step through burn: a loss scale and a clip of the global norm over every
/// parameter (burn clips per tensor only). Measuring the norm (M = inf) leaves θ bit for bit
/// bayesprop's own step; a clip that binds gives θ within 4 units of ε·(|θ| + the largest
/// movement) of it, because burn's tensors sit in burn's buffers, where the norm's partial
/// sums run per segment-table row, in another order than the arena's (tests/integration/
/// caller_tensors.rs measures 1.55 units there; 0.73 measured here).
#[test]
fn the_fused_training_step_unscales_and_clips_over_every_parameter() {
    use bayesprop::GradTransform;
    let device = common::device();
    let config: OptimizerConfig = bayesprop::optim::AdamConfig {
        lr: LR,
        ..bayesprop::optim::AdamConfig::adam()
    }
    .into();
    for clip_norm in [f32::INFINITY, 1e-4] {
        let transform = GradTransform {
            grad_scale: 8.0,
            clip_norm: Some(clip_norm),
            ..GradTransform::default()
        };
        let mut model = Mlp::new(&device);
        let theta0 = flat(&model);
        let ids = ranks(&model);
        let mut expected = reference(&device, &model, &config);
        expected.set_grad_transform(transform).unwrap();
        let mut optim = BayespropConfig::new(config.clone())
            .with_grad_scale(8.0)
            .with_clip_norm(clip_norm)
            .init();
        for t in 0..4 {
            let g = grads(&model, &device, t);
            expected.step(&flat_grads(&g, &ids)).unwrap();
            model = optim.try_step(LR, model, g).unwrap();
        }
        let ours = optim.inner().unwrap().norm_reports().unwrap();
        let theirs = expected.norm_reports().unwrap();
        assert_eq!(ours.len(), 4, "M = {clip_norm}");
        for (a, b) in ours.iter().zip(&theirs) {
            let ulps = bayesprop::ulp::ulp_distance(a.norm, b.norm);
            assert!(ulps <= 2, "M = {clip_norm}: norm {} vs {}", a.norm, b.norm);
            assert_eq!(
                a.factor < 1.0,
                clip_norm.is_finite(),
                "M = {clip_norm}: {a:?}"
            );
        }
        let (got, want) = (flat(&model), expected.theta().unwrap());
        if clip_norm.is_infinite() {
            assert_eq!(bits(&got), bits(&want), "θ, measuring only");
            continue;
        }
        let moved = want
            .iter()
            .zip(&theta0)
            .map(|(q, t0)| (q - t0).abs())
            .fold(0.0f32, f32::max) as f64;
        let worst = got
            .iter()
            .zip(&want)
            .map(|(p, q)| (p - q).abs() as f64 / (f32::EPSILON as f64 * (moved + q.abs() as f64)))
            .fold(0.0, f64::max);
        eprintln!("clipped through burn: worst θ difference {worst:.2} units");
        assert!(worst <= 4.0, "{worst:.2}");
    }
}
