//! CPU twin of `shaders/adam.wgsl` (SPEC §3, torch.optim.Adam and AdamW).

use num_traits::Float;

/// The kernel's uniform block (`Scalars` in `shaders/adam.wgsl`), field for field. Adam and
/// AdamW differ only in `decoupled` and `decay_factor`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamScalars<F> {
    pub lr: F,
    pub beta1: F,
    pub one_minus_beta1: F,
    pub beta2: F,
    pub one_minus_beta2: F,
    pub eps: F,
    /// λ; added to the gradient as λθ unless decoupled.
    pub weight_decay: F,
    /// 1 − lr·λ when decoupled (AdamW), else 1.
    pub decay_factor: F,
    /// 1/(1 − beta1^t).
    pub c1: F,
    /// 1/(1 − beta2^t).
    pub c2: F,
    /// 1: divide by the running maximum of v (and keep `v_max`), else 0.
    pub amsgrad: F,
    /// 1: AdamW's θ ← θ·(1 − lr·λ), else 0: Adam's g ← g + λθ.
    pub decoupled: F,
}

// SAFETY: `repr(C)` with only f32 fields: no padding, every bit pattern valid.
unsafe impl bytemuck::Zeroable for AdamScalars<f32> {}
unsafe impl bytemuck::Pod for AdamScalars<f32> {}

impl AdamScalars<f64> {
    /// Rounds every scalar to f32, as the kernel receives them.
    pub fn to_f32(&self) -> AdamScalars<f32> {
        let r = |x: f64| x as f32;
        AdamScalars {
            lr: r(self.lr),
            beta1: r(self.beta1),
            one_minus_beta1: r(self.one_minus_beta1),
            beta2: r(self.beta2),
            one_minus_beta2: r(self.one_minus_beta2),
            eps: r(self.eps),
            weight_decay: r(self.weight_decay),
            decay_factor: r(self.decay_factor),
            c1: r(self.c1),
            c2: r(self.c2),
            amsgrad: r(self.amsgrad),
            decoupled: r(self.decoupled),
        }
    }
}

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
