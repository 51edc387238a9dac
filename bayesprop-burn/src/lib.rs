//! # bayesprop-burn
//!
//! bayesprop's fused optimizer steps as a burn optimizer, on burn's wgpu backend (fusion on,
//! burn's default). A training loop switches with one line:
//!
//! ```text
//! let device = bayesprop_burn::init_device()?.autodiff();   // burn and bayesprop share it
//! let mut model = MyModel::new(&device);
//! let mut optim = bayesprop_burn::BayesConfig::new().init(); // was: AdamConfig::new().init()
//! loop {
//!     let grads = GradientsParams::from_grads(loss.backward(), &model);
//!     model = optim.step(lr, model, grads);                  // unchanged
//! }
//! let sigma: Tensor<2> = optim.sigma(model.linear.weight.id)?; // the posterior variance
//! ```
//!
//! Every parameter is stepped in one command buffer and one submit, in place, with no copies
//! and no host round trip: the fused kernels run on burn's own parameter and gradient buffers
//! at the offsets burn's allocator gave them (`GpuOptimizer::from_tensors_in`).

mod config;
mod device;
mod error;
mod optimizer;
mod view;

pub use config::{BayesConfig, BayespropConfig};
pub use device::{init_device, init_device_with, register_setup, shared_context};
pub use error::{Error, Result, StepError};
pub use optimizer::BayespropOptimizer;

/// The bayesprop this crate is built on.
pub use bayesprop;
