//! Drop-in use on the device: your own wgpu compute pass writes the gradients straight into
//! bayesprop's gradient arena, and bayesprop steps on them; nothing crosses to the host
//! between steps. At the end, the posterior variance σ says how sure the filter is of each
//! parameter: the Bayesian view's extra output.
//!
//! The "model" is a noisy quadratic per parameter, L = ½·h·(θ − optimum)², whose gradient the
//! user's kernel computes with a little deterministic noise. Run:
//! `cargo run --release --example device_gradients`

use bayesprop::{BayesConfig, GpuContext, GpuOptimizer, ParamGroups, Stepper, TensorId};

/// The user's gradient kernel: g = h·(θ − optimum) + noise, for every element of the arena.
const GRADIENT_WGSL: &str = r#"
struct Step { t: u32, n: u32 }
@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read> theta: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;

fn noise(i: u32, t: u32) -> f32 {
    var x = i * 747796405u + t * 2891336453u;
    x = ((x >> ((x >> 28u) + 4u)) ^ x) * 277803737u;
    return f32((x >> 22u) ^ x) / 4294967295.0 - 0.5;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i >= step.n { return; }
    let h = 0.5 + f32(i % 4u);           // curvature: 0.5, 1.5, 2.5, 3.5
    let optimum = f32(i % 7u) - 3.0;     // -3 … 3
    grad[i] = h * (theta[i] - optimum) + 0.3 * noise(i, step.t);
}
"#;

fn main() -> bayesprop::Result<()> {
    let ctx = GpuContext::new()?;
    println!(
        "adapter: {} ({:?})",
        ctx.adapter_info().name,
        ctx.adapter_info().backend
    );

    // One group, two tensors, all starting at 0.
    let mut groups = ParamGroups::new();
    let group = groups.add_group(
        "weights",
        BayesConfig::builder().eta(5e-2).beta(0.99).build()?,
    )?;
    let w = groups.add_tensor(group, "w", &[4, 8], &[0.0; 32])?;
    let b = groups.add_tensor(group, "b", &[7], &[0.0; 7])?;
    let mut optimizer = GpuOptimizer::from_groups(&ctx, &groups)?;
    let n = groups.groups()[0].arena_len as u32;

    // The user's pipeline, bound to the optimizer's θ and gradient arenas (the whole group,
    // from the first tensor on).
    let device = ctx.device();
    let theta = optimizer.tensor_theta(TensorId(0))?;
    let grad = optimizer.tensor_grad(TensorId(0))?;
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("user gradients"),
        source: wgpu::ShaderSource::Wgsl(GRADIENT_WGSL.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("user gradients"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let step_uniform = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("user step"),
        size: 8,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("user gradients"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: step_uniform.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &theta.buffer,
                    offset: theta.offset,
                    size: wgpu::BufferSize::new(n as u64 * 4),
                }),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &grad.buffer,
                    offset: grad.offset,
                    size: wgpu::BufferSize::new(n as u64 * 4),
                }),
            },
        ],
    });

    for t in 1..=600u32 {
        // The user's forward/backward: one dispatch that writes the gradients in place.
        ctx.queue()
            .write_buffer(&step_uniform, 0, bytemuck::cast_slice(&[t, n]));
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(n.div_ceil(64), 1, 1);
        }
        ctx.queue().submit([encoder.finish()]);
        // bayesprop's step on the gradients where they are.
        optimizer.step_device()?;
    }

    let b_theta = optimizer.tensor_values(b)?;
    let b_sigma = optimizer.tensor_state(b, "sigma")?;
    println!("after {} steps:", optimizer.steps_taken()?);
    println!("  i  optimum  θ         σ (posterior variance)  curvature");
    for (i, (theta, sigma)) in b_theta.iter().zip(&b_sigma).enumerate() {
        // b starts at arena offset 32: element i of b is arena element 32 + i.
        let k = 32 + i;
        let (target, h) = ((k % 7) as f32 - 3.0, 0.5 + (k % 4) as f32);
        println!("  {i}  {target:>5.1}  {theta:>8.4}  {sigma:>12.3e}            {h}");
    }
    // σ sits near its fixed point σ*(s) ≈ η/sqrt(s), s the running mean of g²: near the
    // optimum g is mostly noise, so σ tells how noisy each parameter's evidence is.
    let w_sigma = optimizer.tensor_state(w, "sigma")?;
    let (lo, hi) = w_sigma
        .iter()
        .fold((f32::MAX, 0.0f32), |(lo, hi), &s| (lo.min(s), hi.max(s)));
    println!("  σ of w ranges over {lo:.3e} … {hi:.3e}");
    let worst = b_theta
        .iter()
        .enumerate()
        .map(|(i, theta)| (theta - ((32 + i) % 7) as f32 + 3.0).abs())
        .fold(0.0f32, f32::max);
    println!("largest distance of b from its optimum: {worst:.3}");
    Ok(())
}
