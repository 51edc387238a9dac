//! Tensors in the caller's buffers (`GpuOptimizer::from_tensors_in`): each tensor's θ and
//! gradient wherever the caller keeps them, at offsets that are multiples of 4 bytes but not of
//! 16, in many buffers, θ and g sometimes in one buffer. Every step must be bit-identical to
//! the optimizer's own arena (`from_groups`), which agrees with the CPU reference.

use crate::common;

use bayesprop::optim::TABLE;
use bayesprop::validate;
use bayesprop::{
    BufferRange, Error, GpuContext, GpuOptimizer, GpuOptions, GradTransform, NonFinitePolicy,
    OptimizerConfig, ParamGroups, Stepper, TensorBuffers, TensorId,
};

/// Every name of the table with every kind of its state in use: for each, the first case of
/// its `validate` battery whose config allocates every state slot.
pub(crate) fn configs() -> Vec<OptimizerConfig> {
    let battery = validate::standard_battery();
    TABLE
        .iter()
        .map(|row| {
            battery
                .iter()
                .filter(|case| case.name.split(' ').next() == Some(row.name))
                .map(|case| case.config.clone())
                .find(|config| {
                    config.used_state_names().len() == config.as_dyn().state_slots().len()
                })
                .unwrap_or_else(|| {
                    panic!("{}: no battery case allocates every state slot", row.name)
                })
        })
        .collect()
}

/// Tensor lengths: a scalar, lengths off every multiple of 4 and of the 256-element rows, and
/// one long enough for many rows.
const LENS: [usize; 12] = [1, 3, 255, 256, 257, 10, 1000, 7, 4099, 64, 33, 70_001];

/// One group per config given, each with the tensors of [`LENS`].
pub(crate) fn model(configs: &[OptimizerConfig], policy: NonFinitePolicy) -> ParamGroups {
    let mut groups = ParamGroups::new();
    for (c, config) in configs.iter().enumerate() {
        let group = groups.add_group(&format!("g{c}"), config.clone()).unwrap();
        groups.set_policy(group, policy).unwrap();
        for (k, &len) in LENS.iter().enumerate() {
            let theta0: Vec<f32> = (0..len)
                .map(|j| ((j * 7 + k * 13 + c) % 101) as f32 / 50.0 - 1.0)
                .collect();
            groups
                .add_tensor(group, &format!("g{c}t{k}"), &[len], &theta0)
                .unwrap();
        }
    }
    groups
}

/// The caller's side: its buffers and where each tensor is in them.
pub(crate) struct Caller {
    pub buffers: Vec<wgpu::Buffer>,
    pub tensors: Vec<TensorBuffers>,
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Places every tensor: θ round-robin over `theta_buffers` buffers and g over `grad_buffers`
/// more, after a gap; odd tensors at 4 bytes (one f32 of the caller's own) past a 16-byte
/// boundary (stepped at width 1), even ones on it (a vec4 body and a scalar tail); every third
/// tensor's g right after its θ in the θ buffer. θ₀ is written there.
pub(crate) fn place(
    ctx: &GpuContext,
    groups: &ParamGroups,
    theta_buffers: usize,
    grad_buffers: usize,
) -> Caller {
    let tensors = groups.layout().tensors();
    let mut fill = vec![0u64; theta_buffers + grad_buffers];
    let mut at = |buffer: usize, len: usize, odd: bool| {
        let offset = fill[buffer].next_multiple_of(16) + if odd { 20 } else { 16 };
        fill[buffer] = offset + len as u64 * 4;
        offset
    };
    let mut places = Vec::new();
    for (k, t) in tensors.iter().enumerate() {
        let theta_buffer = k % theta_buffers;
        let theta = at(theta_buffer, t.len(), k % 2 == 1);
        let grad_buffer = match k % 3 {
            0 => theta_buffer,
            _ => theta_buffers + k % grad_buffers,
        };
        let grad = at(grad_buffer, t.len(), k % 2 == 1);
        places.push(((theta_buffer, theta), (grad_buffer, grad)));
    }
    let buffers: Vec<wgpu::Buffer> = fill
        .iter()
        .map(|&bytes| {
            ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("caller"),
                size: (bytes + 64).next_multiple_of(4),
                usage: USAGE,
                mapped_at_creation: false,
            })
        })
        .collect();
    let range = |(buffer, offset): (usize, u64), len: usize| {
        BufferRange::new(buffers[buffer].clone(), offset, len as u64 * 4)
    };
    let tensors: Vec<TensorBuffers> = places
        .iter()
        .zip(tensors)
        .map(|(&(theta, grad), t)| TensorBuffers {
            theta: range(theta, t.len()),
            grad: range(grad, t.len()),
        })
        .collect();
    for (t, b) in groups.layout().tensors().iter().zip(&tensors) {
        let theta0 = &groups.arena_theta0(t.group)[t.range()];
        ctx.queue().write_buffer(
            &b.theta.buffer,
            b.theta.offset,
            bytemuck::cast_slice(theta0),
        );
    }
    Caller { buffers, tensors }
}

