//! The GPU against the CPU reference: the standard battery (every regime of SPEC §5, sizes
//! 1 … 1,000,003), the chunked and 2-D dispatch paths, and gradients already on the device.

use crate::common;

use bayesprop::gpu::GpuOptions;
use bayesprop::optim::{AdamConfig, RmspropConfig, SgdConfig};
use bayesprop::schedule::Schedule;
use bayesprop::validate::{self, Rule};
use bayesprop::{
    BayesConfig, CpuOptimizer, Error, GpuContext, GpuOptimizer, HyperSchedule, OptimizerConfig,
    Stepper, TensorId,
};
use wgpu::util::DeviceExt;

#[test]
fn standard_battery_passes_its_rule() {
    let Some(ctx) = common::gpu("standard_battery_passes_its_rule") else {
        return;
    };
    let rule = Rule::for_adapter(ctx.is_software());
    let mut failures = Vec::new();
    let cases = validate::standard_battery().into_iter();
    for case in cases.filter(|case| case.judged_under(rule)) {
        let outcome = validate::run_case(&case, rule, &mut |groups| {
            Ok(Box::new(GpuOptimizer::from_groups(&ctx, groups)?))
        })
        .unwrap();
        if !outcome.passed() {
            let (check, at) = outcome.check();
            failures.push(format!("{}: {check} at {at}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "failing {}:\n{}",
        rule.describe(),
        failures.join("\n")
    );
}

/// θ and every state after `steps` steps of the battery's inputs.
fn run(optimizer: &mut dyn Stepper, n: usize, steps: u64) -> Vec<Vec<f32>> {
    for t in 1..=steps {
        optimizer.step(&validate::gradient(n, 7, t)).unwrap();
    }
    common::snapshot(optimizer)
}

#[test]
fn chunked_bindings_and_2d_grid_equal_the_plain_run() {
    let Some(ctx) = common::gpu("chunked_bindings_and_2d_grid_equal_the_plain_run") else {
        return;
    };
    // Tiny limits force the paths that large vectors take: 1,024-element bindings and a
    // grid of at most 4 workgroups per dimension.
    let small = GpuContext::with_options(&GpuOptions {
        limits: Some(wgpu::Limits {
            max_storage_buffer_binding_size: 4096,
            max_compute_workgroups_per_dimension: 4,
            ..ctx.limits()
        }),
        ..GpuOptions::from_env()
    })
    .unwrap();
    let n = 10_007;
    let theta0 = validate::initial_theta(n, 7);
    let config = BayesConfig::bayes_adam();
    let mut chunked = GpuOptimizer::new(&small, config, &theta0).unwrap();
    assert_eq!(chunked.step_shape().bindings, 10);
    let mut plain = GpuOptimizer::new(&ctx, config, &theta0).unwrap();
    assert_eq!(plain.step_shape().bindings, 1);
    let mut reference = CpuOptimizer::reference(config, &theta0).unwrap();
    let (a, b, c) = (
        run(&mut chunked, n, 20),
        run(&mut plain, n, 20),
        run(&mut reference, n, 20),
    );
    common::assert_same_bits(&a, &b, "chunked vs plain");
    if ctx.is_software() {
        common::assert_same_bits(&a, &c, "chunked vs reference");
    }
    assert_ne!(a[0], theta0, "the run must move θ");
}

#[test]
fn past_65535_workgroups_at_the_adapters_own_limits() {
    let Some(ctx) = common::gpu("past_65535_workgroups_at_the_adapters_own_limits") else {
        return;
    };
    let n = 65_535 * 256 + 257;
    let theta0 = validate::initial_theta(n, 9);
    let config = BayesConfig::default();
    let mut gpu = GpuOptimizer::new(&ctx, config, &theta0).unwrap();
    let mut reference = CpuOptimizer::new(config, &theta0).unwrap();
    let (a, b) = (run(&mut gpu, n, 2), run(&mut reference, n, 2));
    if ctx.is_software() {
        common::assert_same_bits(&a, &b, "16.8M elements vs reference");
    }
    // The last element is past the first 65,535 workgroups: it must have moved.
    assert_ne!(a[0][n - 2], theta0[n - 2]);
}

#[test]
fn gradients_on_the_device_equal_host_gradients() {
    let Some(ctx) = common::gpu("gradients_on_the_device_equal_host_gradients") else {
        return;
    };
    let n = 3001;
    let theta0 = validate::initial_theta(n, 3);
    let config = BayesConfig::default();
    let mut host = GpuOptimizer::new(&ctx, config, &theta0).unwrap();
    let mut device = GpuOptimizer::new(&ctx, config, &theta0).unwrap();
    // Gradients written straight into the optimizer's gradient arena, as a caller's kernel
    // would, then a step that reads them in place.
    let grad = device.tensor_grad(TensorId(0)).unwrap();
    assert_eq!(grad.size, n as u64 * 4);
    for t in 1..=10 {
        let g = validate::gradient(n, 3, t);
        host.step(&g).unwrap();
        ctx.queue()
            .write_buffer(&grad.buffer, grad.offset, bytemuck::cast_slice(&g));
        device.step_device().unwrap();
    }
    common::assert_same_bits(
        &[device.theta().unwrap()],
        &[host.theta().unwrap()],
        "device vs host grads",
    );
}

#[test]
fn a_step_recorded_into_the_callers_encoder_equals_a_step() {
    let Some(ctx) = common::gpu("a_step_recorded_into_the_callers_encoder_equals_a_step") else {
        return;
    };
    let n = 3001;
    let theta0 = validate::initial_theta(n, 4);
    let config = BayesConfig::default();
    let mut host = GpuOptimizer::new(&ctx, config, &theta0).unwrap();
    let mut recorded = GpuOptimizer::new(&ctx, config, &theta0).unwrap();
    let grad = recorded.tensor_grad(TensorId(0)).unwrap();
    let bytes = grad.size;
    // The caller's own buffer, copied into the arena by the same command buffer that steps:
    // the step must see the copy, and the scalars written on the queue before the submit.
    let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("caller gradients"),
        size: bytes,
        usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let steps = 10;
    for t in 1..=steps {
        let g = validate::gradient(n, 4, t);
        host.step(&g).unwrap();
        ctx.queue()
            .write_buffer(&staging, 0, bytemuck::cast_slice(&g));
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&staging, 0, &grad.buffer, grad.offset, bytes);
        recorded.encode_step(&mut encoder).unwrap();
        ctx.queue().submit([encoder.finish()]);
    }
    common::assert_same_bits(
        &[recorded.theta().unwrap(), recorded.state("sigma").unwrap()],
        &[host.theta().unwrap(), host.state("sigma").unwrap()],
        "recorded into the caller's encoder vs step",
    );
    assert_eq!(recorded.steps_taken().unwrap(), steps);
}

/// Steps recorded before any is submitted, several to an encoder and over two encoders, under
/// a schedule that changes every step's scalars: each step must see its own scalars and its
/// own gradient, as `step` would give them. A step recorded and never submitted is an error
/// at the first call that needs its outcome, and that call does not hang.
#[test]
fn steps_recorded_before_one_submit_each_see_their_own_scalars() {
    let Some(ctx) = common::gpu("steps_recorded_before_one_submit_each_see_their_own_scalars")
    else {
        return;
    };
    let n = 1001;
    let theta0 = validate::initial_theta(n, 5);
    let make = || {
        let mut o = GpuOptimizer::new(&ctx, AdamConfig::adam(), &theta0).unwrap();
        let cosine = Schedule::Cosine {
            warmup: 2,
            total: 9,
            final_factor: 0.1,
        };
        o.set_schedule(HyperSchedule::new("lr", cosine).unwrap())
            .unwrap();
        o
    };
    let (mut host, mut recorded) = (make(), make());
    let grad = recorded.tensor_grad(TensorId(0)).unwrap();
    let device = ctx.device();
    // Step t through `step` on the host, and recorded into `encoder` after a copy of the same
    // gradient into the arena (wgpu keeps the staging buffer alive until the submit).
    let mut record = |encoder: &mut wgpu::CommandEncoder, t: u64| {
        let g = validate::gradient(n, 5, t);
        host.step(&g).unwrap();
        let staged = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("caller gradients"),
            contents: bytemuck::cast_slice(&g),
            usage: wgpu::BufferUsages::COPY_SRC,
        });
        encoder.copy_buffer_to_buffer(&staged, 0, &grad.buffer, grad.offset, grad.size);
        recorded.encode_step(encoder).unwrap();
    };
    // Per encoder, the steps recorded into it before it is submitted.
    let encoders = [3, 1, 2];
    let mut t = 0;
    for steps in encoders {
        let mut encoder = device.create_command_encoder(&Default::default());
        for _ in 0..steps {
            t += 1;
            record(&mut encoder, t);
        }
        if steps == 1 {
            // This one waits for the next encoder's steps to be recorded: two encoders in
            // flight before either is submitted, submitted in order.
            let mut next = device.create_command_encoder(&Default::default());
            t += 1;
            record(&mut next, t);
            ctx.queue().submit([encoder.finish(), next.finish()]);
        } else {
            ctx.queue().submit([encoder.finish()]);
        }
    }
    assert_eq!(recorded.steps_taken().unwrap(), t);
    common::assert_same_bits(
        &[recorded.theta().unwrap(), recorded.state("m").unwrap()],
        &[host.theta().unwrap(), host.state("m").unwrap()],
        "steps recorded before their submit vs step",
    );

    // Recorded, never submitted: an error that says so, from the call that needs the step.
    let mut lost = device.create_command_encoder(&Default::default());
    recorded.encode_step(&mut lost).unwrap();
    drop(lost);
    let err = recorded.steps_taken().unwrap_err();
    assert!(err.to_string().contains("never submitted"), "{err}");
}

