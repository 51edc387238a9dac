//! The training step around the update (SPEC §4b): unscaling, global-norm clipping and
//! schedules, on the CPU reference, the fast CPU path and the GPU, which must agree to the bit
//! on a software adapter, norms included; and the definitions, checked in f64.

use crate::common;

use bayesprop::kernels::WINDOW;
use bayesprop::layout::ParamGroups;
use bayesprop::optim::{AdamConfig, SgdConfig};
use bayesprop::ulp::max_ulp_distance;
use bayesprop::validate::{gradient, initial_theta};
use bayesprop::{
    BayesConfig, BufferRange, CpuOptimizer, CpuPath, Error, GpuContext, GpuOptimizer, GpuOptions,
    GradTransform, NonFinitePolicy, NormReport, OptimizerConfig, StepReport, Stepper,
};

/// Two groups (bayes and adam) of uneven sizes, several blocks of the norm each, so that the
/// norm's order (blocks, regions, lanes) is exercised across groups.
fn groups() -> ParamGroups {
    let mut p = ParamGroups::new();
    let a = p.add_group("a", BayesConfig::default()).unwrap();
    let b = p.add_group("b", AdamConfig::adam()).unwrap();
    p.add_tensor(a, "w", &[3000], &initial_theta(3000, 1))
        .unwrap();
    p.add_tensor(a, "bias", &[7], &initial_theta(7, 2)).unwrap();
    p.add_tensor(b, "w", &[2049], &initial_theta(2049, 3))
        .unwrap();
    p
}

fn transform(scale: f32, clip: f32) -> GradTransform {
    GradTransform {
        grad_scale: scale,
        clip_norm: Some(clip),
        ..Default::default()
    }
}

/// Configures any optimizer the same way: unscale by 1024, clip to 1, a cosine schedule of
/// bayes's η and a warmup of adam's lr.
fn configure(o: &mut dyn Stepper) {
    o.set_grad_transform(transform(1024.0, 1.0)).unwrap();
    o.set_group_schedule(
        bayesprop::GroupId(0),
        "eta:cosine:warmup=3,total=12,final=0.1".parse().unwrap(),
    )
    .unwrap();
    o.set_group_schedule(bayesprop::GroupId(1), "lr:linear:warmup=4".parse().unwrap())
        .unwrap();
}

/// Gradients of realistic spread, times the loss scale, with a NaN at step 5 in group b.
fn grad(n: usize, t: u64) -> Vec<f32> {
    let mut g: Vec<f32> = gradient(n, 7, t).iter().map(|x| x * 1024.0).collect();
    if t == 5 {
        g[4000] = f32::NAN;
    }
    g
}

/// θ after each step, then the norms and the non-finite reports of the run.
fn run(o: &mut dyn Stepper, steps: u64) -> (Vec<Vec<f32>>, Vec<NormReport>, Vec<StepReport>) {
    let n = o.len();
    let mut thetas = Vec::new();
    for t in 1..=steps {
        o.step(&grad(n, t)).unwrap();
        thetas.push(o.theta().unwrap());
    }
    let reports = o.step_reports().unwrap();
    (thetas, o.norm_reports().unwrap(), reports)
}

#[test]
fn fast_path_is_the_reference_to_the_bit_norms_included() {
    let p = groups();
    let mut reference = CpuOptimizer::from_groups(&p, CpuPath::Reference);
    let mut fast = CpuOptimizer::from_groups(&p, CpuPath::Parallel);
    configure(&mut reference);
    configure(&mut fast);
    let (want, want_norms, _) = run(&mut reference, 12);
    let (got, got_norms, _) = run(&mut fast, 12);
    assert_eq!(got_norms, want_norms);
    assert_eq!(want_norms.len(), 12);
    for (t, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(max_ulp_distance(g, w).0, 0, "after step {}", t + 1);
    }
    // Group b skipped step 5 (skip-step); group a applied it, clipped by the norm of every
    // finite element.
    assert_eq!(reference.group_steps(), vec![12, 11]);
}

