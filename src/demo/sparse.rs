//! The demo's sparse problem: a synthetic, seeded logistic regression whose feature frequencies
//! follow a power law, so that most features are rare. Rare features are where the variance of
//! `bayes` starts from a tiny curvature and where its bound (`sigma_max`) matters most.
//!
//! Generated in code from a seed; nothing is downloaded.

use ndarray::Array2;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::demo::data::{Samples, Split};

/// Binary features per sample.
pub const FEATURES: usize = 1000;
/// Two classes: logistic regression written as a two-class softmax.
pub const CLASSES: usize = 2;
/// Samples generated: train, then validation, then test.
pub const TRAIN: usize = 3000;
pub const VALIDATION: usize = 500;
pub const TEST: usize = 500;

/// Frequency of feature j (0-based): 0.5·(j + 1)^−0.8. The first few are common, 98% appear in
/// fewer than 5% of samples, half in fewer than 0.35%, the rarest in 0.2%; about 8 are on per
/// sample.
pub fn frequency(j: usize) -> f64 {
    0.5 * ((j + 1) as f64).powf(-0.8)
}

/// The problem of `seed`: true weights N(0, 1.5²) per feature and bias −0.5; each sample turns
/// feature j on with [`frequency`]`(j)` and draws its label from sigmoid(x·w + b).
pub fn generate(seed: u64) -> Split {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5a25e);
    let weights: Vec<f64> = (0..FEATURES).map(|_| 1.5 * normal(&mut rng)).collect();
    let bias = -0.5;
    let mut samples = |n: usize| {
        let mut x = Array2::<f32>::zeros((n, FEATURES));
        let mut y = Vec::with_capacity(n);
        for mut row in x.rows_mut() {
            let mut logit = bias;
            for (j, v) in row.iter_mut().enumerate() {
                if rng.random_bool(frequency(j)) {
                    *v = 1.0;
                    logit += weights[j];
                }
            }
            let p = 1.0 / (1.0 + (-logit).exp());
            y.push(usize::from(rng.random_bool(p)));
        }
        Samples { x, y }
    };
    Split {
        train: samples(TRAIN),
        validation: samples(VALIDATION),
        test: samples(TEST),
    }
}

/// A standard normal draw (Box–Muller), so that no distribution crate is needed.
fn normal(rng: &mut SmallRng) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    let v: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_features_are_rare_and_the_problem_is_fixed_by_its_seed() {
        let (a, b) = (generate(3), generate(3));
        assert_eq!(a.train.x, b.train.x);
        assert_eq!(a.test.y, b.test.y);
        assert_ne!(generate(4).train.y, a.train.y);
        let n = a.train.len() as f64;
        let counts: Vec<f64> = (0..FEATURES)
            .map(|j| a.train.x.column(j).sum() as f64 / n)
            .collect();
        let rare = counts.iter().filter(|&&f| f < 0.05).count();
        assert!(rare as f64 >= 0.9 * FEATURES as f64, "{rare} rare features");
        let mut sorted = counts.clone();
        sorted.sort_by(f64::total_cmp);
        assert!(
            sorted[FEATURES / 2] < 0.01,
            "median frequency {}",
            sorted[FEATURES / 2]
        );
        // Both labels occur in earnest.
        let ones = a.train.y.iter().sum::<usize>() as f64 / n;
        assert!((0.2..0.8).contains(&ones), "{ones}");
    }
}
