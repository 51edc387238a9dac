//! Parameter groups and many tensors per step: packed arenas equal per-tensor steps bit for
//! bit, split buffers and bindings equal whole ones, the caller's own buffers work in place,
//! and per-group hyperparameters change between steps.

use crate::common;

use bayesprop::gpu::GpuOptions;
use bayesprop::validate::{gradient, initial_theta};
use bayesprop::{
    BayesConfig, BufferRange, CpuOptimizer, CpuPath, Error, GpuContext, GpuOptimizer, GroupId,
    OptimizerConfig, ParamGroups, Stepper, TensorBuffers, TensorId,
};

/// The two-group model with 40 tensors whose sizes are not multiples of 4, so the arenas
/// have padding.
fn model() -> (ParamGroups, Vec<(GroupId, Vec<usize>)>) {
    let shapes: Vec<(usize, Vec<usize>)> = (0..40)
        .map(|k| match k % 3 {
            0 => (0, vec![7 + k, 5]),
            1 => (1, vec![13 + k]),
            _ => (0, vec![3, 1 + k, 2]),
        })
        .collect();
    let groups = common::two_groups("t", &shapes);
    let shapes = shapes.into_iter().map(|(g, s)| (GroupId(g), s)).collect();
    (groups, shapes)
}

fn configs(groups: &ParamGroups) -> Vec<OptimizerConfig> {
    groups.groups().iter().map(|g| g.config.clone()).collect()
}

/// θ after `steps` steps of each tensor on its own, with its group's config: the yardstick.
fn per_tensor(groups: &ParamGroups, shapes: &[(GroupId, Vec<usize>)], steps: u64) -> Vec<f32> {
    let configs = configs(groups);
    let mut flat = Vec::new();
    for (k, (group, shape)) in shapes.iter().enumerate() {
        let len = shape.iter().product();
        let mut alone =
            CpuOptimizer::reference(configs[group.0].clone(), &initial_theta(len, k as u64))
                .unwrap();
        for t in 1..=steps {
            alone.step(&tensor_grad(k, len, t)).unwrap();
        }
        flat.extend(alone.theta().unwrap());
    }
    flat
}

fn tensor_grad(k: usize, len: usize, t: u64) -> Vec<f32> {
    gradient(len, 1000 + k as u64, t)
}

/// The flat gradient of every tensor at step `t`.
fn flat_grad(shapes: &[(GroupId, Vec<usize>)], t: u64) -> Vec<f32> {
    let mut flat = Vec::new();
    for (k, (_, shape)) in shapes.iter().enumerate() {
        flat.extend(tensor_grad(k, shape.iter().product(), t));
    }
    flat
}

fn run(optimizer: &mut dyn Stepper, shapes: &[(GroupId, Vec<usize>)], steps: u64) -> Vec<f32> {
    for t in 1..=steps {
        optimizer.step(&flat_grad(shapes, t)).unwrap();
    }
    optimizer.theta().unwrap()
}

#[test]
fn many_tensors_in_one_step_equal_each_tensor_alone() {
    let (groups, shapes) = model();
    let expected = per_tensor(&groups, &shapes, 12);
    for path in [CpuPath::Reference, CpuPath::Parallel] {
        let mut cpu = CpuOptimizer::from_groups(&groups, path);
        common::assert_same_bits_flat(&run(&mut cpu, &shapes, 12), &expected, &format!("{path:?}"));
    }
    let Some(ctx) = common::gpu("many_tensors_in_one_step_equal_each_tensor_alone") else {
        return;
    };
    let mut gpu = GpuOptimizer::from_groups(&ctx, &groups).unwrap();
    let got = run(&mut gpu, &shapes, 12);
    if ctx.is_software() {
        common::assert_same_bits_flat(&got, &expected, "gpu");
    }
    // Per tensor, on the host and as a device slice: σ is the posterior variance.
    let sigma = gpu.tensor_state(TensorId(1), "sigma").unwrap();
    assert_eq!(sigma.len(), shapes[1].1.iter().product::<usize>());
    // Every 7th gradient element is always 0 there: those keep σ = 0 ("no belief yet").
    assert!(sigma.iter().all(|&s| s >= 0.0));
    assert!(sigma.iter().filter(|&&s| s > 0.0).count() > sigma.len() / 2);
    let slice = gpu.tensor_state_range(TensorId(1), "sigma").unwrap();
    assert_eq!(slice.size as usize, sigma.len() * 4);
    assert_eq!(
        ctx.read_f32(&slice.buffer, slice.offset, sigma.len())
            .unwrap(),
        sigma
    );
    assert!(matches!(
        gpu.tensor_state(TensorId(1), "m"),
        Err(Error::Unknown { .. })
    ));
}

