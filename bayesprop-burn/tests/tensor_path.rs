//! burn's per-tensor `Optimizer` (the path of burn's `ModuleOptimizer` and `Learner`) against
//! bayesprop's own step: bit for bit, through burn's records, with clones held, and errors.

mod common;

use std::collections::BTreeMap;

use bayesprop::{OptimizerConfig, Stepper, TensorId};
use bayesprop_burn::{BayespropConfig, TensorState};
use burn::optim::{ModuleOptimizer, RecordState, StateSink, StateSource};
use burn::tensor::Tensor;
use common::{bits, flat, flat_grads, grads, host, ranks, reference, Mlp};

const LR: f64 = 3e-3;

/// Every row of the table, with burn's learning rate in its `lr`, plus the options that add a
/// state vector (bayes's momentum, adam's AMSGrad).
fn configs() -> Vec<OptimizerConfig> {
    let mut configs = OptimizerConfig::all_defaults();
    configs.push(
        bayesprop::BayesConfig {
            momentum: 0.9,
            ..Default::default()
        }
        .into(),
    );
    configs.push(
        bayesprop::optim::AdamConfig {
            amsgrad: true,
            ..bayesprop::optim::AdamConfig::adam()
        }
        .into(),
    );
    for config in &mut configs {
        // burn's learning rate replaces the config's; bayes has none and ignores it.
        let _ = config.as_dyn_mut().set("lr", &LR.to_string());
    }
    configs
}

#[test]
fn every_row_steps_through_burns_module_optimizer_as_bayesprop_does() {
    let device = common::device();
    for config in configs() {
        let name = config.name();
        let mut model = Mlp::new(&device);
        let ids = ranks(&model);
        let mut expected = reference(&device, &model, &config);
        let mut optim =
            ModuleOptimizer::from(BayespropConfig::new(config.clone()).build().unwrap());
        for t in 0..6 {
            let g = grads(&model, &device, t);
            expected.step(&flat_grads(&g, &ids)).unwrap();
            model = optim.step(LR, model, g);
        }
        assert_eq!(
            bits(&flat(&model)),
            bits(&expected.theta().unwrap()),
            "{name}: θ after 6 steps through burn's ModuleOptimizer"
        );
    }
}

/// One tensor stepped through the trait directly: θ, every state vector and the step count
/// equal bayesprop's own.
#[test]
fn one_tensor_steps_with_its_state_as_bayesprop_does() {
    let device = common::device();
    for config in configs() {
        let name = config.name();
        let model = Mlp::new(&device);
        let weight = model.a.weight.id;
        let mut expected = reference(&device, &model, &config);
        let optim = BayespropConfig::new(config.clone()).build().unwrap();
        let mut theta: Tensor<2> = model.a.weight.val().inner();
        let mut state: Option<TensorState<2>> = None;
        for t in 0..5 {
            let g = grads(&model, &device, t);
            // The reference steps every tensor; only the first one is compared.
            expected.step(&flat_grads(&g, &ranks(&model))).unwrap();
            let grad = g.get::<2>(weight).unwrap();
            let (next, s) = optim.try_step(LR, theta, grad, state).unwrap();
            theta = next;
            state = Some(s);
        }
        let state = state.unwrap();
        assert_eq!(
            bits(&host(theta)),
            bits(&expected.tensor_values(TensorId(0)).unwrap()),
            "{name}: θ"
        );
        assert_eq!(state.steps().unwrap(), 5, "{name}: steps");
        for vector in config.used_state_names() {
            assert_eq!(
                bits(&state.vector(vector).unwrap()),
                bits(&expected.tensor_state(TensorId(0), vector).unwrap()),
                "{name}: state {vector}"
            );
        }
    }
}

/// A run resumed from burn's optimizer record, through its bytes (burnpack), goes on bit for
/// bit: the Learner's checkpointer saves and loads these records.
#[test]
fn a_run_resumed_from_burns_record_goes_on_bit_for_bit() {
    let device = common::device();
    for config in configs() {
        let name = config.name();
        let build = || ModuleOptimizer::from(BayespropConfig::new(config.clone()).build().unwrap());
        let (straight, resumed) = common::straight_and_resumed(&device, LR, build);
        assert_eq!(
            bits(&resumed),
            bits(&straight),
            "{name}: θ after resuming from burn's record"
        );
    }
}