#[test]
fn a_vector_larger_than_the_device_allows_is_an_error() {
    let Some(ctx) = common::gpu("a_vector_larger_than_the_device_allows_is_an_error") else {
        return;
    };
    let small = GpuContext::with_options(&GpuOptions {
        limits: Some(wgpu::Limits {
            max_buffer_size: 1 << 16,
            ..ctx.limits()
        }),
        ..GpuOptions::from_env()
    })
    .unwrap();
    let err =
        GpuOptimizer::new(&small, BayesConfig::default(), &vec![0.0; (1 << 14) + 1]).unwrap_err();
    match &err {
        Error::TooLarge {
            needed, allowed, ..
        } => {
            assert_eq!((*needed, *allowed), (65_540, 65_536));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains("max_buffer_size"), "{err}");
}

#[test]
fn an_empty_vector_steps_without_error() {
    let Some(ctx) = common::gpu("an_empty_vector_steps_without_error") else {
        return;
    };
    let mut gpu = GpuOptimizer::new(&ctx, BayesConfig::default(), &[]).unwrap();
    gpu.step(&[]).unwrap();
    assert_eq!(gpu.theta().unwrap(), Vec::<f32>::new());
    assert_eq!(gpu.steps_taken().unwrap(), 1);
}

/// A schedule that turns momentum off after step 2 (γ = 0 every 3 steps). The update's
/// momentum branch is compiled per step from the scalars each step applies: constant where
/// every step of the window agrees, decided per element where the steps in flight straddle
/// the change. Steps waited for one by one (each window one step) and steps all in flight
/// (windows over the change, and a skipped step that holds t back) must give the same bits,
/// and on a software adapter the reference's.
#[test]
fn momentum_scheduled_across_zero_follows_each_steps_scalars() {
    let Some(ctx) = common::gpu("momentum_scheduled_across_zero_follows_each_steps_scalars") else {
        return;
    };
    let n = 1001;
    let theta0 = validate::initial_theta(n, 6);
    let off_after_2 = Schedule::Step {
        every: 3,
        gamma: 0.0,
    };
    let cases: [(OptimizerConfig, &str); 3] = [
        (
            SgdConfig::builder().momentum(0.9).build().unwrap().into(),
            "momentum",
        ),
        (
            BayesConfig::builder().momentum(0.9).build().unwrap().into(),
            "momentum",
        ),
        (
            RmspropConfig::builder()
                .momentum(0.5)
                .centered(true)
                .build()
                .unwrap()
                .into(),
            "momentum",
        ),
    ];
    for (config, hyper) in cases {
        let what = config.name();
        let schedule = HyperSchedule::new(hyper, off_after_2).unwrap();
        let mut runs: Vec<Box<dyn Stepper>> = vec![
            Box::new(CpuOptimizer::reference(config.clone(), &theta0).unwrap()),
            Box::new(GpuOptimizer::new(&ctx, config.clone(), &theta0).unwrap()),
            Box::new(GpuOptimizer::new(&ctx, config, &theta0).unwrap()),
        ];
        for (k, run) in runs.iter_mut().enumerate() {
            run.set_schedule(schedule.clone()).unwrap();
            for t in 1..=7u64 {
                let mut g = validate::gradient(n, 6, t);
                if t == 4 {
                    g[17] = f32::NAN; // skipped (SkipStep): the next steps are t = 4 … 6
                }
                run.step(&g).unwrap();
                if k == 1 {
                    run.steps_taken().unwrap(); // waits: each window is one step
                }
            }
            assert_eq!(run.steps_taken().unwrap(), 6, "{what} run {k}");
        }
        let [reference, waited, in_flight] = [0, 1, 2].map(|k| common::snapshot(&*runs[k]));
        common::assert_same_bits(&in_flight, &waited, &format!("{what}: in flight vs waited"));
        if ctx.is_software() {
            common::assert_same_bits(&waited, &reference, &format!("{what}: vs reference"));
        }
    }
}
