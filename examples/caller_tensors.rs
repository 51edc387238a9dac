//! Tensors where your framework keeps them: a memory pool of θ and one of gradients, tensors at
//! whatever offsets the pool gave them (one of them not even 16-byte aligned), and gaps of
//! other data between them. bayesprop steps them in place (`GpuOptimizer::from_tensors_in`);
//! your gradient pass and the step are recorded into one encoder and submitted once per step.
//!
//! The "model" is a noisy quadratic per parameter, L = ½·h·(θ − optimum)², whose gradient the
//! user's kernel computes over the whole pool. Run:
//! `cargo run --release --example caller_tensors`

use bayesprop::{
    BayesConfig, BufferRange, GpuContext, GpuOptimizer, ParamGroups, TensorBuffers, TensorId,
};

/// The user's gradient kernel, over every f32 of the pools (the gaps too: only the tensors'
/// elements are stepped).
const GRADIENT_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read> theta: array<f32>;
@group(0) @binding(1) var<storage, read_write> grad: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i >= arrayLength(&grad) { return; }
    let h = 0.5 + f32(i % 4u);
    let optimum = f32(i % 7u) - 3.0;
    grad[i] = h * (theta[i] - optimum);
}
"#;

/// The pool's byte offsets of the three tensors: one at the pool's start, one 4 bytes past a
/// 16-byte boundary, one after a gap.
const OFFSETS: [u64; 3] = [0, 1028, 4096];
const SHAPES: [&[usize]; 3] = [&[16, 16], &[10], &[3, 5]];
const POOL_BYTES: u64 = 8192;

fn main() -> bayesprop::Result<()> {
    let ctx = GpuContext::new()?;
    let device = ctx.device();
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let pool = |label| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: POOL_BYTES,
            usage,
            mapped_at_creation: false,
        })
    };
    let (theta_pool, grad_pool) = (pool("θ pool"), pool("gradient pool"));

    // The layout: names, shapes and hyperparameters. θ₀ is whatever the pool holds (zeros).
    let mut groups = ParamGroups::new();
    let group = groups.add_group("weights", BayesConfig::builder().eta(5e-2).build()?)?;
    let mut places = Vec::new();
    for (k, (shape, offset)) in SHAPES.iter().zip(OFFSETS).enumerate() {
        let len = shape.iter().product();
        groups.add_tensor(group, &format!("t{k}"), shape, &vec![0.0; len])?;
        let at = |buffer: &wgpu::Buffer| BufferRange::new(buffer.clone(), offset, len as u64 * 4);
        places.push(TensorBuffers {
            theta: at(&theta_pool),
            grad: at(&grad_pool),
        });
    }
    let mut optimizer = GpuOptimizer::from_tensors_in(&ctx, &groups, &places)?;
    println!(
        "{} tensors in 2 pools: {} update dispatches per step",
        SHAPES.len(),
        optimizer.step_shape().update_dispatches
    );

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
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("user gradients"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: theta_pool.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: grad_pool.as_entire_binding(),
            },
        ],
    });
    for _ in 0..300 {
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups((POOL_BYTES / 4).div_ceil(64) as u32, 1, 1);
        }
        optimizer.encode_step(&mut encoder)?;
        ctx.queue().submit([encoder.finish()]);
    }

    // Each element's optimum depends on its index in the pool, as the kernel computes it.
    let mut worst: f32 = 0.0;
    for (k, offset) in OFFSETS.iter().enumerate() {
        let theta = optimizer.tensor_values(TensorId(k))?;
        let sigma = optimizer.tensor_state(TensorId(k), "sigma")?;
        let first = (offset / 4) as usize;
        for (j, value) in theta.iter().enumerate() {
            let optimum = ((first + j) % 7) as f32 - 3.0;
            worst = worst.max((value - optimum).abs());
        }
        println!(
            "t{k} at byte {offset}: θ[..3] = {:.3?}, σ[0] = {:.2e}",
            &theta[..3],
            sigma[0]
        );
    }
    println!("after 300 steps every θ is within {worst:.1e} of its optimum");
    assert!(worst < 1e-2, "the filter did not converge: {worst}");
    Ok(())
}
