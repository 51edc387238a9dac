//! CPU twin of `shaders/bayes.wgsl` (SPEC §2).

#[cfg(feature = "ndarray")]
use ndarray::{ArrayViewMut1, Zip};
use num_traits::Float;

use crate::kernels::Flag;

scalars! {
    /// The uniform block of `shaders/bayes.wgsl`.
    pub struct BayesScalars {
        beta,
        one_minus_beta,
        /// 1/(1 − beta^t) with bias correction, else 1.
        c2,
        weight_decay,
        beta1,
        one_minus_beta1,
        /// 1/(1 − β₁^t) with momentum, else 1.
        c1,
        eta,
        eta_sq,
        eps_sq,
        /// 1 with `sigma_max = fixed_point` (σ never exceeds σ*(h + eps²)), 0 with `none`.
        bound,
    }
}

/// The branches of `shaders/bayes.wgsl` its scalars decide, compiled per set of values: momentum (and `m`), the bound σ ≤ σ*.
pub const FLAGS: &[Flag] = &[
    Flag::positive("momentum", "beta1"),
    Flag::positive("bound", "bound"),
];

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
    update::<F, true>(p, theta, g, s, sigma, m)
}

/// [`update_element`], with σ*(x) left out when `STAR` is false: the caller has checked that
/// the bound is off and σ ≠ 0, where σ*(x) is never selected. The bits are the same; the
/// square root and one of the two divisions per element are saved.
#[inline(always)]
fn update<F: Float, const STAR: bool>(
    p: &BayesScalars<F>,
    theta: &mut F,
    g: F,
    s: &mut F,
    sigma: &mut F,
    m: Option<&mut F>,
) {
    let zero = F::zero();
    let one = F::one();
    let th = *theta;
    let sig0 = *sigma;

    let (s_new, h, d) = curvature_and_direction(p, th, g, *s, m);
    // where σ > 0: posterior variance σ/(1 + hσ), exact for h = 0, then diffusion by η²
    let (sig1, post) = if STAR {
        // σ*(h + eps²): σ's start where σ = 0 and h > 0, and its bound under
        // sigma_max = fixed_point
        let star = sigma_star(p, h + p.eps_sq);
        let sig1 = if sig0 == zero && h > zero { star } else { sig0 };
        let post = sig1 / (one + h * sig1) + p.eta_sq;
        // min(σ, σ*) spelled as a comparison, which Rust and WGSL evaluate alike for every
        // input (their `min`s differ on NaN)
        let post = if p.bound > zero && post > star {
            star
        } else {
            post
        };
        (sig1, post)
    } else {
        (sig0, sig0 / (one + h * sig0) + p.eta_sq)
    };
    let live = sig1 > zero;
    *theta = if live { th - post * d } else { th };
    *s = s_new;
    *sigma = if live { post } else { sig1 };
}

/// The first half of SPEC §2's step, shared with `bayes_fp`: s's new EMA, the curvature
/// h = ŝ + λ, and the direction d (g̃ = g + λθ, or its momentum with `m`, updated here).
#[inline(always)]
pub fn curvature_and_direction<F: Float>(
    p: &BayesScalars<F>,
    theta: F,
    g: F,
    s: F,
    m: Option<&mut F>,
) -> (F, F, F) {
    let s_new = p.beta * s + p.one_minus_beta * g * g;
    let s_hat = s_new * p.c2;
    let h = s_hat + p.weight_decay;
    let g_tilde = g + p.weight_decay * theta;
    let d = match m {
        Some(m) => {
            *m = p.beta1 * *m + p.one_minus_beta1 * g_tilde;
            *m * p.c1
        }
        None => g_tilde,
    };
    (s_new, h, d)
}

