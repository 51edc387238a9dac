//! `adagrad` with torch.optim.Adagrad's semantics (SPEC §3): its configuration, validation and
//! per-step scalars, and the CPU twin of `shaders/adagrad.wgsl`.

use num_traits::Float;

use crate::kernels::Flag;

use crate::config::check_field;
use crate::config::config;
use crate::error::Result;

const NAME: &str = "adagrad";

config! {
    /// Hyperparameters of `adagrad`, with torch's names and defaults. Build with
    /// [`AdagradConfig::builder`] or start from `default()`.
    pub struct AdagradConfig, builder AdagradConfigBuilder {
        /// Learning rate, ≥ 0.
        lr: f64 = 1e-2,
        /// ≥ 0: step t uses lr / (1 + (t − 1)·lr_decay).
        lr_decay: f64 = 0.0,
        /// λ ≥ 0, added to the gradient as λθ.
        weight_decay: f64 = 0.0,
        /// ≥ 0: where the sum of squared gradients starts.
        initial_accumulator_value: f64 = 0.0,
        /// Added to sqrt(sum), ≥ 0.
        eps: f64 = 1e-10,
    }
}

impl AdagradConfig {
    pub fn builder() -> AdagradConfigBuilder {
        AdagradConfigBuilder(AdagradConfig::default())
    }

    /// Every scalar the kernel needs at step `t` (1-based), computed in f64. The reference
    /// and the kernel get this rounded to f32; the oracle uses it as is.
    pub fn scalars(&self, t: u64) -> AdagradScalars<f64> {
        AdagradScalars {
            clr: self.lr / (1.0 + (t as f64 - 1.0) * self.lr_decay),
            weight_decay: self.weight_decay,
            eps: self.eps,
        }
    }

    /// Checks every hyperparameter against its range (torch's):
    /// the table's `Optimizer::validate`.
    pub(crate) fn check(&self) -> Result<()> {
        check_field(NAME, "lr", self.lr, self.lr >= 0.0, "lr >= 0")?;
        check_field(
            NAME,
            "lr_decay",
            self.lr_decay,
            self.lr_decay >= 0.0,
            "lr_decay >= 0",
        )?;
        check_field(
            NAME,
            "weight_decay",
            self.weight_decay,
            self.weight_decay >= 0.0,
            "weight_decay >= 0",
        )?;
        check_field(
            NAME,
            "initial_accumulator_value",
            self.initial_accumulator_value,
            self.initial_accumulator_value >= 0.0,
            "initial_accumulator_value >= 0",
        )?;
        check_field(NAME, "eps", self.eps, self.eps >= 0.0, "eps >= 0")
    }
}

scalars! {
    /// The uniform block of `shaders/adagrad.wgsl`.
    pub struct AdagradScalars {
        /// lr / (1 + (t − 1)·lr_decay), the learning rate of step t.
        clr,
        /// λ; added to the gradient as λθ where it is not 0.
        weight_decay,
        eps,
    }
}

/// The branches of `shaders/adagrad.wgsl` its scalars decide, compiled per set of values: weight decay.
pub const FLAGS: &[Flag] = &[Flag::nonzero("decay", "weight_decay")];

/// One element's step: the body of the kernel's `update`, statement for statement.
#[inline(always)]
pub fn update_element<F: Float>(p: &AdagradScalars<F>, theta: &mut F, g: F, sum: &mut F) {
    let th = *theta;
    let mut g = g;
    if p.weight_decay != F::zero() {
        g = g + p.weight_decay * th;
    }
    let sum_new = *sum + g * g;
    *sum = sum_new;
    *theta = th - p.clr * g / (sum_new.sqrt() + p.eps);
}

simd_fn! {
    /// One step over slices of the same length.
    pub fn step<F: Float>(p: &AdagradScalars<F>, theta: &mut [F], grad: &[F], sum: &mut [F]) {
        let n = theta.len();
        assert!(grad.len() == n && sum.len() == n, "length mismatch");
        let (grad, sum) = (&grad[..n], &mut sum[..n]);
        for i in 0..n {
            update_element(p, &mut theta[i], grad[i], &mut sum[i]);
        }
    }
}