#[test]
fn gpu_is_the_reference_to_the_bit_norms_included() {
    let Some(ctx) = common::gpu("gpu_is_the_reference_to_the_bit_norms_included") else {
        return;
    };
    let p = groups();
    let mut reference = CpuOptimizer::from_groups(&p, CpuPath::Reference);
    let mut gpu = GpuOptimizer::from_groups(&ctx, &p).unwrap();
    configure(&mut reference);
    configure(&mut gpu);
    let (want, want_norms, _) = run(&mut reference, 12);
    let (got, got_norms, _) = run(&mut gpu, 12);
    assert_device_agrees(ctx.is_software(), (&got, &got_norms), (&want, &want_norms));
    assert_eq!(gpu.group_steps().unwrap(), vec![12, 11]);

    // Logging without waiting: whatever has come back, in order; the rest on a later call.
    let mut arrived = Vec::new();
    for t in 1..=WINDOW as u64 {
        gpu.step(&grad(gpu.len(), t)).unwrap();
        arrived.extend(gpu.arrived_norm_reports().unwrap());
    }
    gpu.step_reports().unwrap();
    arrived.extend(gpu.arrived_norm_reports().unwrap());
    let calls: Vec<u64> = arrived.iter().map(|r| r.call).collect();
    assert_eq!(calls, (13..=12 + WINDOW as u64).collect::<Vec<_>>());

    // Under SkipElement the scan runs for the norm only (the update counts), and the NaN
    // element alone keeps its value.
    let mut reference = CpuOptimizer::from_groups(&p, CpuPath::Reference)
        .with_nonfinite_policy(NonFinitePolicy::SkipElement);
    let mut gpu = GpuOptimizer::from_groups(&ctx, &p)
        .unwrap()
        .with_nonfinite_policy(NonFinitePolicy::SkipElement);
    configure(&mut reference);
    configure(&mut gpu);
    let (want, want_norms, want_reports) = run(&mut reference, 6);
    let (got, got_norms, got_reports) = run(&mut gpu, 6);
    assert_device_agrees(ctx.is_software(), (&got, &got_norms), (&want, &want_norms));
    assert_eq!(gpu.group_steps().unwrap(), vec![6, 6]);
    assert_eq!(got_reports, want_reports);
    let [report] = want_reports[..] else {
        panic!("one report: step 5's NaN, in group b: {want_reports:?}")
    };
    assert_eq!((report.call, report.group, report.nonfinite), (5, 1, 1));
    assert!(report.applied);
}

/// On a software adapter the device is the reference to the bit, norms included. A hardware
/// adapter may contract to FMA and approximate division (see `validate::Rule`): there the
/// norms must agree to 1e-5 relative and θ to 1e-4 relative to max(|θ|, 1e-3), a loose
/// check not yet measured on hardware.
fn assert_device_agrees(
    software: bool,
    (got, got_norms): (&[Vec<f32>], &[NormReport]),
    (want, want_norms): (&[Vec<f32>], &[NormReport]),
) {
    if software {
        assert_eq!(got_norms, want_norms);
    }
    for (g, w) in got_norms.iter().zip(want_norms) {
        assert!(((g.norm - w.norm) / w.norm).abs() <= 1e-5, "{g:?} vs {w:?}");
    }
    for (t, (g, w)) in got.iter().zip(want).enumerate() {
        let (ulp, at) = max_ulp_distance(g, w);
        if software {
            assert_eq!(ulp, 0, "after step {}: {ulp} ULP at {at}", t + 1);
        }
        for (x, y) in g.iter().zip(w) {
            assert!(
                (x - y).abs() <= 1e-4 * y.abs().max(1e-3),
                "after step {}: {x} vs {y}",
                t + 1
            );
        }
    }
}

