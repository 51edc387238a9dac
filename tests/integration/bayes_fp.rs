//! `bayes_fp` (SPEC §2b): its step is `bayes`'s step taken from σ = σ*(h + eps²); the step bound
//! of SPEC §2 holds; σ is read on request from s (whole vector and per tensor, CPU and GPU),
//! and checkpoints carry no σ.

use crate::common;

use bayesprop::optim::{BayesFpConfig, Optimizer};
use bayesprop::reference::{bayes, bayes_fp};
use bayesprop::{
    BayesConfig, CpuOptimizer, CpuPath, Error, GpuOptimizer, OptimizerConfig, ParamGroups, Stepper,
    TensorId,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A magnitude log-uniform over 10^lo … 10^hi, with a random sign.
fn spread(rng: &mut SmallRng, lo: f64, hi: f64) -> f32 {
    let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
    (sign * 10f64.powf(rng.random_range(lo..hi))) as f32
}

/// bayes's update from σ > 0 is θ ← θ − σ'·d with σ' = σ/(1 + hσ) + η², and σ' = σ exactly
/// at σ = σ*(h); σ*(h + eps²) is that to relative O(eps²·σ), below f32 rounding when h ≫ eps².
/// What remains is the rounding of bayes's division and two additions. The step sizes σ (of
/// bayes_fp) and σ' (of bayes) are compared, since d is computed by the same code in both; θ
/// itself is not, as θ − σ·d near 0 magnifies one ULP of θ₀ into many of the result. Measured
/// over the 24,000 elements below: at most 2 ULP apart.
const SAME_STEP_ULP: u64 = 2;

#[test]
fn its_step_is_bayes_step_from_the_fixed_point() {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut worst = 0;
    for eta in [1e-6, 1e-3, 1.0, 1e3] {
        for (t, momentum, weight_decay) in [(1, 0.0, 0.0), (10, 0.0, 1e-2), (100, 0.9, 0.0)] {
            let fp = BayesFpConfig {
                eta,
                momentum,
                weight_decay,
                ..Default::default()
            };
            let p = fp.scalars(t).to_f32();
            for _ in 0..2000 {
                let theta0 = spread(&mut rng, -3.0, 3.0);
                let g = spread(&mut rng, -4.0, 2.0);
                let s0 = spread(&mut rng, -8.0, 4.0).abs();
                let m0 = spread(&mut rng, -4.0, 2.0);

                let (mut th_fp, mut s_fp, mut m_fp) = (theta0, s0, m0);
                let m = (momentum > 0.0).then_some(&mut m_fp);
                bayes_fp::update_element(&p, &mut th_fp, g, &mut s_fp, m);
                // The σ bayes_fp used, read back as `state("sigma")` does.
                let sigma = fp.derived_state("sigma", t, &[&[s_fp], &[]]).unwrap()[0];
                assert_eq!(sigma, bayes_fp::sigma(&p, s_fp));

                let (mut th_b, mut s_b, mut sigma_b, mut m_b) = (theta0, s0, sigma, m0);
                let m = (momentum > 0.0).then_some(&mut m_b);
                bayes::update_element(&p, &mut th_b, g, &mut s_b, &mut sigma_b, m);

                assert_eq!(
                    (s_fp.to_bits(), m_fp.to_bits()),
                    (s_b.to_bits(), m_b.to_bits())
                );
                // bayes steps by its new σ, bayes_fp by σ, along the same d (same code).
                let ulp = bayesprop::ulp::ulp_distance(sigma, sigma_b);
                worst = worst.max(ulp);
                assert!(
                    ulp <= SAME_STEP_ULP,
                    "η {eta} t {t} g {g:e} s {s_fp:e}: step sizes {sigma:e} and {sigma_b:e} \
                     are {ulp} ULP apart"
                );
            }
        }
    }
    eprintln!("bayes_fp against bayes at σ*(h + eps²): worst {worst} ULP");
}

#[test]
fn the_step_bound_holds_on_sparse_streams_spanning_fourteen_decades() {
    // SPEC §2: with λ = 0 and β₁ = 0, |Δθ| ≤ η/sqrt((1 − β)·c2) + η²·|g| to rounding.
    let n = 512;
    let mut rng = SmallRng::seed_from_u64(11);
    for eta in [1e-3, 1.0] {
        for beta in [0.9, 0.999] {
            let config = BayesFpConfig {
                eta,
                beta,
                ..Default::default()
            };
            let mut cpu = CpuOptimizer::reference(config, &vec![0.0; n]).unwrap();
            for t in 1..=300u64 {
                let grad: Vec<f32> = (0..n)
                    .map(|_| match rng.random_bool(0.2) {
                        true => spread(&mut rng, -12.0, 2.0),
                        false => 0.0,
                    })
                    .collect();
                let before = cpu.theta().unwrap();
                cpu.step(&grad).unwrap();
                let after = cpu.theta().unwrap();
                let c2 = 1.0 / (1.0 - beta.powf(t as f64));
                for i in 0..n {
                    let step = (after[i] as f64 - before[i] as f64).abs();
                    let g = grad[i] as f64;
                    let bound = eta / ((1.0 - beta) * c2).sqrt() + eta * eta * g.abs();
                    assert!(
                        step <= bound * (1.0 + 1e-5),
                        "η {eta} β {beta} t {t} [{i}]: |Δθ| {step:e} > {bound:e} (g {g:e})"
                    );
                }
            }
        }
    }
}

/// Two tensors in one group; element 3 of the flat vector (`b[0]`) never sees a gradient.
fn two_tensors(eta: f64) -> (ParamGroups, TensorId, TensorId) {
    let mut groups = ParamGroups::new();
    let config = BayesFpConfig {
        eta,
        ..Default::default()
    };
    let group = groups.add_group("all", config).unwrap();
    let w = groups
        .add_tensor(group, "w", &[3], &[1.0, -2.0, 0.5])
        .unwrap();
    let b = groups.add_tensor(group, "b", &[2], &[0.0, 4.0]).unwrap();
    (groups, w, b)
}

const GRADS: [[f32; 5]; 2] = [[0.1, -0.2, 0.3, 0.0, 2.0], [0.2, 0.01, -0.01, 0.0, -1.0]];

/// σ against σ*(ŝ + eps²) in f64 from the f32 s, with the c2 of step 2; the per-tensor reads
/// against the whole vector; and no σ in the checkpoint.
fn check_sigma(
    stepper: &dyn Stepper,
    tensor_sigma: impl Fn(TensorId) -> Vec<f32>,
    (w, b): (TensorId, TensorId),
) -> Vec<f32> {
    let s = stepper.state("s").unwrap();
    let sigma = stepper.state("sigma").unwrap();
    let bayes = BayesConfig {
        eta: 1e-2,
        ..Default::default()
    };
    let c2 = 1.0 / (1.0 - 0.999f64.powi(2));
    for i in 0..5 {
        let want = bayes.sigma_star(s[i] as f64 * c2 + 1e-16);
        let got = sigma[i] as f64;
        assert!((got - want).abs() <= 1e-6 * want, "σ[{i}] {got} ≠ {want}");
    }
    // g = 0 throughout: s = 0, and σ = σ*(eps²), the belief of no data.
    assert_eq!(s[3], 0.0);
    assert_eq!(tensor_sigma(w), sigma[..3]);
    assert_eq!(tensor_sigma(b), sigma[3..]);
    for tensor in &stepper.checkpoint().unwrap().tensors {
        let names: Vec<_> = tensor.vectors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["theta", "s"], "{}", tensor.name);
    }
    assert!(matches!(
        stepper.state("v"),
        Err(Error::Unknown { known, .. }) if known == "s, sigma"
    ));
    sigma
}

