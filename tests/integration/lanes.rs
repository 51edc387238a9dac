//! The kernels' two lane widths: vec4 bodies and scalar tails give the reference's bits, for
//! every optimizer in the table; a tail in the caller's buffers never writes past the arena;
//! one element per invocation everywhere (`scalar_only`) gives the same bits as vec4.

use crate::common;

use bayesprop::gpu::GpuOptions;
use bayesprop::validate::{gradient, initial_theta};
use bayesprop::{
    BufferRange, CpuOptimizer, GpuContext, GpuOptimizer, NonFinitePolicy, OptimizerConfig,
    ParamGroups, Stepper, TensorBuffers,
};

const STEPS: u64 = 5;

/// Gradients with a NaN and an Inf in lanes 1 and 2 of one vec4 at step 2.
fn grads(n: usize) -> Vec<Vec<f32>> {
    (1..=STEPS)
        .map(|t| {
            let mut g = gradient(n, 21, t);
            if t == 2 {
                g[9] = f32::NAN;
                g[10] = f32::INFINITY;
            }
            g
        })
        .collect()
}

fn run(o: &mut dyn Stepper, grads: &[Vec<f32>]) -> Vec<Vec<f32>> {
    for g in grads {
        o.step(g).unwrap();
    }
    common::snapshot(o)
}

#[test]
fn a_tail_in_the_callers_buffers_runs_at_scalar_width_and_stays_in_the_arena() {
    let Some(ctx) = common::gpu("a_tail_in_the_callers_buffers_runs_at_scalar_width") else {
        return;
    };
    let device = ctx.device();
    let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
    // A length that is neither a multiple of 4 nor of the offset alignment: a vec4 body and a
    // scalar tail. The caller's buffers hold sentinels right after the arena.
    let n = 1027;
    let theta0 = initial_theta(n, 4);
    let grads = grads(n);
    let sentinel = [7.0f32; 8];
    for config in OptimizerConfig::all_defaults() {
        for policy in [NonFinitePolicy::SkipStep, NonFinitePolicy::SkipElement] {
            let what = format!("{} {}", config.name(), policy.name());
            let groups = ParamGroups::single(config.clone(), &theta0).unwrap();
            let make = |label, values: &[f32]| {
                let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: align + (n + sentinel.len()) as u64 * 4,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let mut contents = values.to_vec();
                contents.extend_from_slice(&sentinel);
                ctx.queue()
                    .write_buffer(&buffer, align, bytemuck::cast_slice(&contents));
                BufferRange::new(buffer, align, n as u64 * 4)
            };
            let arena = TensorBuffers {
                theta: make("user theta", &theta0),
                grad: make("user grad", &vec![0.0; n]),
            };
            let mut gpu = GpuOptimizer::from_groups_in(&ctx, &groups, std::slice::from_ref(&arena))
                .unwrap()
                .with_nonfinite_policy(policy);
            assert_eq!(
                gpu.step_shape().update_dispatches,
                2,
                "{what}: a vec4 body and a scalar tail"
            );
            let mut reference = CpuOptimizer::reference(config.clone(), &theta0)
                .unwrap()
                .with_nonfinite_policy(policy);
            let (a, b) = (run(&mut gpu, &grads), run(&mut reference, &grads));
            if ctx.is_software() {
                common::assert_same_bits(&a, &b, &what);
            }
            for slice in [&arena.theta, &arena.grad] {
                let after = ctx
                    .read_f32(&slice.buffer, slice.offset + n as u64 * 4, sentinel.len())
                    .unwrap();
                assert_eq!(after, sentinel, "{what}: written past the arena");
            }
        }
    }
}

#[test]
fn vec4_and_scalar_widths_give_the_same_bits() {
    let Some(ctx) = common::gpu("vec4_and_scalar_widths_give_the_same_bits") else {
        return;
    };
    let scalar = GpuContext::with_options(&GpuOptions {
        scalar_only: true,
        ..GpuOptions::from_env()
    })
    .unwrap();
    // Not a multiple of 4: the optimizer's own buffers are padded to whole vec4s.
    let n = 4099;
    let theta0 = initial_theta(n, 3);
    let grads = grads(n);
    for config in OptimizerConfig::all_defaults() {
        for policy in [NonFinitePolicy::SkipStep, NonFinitePolicy::SkipElement] {
            let what = format!("{} {}", config.name(), policy.name());
            let make = |ctx: &GpuContext| {
                GpuOptimizer::new(ctx, config.clone(), &theta0)
                    .unwrap()
                    .with_nonfinite_policy(policy)
            };
            let (mut wide, mut narrow) = (make(&ctx), make(&scalar));
            assert_eq!(
                wide.step_shape().update_dispatches,
                1,
                "{what}: padded, one vec4 dispatch"
            );
            common::assert_same_bits(&run(&mut wide, &grads), &run(&mut narrow, &grads), &what);
        }
    }
}
