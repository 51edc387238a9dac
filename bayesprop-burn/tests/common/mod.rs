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

/// The parameters' values, flat, in visiting order.
pub fn flat<M: Module>(model: &M) -> Vec<f32> {
    params(model).into_iter().flat_map(|(_, _, v)| v).collect()
}