#[test]
fn ten_thousand_tensors_cost_a_handful_of_dispatches() {
    let Some(ctx) = common::gpu("ten_thousand_tensors_cost_a_handful_of_dispatches") else {
        return;
    };
    let mut groups = ParamGroups::new();
    let group = groups.add_group("all", BayesConfig::default()).unwrap();
    let zeros = vec![0.5f32; 1000];
    for k in 0..10_000 {
        groups
            .add_tensor(group, &format!("w{k}"), &[1000], &zeros)
            .unwrap();
    }
    let mut gpu = GpuOptimizer::from_groups(&ctx, &groups).unwrap();
    // Bindings of at most max_storage_buffer_binding_size each: 40 MB is 1 on lavapipe.
    let binding = ctx.limits().max_storage_buffer_binding_size;
    assert_eq!(
        gpu.step_shape().bindings as u64,
        (10_000_000u64 * 4).div_ceil(binding)
    );
    gpu.step(&vec![1.0; 10_000_000]).unwrap();
    let w = gpu.tensor_values(TensorId(9_999)).unwrap();
    assert!(w.iter().all(|&x| x < 0.5), "the last tensor moved");
}

#[test]
fn split_buffers_and_bindings_equal_whole_ones() {
    let Some(ctx) = common::gpu("split_buffers_and_bindings_equal_whole_ones") else {
        return;
    };
    let (groups, shapes) = model();
    // The largest tensor is 3·40·2 = 240 elements: buffers of 1 KiB hold one or a few
    // tensors; bindings of 256 B hold 64 elements.
    let small = GpuContext::with_options(&GpuOptions {
        limits: Some(wgpu::Limits {
            max_buffer_size: 1024,
            max_storage_buffer_binding_size: 256,
            ..ctx.limits()
        }),
        ..GpuOptions::from_env()
    })
    .unwrap();
    let mut split = GpuOptimizer::from_groups(&small, &groups).unwrap();
    let mut whole = GpuOptimizer::from_groups(&ctx, &groups).unwrap();
    assert!(
        split.step_shape().buffers > 4,
        "{} buffers",
        split.step_shape().buffers
    );
    assert!(split.step_shape().bindings > split.step_shape().buffers);
    assert_eq!(whole.step_shape().buffers, 2);
    common::assert_same_bits_flat(
        &run(&mut split, &shapes, 8),
        &run(&mut whole, &shapes, 8),
        "split vs whole",
    );

    let mut too_big = ParamGroups::new();
    let g = too_big.add_group("g", BayesConfig::default()).unwrap();
    too_big.add_tensor(g, "huge", &[257], &[0.0; 257]).unwrap();
    match GpuOptimizer::from_groups(&small, &too_big) {
        Err(Error::TooLarge {
            needed: 1028,
            allowed: 1024,
            ..
        }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn the_callers_own_buffers_are_used_in_place() {
    let Some(ctx) = common::gpu("the_callers_own_buffers_are_used_in_place") else {
        return;
    };
    let (groups, shapes) = model();
    let device = ctx.device();
    let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    // Each group's θ and g in one caller buffer apiece, after some data of the caller's own.
    let arenas: Vec<TensorBuffers> = groups
        .groups()
        .iter()
        .enumerate()
        .map(|(g, spec)| {
            let make = |label| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: 3 * align + spec.arena_len as u64 * 4,
                    usage,
                    mapped_at_creation: false,
                })
            };
            let (theta, grad) = (make("user theta"), make("user grad"));
            let theta0 = groups.arena_theta0(GroupId(g));
            ctx.queue()
                .write_buffer(&theta, 3 * align, bytemuck::cast_slice(theta0));
            let bytes = spec.arena_len as u64 * 4;
            TensorBuffers {
                theta: BufferRange::new(theta, 3 * align, bytes),
                grad: BufferRange::new(grad, 3 * align, bytes),
            }
        })
        .collect();
    let mut user = GpuOptimizer::from_groups_in(&ctx, &groups, &arenas).unwrap();
    let mut owned = GpuOptimizer::from_groups(&ctx, &groups).unwrap();
    let expected = run(&mut owned, &shapes, 6);
    common::assert_same_bits_flat(
        &run(&mut user, &shapes, 6),
        &expected,
        "user buffers vs owned",
    );
    // θ really is in the caller's buffer.
    let slice = user.tensor_theta(TensorId(0)).unwrap();
    assert_eq!(slice.buffer, arenas[0].theta.buffer);
    let first = ctx
        .read_f32(
            &arenas[0].theta.buffer,
            arenas[0].theta.offset,
            shapes[0].1.iter().product(),
        )
        .unwrap();
    assert_eq!(first, user.tensor_values(TensorId(0)).unwrap());

    let misaligned = TensorBuffers {
        theta: BufferRange::new(arenas[0].theta.buffer.clone(), 4, arenas[0].theta.size),
        grad: arenas[0].grad.clone(),
    };
    let err =
        GpuOptimizer::from_groups_in(&ctx, &groups, &[misaligned, arenas[1].clone()]).unwrap_err();
    assert!(
        err.to_string()
            .contains("min_storage_buffer_offset_alignment"),
        "{err}"
    );
}

