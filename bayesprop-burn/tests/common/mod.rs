//! A small burn model and data for the adapter's tests, on the device shared with bayesprop.
#![allow(dead_code)]

use std::sync::OnceLock;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

/// burn's wgpu device, set up once per test process (burn initialises a device kind once).
/// Without an adapter this fails with burn's message: a GPU test is never skipped.
pub fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let device = bayesprop_burn::init_device()
                .expect("burn's wgpu device (install mesa-vulkan-drivers for lavapipe)");
            device.seed(7);
            device
        })
        .clone()
        .autodiff()
}

/// A second wgpu device on the adapter burn's default device uses, requested the way cubecl
/// requests its own, registered with burn and bayesprop.
pub fn second_device() -> Device {
    let instance =
        burn::tensor::wgpu::wgpu::Instance::new(burn::tensor::wgpu::wgpu::InstanceDescriptor {
            backends: burn::tensor::wgpu::wgpu::Backends::VULKAN,
            ..burn::tensor::wgpu::wgpu::InstanceDescriptor::new_without_display_handle()
        });
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
        .expect("a Vulkan adapter (install mesa-vulkan-drivers for lavapipe)");
    let (device, queue) = pollster::block_on(
        adapter.request_device(&burn::tensor::wgpu::wgpu::DeviceDescriptor {
            required_features: adapter
                .features()
                .difference(burn::tensor::wgpu::wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
            required_limits: adapter.limits(),
            memory_hints: burn::tensor::wgpu::wgpu::MemoryHints::MemoryUsage,
            ..Default::default()
        }),
    )
    .expect("a second device on the adapter");
    let backend = adapter.get_info().backend;
    bayesprop_burn::register_setup(burn::tensor::wgpu::WgpuSetup {
        instance,
        adapter,
        device,
        queue,
        backend,
    })
    .expect("burn registers the second device")
}

/// Odd sizes on purpose: lengths that are not multiples of 4 take the kernels' scalar tails.
#[derive(Module, Debug)]
pub struct Mlp {
    pub a: Linear,
    pub b: Linear,
}

pub const INPUTS: usize = 13;
pub const OUTPUTS: usize = 3;

impl Mlp {
    pub fn new(device: &Device) -> Self {
        Mlp {
            a: LinearConfig::new(INPUTS, 7).init(device),
            b: LinearConfig::new(7, OUTPUTS).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.b.forward(relu(self.a.forward(x)))
    }
}

/// A deterministic batch `t` of a regression problem (no RNG: every run sees the same data).
pub fn batch(device: &Device, t: usize) -> (Tensor<2>, Tensor<2>) {
    let n = 16;
    let x: Vec<f32> = (0..n * INPUTS)
        .map(|i| (((i * 7 + t * 13) % 23) as f32 / 11.0 - 1.0) * 0.8)
        .collect();
    let y: Vec<f32> = (0..n * OUTPUTS)
        .map(|i| (((i * 5 + t * 3) % 17) as f32 / 8.0 - 1.0) * 0.5)
        .collect();
    (
        Tensor::<1>::from_floats(x.as_slice(), device).reshape([n, INPUTS]),
        Tensor::<1>::from_floats(y.as_slice(), device).reshape([n, OUTPUTS]),
    )
}

/// The gradients of the mean squared error on batch `t`.
pub fn grads(model: &Mlp, device: &Device, t: usize) -> GradientsParams {
    let (x, y) = batch(device, t);
    let loss = (model.forward(x) - y).powi_scalar(2).mean();
    GradientsParams::from_grads(loss.backward(), model)
}

pub fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.to_data().try_to_vec::<f32>().unwrap()
}

/// Every float parameter in visiting order: id, shape and values.
pub fn params<M: Module>(model: &M) -> Vec<(ParamId, Vec<usize>, Vec<f32>)> {
    struct Values(Vec<(ParamId, Vec<usize>, Vec<f32>)>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let stored: &Tensor<D> = param;
            self.0
                .push((param.id, stored.dims().to_vec(), host(stored.clone())));
        }
    }
    let mut values = Values(Vec::new());
    model.visit(&mut values);
    values.0
}

/// The bits of each value: θ and states are compared bit for bit.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Each parameter's id and rank, in visiting order.
pub fn ranks<M: Module>(model: &M) -> Vec<(ParamId, usize)> {
    params(model)
        .iter()
        .map(|(id, shape, _)| (*id, shape.len()))
        .collect()
}

/// The gradients of `grads`, flat in the order of `ids`, for bayesprop's host API.
pub fn flat_grads(grads: &GradientsParams, ids: &[(ParamId, usize)]) -> Vec<f32> {
    ids.iter()
        .flat_map(|&(id, rank)| match rank {
            1 => host(grads.get::<1>(id).unwrap()),
            2 => host(grads.get::<2>(id).unwrap()),
            _ => unreachable!("the test models have ranks 1 and 2"),
        })
        .collect()
}

