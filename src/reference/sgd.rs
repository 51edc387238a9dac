//! CPU twin of `shaders/sgd.wgsl` (SPEC §3, torch.optim.SGD).

use num_traits::Float;

/// The kernel's uniform block (`Scalars` in `shaders/sgd.wgsl`), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdScalars<F> {
    pub lr: F,
    /// μ; 0 turns momentum off (and `b` is not allocated).
    pub momentum: F,
    pub one_minus_dampening: F,
    pub weight_decay: F,
    /// 1 at t = 1, where the buffer starts as the gradient (torch's first step), else 0.
    pub first_step: F,
    /// 1: step along g + μ·b (Nesterov), else 0: along b.
    pub nesterov: F,
    /// Uniform blocks are sized in multiples of 16 bytes.
    pub pad: [F; 2],
}

// SAFETY: `repr(C)` with only f32 fields: no padding, every bit pattern valid.
unsafe impl bytemuck::Zeroable for SgdScalars<f32> {}
unsafe impl bytemuck::Pod for SgdScalars<f32> {}

impl SgdScalars<f64> {
    /// Rounds every scalar to f32, as the kernel receives them.
    pub fn to_f32(&self) -> SgdScalars<f32> {
        let r = |x: f64| x as f32;
        SgdScalars {
            lr: r(self.lr),
            momentum: r(self.momentum),
            one_minus_dampening: r(self.one_minus_dampening),
            weight_decay: r(self.weight_decay),
            first_step: r(self.first_step),
            nesterov: r(self.nesterov),
            pad: [0.0; 2],
        }
    }
}

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
