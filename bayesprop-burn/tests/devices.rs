//! Two burn devices over one adapter, as burn-train's data-parallel strategy steps replicas:
//! each replica's parameters are stepped through bayesprop on its own device, with its own
//! optimizer state, and the replicas stay identical bit for bit.
//!
//! burn-train's DDP itself cannot run here: burn 0.22.1's wgpu backend has no all-reduce
//! between devices ("Can't use `all_reduce` on wgpu<wgsl>, which has no transport between its
//! devices", from `ExecutionStrategy::ddp` over these two devices). This test steps the
//! replicas the way its workers do, on the same gradients.

mod common;

use bayesprop::{OptimizerConfig, Stepper};
use bayesprop_burn::BayespropConfig;
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use common::{bits, flat, flat_grads, grads, ranks, reference, second_device, Mlp};

const LR: f64 = 3e-3;

/// `grads` of `model`'s parameters, copied to `device`.
fn copied(grads: &GradientsParams, model: &Mlp, device: &Device) -> GradientsParams {
    let mut out = GradientsParams::new();
    for (id, rank) in ranks(model) {
        match rank {
            1 => out.register(id, grads.get::<1>(id).unwrap().to_device(device)),
            2 => out.register(id, grads.get::<2>(id).unwrap().to_device(device)),
            _ => unreachable!("the test model has ranks 1 and 2"),
        }
    }
    out
}

#[test]
fn replicas_on_two_devices_step_identically_through_the_per_tensor_path() {
    let first = common::device();
    let second = second_device().autodiff();
    assert_ne!(first, second, "two burn devices");
    let configs = [
        OptimizerConfig::default_for("bayes").unwrap(),
        OptimizerConfig::default_for("adamw").unwrap(),
    ];
    for mut config in configs {
        // burn's learning rate replaces the config's; bayes has none and ignores it.
        let _ = config.as_dyn_mut().set("lr", &LR.to_string());
        let name = config.name();
        let mut a = Mlp::new(&first);
        let mut b = a.clone().fork(&second);
        assert_eq!(b.a.weight.val().device(), second);
        let mut expected = reference(&second, &b, &config);
        // Each replica has its own optimizer, as each data-parallel worker has its own clone.
        let build = || ModuleOptimizer::from(BayespropConfig::new(config.clone()).build().unwrap());
        let (mut on_first, mut on_second) = (build(), build());
        for t in 0..5 {
            // Data-parallel workers step on the all-reduced gradients, the same values on
            // every device: here the first device's, copied to the second. (burn's own
            // gradients of the same batch on the two devices can differ in the last bits:
            // its kernels are chosen per device.)
            let ga = grads(&a, &first, t);
            let gb = copied(&ga, &b, &second);
            expected.step(&flat_grads(&gb, &ranks(&b))).unwrap();
            a = on_first.step(LR, a, ga);
            b = on_second.step(LR, b, gb);
        }
        assert_eq!(
            b.a.weight.val().device(),
            second,
            "{name}: stays on its device"
        );
        assert_eq!(
            bits(&flat(&b)),
            bits(&expected.theta().unwrap()),
            "{name}: the second device's replica vs bayesprop's own step there"
        );
        assert_eq!(
            bits(&flat(&a)),
            bits(&flat(&b)),
            "{name}: the replicas after 5 steps"
        );
    }
}