/// The runs a plan needs when every group's state fits one binding: one per group, pair of
/// buffers its tensors use and lane width (4 for the whole vec4s of a tensor whose θ and g
/// are 16-byte aligned, 1 for the rest).
fn runs(groups: &ParamGroups, tensors: &[TensorBuffers]) -> usize {
    let mut runs = Vec::new();
    for (t, b) in groups.layout().tensors().iter().zip(tensors) {
        let aligned = b.theta.offset % 16 == 0 && b.grad.offset % 16 == 0;
        let widths = match aligned {
            true => [(t.len() >= 4).then_some(4), (t.len() % 4 != 0).then_some(1)],
            false => [Some(1), None],
        };
        for width in widths.into_iter().flatten() {
            let run = (t.group, &b.theta.buffer, &b.grad.buffer, width);
            if !runs.contains(&run) {
                runs.push(run);
            }
        }
    }
    runs.len()
}

/// Step t's gradient of every tensor, flat in registration order: signs and magnitudes from
/// 1e-3 to 1e3, with a NaN in tensor 4 at step 3, an infinity in tensor 9 at step 5, and a
/// NaN deep inside the long tensor 11 at step 6 (lane group 1250: the fifth of the rows
/// that a count merges).
pub(crate) fn gradient(groups: &ParamGroups, t: u64) -> Vec<f32> {
    let mut flat = Vec::new();
    for (k, spec) in groups.layout().tensors().iter().enumerate() {
        let start = flat.len();
        for j in 0..spec.len() {
            let x = ((j as f64) * 1.3 + (k as f64) * 0.7 + t as f64).sin();
            flat.push((x * 10f64.powi((j % 7) as i32 - 3)) as f32);
        }
        let last = flat.len() - 1;
        match (k % LENS.len(), t) {
            (4, 3) => flat[last] = f32::NAN,
            (9, 5) => flat[last] = f32::INFINITY,
            (11, 6) => flat[start + 5000] = f32::NAN,
            _ => {}
        }
    }
    flat
}

/// θ and every state of every tensor, flat: what must agree bit for bit.
fn everything(o: &GpuOptimizer, groups: &ParamGroups) -> Vec<Vec<f32>> {
    let mut out = vec![o.theta().unwrap()];
    for g in 0..groups.groups().len() {
        for name in o.layout().groups()[g].config.used_state_names() {
            let ids = groups
                .layout()
                .tensors()
                .iter()
                .enumerate()
                .filter(|(_, t)| t.group.0 == g);
            let mut values = Vec::new();
            for (k, _) in ids {
                values.extend(o.tensor_state(TensorId(k), name).unwrap());
            }
            out.push(values);
        }
    }
    out
}

/// Steps `steps` times from host gradients, which the caller-tensor path writes into the
/// caller's gradient buffers.
fn run(o: &mut GpuOptimizer, groups: &ParamGroups, steps: u64) -> Vec<Vec<f32>> {
    for t in 1..=steps {
        o.step(&gradient(groups, t)).unwrap();
    }
    o.step_reports().unwrap();
    everything(o, groups)
}