/// 10 steps in which η of group 1 drops tenfold after step 4 (a schedule).
fn scheduled(optimizer: &mut dyn Stepper, shapes: &[(GroupId, Vec<usize>)]) -> Vec<f32> {
    for t in 1..=10u64 {
        if t == 5 {
            let lower = BayesConfig {
                eta: 1e-4,
                ..BayesConfig::default()
            };
            optimizer
                .set_group_config(GroupId(1), lower.into())
                .unwrap();
        }
        optimizer.step(&flat_grad(shapes, t)).unwrap();
    }
    optimizer.theta().unwrap()
}

#[test]
fn per_group_hyperparameters_change_between_steps() {
    let (groups, shapes) = model();
    let expected = scheduled(
        &mut CpuOptimizer::from_groups(&groups, CpuPath::Reference),
        &shapes,
    );
    let plain = run(
        &mut CpuOptimizer::from_groups(&groups, CpuPath::Reference),
        &shapes,
        10,
    );
    // Group 0's tensors are exactly as without the schedule, group 1's are not.
    for (k, (group, _)) in shapes.iter().enumerate() {
        let t = &groups.tensors()[k];
        let (a, b) = (&plain[t.flat_range()], &expected[t.flat_range()]);
        assert_eq!(a == b, *group == GroupId(0), "tensor {k} of {group:?}");
    }

    let Some(ctx) = common::gpu("per_group_hyperparameters_change_between_steps") else {
        return;
    };
    let mut gpu = GpuOptimizer::from_groups(&ctx, &groups).unwrap();
    let got = scheduled(&mut gpu, &shapes);
    if ctx.is_software() {
        common::assert_same_bits_flat(&got, &expected, "gpu vs reference with a schedule");
    }
    // A change that needs other state vectors is refused.
    let refused = gpu.set_group_config(GroupId(1), BayesConfig::bayes_adam().into());
    assert!(matches!(refused, Err(Error::Config { .. })), "{refused:?}");
}

#[test]
fn layout_errors_are_clear() {
    let mut groups = ParamGroups::new();
    let g = groups.add_group("g", BayesConfig::default()).unwrap();
    assert!(matches!(
        groups.add_group("g", BayesConfig::default()),
        Err(Error::Layout(_))
    ));
    assert!(matches!(
        groups.add_group("a.b", BayesConfig::default()),
        Err(Error::Layout(_))
    ));
    groups.add_tensor(g, "w", &[2, 3], &[0.0; 6]).unwrap();
    assert!(matches!(
        groups.add_tensor(g, "w", &[1], &[0.0]),
        Err(Error::Layout(_))
    ));
    assert!(matches!(
        groups.add_tensor(g, "v", &[2, 3], &[0.0; 5]),
        Err(Error::LengthMismatch {
            got: 5,
            expected: 6,
            ..
        })
    ));
    assert!(matches!(
        groups.add_tensor(GroupId(7), "v", &[1], &[0.0]),
        Err(Error::Layout(_))
    ));
    let bad = BayesConfig {
        beta: 1.0,
        ..BayesConfig::default()
    };
    assert!(matches!(
        groups.add_group("h", bad),
        Err(Error::Config { field: "beta", .. })
    ));
}
