//! The two models the demo trains, with hand-derived backprop on the CPU (ndarray).
//!
//! Parameters live in one flat vector θ (what the optimizers step), laid out as
//! `[W1 (in × hidden, row-major), b1 (hidden), W2 (hidden × classes), b2 (classes)]` for the MLP
//! and `[W (in × classes), b (classes)]` for softmax regression. The loss is the mean
//! cross-entropy of the softmax of the logits. Everything is generic over f32/f64 so the
//! finite-difference tests can check the f64 gradient tightly and the f32 one against it.

use std::fmt;

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::demo::data::{CLASSES, FEATURES};
use crate::demo::sparse;

/// The float types the models compute in.
pub trait Float:
    num_traits::Float
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + std::iter::Sum
    + std::ops::AddAssign
    + std::ops::SubAssign
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
    fn from_f64(v: f64) -> Self;
}

impl Float for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Float for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// A classifier: of the digits' `FEATURES` pixels into `CLASSES` classes, or of the sparse
/// problem's binary features into two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// Multinomial logistic regression of the digits: logits = x·W + b.
    Softmax,
    /// One hidden layer of `hidden` tanh units: logits = tanh(x·W1 + b1)·W2 + b2.
    Mlp { hidden: usize },
    /// Logistic regression (a two-class softmax) of the sparse power-law problem
    /// ([`crate::demo::sparse`]).
    Sparse,
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Model::Softmax => write!(f, "softmax"),
            Model::Mlp { hidden } => write!(f, "mlp-{hidden}"),
            Model::Sparse => write!(f, "sparse-logistic"),
        }
    }
}

impl Model {
    /// Length of θ.
    pub fn num_params(&self) -> usize {
        match *self {
            Model::Softmax | Model::Sparse => {
                let (inputs, classes) = self.dims();
                inputs * classes + classes
            }
            Model::Mlp { hidden } => FEATURES * hidden + hidden + hidden * CLASSES + CLASSES,
        }
    }

    /// Input width and number of classes.
    pub fn dims(&self) -> (usize, usize) {
        match *self {
            Model::Softmax | Model::Mlp { .. } => (FEATURES, CLASSES),
            Model::Sparse => (sparse::FEATURES, sparse::CLASSES),
        }
    }