/// A state as burn's record holds it: the sink's tensors and scalars, as a source.
fn source_of(sink: StateSink, steps: Option<u64>) -> StateSource {
    let mut scalars: BTreeMap<_, _> = sink.scalars.into_iter().collect();
    if let Some(steps) = steps {
        scalars.insert("p.steps".to_string(), burn_pack::Scalar::from(steps));
    }
    let mut source = StateSource::new(scalars);
    for (name, data) in sink.tensors {
        source.insert_tensor(name, data);
    }
    source
}

/// The restored step count is used (adam's bias correction depends on it): a record whose
/// count is off by one gives another θ, and one without a vector the optimizer uses is refused.
#[test]
fn a_records_step_count_and_vectors_are_what_the_resume_uses() {
    let device = common::device();
    let model = Mlp::new(&device);
    let weight = model.a.weight.id;
    let optim = BayespropConfig::adam().build().unwrap();
    let theta: Tensor<2> = model.a.weight.val().inner();
    let grad = |t| grads(&model, &device, t).get::<2>(weight).unwrap();
    let (theta, state) = optim.try_step(LR, theta, grad(0), None).unwrap();
    let (theta, state) = optim.try_step(LR, theta, grad(1), Some(state)).unwrap();
    let mut sink = StateSink::default();
    state.state_flatten("p", &mut sink);
    let names: Vec<_> = sink.tensors.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, ["p.m", "p.v"]);

    let restore = |steps: Option<u64>, drop_v: bool| {
        let mut sink = StateSink::default();
        state.state_flatten("p", &mut sink);
        if drop_v {
            sink.tensors.retain(|(n, _)| n != "p.v");
        }
        TensorState::<2>::state_unflatten("p", &mut source_of(sink, steps), &device).unwrap()
    };
    let copy = |t: &Tensor<2>| Tensor::<2>::from_data(t.to_data(), &t.device());
    let step = |state| optim.try_step(LR, copy(&theta), grad(2), Some(state));
    let (straight, _) = step(restore(None, false)).unwrap_or_else(|e| panic!("{e}"));
    let (again, _) = step(restore(None, false)).unwrap_or_else(|e| panic!("{e}"));
    let (off_by_one, _) = step(restore(Some(3), false)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bits(&host(again)), bits(&host(straight.clone())));
    assert_ne!(bits(&host(off_by_one)), bits(&host(straight)));

    let err = step(restore(None, true)).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("`v`"), "{err}");
    let (back, _) = err.module;
    assert_eq!(bits(&host(back)), bits(&host(theta.clone())));
}

/// A clone of burn's state (burn's records, a cloned Learner) is a snapshot: stepping one
/// leaves the other as it was.
#[test]
fn a_cloned_state_is_a_snapshot() {
    let device = common::device();
    let model = Mlp::new(&device);
    let weight = model.a.weight.id;
    let optim = BayespropConfig::bayes().build().unwrap();
    let theta: Tensor<2> = model.a.weight.val().inner();
    let grad = |t| grads(&model, &device, t).get::<2>(weight).unwrap();
    let (theta, state) = optim.try_step(LR, theta, grad(0), None).unwrap();
    let kept = state.clone();
    let sigma = kept.vector("sigma").unwrap();
    let (_, stepped) = optim.try_step(LR, theta, grad(1), Some(state)).unwrap();
    assert_eq!(bits(&kept.vector("sigma").unwrap()), bits(&sigma));
    assert_eq!(kept.steps().unwrap(), 1);
    assert_eq!(stepped.steps().unwrap(), 2);
    assert_ne!(bits(&stepped.vector("sigma").unwrap()), bits(&sigma));
}

#[test]
fn build_refuses_what_one_tensor_cannot_do() {
    let err = BayespropConfig::adam()
        .with_clip_norm(1.0)
        .build()
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("clip_norm"), "{err}");
    let invalid = bayesprop::BayesConfig {
        eta: -1.0,
        ..Default::default()
    };
    let err = BayespropConfig::new(invalid)
        .build()
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("eta"), "{err}");
}

#[test]
fn a_clone_of_the_module_held_across_steps_keeps_its_values() {
    let device = common::device();
    common::check_clones_held(&device, |config| {
        let mut optim = ModuleOptimizer::from(BayespropConfig::new(config).build().unwrap());
        Box::new(move |model, grads| optim.step(LR, model, grads))
    });
}
