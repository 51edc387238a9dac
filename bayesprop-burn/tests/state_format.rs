//! Low-precision optimizer state (bayesprop's rules, §6) through burn: the per-tensor path
//! (burn's `ModuleOptimizer`) and the fused module-level step hold the state in `bf16` as
//! bayesprop's own optimizer does, bit for bit, and burn's records carry it as held.

mod common;

use bayesprop::{GpuOptimizer, OptimizerConfig, ParamGroups, StateFormat, Stepper};
use bayesprop_burn::BayespropConfig;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use common::{bits, flat, flat_grads, grads, params, ranks, Mlp};

const LR: f64 = 3e-3;
const SEED: u32 = 11;

/// bayesprop's own optimizer over the model's parameters in `format`: one group holding every
/// tensor (the fused step's layout), or one group per tensor (the per-tensor path's, where
/// each tensor's flat order, so its random bits, starts at 0).
fn reference<M: Module>(
    device: &Device,
    model: &M,
    config: &OptimizerConfig,
    format: StateFormat,
    group_per_tensor: bool,
) -> GpuOptimizer {
    let ctx = bayesprop_burn::shared_context(device).unwrap();
    let mut groups = ParamGroups::new();
    let mut group = None;
    for (k, (id, shape, values)) in params(model).into_iter().enumerate() {
        if group.is_none() || group_per_tensor {
            let g = groups.add_group(&format!("g{k}"), config.clone()).unwrap();
            groups.set_state_format(g, format, SEED).unwrap();
            group = Some(g);
        }
        let name = id.val().to_string();
        groups
            .add_tensor(group.unwrap(), &name, &shape, &values)
            .unwrap();
    }
    GpuOptimizer::from_groups(&ctx, &groups).unwrap()
}

fn configs() -> Vec<OptimizerConfig> {
    let mut configs = vec![
        OptimizerConfig::default_for("bayes").unwrap(),
        OptimizerConfig::default_for("adamw").unwrap(),
        OptimizerConfig::default_for("bayes_fp").unwrap(),
    ];
    for config in &mut configs {
        let _ = config.as_dyn_mut().set("lr", &LR.to_string());
    }
    configs
}

fn held(config: &OptimizerConfig) -> BayespropConfig {
    BayespropConfig::new(config.clone()).with_state_format(StateFormat::Bf16, SEED)
}

#[test]
fn bf16_state_steps_through_both_paths_as_bayesprop_does() {
    let device = common::device();
    for config in configs() {
        let name = config.name();
        let start = Mlp::new(&device);
        let ids = ranks(&start);
        for group_per_tensor in [true, false] {
            let mut expected = reference(
                &device,
                &start,
                &config,
                StateFormat::Bf16,
                group_per_tensor,
            );
            let mut model = start.clone();
            let (mut per_tensor, mut fused) = (
                ModuleOptimizer::from(held(&config).build().unwrap()),
                held(&config).init(),
            );
            for t in 0..6 {
                let g = grads(&model, &device, t);
                expected.step(&flat_grads(&g, &ids)).unwrap();
                model = match group_per_tensor {
                    true => per_tensor.step(LR, model, g),
                    false => fused.step(LR, model, g),
                };
            }
            let path = if group_per_tensor {
                "per tensor"
            } else {
                "fused"
            };
            assert_eq!(
                bits(&flat(&model)),
                bits(&expected.theta().unwrap()),
                "{name} bf16, {path}: θ after 6 steps"
            );
        }
        // Not f32's bits: the state really is held in bf16.
        let mut f32_model = start.clone();
        let mut f32_optim =
            ModuleOptimizer::from(BayespropConfig::new(config.clone()).build().unwrap());
        let mut bf16_model = start.clone();
        let mut bf16_optim = ModuleOptimizer::from(held(&config).build().unwrap());
        for t in 0..6 {
            f32_model = f32_optim.step(LR, f32_model, grads(&start, &device, t));
            bf16_model = bf16_optim.step(LR, bf16_model, grads(&start, &device, t));
        }
        assert_ne!(bits(&flat(&f32_model)), bits(&flat(&bf16_model)), "{name}");
    }
}

#[test]
fn a_bf16_run_resumed_from_burns_record_goes_on_bit_for_bit() {
    let device = common::device();
    for config in configs() {
        let name = config.name();
        let build = || ModuleOptimizer::from(held(&config).build().unwrap());
        let (straight, resumed) = common::straight_and_resumed(&device, LR, build);
        assert_eq!(
            bits(&resumed),
            bits(&straight),
            "{name} bf16: θ after resuming from burn's record"
        );
    }
}
