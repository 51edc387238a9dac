//! bayesprop's `adam` through the adapter against burn's own Adam, same hyperparameters.
//!
//! burn computes θ − lr·m·(√(1−β₂ᵗ)/(1−β₁ᵗ)) / (√v + ε·√(1−β₂ᵗ)) with f32 scalars; bayesprop
//! computes θ − lr·(m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε) with scalars from f64 (SPEC §3). The two are
//! the same formula, so they differ only by rounding.

mod common;

use bayesprop::optim::AdamConfig as OurAdam;
use bayesprop::ulp::max_ulp_distance;
use bayesprop_burn::BayespropConfig;
use burn::module::ParamId;
use burn::optim::{AdamConfig, GradientsParams};
use common::{flat, grads, params, Mlp};

const LR: f64 = 1e-2;
const EPS: f64 = 1e-5;
const STEPS: usize = 30;

/// The same gradients twice, so both optimizers see identical inputs.
fn twice(g: &GradientsParams, ids: &[(ParamId, usize)]) -> (GradientsParams, GradientsParams) {
    let (mut a, mut b) = (GradientsParams::new(), GradientsParams::new());
    for &(id, rank) in ids {
        match rank {
            1 => {
                a.register(id, g.get::<1>(id).unwrap());
                b.register(id, g.get::<1>(id).unwrap());
            }
            _ => {
                a.register(id, g.get::<2>(id).unwrap());
                b.register(id, g.get::<2>(id).unwrap());
            }
        }
    }
    (a, b)
}

/// (max ULP distance, max |Δθ| / (lr · steps)) between two models' parameters.
fn gap(a: &Mlp, b: &Mlp, steps: usize) -> (u64, f64) {
    let (x, y) = (flat(a), flat(b));
    let (ulp, _) = max_ulp_distance(&x, &y);
    let abs = x
        .iter()
        .zip(&y)
        .map(|(p, q)| (p - q).abs() as f64)
        .fold(0.0, f64::max);
    (ulp, abs / (LR * steps as f64))
}

#[test]
fn adam_follows_burns_adam_to_rounding() {
    let device = common::device();
    let init = Mlp::new(&device);
    let ids: Vec<_> = params(&init)
        .iter()
        .map(|(id, shape, _)| (*id, shape.len()))
        .collect();
    let ours_config = OurAdam {
        eps: EPS,
        ..OurAdam::adam()
    };

    // Identical gradients every step: only the formulas' rounding separates the two.
    let mut theirs = AdamConfig::new().with_epsilon(EPS as f32).init();
    let mut ours = BayespropConfig::new(ours_config).init();
    let (mut a, mut b) = (init.clone(), init.clone());
    let mut same_grads = (0, 0.0f64);
    for t in 0..STEPS {
        let (ga, gb) = twice(&grads(&a, &device, t), &ids);
        a = theirs.step(LR, a, ga);
        b = ours.step(LR, b, gb);
        let (ulp, rel) = gap(&a, &b, t + 1);
        same_grads = (same_grads.0.max(ulp), same_grads.1.max(rel));
    }

    // Each on its own trajectory: the rounding also moves the gradients.
    let mut theirs = AdamConfig::new().with_epsilon(EPS as f32).init();
    let mut ours = BayespropConfig::new(ours_config).init();
    let (mut a, mut b) = (init.clone(), init);
    let mut own_grads = (0, 0.0f64);
    for t in 0..STEPS {
        let g = grads(&a, &device, t);
        a = theirs.step(LR, a, g);
        let g = grads(&b, &device, t);
        b = ours.step(LR, b, g);
        let (ulp, rel) = gap(&a, &b, t + 1);
        own_grads = (own_grads.0.max(ulp), own_grads.1.max(rel));
    }
    println!(
        "over {STEPS} steps: same gradients max {} ULP, max |Δθ| = {:.2e}·lr·t; \
         own trajectories max {} ULP, max |Δθ| = {:.2e}·lr·t",
        same_grads.0, same_grads.1, own_grads.0, own_grads.1
    );
    // ULPs are no measure here: parameters cross zero, where one step's rounding is
    // thousands of ULPs of a tiny value. The bound is on |Δθ| against the distance steps move.
    assert!(
        same_grads.1 > 0.0,
        "identical results would make this test vacuous"
    );
    assert!(same_grads.1 <= BOUND, "same gradients: {same_grads:?}");
    assert!(own_grads.1 <= BOUND, "own trajectories: {own_grads:?}");
}

/// max |Δθ| ≤ 64·ε·lr·t (ε = 2⁻²³) over t steps; measured on lavapipe: 41.7·ε·lr·t
/// (4.97e-6·lr·t) over 30 steps, with the same or each its own gradients.
const BOUND: f64 = 64.0 * f32::EPSILON as f64;