/// The norm and factor of one step against f64 sums of the definitions: sqrt(Σ (g/S)²) over
/// the finite elements, c = min(1, M / (N + 1e-6)); and the update is SGD on g/S·c.
#[test]
fn norm_and_clip_follow_the_definition_in_f64() {
    let n = 5000;
    let theta0 = initial_theta(n, 4);
    let sgd = SgdConfig {
        lr: 0.5,
        ..Default::default()
    };
    let mut g = gradient(n, 9, 1);
    g[17] = f32::INFINITY;
    for (policy, scale, clip) in [
        (NonFinitePolicy::SkipElement, 8.0, 0.25),
        (NonFinitePolicy::SkipElement, 0.5, 1e9),
    ] {
        let mut o = CpuOptimizer::new(sgd, &theta0)
            .unwrap()
            .with_nonfinite_policy(policy);
        o.set_grad_transform(transform(scale, clip)).unwrap();
        o.step(&g).unwrap();
        let [report] = o.norm_reports().unwrap()[..] else {
            panic!("one report per step")
        };
        let norm64 = g
            .iter()
            .map(|&x| x as f64 / scale as f64)
            .filter(|u| u.is_finite())
            .map(|u| u * u)
            .sum::<f64>()
            .sqrt();
        let factor64 = (clip as f64 / (norm64 + 1e-6)).min(1.0);
        assert!(((report.norm as f64 - norm64) / norm64).abs() < 1e-6);
        assert!(((report.factor as f64 - factor64) / factor64).abs() < 1e-6);
        let theta = o.theta().unwrap();
        for i in 0..n {
            let delta = match i {
                17 => 0.0,
                _ => 0.5 * (g[i] as f64 / scale as f64) * factor64,
            };
            let want = theta0[i] as f64 - delta;
            // A few f32 roundings of the operands' magnitudes.
            let err = (theta[i] as f64 - want).abs();
            let bound = 1e-6 * (theta0[i].abs() as f64 + delta.abs());
            assert!(err <= bound, "θ[{i}]: {} vs {want}", theta[i]);
        }
    }
}

/// With S = 1 and no clipping the GPU step is the old one: a transform that is set and one
/// that is not give the same bits.
#[test]
fn an_identity_transform_changes_no_bit() {
    let Some(ctx) = common::gpu("an_identity_transform_changes_no_bit") else {
        return;
    };
    let p = groups();
    let mut plain = GpuOptimizer::from_groups(&ctx, &p).unwrap();
    let mut measured = GpuOptimizer::from_groups(&ctx, &p).unwrap();
    // Clipping to ∞ computes the norm and multiplies by exactly 1.
    measured
        .set_grad_transform(transform(1.0, f32::INFINITY))
        .unwrap();
    let (a, ..) = run(&mut plain, 4);
    let (b, norms, _) = run(&mut measured, 4);
    assert_eq!(a, b);
    assert!(norms.iter().all(|r| r.factor == 1.0 && r.norm > 0.0));
}

