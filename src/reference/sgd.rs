//! CPU twin of `shaders/sgd.wgsl` (SPEC §3, torch.optim.SGD).

use num_traits::Float;

use crate::kernels::Flag;

scalars! {
    /// The uniform block of `shaders/sgd.wgsl`.
    pub struct SgdScalars {
        lr,
        /// μ; 0 turns momentum off (and `b` is not allocated).
        momentum,
        one_minus_dampening,
        weight_decay,
        /// 1 at t = 1, where the buffer starts as the gradient (torch's first step), else 0.
        first_step,
        /// 1: step along g + μ·b (Nesterov), else 0: along b.
        nesterov,
    }
}

/// The branches of `shaders/sgd.wgsl` its scalars decide, compiled per set of values: momentum (and `b`), Nesterov, the first step's `b ← g`.
pub const FLAGS: &[Flag] = &[
    Flag::positive("momentum", "momentum"),
    Flag::nonzero("nesterov", "nesterov"),
    Flag::nonzero("first_step", "first_step"),
];

/// One element's step: the body of the kernel's `main`, statement for statement.
/// `b` is `None` when momentum is off (μ = 0).
#[inline(always)]
pub fn update_element<F: Float>(p: &SgdScalars<F>, theta: &mut F, g: F, b: Option<&mut F>) {
    let zero = F::zero();

    let mut th = *theta;
    let mut g = g + p.weight_decay * th;
    if let Some(b) = b {
        let mut b_new = g;
        if p.first_step == zero {
            b_new = p.momentum * *b + p.one_minus_dampening * g;
        }
        *b = b_new;
        if p.nesterov != zero {
            g = g + p.momentum * b_new;
        } else {
            g = b_new;
        }
    }
    th = th - p.lr * g;
    *theta = th;
}

simd_fn! {
    /// One step over slices. `b` must be empty when momentum is off, else as long as `theta`.
    pub fn step<F: Float>(p: &SgdScalars<F>, theta: &mut [F], grad: &[F], b: &mut [F]) {
        let n = theta.len();
        assert_eq!(grad.len(), n, "length mismatch");
        if p.momentum > F::zero() {
            assert_eq!(b.len(), n, "momentum state length");
            for i in 0..n {
                update_element(p, &mut theta[i], grad[i], Some(&mut b[i]));
            }
        } else {
            for i in 0..n {
                update_element(p, &mut theta[i], grad[i], None);
            }
        }
    }
}
