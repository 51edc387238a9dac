//! # bayesprop-burn
//!
//! bayesprop's fused optimizer steps as a burn optimizer, on burn's wgpu backend (fusion on,
//! burn's default). A training loop changes two lines: the device comes from
//! [`init_device`], shared by burn and bayesprop, and the optimizer from [`BayespropConfig`]
//! (any optimizer of bayesprop's table) or [`BayesConfig`] in place of burn's `AdamConfig`.
//! The step call is unchanged.
//!
//! Two optimizers come from a config:
//! - [`BayespropConfig::build`]: burn's per-tensor `Optimizer`, for burn's `ModuleOptimizer`
//!   and burn-train's `Learner`: `ModuleOptimizer::from(BayespropConfig::adam().build()?)`.
//!   The state goes into burn's optimizer records, so the Learner's checkpoints resume it.
//! - [`BayespropConfig::init`]: [`BayespropOptimizer`], the whole module in one fused step,
//!   with global-norm clipping and a loss scale, for a loop of your own (below), or inside the
//!   `Learner` through `TrainStep::optimize` with [`FusedStep`].
//!
//! ```rust,no_run
//! use burn::module::Module;
//! use burn::nn::{Linear, LinearConfig};
//! use burn::optim::GradientsParams;
//! use burn::tensor::{Device, Tensor};
//!
//! #[derive(Module, Debug)]
//! struct Model {
//!     linear: Linear,
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // was: Device::wgpu_options().init()?.autodiff()
//!     let device: Device = bayesprop_burn::init_device()?.autodiff();
//!     let mut model = Model { linear: LinearConfig::new(8, 4).init(&device) };
//!     // was: AdamConfig::new().init()
//!     let mut optim = bayesprop_burn::BayesConfig::new().init();
//!
//!     let x = Tensor::<2>::ones([16, 8], &device);
//!     let target = Tensor::<2>::zeros([16, 4], &device);
//!     for _ in 0..100 {
//!         let loss = (model.linear.forward(x.clone()) - target.clone()).square().mean();
//!         let grads = GradientsParams::from_grads(loss.backward(), &model);
//!         model = optim.step(1e-2, model, grads); // unchanged
//!     }
//!     let sigma: Tensor<2> = optim.sigma(model.linear.weight.id)?; // the posterior variance
//!     optim.save("optim.safetensors")?; // a bayesprop checkpoint; `load` resumes
//!     Ok(())
//! }
//! ```
//!
//! Every parameter is stepped in one command buffer and one submit, in place, with no copies
//! and no host round trip: the fused kernels run on burn's own parameter and gradient buffers
//! at the offsets burn's allocator gave them (`GpuOptimizer::from_tensors_in`). The
//! repository's `docs/burn.md` covers the learning rate, checkpoints, errors and how the
//! step compares with burn's Adam; `examples/digits.rs` trains a burn MLP with burn's Adam
//! and bayesprop's `adam` and `bayes`.

mod config;
mod device;
mod encode;
mod error;
mod fused;
mod optimizer;
mod tensor;
mod view;

pub use config::{BayesConfig, BayespropConfig};
pub use device::{init_device, init_device_with, register_setup, shared_context};
pub use error::{Error, Result, StepError};
pub use fused::FusedStep;
pub use optimizer::BayespropOptimizer;
pub use tensor::{BayespropTensorOptimizer, TensorState, TensorStepError};

/// The bayesprop this crate is built on.
pub use bayesprop;