/// A loss scale in a device buffer (a loss scaler's kernels write it) is the host scale.
#[test]
fn a_device_scale_is_the_host_scale() {
    let Some(ctx) = common::gpu("a_device_scale_is_the_host_scale") else {
        return;
    };
    use bayesprop::wgpu::util::DeviceExt;
    let p = groups();
    let mut host = GpuOptimizer::from_groups(&ctx, &p).unwrap();
    host.set_grad_transform(transform(1024.0, 1.0)).unwrap();
    let mut device = GpuOptimizer::from_groups(&ctx, &p).unwrap();
    device.set_grad_transform(transform(1.0, 1.0)).unwrap();
    let buffer = ctx
        .device()
        .create_buffer_init(&bayesprop::wgpu::util::BufferInitDescriptor {
            label: Some("loss scale"),
            contents: bytemuck::cast_slice(&[0.0f32, 1024.0]),
            usage: bayesprop::wgpu::BufferUsages::COPY_SRC | bayesprop::wgpu::BufferUsages::STORAGE,
        });
    device
        .set_grad_scale_buffer(Some(BufferRange::new(buffer.clone(), 4, 4)))
        .unwrap();
    let (a, na, _) = run(&mut host, 3);
    let (b, nb, _) = run(&mut device, 3);
    assert_eq!(a, b);
    assert_eq!(na, nb);
    let unusable = ctx
        .device()
        .create_buffer(&bayesprop::wgpu::BufferDescriptor {
            label: None,
            size: 4,
            usage: bayesprop::wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
    let refused = device.set_grad_scale_buffer(Some(BufferRange::whole(unusable)));
    assert!(refused.unwrap_err().to_string().contains("COPY_SRC"));
}

/// After K skipped steps in a row the next call fails naming K and changes nothing; a clean
/// step in between resets the count.
#[test]
fn max_consecutive_skips_stops_the_run() {
    let check = |o: &mut dyn Stepper| {
        o.set_grad_transform(GradTransform {
            max_consecutive_skips: Some(2),
            ..Default::default()
        })
        .unwrap();
        let n = o.len();
        let (good, bad) = (vec![0.5; n], vec![f32::NAN; n]);
        for g in [&bad, &good, &bad, &bad] {
            o.step(g).unwrap();
            o.step_reports().unwrap();
        }
        let theta = o.theta().unwrap();
        match o.step(&good) {
            Err(Error::TooManySkips { count: 2 }) => {}
            other => panic!("expected TooManySkips, got {other:?}"),
        }
        assert_eq!(o.theta().unwrap(), theta);
        assert_eq!(o.steps_taken().unwrap(), 1);
        // Setting the transform again is the caller's decision to go on.
        o.set_grad_transform(o.grad_transform()).unwrap();
        o.step(&good).unwrap();
        assert_eq!(o.steps_taken().unwrap(), 2);
    };
    let config = OptimizerConfig::from(AdamConfig::adam());
    check(&mut CpuOptimizer::new(config.clone(), &[1.0; 10]).unwrap());
    if let Some(ctx) = common::gpu("max_consecutive_skips_stops_the_run") {
        check(&mut GpuOptimizer::new(&ctx, config, &[1.0; 10]).unwrap());
    }
}

/// A schedule is exactly the config with the hyperparameter multiplied: stepping with a
/// schedule equals stepping with `set_config` of the product before each step.
#[test]
fn a_schedule_is_the_config_with_the_product() {
    let theta0 = initial_theta(300, 5);
    let base = BayesConfig::default();
    let mut scheduled = CpuOptimizer::reference(base, &theta0).unwrap();
    scheduled
        .set_schedule("eta:step:every=2,gamma=0.5".parse().unwrap())
        .unwrap();
    let mut by_hand = CpuOptimizer::reference(base, &theta0).unwrap();
    for t in 1..=6u64 {
        let g = gradient(300, 3, t);
        scheduled.step(&g).unwrap();
        by_hand
            .set_config(
                BayesConfig {
                    eta: base.eta * 0.5f64.powi((t / 2) as i32),
                    ..base
                }
                .into(),
            )
            .unwrap();
        by_hand.step(&g).unwrap();
        assert_eq!(scheduled.theta().unwrap(), by_hand.theta().unwrap());
    }
    let refused = scheduled.set_schedule("lr:constant".parse().unwrap());
    assert!(refused.unwrap_err().to_string().contains("eta"));
}

/// Bindings of 256 KiB hold 65,536 elements, a whole number of the norm's blocks that fills
/// whole regions of partials: groups cut into such bindings sum in the reference's order, to
/// the bit (the device's binding limit is rounded down to a multiple of it).
#[test]
fn bindings_of_whole_norm_chunks_clip_to_the_bit() {
    let Some(ctx) = common::gpu("bindings_of_whole_norm_chunks_clip_to_the_bit") else {
        return;
    };
    let mut p = ParamGroups::new();
    let a = p.add_group("a", BayesConfig::default()).unwrap();
    let b = p.add_group("b", AdamConfig::adam()).unwrap();
    p.add_tensor(a, "w", &[150_001], &initial_theta(150_001, 1))
        .unwrap();
    p.add_tensor(b, "w", &[70_000], &initial_theta(70_000, 2))
        .unwrap();
    for binding in [1 << 18, (1 << 18) + 40_000] {
        let limited = GpuContext::with_options(&GpuOptions {
            limits: Some(bayesprop::wgpu::Limits {
                max_storage_buffer_binding_size: binding,
                ..ctx.limits()
            }),
            ..GpuOptions::from_env()
        })
        .unwrap();
        let mut reference = CpuOptimizer::from_groups(&p, CpuPath::Reference);
        let mut split = GpuOptimizer::from_groups(&limited, &p).unwrap();
        assert_eq!(
            split.step_shape().bindings,
            3 + 2,
            "binding of {binding} bytes"
        );
        configure(&mut reference);
        configure(&mut split);
        let (want, want_norms) = run_rounding(&mut reference, 5);
        let (got, got_norms) = run_rounding(&mut split, 5);
        assert_device_agrees(ctx.is_software(), (&got, &got_norms), (&want, &want_norms));
    }
}

/// θ after each step and the norms, on gradients with full mantissas, whose sum of squares
/// rounds differently in another order (`grad`'s few-bit values sum exactly in any order).
fn run_rounding(o: &mut dyn Stepper, steps: u64) -> (Vec<Vec<f32>>, Vec<NormReport>) {
    let n = o.len();
    let mut thetas = Vec::new();
    for t in 1..=steps {
        let g: Vec<f32> = (0..n)
            .map(|j| ((j as f64 * 1.7 + t as f64).sin() * 1024.0 * 0.37) as f32)
            .collect();
        o.step(&g).unwrap();
        thetas.push(o.theta().unwrap());
    }
    o.step_reports().unwrap();
    (thetas, o.norm_reports().unwrap())
}

/// Where a group spans several storage bindings smaller than 65,536 elements, each binding
/// sums into its own region of partials, so the sum's order is no longer the reference's: the
/// norm still repeats run to run to the bit, and stays within float rounding of the
/// reference's. Partials that do not
/// fit one binding are refused, naming the limit.
#[test]
fn split_bindings_clip_deterministically() {
    let Some(ctx) = common::gpu("split_bindings_clip_deterministically") else {
        return;
    };
    let limited = |binding: u64| {
        GpuContext::with_options(&GpuOptions {
            limits: Some(bayesprop::wgpu::Limits {
                max_storage_buffer_binding_size: binding,
                ..ctx.limits()
            }),
            ..GpuOptions::from_env()
        })
        .unwrap()
    };
    let small = limited(4096);
    let p = groups();
    let mut reference = CpuOptimizer::from_groups(&p, CpuPath::Reference);
    configure(&mut reference);
    let (_, want, _) = run(&mut reference, 6);
    let mut runs = (0..2).map(|_| {
        let mut split = GpuOptimizer::from_groups(&small, &p).unwrap();
        assert!(
            split.step_shape().bindings > 2,
            "{} bindings",
            split.step_shape().bindings
        );
        configure(&mut split);
        run(&mut split, 6)
    });
    let (first, second) = (runs.next().unwrap(), runs.next().unwrap());
    assert_eq!(first, second);
    for (got, want) in first.1.iter().zip(&want) {
        let relative = ((got.norm - want.norm) / want.norm).abs();
        assert!(relative < 1e-6, "{got:?} vs {want:?}");
    }

    let mut tiny = GpuOptimizer::from_groups(&limited(256), &p).unwrap();
    configure(&mut tiny);
    let refused = tiny.step(&grad(tiny.len(), 1)).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("max_storage_buffer_binding_size"),
        "{refused}"
    );
}
