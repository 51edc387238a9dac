//! CPU twin of `shaders/bayes_fp.wgsl` (SPEC §2b): `bayes` held at the fixed point of the
//! current curvature, so σ is computed, not stored. Its uniform block is `bayes`'s.

use num_traits::Float;

use crate::kernels::Flag;

use crate::reference::bayes::{curvature_and_direction, sigma_star};
/// `bayes`'s uniform block, and so its `Scalars` in the kernel.
pub use crate::reference::bayes::{BayesScalars, SCALARS};

/// The branch of `shaders/bayes_fp.wgsl` its scalars decide: momentum (and `m`).
pub const FLAGS: &[Flag] = &[Flag::positive("momentum", "beta1")];

/// One element's step: the body of the kernel's `update`, statement for statement. `m` is
/// `None` when momentum is off (β₁ = 0).
#[inline(always)]
pub fn update_element<F: Float>(
    p: &BayesScalars<F>,
    theta: &mut F,
    g: F,
    s: &mut F,
    m: Option<&mut F>,
) {
    let th = *theta;
    let (s_new, h, d) = curvature_and_direction(p, th, g, *s, m);
    *theta = th - sigma_star(p, h + p.eps_sq) * d;
    *s = s_new;
}

/// σ = σ*(ŝ + λ + eps²) of an element whose stored EMA is `s`, with the c2 of the step that
/// stored it: exactly the σ that step used.
#[inline(always)]
pub fn sigma<F: Float>(p: &BayesScalars<F>, s: F) -> F {
    sigma_star(p, s * p.c2 + p.weight_decay + p.eps_sq)
}

simd_fn! {
    /// One step over slices. `m` must be empty when momentum is off, else as long as `theta`.
    pub fn step<F: Float>(
        p: &BayesScalars<F>,
        theta: &mut [F],
        grad: &[F],
        s: &mut [F],
        m: &mut [F],
    ) {
        let n = theta.len();
        assert!(grad.len() == n && s.len() == n, "length mismatch");
        let (grad, s) = (&grad[..n], &mut s[..n]);
        if p.beta1 > F::zero() {
            assert_eq!(m.len(), n, "momentum state length");
            let m = &mut m[..n];
            for i in 0..n {
                update_element(p, &mut theta[i], grad[i], &mut s[i], Some(&mut m[i]));
            }
        } else {
            for i in 0..n {
                update_element(p, &mut theta[i], grad[i], &mut s[i], None);
            }
        }
    }
}
