//! `bayes`'s bound `sigma_max = none` keeps the bits of the rule from before the bound, through
//! the CPU twin's `step`, over streams where the bound would bind.

use bayesprop::optim::{BayesConfig, SigmaInit, SigmaMax};
use bayesprop::reference::bayes::{step, BayesScalars};
use bayesprop::validate;

/// The element step as it was before `sigma_max` existed, copied verbatim (less the
/// const generic): `sigma_max = none` must keep its bits.
fn unbounded_before_sigma_max(
    p: &BayesScalars<f32>,
    theta: &mut f32,
    g: f32,
    s: &mut f32,
    sigma: &mut f32,
    m: Option<&mut f32>,
) {
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
    let x = h + p.eps_sq;
    let star = p.eta_sq * 0.5 + p.eta * (p.eta_sq * 0.25 + 1.0 / x).sqrt();
    let sig1 = if sig0 == 0.0 && h > 0.0 { star } else { sig0 };
    let live = sig1 > 0.0;
    let post = sig1 / (1.0 + h * sig1) + p.eta_sq;
    *theta = if live { th - post * d } else { th };
    *s = s_new;
    *sigma = if live { post } else { sig1 };
}

/// `sigma_max = none` reproduces the rule before the bound bit for bit, through `step`
/// (both block shapes) and `update_element`, over the validate battery's regimes and
/// streams with tiny first gradients, where the bound would bind.
#[test]
fn sigma_max_none_keeps_the_bits_of_the_unbounded_rule() {
    let n = 1000;
    let mut configs = Vec::new();
    for eta in [0.0, 1e-6, 1e-3, 1.0, 1e3] {
        for (beta, momentum, weight_decay) in [(0.999, 0.0, 0.0), (0.9, 0.9, 1e-2)] {
            for sigma_init in [SigmaInit::FixedPoint, SigmaInit::Value(1e-2)] {
                if eta == 0.0 && sigma_init == SigmaInit::FixedPoint {
                    continue;
                }
                configs.push(BayesConfig {
                    eta,
                    beta,
                    momentum,
                    weight_decay,
                    sigma_init,
                    sigma_max: SigmaMax::None,
                    ..BayesConfig::default()
                });
            }
        }
    }
    let mut changed = 0;
    for config in configs {
        let theta0 = validate::initial_theta(n, 9);
        let sigma0 = match config.sigma_init {
            SigmaInit::FixedPoint => 0.0,
            SigmaInit::Value(v) => v as f32,
        };
        let mut new = (
            theta0.clone(),
            vec![0f32; n],
            vec![sigma0; n],
            vec![0f32; n],
        );
        let mut old = new.clone();
        for t in 1..=60 {
            let p = config.scalars(t).to_f32();
            let g = validate::rising_gradient(n, 9, t);
            let m: &mut [f32] = if config.momentum > 0.0 {
                &mut new.3
            } else {
                &mut []
            };
            step(&p, &mut new.0, &g, &mut new.1, &mut new.2, m);
            for (i, &g) in g.iter().enumerate() {
                let m = (config.momentum > 0.0).then_some(&mut old.3[i]);
                unbounded_before_sigma_max(&p, &mut old.0[i], g, &mut old.1[i], &mut old.2[i], m);
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&new.0), bits(&old.0), "{config:?}: θ at step {t}");
            assert_eq!(bits(&new.1), bits(&old.1), "{config:?}: s at step {t}");
            assert_eq!(bits(&new.2), bits(&old.2), "{config:?}: σ at step {t}");
            assert_eq!(bits(&new.3), bits(&old.3), "{config:?}: m at step {t}");
        }
        // The bound changes these streams, so the comparison is not vacuous.
        let bounded = BayesConfig {
            sigma_max: SigmaMax::FixedPoint,
            ..config
        };
        if bounded.eta > 0.0 {
            let (mut th, mut s, mut sg, mut m) = (
                theta0.clone(),
                vec![0f32; n],
                vec![sigma0; n],
                vec![0f32; n],
            );
            for t in 1..=60 {
                let m: &mut [f32] = if config.momentum > 0.0 {
                    &mut m
                } else {
                    &mut []
                };
                let g = validate::rising_gradient(n, 9, t);
                step(
                    &bounded.scalars(t).to_f32(),
                    &mut th,
                    &g,
                    &mut s,
                    &mut sg,
                    m,
                );
            }
            changed += usize::from(sg != old.2);
        }
    }
    assert!(changed > 0, "the bound never changed σ on these streams");
}