    /// θ₀: zeros for the linear models (their loss is convex); for the MLP, weights uniform in
    /// ±1/sqrt(fan_in) from a seeded generator and zero biases.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut theta = vec![0.0f32; self.num_params()];
        if let Model::Mlp { hidden } = *self {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut fill = |part: &mut [f32], fan_in: usize| {
                let bound = 1.0 / (fan_in as f32).sqrt();
                for v in part {
                    *v = rng.random_range(-bound..bound);
                }
            };
            let (w1, rest) = theta.split_at_mut(FEATURES * hidden);
            fill(w1, FEATURES);
            let w2 = &mut rest[hidden..hidden + hidden * CLASSES];
            fill(w2, hidden);
        }
        theta
    }

    /// Mean cross-entropy over the rows of `x`; with `grad`, also its gradient with respect to θ
    /// (overwritten).
    pub fn loss_grad<F: Float>(
        &self,
        theta: &[F],
        x: ArrayView2<'_, F>,
        y: &[usize],
        grad: Option<&mut [F]>,
    ) -> F {
        let (inputs, classes) = self.dims();
        assert_eq!(theta.len(), self.num_params(), "θ length");
        assert_eq!(x.ncols(), inputs, "input width");
        assert_eq!(x.nrows(), y.len(), "one label per row");
        match *self {
            Model::Softmax | Model::Sparse => {
                let (w, b) = linear(theta, inputs, classes);
                let mut z = x.dot(&w);
                z += &b;
                let loss = softmax_cross_entropy(&mut z, y);
                if let Some(grad) = grad {
                    // z now holds dL/dz.
                    let (mut gw, mut gb) = linear_mut(grad, inputs, classes);
                    gw.assign(&x.t().dot(&z));
                    gb.assign(&z.sum_axis(Axis(0)));
                }
                loss
            }
            Model::Mlp { hidden } => {
                let split = FEATURES * hidden + hidden;
                let (w1, b1) = linear(&theta[..split], FEATURES, hidden);
                let (w2, b2) = linear(&theta[split..], hidden, CLASSES);
                let mut a = x.dot(&w1);
                a += &b1;
                a.mapv_inplace(F::tanh);
                let mut z = a.dot(&w2);
                z += &b2;
                let loss = softmax_cross_entropy(&mut z, y);
                if let Some(grad) = grad {
                    let (g1, g2) = grad.split_at_mut(split);
                    let (mut gw2, mut gb2) = linear_mut(g2, hidden, CLASSES);
                    gw2.assign(&a.t().dot(&z));
                    gb2.assign(&z.sum_axis(Axis(0)));
                    // dL/d(pre-activation) = (dL/dz · W2ᵀ) ⊙ (1 − tanh²).
                    let mut da = z.dot(&w2.t());
                    da.zip_mut_with(&a, |d, &t| *d = *d * (F::one() - t * t));
                    let (mut gw1, mut gb1) = linear_mut(g1, FEATURES, hidden);
                    gw1.assign(&x.t().dot(&da));
                    gb1.assign(&da.sum_axis(Axis(0)));
                }
                loss
            }
        }
    }

    /// Mean cross-entropy (summed in f64) and accuracy of θ on a whole data set, in batches.
    pub fn evaluate(&self, theta: &[f32], x: ArrayView2<'_, f32>, y: &[usize]) -> (f64, f64) {
        const BATCH: usize = 512;
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for start in (0..y.len()).step_by(BATCH) {
            let end = (start + BATCH).min(y.len());
            let xb = x.slice(ndarray::s![start..end, ..]);
            let logits = self.logits(theta, xb);
            for (row, &label) in logits.rows().into_iter().zip(&y[start..end]) {
                let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let lse = max + row.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
                loss_sum += f64::from(lse - row[label]);
                let best = row
                    .iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                        if v > bv {
                            (i, v)
                        } else {
                            (bi, bv)
                        }
                    })
                    .0;
                correct += usize::from(best == label);
            }
        }
        let n = y.len().max(1) as f64;
        (loss_sum / n, correct as f64 / n)
    }

    fn logits(&self, theta: &[f32], x: ArrayView2<'_, f32>) -> Array2<f32> {
        match *self {
            Model::Softmax | Model::Sparse => {
                let (inputs, classes) = self.dims();
                let (w, b) = linear(theta, inputs, classes);
                x.dot(&w) + b
            }
            Model::Mlp { hidden } => {
                let split = FEATURES * hidden + hidden;
                let (w1, b1) = linear(&theta[..split], FEATURES, hidden);
                let (w2, b2) = linear(&theta[split..], hidden, CLASSES);
                let a = (x.dot(&w1) + b1).mapv(f32::tanh);
                a.dot(&w2) + b2
            }
        }
    }
}

/// The weight matrix and bias of one layer at the start of `params`.
fn linear<F>(
    params: &[F],
    inputs: usize,
    outputs: usize,
) -> (ArrayView2<'_, F>, ArrayView1<'_, F>) {
    let (w, rest) = params.split_at(inputs * outputs);
    (
        ArrayView2::from_shape((inputs, outputs), w).expect("layer shape"),
        ArrayView1::from(&rest[..outputs]),
    )
}

fn linear_mut<F>(
    params: &mut [F],
    inputs: usize,
    outputs: usize,
) -> (ArrayViewMut2<'_, F>, ArrayViewMut1<'_, F>) {
    let (w, rest) = params.split_at_mut(inputs * outputs);
    (
        ArrayViewMut2::from_shape((inputs, outputs), w).expect("layer shape"),
        ArrayViewMut1::from(&mut rest[..outputs]),
    )
}

/// Mean over rows of −log softmax(z)[y]; replaces `z` by the gradient of that mean, (p − onehot)/B.
fn softmax_cross_entropy<F: Float>(z: &mut Array2<F>, y: &[usize]) -> F {
    let scale = F::one() / F::from_f64(y.len().max(1) as f64);
    let mut total = F::zero();
    for (mut row, &label) in z.rows_mut().into_iter().zip(y) {
        let max = row.fold(F::neg_infinity(), |m, &v| m.max(v));
        let lse = max + row.iter().map(|&v| (v - max).exp()).sum::<F>().ln();
        total += lse - row[label];
        row.mapv_inplace(|v| (v - lse).exp() * scale);
        row[label] -= scale;
    }
    total * scale
}