#[test]
fn every_optimizer_in_caller_tensors_equals_the_arena_bit_for_bit() {
    let Some(ctx) = common::gpu("every_optimizer_in_caller_tensors_equals_the_arena_bit_for_bit")
    else {
        return;
    };
    for policy in NonFinitePolicy::ALL
        .into_iter()
        .filter(|&p| p != NonFinitePolicy::Error)
    {
        let groups = model(&configs(), policy);
        let caller = place(&ctx, &groups, 2, 2);
        let mut tensors = GpuOptimizer::from_tensors_in(&ctx, &groups, &caller.tensors).unwrap();
        let mut arena = GpuOptimizer::from_groups(&ctx, &groups).unwrap();
        // One dispatch per group and pair of buffers (θ's, g's) its tensors use, not one per
        // tensor.
        assert_eq!(
            tensors.step_shape().update_dispatches,
            runs(&groups, &caller.tensors)
        );
        assert!(tensors.step_shape().update_dispatches < groups.layout().tensors().len());
        let expected = run(&mut arena, &groups, 7);
        let got = run(&mut tensors, &groups, 7);
        common::assert_same_bits(&got, &expected, &format!("{policy:?}"));

        // θ really is in the caller's buffers, where the caller put it.
        let t = &caller.tensors[5];
        let len = groups.layout().tensors()[5].len();
        let read = ctx.read_f32(&t.theta.buffer, t.theta.offset, len).unwrap();
        assert_eq!(read, tensors.tensor_values(TensorId(5)).unwrap());
        assert_eq!(
            read,
            arena.tensor_values(TensorId(5)).unwrap(),
            "{policy:?}: tensor 5"
        );
        drop(caller.buffers);
    }
}

#[test]
fn gradients_written_on_the_device_and_moved_between_steps() {
    let Some(ctx) = common::gpu("gradients_written_on_the_device_and_moved_between_steps") else {
        return;
    };
    for format in [bayesprop::StateFormat::F32, bayesprop::StateFormat::Q8] {
        moved_gradients_agree(&ctx, format);
    }
}

/// The body of the test above, with the state in `format` (q8's dispatches of whole blocks
/// bind the caller's θ and g too, and are planned again when the tensors move).
fn moved_gradients_agree(ctx: &GpuContext, format: bayesprop::StateFormat) {
    let config = OptimizerConfig::default_for("adam").unwrap();
    let mut groups = model(&[config], NonFinitePolicy::SkipElement);
    groups
        .set_state_format(bayesprop::GroupId(0), format, 3)
        .unwrap();
    let mut arena = GpuOptimizer::from_groups(ctx, &groups).unwrap();
    let first = place(ctx, &groups, 2, 2);
    let mut tensors = GpuOptimizer::from_tensors_in(ctx, &groups, &first.tensors).unwrap();
    for t in 1..=6u64 {
        let grad = gradient(&groups, t);
        arena.step(&grad).unwrap();
        // As burn's allocator does: this step's gradients are somewhere new, written there by
        // the caller's own commands, and θ stays.
        let moved = place(ctx, &groups, 1, 1 + t as usize % 3);
        let places: Vec<TensorBuffers> = first
            .tensors
            .iter()
            .zip(&moved.tensors)
            .map(|(old, new)| TensorBuffers {
                theta: old.theta.clone(),
                grad: new.grad.clone(),
            })
            .collect();
        for (spec, b) in groups.layout().tensors().iter().zip(&places) {
            let g = &grad[spec.flat_range()];
            ctx.queue()
                .write_buffer(&b.grad.buffer, b.grad.offset, bytemuck::cast_slice(g));
        }
        tensors.set_tensor_buffers(&places).unwrap();
        tensors.step_device().unwrap();
    }
    common::assert_same_bits(
        &everything(&tensors, &groups),
        &everything(&arena, &groups),
        &format!("moved gradients, {format}"),
    );
}

