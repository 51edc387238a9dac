//! CPU twin of `shaders/lion.wgsl` (SPEC §3, Lion as lion-pytorch and optax implement it).

use num_traits::Float;

/// The kernel's uniform block (`Scalars` in `shaders/lion.wgsl`), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LionScalars<F> {
    pub lr: F,
    /// Interpolates m and g into the direction c whose sign is stepped along.
    pub beta1: F,
    pub one_minus_beta1: F,
    /// EMA factor of the momentum m.
    pub beta2: F,
    pub one_minus_beta2: F,
    /// 1 − lr·λ: decoupled weight decay, as AdamW's.
    pub decay_factor: F,
    /// Uniform blocks are sized in multiples of 16 bytes.
    pub pad: [F; 2],
}

// SAFETY: `repr(C)` with only f32 fields: no padding, every bit pattern valid.
unsafe impl bytemuck::Zeroable for LionScalars<f32> {}
unsafe impl bytemuck::Pod for LionScalars<f32> {}

impl LionScalars<f64> {
    /// Rounds every scalar to f32, as the kernel receives them.
    pub fn to_f32(&self) -> LionScalars<f32> {
        let r = |x: f64| x as f32;
        LionScalars {
            lr: r(self.lr),
            beta1: r(self.beta1),
            one_minus_beta1: r(self.one_minus_beta1),
            beta2: r(self.beta2),
            one_minus_beta2: r(self.one_minus_beta2),
            decay_factor: r(self.decay_factor),
            pad: [0.0; 2],
        }
    }
}

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