#[test]
fn sigma_is_read_from_s_on_every_device_and_never_stored() {
    let (groups, w, b) = two_tensors(1e-2);
    let mut cpu = CpuOptimizer::from_groups(&groups, CpuPath::Reference);
    for grad in GRADS {
        cpu.step(&grad).unwrap();
    }
    let on_cpu = check_sigma(&cpu, |id| cpu.tensor_state(id, "sigma").unwrap(), (w, b));

    let Some(ctx) = common::gpu("sigma_is_read_from_s_on_every_device_and_never_stored") else {
        return;
    };
    let mut gpu = GpuOptimizer::from_groups(&ctx, &groups).unwrap();
    for grad in GRADS {
        gpu.step(&grad).unwrap();
    }
    let on_gpu = check_sigma(&gpu, |id| gpu.tensor_state(id, "sigma").unwrap(), (w, b));
    assert_eq!(on_cpu, on_gpu, "the same bits on both");
}

#[test]
fn it_has_bayes_defaults_and_needs_eta_above_zero() {
    let fp = BayesFpConfig::default();
    let bayes = BayesConfig::default();
    assert_eq!(
        (
            fp.beta,
            fp.eta,
            fp.eps,
            fp.bias_correction,
            fp.weight_decay,
            fp.momentum
        ),
        (
            bayes.beta,
            bayes.eta,
            bayes.eps,
            bayes.bias_correction,
            bayes.weight_decay,
            bayes.momentum
        )
    );
    let config = OptimizerConfig::from(fp);
    assert_eq!(config.used_state_names(), ["s"]);
    assert_eq!(config.as_dyn().bytes_per_element(), 20);
    let momentum = OptimizerConfig::from_settings("bayes_fp", [("momentum", "0.9")]).unwrap();
    assert_eq!(momentum.as_dyn().bytes_per_element(), 28);
    for (key, value) in [
        ("eta", "0"),
        ("beta", "1"),
        ("eps", "0"),
        ("momentum", "-0.1"),
    ] {
        match OptimizerConfig::from_settings("bayes_fp", [(key, value)]) {
            Err(Error::Config {
                optimizer, field, ..
            }) => assert_eq!((optimizer, field), ("bayes_fp", key), "{key}={value}"),
            other => panic!("{key}={value}: expected a Config error, got {other:?}"),
        }
    }
    assert!(matches!(
        OptimizerConfig::from_settings("bayes_fp", [("sigma_init", "1e-3")]),
        Err(Error::UnknownOption {
            optimizer: "bayes_fp",
            ..
        })
    ));
}