/// bayesprop's own optimizer on the same device, over the model's parameters as they are
/// now, in one group: what every path through burn is compared with.
pub fn reference<M: Module>(
    device: &Device,
    model: &M,
    config: &bayesprop::OptimizerConfig,
) -> bayesprop::GpuOptimizer {
    let ctx = bayesprop_burn::shared_context(device).unwrap();
    let mut groups = bayesprop::ParamGroups::new();
    let group = groups.add_group("burn", config.clone()).unwrap();
    for (id, shape, values) in params(model) {
        groups
            .add_tensor(group, &id.val().to_string(), &shape, &values)
            .unwrap();
    }
    bayesprop::GpuOptimizer::from_groups(&ctx, &groups).unwrap()
}

/// The parameters' values, flat, in visiting order.
pub fn flat<M: Module>(model: &M) -> Vec<f32> {
    params(model).into_iter().flat_map(|(_, _, v)| v).collect()
}

/// One linear layer of `inputs` × 4, the shape the shared-parameter panic was found with.
#[derive(Module, Debug)]
pub struct Wide {
    pub layer: Linear,
}

fn wide_grads(model: &Wide, device: &Device, inputs: usize, t: usize) -> GradientsParams {
    let rows = 3;
    let x: Vec<f32> = (0..rows * inputs)
        .map(|i| (((i * 7 + t * 13) % 23) as f32 / 11.0 - 1.0) * 0.8)
        .collect();
    let x = Tensor::<1>::from_floats(x.as_slice(), device).reshape([rows, inputs]);
    let loss = model.layer.forward(x).powi_scalar(2).mean();
    GradientsParams::from_grads(loss.backward(), model)
}

/// A step of an optimizer under test: the module and its gradients in, the module out.
pub type StepFn = Box<dyn FnMut(Wide, GradientsParams) -> Wide>;

/// Steps `Linear(n, 4)`, n = 1 … 100,000, 8 times with a clone of the module alive at every
/// step (every other one held to the end), through the optimizer `make` builds for `bayes`
/// with momentum: the clones keep their values, and θ is bayesprop's own step bit for bit.
///
/// A clone shares the parameters' buffers, so each step writes θ into a fresh tensor that
/// burn's pool may place in the very buffer θ lives in: a copy within one buffer, which wgpu
/// refuses unless it goes through a scratch buffer.
pub fn check_clones_held(device: &Device, make: impl Fn(bayesprop::OptimizerConfig) -> StepFn) {
    use bayesprop::Stepper;
    for inputs in [1, 8, 13, 64, 1024, 100_000] {
        let config: bayesprop::OptimizerConfig = bayesprop::BayesConfig {
            momentum: 0.9,
            ..Default::default()
        }
        .into();
        let mut model = Wide {
            layer: LinearConfig::new(inputs, 4).init(device),
        };
        let mut expected = reference(device, &model, &config);
        let mut step = make(config);
        let mut held = Vec::new();
        for t in 0..8 {
            let clone = model.clone();
            let before = flat(&clone);
            let g = wide_grads(&model, device, inputs, t);
            expected.step(&flat_grads(&g, &ranks(&model))).unwrap();
            model = step(model, g);
            assert_eq!(
                bits(&flat(&clone)),
                bits(&before),
                "{inputs} inputs, step {t}: the clone changed"
            );
            if t % 2 == 0 {
                held.push((clone, before));
            }
        }
        assert_eq!(
            bits(&flat(&model)),
            bits(&expected.theta().unwrap()),
            "{inputs} inputs: θ after 8 steps with clones held"
        );
        for (clone, before) in &held {
            assert_eq!(
                bits(&flat(clone)),
                bits(before),
                "{inputs} inputs: a held clone"
            );
        }
    }
}

/// θ after 6 steps of an Mlp with the optimizers `build` makes: straight, and resumed after 3
/// steps from the optimizer's record through its bytes (burnpack, as the Learner's
/// checkpointer writes it). Equal when a record resumes bit for bit.
pub fn straight_and_resumed(
    device: &Device,
    lr: f64,
    build: impl Fn() -> burn::optim::ModuleOptimizer,
) -> (Vec<f32>, Vec<f32>) {
    let mut model = Mlp::new(device);
    let mut optim = build();
    for t in 0..3 {
        let g = grads(&model, device, t);
        model = optim.step(lr, model, g);
    }
    let bytes = optim.into_bytes().unwrap();
    let mut resumed_model = model.clone();
    let mut resumed = build().from_bytes(bytes).unwrap();
    for t in 3..6 {
        let g = grads(&model, device, t);
        model = optim.step(lr, model, g);
        let g = grads(&resumed_model, device, t);
        resumed_model = resumed.step(lr, resumed_model, g);
    }
    (flat(&model), flat(&resumed_model))
}
