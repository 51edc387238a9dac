//! CPU twin of `shaders/bayes.wgsl` (SPEC §2).

use ndarray::{ArrayViewMut1, Zip};
use num_traits::Float;

/// The kernel's uniform block (`Scalars` in `shaders/bayes.wgsl`), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BayesScalars<F> {
    pub beta: F,
    pub one_minus_beta: F,
    /// 1/(1 − beta^t) with bias correction, else 1.
    pub c2: F,
    pub weight_decay: F,
    pub beta1: F,
    pub one_minus_beta1: F,
    /// 1/(1 − β₁^t) with momentum, else 1.
    pub c1: F,
    pub eta: F,
    pub eta_sq: F,
    pub eps_sq: F,
    /// Uniform blocks are sized in multiples of 16 bytes.
    pub pad: [F; 2],
}

// SAFETY: `repr(C)` with only f32 fields: no padding, every bit pattern valid.
unsafe impl bytemuck::Zeroable for BayesScalars<f32> {}
unsafe impl bytemuck::Pod for BayesScalars<f32> {}

impl BayesScalars<f64> {
    /// Rounds every scalar to f32, as the kernel receives them.
    pub fn to_f32(&self) -> BayesScalars<f32> {
        let r = |x: f64| x as f32;
        BayesScalars {
            beta: r(self.beta),
            one_minus_beta: r(self.one_minus_beta),
            c2: r(self.c2),
            weight_decay: r(self.weight_decay),
            beta1: r(self.beta1),
            one_minus_beta1: r(self.one_minus_beta1),
            c1: r(self.c1),
            eta: r(self.eta),
            eta_sq: r(self.eta_sq),
            eps_sq: r(self.eps_sq),
            pad: [0.0; 2],
        }
    }
}

/// One element's step: the body of the kernel's `main`, statement for statement.
/// `m` is `None` when momentum is off (β₁ = 0).
///
/// Branch-free: σ*(x) is computed for every element and then selected, where SPEC writes `if`.
/// Selecting gives exactly the bits of branching (the unselected value is discarded), and the
/// loops in [`step`] then compile to SIMD (`sqrtps`/`divps`, no libm call), so this one function
/// is both the reference and the fast CPU path ([`crate::CpuPath::Parallel`]).
#[inline(always)]
pub fn update_element<F: Float>(
    p: &BayesScalars<F>,
    theta: &mut F,
    g: F,
    s: &mut F,
    sigma: &mut F,
    m: Option<&mut F>,
) {
    let zero = F::zero();
    let one = F::one();
    let half = F::from(0.5).unwrap();
    let quarter = F::from(0.25).unwrap();
    let th = *theta;
    let sig0 = *sigma;

    let s_new = p.beta * *s + p.one_minus_beta * g * g;
    let s_hat = s_new * p.c2;
    let h = s_hat + p.weight_decay;
    let g_tilde = g + p.weight_decay * th;
    let d = match m {
        Some(m) => {
            *m = p.beta1 * *m + p.one_minus_beta1 * g_tilde;
            *m * p.c1
        }
        None => g_tilde,
    };
    // σ*(x) = η²/2 + η·sqrt(η²/4 + 1/x), at x = h + eps², where σ = 0 and h > 0
    let x = h + p.eps_sq;
    let star = p.eta_sq * half + p.eta * (p.eta_sq * quarter + one / x).sqrt();
    let sig1 = if sig0 == zero && h > zero { star } else { sig0 };
    // where σ > 0: posterior variance σ/(1 + hσ), exact for h = 0, then diffusion by η²
    let live = sig1 > zero;
    let post = sig1 / (one + h * sig1) + p.eta_sq;
    *theta = if live { th - post * d } else { th };
    *s = s_new;
    *sigma = if live { post } else { sig1 };
}

simd_fn! {
    /// One step over slices. `m` must be empty when momentum is off, else as long as `theta`.
    pub fn step<F: Float>(
        p: &BayesScalars<F>,
        theta: &mut [F],
        grad: &[F],
        s: &mut [F],
        sigma: &mut [F],
        m: &mut [F],
    ) {
        let n = theta.len();
        assert!(
            grad.len() == n && s.len() == n && sigma.len() == n,
            "length mismatch"
        );
        if p.beta1 > F::zero() {
            assert_eq!(m.len(), n, "momentum state length");
            for i in 0..n {
                update_element(
                    p,
                    &mut theta[i],
                    grad[i],
                    &mut s[i],
                    &mut sigma[i],
                    Some(&mut m[i]),
                );
            }
        } else {
            for i in 0..n {
                update_element(p, &mut theta[i], grad[i], &mut s[i], &mut sigma[i], None);
            }
        }
    }
}

/// One step over ndarray views of any stride (momentum state, if any, in `m`).
pub fn step_views<F: Float>(
    p: &BayesScalars<F>,
    theta: ArrayViewMut1<F>,
    grad: ndarray::ArrayView1<F>,
    s: ArrayViewMut1<F>,
    sigma: ArrayViewMut1<F>,
    m: Option<ArrayViewMut1<F>>,
) {
    let zip = Zip::from(theta).and(grad).and(s).and(sigma);
    match m {
        Some(m) if p.beta1 > F::zero() => zip
            .and(m)
            .for_each(|th, &g, s, sg, m| update_element(p, th, g, s, sg, Some(m))),
        _ => zip.for_each(|th, &g, s, sg| update_element(p, th, g, s, sg, None)),
    }
}