#[test]
fn many_buffers_and_small_bindings_cut_runs_and_still_agree() {
    let Some(ctx) = common::gpu("many_buffers_and_small_bindings_cut_runs_and_still_agree") else {
        return;
    };
    let config = OptimizerConfig::default_for("bayes").unwrap();
    let groups = model(&[config.clone(), config], NonFinitePolicy::SkipStep);
    let expected = run(
        &mut GpuOptimizer::from_groups(&ctx, &groups).unwrap(),
        &groups,
        5,
    );
    // 24 tensors in two buffers: per group, θ with g or apart from it, at each width.
    let caller = place(&ctx, &groups, 1, 1);
    let mut few = GpuOptimizer::from_tensors_in(&ctx, &groups, &caller.tensors).unwrap();
    assert_eq!(
        few.step_shape().update_dispatches,
        runs(&groups, &caller.tensors)
    );
    assert_eq!(few.step_shape().update_dispatches, 2 * 4);
    common::assert_same_bits(&run(&mut few, &groups, 5), &expected, "two buffers");

    // Every tensor's θ in a buffer of its own: a run or two per tensor.
    let caller = place(&ctx, &groups, LENS.len() * 2, 7);
    let mut own = GpuOptimizer::from_tensors_in(&ctx, &groups, &caller.tensors).unwrap();
    assert_eq!(
        own.step_shape().update_dispatches,
        runs(&groups, &caller.tensors)
    );
    assert!(own.step_shape().update_dispatches >= LENS.len() * 2);
    common::assert_same_bits(&run(&mut own, &groups, 5), &expected, "a buffer per tensor");

    // Bindings of 4 KiB: the state is split into many bindings and long tensors into many
    // windows of the caller's buffers.
    let small = small_bindings(&ctx);
    let caller = place(&small, &groups, 2, 2);
    let mut split = GpuOptimizer::from_tensors_in(&small, &groups, &caller.tensors).unwrap();
    assert!(
        split.step_shape().update_dispatches > 2 * 70_001 * 4 / 4096,
        "{}",
        split.step_shape().update_dispatches
    );
    common::assert_same_bits(&run(&mut split, &groups, 5), &expected, "small bindings");
}

#[test]
fn a_clipped_step_differs_from_the_arena_only_in_the_norms_rounding() {
    let Some(ctx) = common::gpu("a_clipped_step_differs_from_the_arena_only_in_the_norms_rounding")
    else {
        return;
    };
    let groups = model(&configs()[..2], NonFinitePolicy::SkipElement);
    let caller = place(&ctx, &groups, 3, 2);
    let clip = GradTransform {
        grad_scale: 4.0,
        clip_norm: Some(1.0),
        ..GradTransform::default()
    };
    let mut tensors = GpuOptimizer::from_tensors_in(&ctx, &groups, &caller.tensors).unwrap();
    let mut arena = GpuOptimizer::from_groups(&ctx, &groups).unwrap();
    tensors.set_grad_transform(clip).unwrap();
    arena.set_grad_transform(clip).unwrap();
    let (got, expected) = (run(&mut tensors, &groups, 6), run(&mut arena, &groups, 6));
    let (norms, arena_norms) = (
        tensors.norm_reports().unwrap(),
        arena.norm_reports().unwrap(),
    );
    assert_eq!(norms.len(), 6);
    for (a, b) in norms.iter().zip(&arena_norms) {
        let ulps = (a.norm.to_bits() as i64 - b.norm.to_bits() as i64).abs();
        // Sums of ~150k squares in two fixed orders: measured ≤ 2 ULP.
        assert!(
            ulps <= 4,
            "step {}: norm {} vs {} ({ulps} ULP)",
            a.call,
            a.norm,
            b.norm
        );
        assert!(a.factor < 1.0, "the clip binds");
    }
    // A factor a bit or two off moves each step by about as much relative to the step, and
    // sums of steps that cancel keep that absolute error: |Δθ| in units of ε·(the tensor's
    // largest movement from θ₀ + |θ|).
    let mut worst: f64 = 0.0;
    for t in groups.layout().tensors() {
        let range = t.flat_range();
        let theta0 = &groups.arena_theta0(t.group)[t.range()];
        let (p, q) = (&got[0][range.clone()], &expected[0][range]);
        let moved = q
            .iter()
            .zip(theta0)
            .map(|(q, t0)| (q - t0).abs())
            .fold(0.0f32, f32::max) as f64;
        for (&p, &q) in p.iter().zip(q) {
            let unit = f32::EPSILON as f64 * (moved + q.abs() as f64);
            worst = worst.max((p - q).abs() as f64 / unit);
        }
    }
    eprintln!("worst θ difference: {worst:.2}");
    // Measured 1.55.
    assert!(worst <= 4.0, "{worst:.2}");

    // Measuring the norm without clipping (M = inf) leaves every bit as the arena's.
    let measure = GradTransform {
        clip_norm: Some(f32::INFINITY),
        ..clip
    };
    // θ₀ afresh: the caller's buffers hold the stepped θ.
    let caller = place(&ctx, &groups, 3, 2);
    let mut tensors = GpuOptimizer::from_tensors_in(&ctx, &groups, &caller.tensors).unwrap();
    let mut arena = GpuOptimizer::from_groups(&ctx, &groups).unwrap();
    tensors.set_grad_transform(measure).unwrap();
    arena.set_grad_transform(measure).unwrap();
    common::assert_same_bits(
        &run(&mut tensors, &groups, 4),
        &run(&mut arena, &groups, 4),
        "clip_norm=inf",
    );
}

