//! CPU twin of `shaders/rmsprop.wgsl` (SPEC §3, torch.optim.RMSprop).

use num_traits::Float;

use crate::kernels::Flag;

scalars! {
    /// The uniform block of `shaders/rmsprop.wgsl`.
    pub struct RmspropScalars {
        lr,
        alpha,
        one_minus_alpha,
        eps,
        weight_decay,
        /// μ; 0 turns momentum off (and `b` is not allocated).
        momentum,
        /// 1: divide by the centred second moment v − a² (and keep `a`), else 0.
        centered,
    }
}

/// The branches of `shaders/rmsprop.wgsl` its scalars decide, compiled per set of values: centring (and `a`), momentum (and `b`).
pub const FLAGS: &[Flag] = &[
    Flag::nonzero("centered", "centered"),
    Flag::positive("momentum", "momentum"),
];

/// One element's step: the body of the kernel's `main`, statement for statement.
/// `a` is `None` unless centred, `b` is `None` when momentum is off (μ = 0).
#[inline(always)]
pub fn update_element<F: Float>(
    p: &RmspropScalars<F>,
    theta: &mut F,
    g: F,
    v: &mut F,
    a: Option<&mut F>,
    b: Option<&mut F>,
) {
    let mut th = *theta;
    let g = g + p.weight_decay * th;
    let v_new = p.alpha * *v + p.one_minus_alpha * (g * g);
    *v = v_new;
    let mut v_bar = v_new;
    if let Some(a) = a {
        let a_new = p.alpha * *a + p.one_minus_alpha * g;
        *a = a_new;
        v_bar = v_new - a_new * a_new;
    }
    match b {
        Some(b) => {
            let b_new = p.momentum * *b + g / (v_bar.sqrt() + p.eps);
            *b = b_new;
            th = th - p.lr * b_new;
        }
        None => th = th - p.lr * g / (v_bar.sqrt() + p.eps),
    }
    *theta = th;
}

simd_fn! {
    /// One step over slices. `a` must be empty unless centred, `b` empty when momentum is off;
    /// each used one as long as `theta`.
    pub fn step<F: Float>(
        p: &RmspropScalars<F>,
        theta: &mut [F],
        grad: &[F],
        v: &mut [F],
        a: &mut [F],
        b: &mut [F],
    ) {
        let n = theta.len();
        assert!(grad.len() == n && v.len() == n, "length mismatch");
        let centered = p.centered != F::zero();
        let momentum = p.momentum > F::zero();
        if centered {
            assert_eq!(a.len(), n, "centred state length");
        }
        if momentum {
            assert_eq!(b.len(), n, "momentum state length");
        }
        // One loop per option set, so that each compiles to SIMD (the fast CPU path).
        match (centered, momentum) {
            (false, false) => {
                for i in 0..n {
                    update_element(p, &mut theta[i], grad[i], &mut v[i], None, None);
                }
            }
            (true, false) => {
                for i in 0..n {
                    update_element(p, &mut theta[i], grad[i], &mut v[i], Some(&mut a[i]), None);
                }
            }
            (false, true) => {
                for i in 0..n {
                    update_element(p, &mut theta[i], grad[i], &mut v[i], None, Some(&mut b[i]));
                }
            }
            (true, true) => {
                for i in 0..n {
                    let (a_i, b_i) = (Some(&mut a[i]), Some(&mut b[i]));
                    update_element(p, &mut theta[i], grad[i], &mut v[i], a_i, b_i);
                }
            }
        }
    }
}
