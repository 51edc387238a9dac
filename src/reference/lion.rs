//! CPU twin of `shaders/lion.wgsl` (SPEC §3, Lion as lion-pytorch and optax implement it).

use num_traits::Float;

use crate::kernels::Flag;

scalars! {
    /// The uniform block of `shaders/lion.wgsl`.
    pub struct LionScalars {
        lr,
        /// Interpolates m and g into the direction c whose sign is stepped along.
        beta1,
        one_minus_beta1,
        /// EMA factor of the momentum m.
        beta2,
        one_minus_beta2,
        /// 1 − lr·λ: decoupled weight decay, as AdamW's.
        decay_factor,
    }
}

/// `shaders/lion.wgsl` has no branch its scalars decide.
pub const FLAGS: &[Flag] = &[];

/// One element's step: the body of the kernel's `update`, statement for statement.
///
/// The step is ±lr or +0 (sign(0) = 0), selected rather than computed as `lr·sign(c)`: a
/// product would give −0 for c = −0, and θ − (−0) turns θ = −0 into +0.
#[inline(always)]
pub fn update_element<F: Float>(p: &LionScalars<F>, theta: &mut F, g: F, m: &mut F) {
    let zero = F::zero();
    let th = *theta * p.decay_factor;
    let c = p.beta1 * *m + p.one_minus_beta1 * g;
    let step = if c > zero {
        p.lr
    } else if c < zero {
        -p.lr
    } else {
        zero
    };
    *theta = th - step;
    *m = p.beta2 * *m + p.one_minus_beta2 * g;
}

simd_fn! {
    /// One step over slices of the same length.
    pub fn step<F: Float>(p: &LionScalars<F>, theta: &mut [F], grad: &[F], m: &mut [F]) {
        let n = theta.len();
        assert!(grad.len() == n && m.len() == n, "length mismatch");
        let (grad, m) = (&grad[..n], &mut m[..n]);
        for i in 0..n {
            update_element(p, &mut theta[i], grad[i], &mut m[i]);
        }
    }
}