#[test]
fn bad_places_are_refused_with_the_reason() {
    let Some(ctx) = common::gpu("bad_places_are_refused_with_the_reason") else {
        return;
    };
    let config = OptimizerConfig::default_for("sgd").unwrap();
    let groups = model(&[config], NonFinitePolicy::SkipStep);
    let caller = place(&ctx, &groups, 1, 1);
    let refused = |tensors: &[TensorBuffers], expected: &str| {
        let err = GpuOptimizer::from_tensors_in(&ctx, &groups, tensors).unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
    };
    refused(&caller.tensors[1..], "tensor buffers");

    let mut odd = caller.tensors.clone();
    odd[2].theta.offset += 2;
    refused(&odd, "not a multiple of 4");

    let mut short = caller.tensors.clone();
    short[11].grad.offset = short[11].grad.buffer.size() - 8;
    refused(&short, "tensor `g0t11`'s gradient: the range of");
    refused(&short, "leaves its buffer");

    let mut long = caller.tensors.clone();
    long[5].theta.size += 4;
    refused(&long, "the θ range holds");

    let uniform = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 1 << 20,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut wrong = caller.tensors.clone();
    wrong[0].theta = BufferRange::new(uniform, 0, wrong[0].theta.size);
    refused(&wrong, "STORAGE");

    // A θ over another θ, or over a gradient, would read what the step writes.
    let mut over = caller.tensors.clone();
    over[3].theta = over[2].theta.clone();
    over[3].theta.offset += 4;
    over[3].theta.size = caller.tensors[3].theta.size;
    refused(
        &over,
        "the θ of tensor `g0t2` and the θ of tensor `g0t3` overlap",
    );
    let mut over = caller.tensors.clone();
    over[7].grad = over[6].theta.clone();
    over[7].grad.size = caller.tensors[7].grad.size;
    refused(&over, "tensor `g0t7` overlap");
    // Gradients are only read: two tensors may share one.
    let mut shared = caller.tensors.clone();
    shared[9].grad = shared[8].grad.clone();
    shared[9].grad.size = caller.tensors[9].grad.size;
    assert!(GpuOptimizer::from_tensors_in(&ctx, &groups, &shared).is_ok());

    // Moving tensors is for optimizers built over the caller's tensors, and loses nothing.
    let mut owned = GpuOptimizer::from_groups(&ctx, &groups).unwrap();
    let err = owned.set_tensor_buffers(&caller.tensors).unwrap_err();
    assert!(matches!(err, Error::Layout(_)), "{err}");
    let mut tensors = GpuOptimizer::from_tensors_in(&ctx, &groups, &caller.tensors).unwrap();
    tensors.step(&gradient(&groups, 1)).unwrap();
    let before = tensors.theta().unwrap();
    assert!(tensors.set_tensor_buffers(&odd).is_err());
    tensors.step(&gradient(&groups, 2)).unwrap();
    owned.step(&gradient(&groups, 1)).unwrap();
    owned.step(&gradient(&groups, 2)).unwrap();
    assert_ne!(before, tensors.theta().unwrap());
    common::assert_same_bits_flat(
        &tensors.theta().unwrap(),
        &owned.theta().unwrap(),
        "after a refused move",
    );
}

