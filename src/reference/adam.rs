//! CPU twin of `shaders/adam.wgsl` (SPEC §3, torch.optim.Adam and AdamW).

use num_traits::Float;

use crate::kernels::Flag;

scalars! {
    /// The uniform block of `shaders/adam.wgsl`. Adam and AdamW differ only in `decoupled`
    /// and `decay_factor`.
    pub struct AdamScalars {
        lr,
        beta1,
        one_minus_beta1,
        beta2,
        one_minus_beta2,
        eps,
        /// λ; added to the gradient as λθ unless decoupled.
        weight_decay,
        /// 1 − lr·λ when decoupled (AdamW), else 1.
        decay_factor,
        /// 1/(1 − beta1^t).
        c1,
        /// 1/(1 − beta2^t).
        c2,
        /// 1: divide by the running maximum of v (and keep `v_max`), else 0.
        amsgrad,
        /// 1: AdamW's θ ← θ·(1 − lr·λ), else 0: Adam's g ← g + λθ.
        decoupled,
    }
}

/// The branches of `shaders/adam.wgsl` its scalars decide, compiled per set of values: AMSGrad (and `v_max`), decoupled weight decay.
pub const FLAGS: &[Flag] = &[
    Flag::nonzero("amsgrad", "amsgrad"),
    Flag::nonzero("decoupled", "decoupled"),
];

/// One element's step: the body of the kernel's `main`, statement for statement.
/// `v_max` is `None` without amsgrad.
#[inline(always)]
pub fn update_element<F: Float>(
    p: &AdamScalars<F>,
    theta: &mut F,
    g: F,
    m: &mut F,
    v: &mut F,
    v_max: Option<&mut F>,
) {
    let mut th = *theta;
    let mut g = g;
    if p.decoupled != F::zero() {
        th = th * p.decay_factor;
    } else {
        g = g + p.weight_decay * th;
    }
    let m_new = p.beta1 * *m + p.one_minus_beta1 * g;
    let v_new = p.beta2 * *v + p.one_minus_beta2 * (g * g);
    *m = m_new;
    *v = v_new;
    let mut v_used = v_new;
    if let Some(v_max) = v_max {
        // The kernel's `select`, not `max`: the same answer for NaN on every device.
        let v_max_new = if v_new > *v_max { v_new } else { *v_max };
        *v_max = v_max_new;
        v_used = v_max_new;
    }
    th = th - p.lr * (m_new * p.c1) / ((v_used * p.c2).sqrt() + p.eps);
    *theta = th;
}

simd_fn! {
    /// One step over slices. `v_max` must be empty without amsgrad, else as long as `theta`.
    pub fn step<F: Float>(
        p: &AdamScalars<F>,
        theta: &mut [F],
        grad: &[F],
        m: &mut [F],
        v: &mut [F],
        v_max: &mut [F],
    ) {
        let n = theta.len();
        assert!(
            grad.len() == n && m.len() == n && v.len() == n,
            "length mismatch"
        );
        if p.amsgrad != F::zero() {
            assert_eq!(v_max.len(), n, "amsgrad state length");
            for i in 0..n {
                update_element(
                    p,
                    &mut theta[i],
                    grad[i],
                    &mut m[i],
                    &mut v[i],
                    Some(&mut v_max[i]),
                );
            }
        } else {
            for i in 0..n {
                update_element(p, &mut theta[i], grad[i], &mut m[i], &mut v[i], None);
            }
        }
    }
}