/// σ*(x) = η²/2 + η·sqrt(η²/4 + 1/x), the fixed point of the variance update at curvature x,
/// from the kernel's f32 (or the oracle's f64) scalars. Shared with `bayes_fp`, whose σ it is.
#[inline(always)]
pub fn sigma_star<F: Float>(p: &BayesScalars<F>, x: F) -> F {
    let half = F::from(0.5).unwrap();
    let quarter = F::from(0.25).unwrap();
    p.eta_sq * half + p.eta * (p.eta_sq * quarter + F::one() / x).sqrt()
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
        let momentum = p.beta1 > F::zero();
        if momentum {
            assert_eq!(m.len(), n, "momentum state length");
        }
        if p.bound > F::zero() {
            // The bound needs σ*(x) at every element and every step: nothing to skip.
            let m = if momentum { Some(m) } else { None };
            block::<F, true>(p, (theta, grad, s, sigma, m));
            return;
        }
        // Unbounded, σ*(x) is needed only where σ is still 0 (usually the first step alone):
        // blocks that stay in L1 between the look at σ and the update skip it elsewhere.
        const BLOCK: usize = 256;
        for start in (0..n).step_by(BLOCK) {
            let end = n.min(start + BLOCK);
            let may_init = sigma[start..end]
                .iter()
                .fold(false, |any, &x| any | (x == F::zero()));
            let m = if momentum { Some(&mut m[start..end]) } else { None };
            let args = (
                &mut theta[start..end],
                &grad[start..end],
                &mut s[start..end],
                &mut sigma[start..end],
                m,
            );
            if may_init {
                block::<F, true>(p, args);
            } else {
                block::<F, false>(p, args);
            }
        }
    }
}

/// A block's θ, g, s, σ and momentum (if on).
type Block<'a, F> = (
    &'a mut [F],
    &'a [F],
    &'a mut [F],
    &'a mut [F],
    Option<&'a mut [F]>,
);

/// One loop per case, so that each compiles to SIMD.
#[inline(always)]
fn block<F: Float, const STAR: bool>(p: &BayesScalars<F>, (theta, grad, s, sigma, m): Block<F>) {
    let n = theta.len();
    let (grad, s, sigma) = (&grad[..n], &mut s[..n], &mut sigma[..n]);
    match m {
        Some(m) => {
            let m = &mut m[..n];
            for i in 0..n {
                let m = Some(&mut m[i]);
                update::<F, STAR>(p, &mut theta[i], grad[i], &mut s[i], &mut sigma[i], m);
            }
        }
        None => {
            for i in 0..n {
                update::<F, STAR>(p, &mut theta[i], grad[i], &mut s[i], &mut sigma[i], None);
            }
        }
    }
}

/// One step over ndarray views of any stride (momentum state, if any, in `m`).
#[cfg(feature = "ndarray")]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `step` without the bound computes σ*(x) only in blocks where some σ is 0; the bits must be those of
    /// [`update_element`] everywhere, in blocks of every mix: all σ = 0, none, and some, with
    /// h = 0 elements (g = 0, no decay) that keep σ = 0.
    #[test]
    fn blocks_without_zero_sigma_give_update_elements_bits() {
        let n = 3 * 256 + 77;
        let p = BayesScalars {
            beta: 0.99,
            one_minus_beta: 0.01,
            c2: 1.0 / (1.0 - 0.99f64.powi(3)),
            weight_decay: 0.0,
            beta1: 0.0,
            one_minus_beta1: 1.0,
            c1: 1.0,
            eta: 1e-2,
            eta_sq: 1e-4,
            eps_sq: 1e-16,
            bound: 0.0,
        }
        .to_f32();
        // Block 0: σ all 0; block 1: none 0; blocks 2 and 3: every 7th 0.
        let sigma0: Vec<f32> = (0..n)
            .map(|i| match i {
                0..=255 => 0.0,
                256..=511 => 1e-3 * (1 + i % 13) as f32,
                _ if i % 7 == 0 => 0.0,
                _ => 2e-3 * (1 + i % 5) as f32,
            })
            .collect();
        let grad: Vec<f32> = (0..n)
            .map(|i| {
                if i % 11 == 0 {
                    0.0
                } else {
                    (i as f32 * 0.37).sin()
                }
            })
            .collect();
        let theta0: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
        let s0: Vec<f32> = (0..n).map(|i| 1e-2 * (i % 3) as f32).collect();

        let (mut theta, mut s, mut sigma) = (theta0.clone(), s0.clone(), sigma0.clone());
        step(&p, &mut theta, &grad, &mut s, &mut sigma, &mut []);

        let mut mixed = 0;
        for i in 0..n {
            let (mut th, mut si, mut sg) = (theta0[i], s0[i], sigma0[i]);
            update_element(&p, &mut th, grad[i], &mut si, &mut sg, None);
            assert_eq!(th.to_bits(), theta[i].to_bits(), "θ at {i}");
            assert_eq!(si.to_bits(), s[i].to_bits(), "s at {i}");
            assert_eq!(sg.to_bits(), sigma[i].to_bits(), "σ at {i}");
            mixed += usize::from(sigma0[i] == 0.0 && sg == 0.0);
        }
        // Some h = 0 elements kept σ = 0, so later blocks really mix.
        assert!(mixed > 0);
    }
}