#[test]
fn other_workgroup_sizes_and_scalar_only_agree() {
    let Some(ctx) = common::gpu("other_workgroup_sizes_and_scalar_only_agree") else {
        return;
    };
    let groups = model(&configs()[3..5], NonFinitePolicy::SkipStep);
    let expected = run(
        &mut GpuOptimizer::from_groups(&ctx, &groups).unwrap(),
        &groups,
        4,
    );
    // Narrower workgroups share a row of the segment table; wider ones leave lanes idle.
    for (workgroup_size, scalar_only) in [(Some(64), false), (Some(1024), false), (None, true)] {
        let other = GpuContext::with_options(&GpuOptions {
            workgroup_size,
            scalar_only,
            ..GpuOptions::from_env()
        })
        .unwrap();
        let caller = place(&other, &groups, 2, 1);
        let mut tensors = GpuOptimizer::from_tensors_in(&other, &groups, &caller.tensors).unwrap();
        let what = format!(
            "workgroup {:?}, scalar only {scalar_only}",
            other.workgroup_size()
        );
        common::assert_same_bits(&run(&mut tensors, &groups, 4), &expected, &what);
    }
}

#[test]
fn a_checkpoint_moves_between_the_caller_path_and_the_arena_bit_for_bit() {
    let Some(ctx) =
        common::gpu("a_checkpoint_moves_between_the_caller_path_and_the_arena_bit_for_bit")
    else {
        return;
    };
    let groups = model(&configs()[..3], NonFinitePolicy::SkipStep);
    let mut straight = GpuOptimizer::from_groups(&ctx, &groups).unwrap();
    let expected = run(&mut straight, &groups, 6);

    // Three steps in caller buffers, saved; restored into an arena for three more.
    let caller = place(&ctx, &groups, 2, 2);
    let mut first = GpuOptimizer::from_tensors_in(&ctx, &groups, &caller.tensors).unwrap();
    run(&mut first, &groups, 3);
    let bytes = first.checkpoint().unwrap().to_bytes().unwrap();
    let mut second = GpuOptimizer::from_groups(&ctx, &groups).unwrap();
    second
        .restore(&bayesprop::Checkpoint::from_bytes(&bytes).unwrap())
        .unwrap();
    for t in 4..=6 {
        second.step(&gradient(&groups, t)).unwrap();
    }
    common::assert_same_bits(
        &everything(&second, &groups),
        &expected,
        "caller, then arena",
    );

    // And the other way: restoring writes θ into the caller's buffers.
    let mut arena = GpuOptimizer::from_groups(&ctx, &groups).unwrap();
    run(&mut arena, &groups, 3);
    let checkpoint = arena.checkpoint().unwrap();
    let fresh = place(&ctx, &groups, 3, 1);
    let mut tensors = GpuOptimizer::from_tensors_in(&ctx, &groups, &fresh.tensors).unwrap();
    tensors.restore(&checkpoint).unwrap();
    for t in 4..=6 {
        tensors.step(&gradient(&groups, t)).unwrap();
    }
    common::assert_same_bits(
        &everything(&tensors, &groups),
        &expected,
        "arena, then caller",
    );
}

/// A context like `ctx` whose storage bindings hold 4 KiB: vectors split into many bindings.
pub fn small_bindings(ctx: &GpuContext) -> GpuContext {
    GpuContext::with_options(&GpuOptions {
        limits: Some(wgpu::Limits {
            max_storage_buffer_binding_size: 4096,
            ..ctx.limits()
        }),
        ..GpuOptions::from_env()
    })
    .unwrap()
}
