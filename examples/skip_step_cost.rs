//! What the `skip-step` policy's scan adds to a step: `adam` on the 16.8M parameters of a
//! Linear(4096, 4096) (a 4096 × 4096 weight and a 4096 bias), under `skip-step` and under
//! `propagate` (no scan), in the optimizer's own arena and with θ and g in the caller's
//! buffers (the segment tables `bayesprop-burn` uses). The two optimizers run in alternating
//! blocks of 5 steps, each block timed with the device synchronised around it, so that the
//! ratio of neighbouring blocks sees the same load; the median over 8 pairs is printed.
//!
//! ```sh
//! cargo run --release --example skip_step_cost
//! ```

use std::time::Instant;

use bayesprop::optim::AdamConfig;
use bayesprop::{
    wgpu, BufferRange, GpuContext, GpuOptimizer, NonFinitePolicy, ParamGroups, TensorBuffers,
};

const SHAPES: [&[usize]; 2] = [&[4096, 4096], &[4096]];
const PAIRS: usize = 8;
const BLOCK: usize = 5;

fn main() -> bayesprop::Result<()> {
    let ctx = GpuContext::new()?;
    println!("adapter: {}", ctx.adapter_info().name);
    for caller in [false, true] {
        let mut skip = optimizer(&ctx, NonFinitePolicy::SkipStep, caller)?;
        let mut propagate = optimizer(&ctx, NonFinitePolicy::Propagate, caller)?;
        let mut pairs = Vec::new();
        for _ in 0..PAIRS {
            pairs.push((block(&mut skip)?, block(&mut propagate)?));
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let ratios: Vec<f64> = pairs.iter().map(|(s, p)| s / p).collect();
        let (low, high) = ratios
            .iter()
            .fold((f64::MAX, 0.0f64), |(l, h), r| (l.min(*r), h.max(*r)));
        println!(
            "{}: skip-step {:.1} ms, propagate {:.1} ms per step; ratio median {:.3} ({low:.3}–{high:.3})",
            if caller { "caller tensors" } else { "own arena" },
            median(pairs.iter().map(|p| p.0).collect()),
            median(pairs.iter().map(|p| p.1).collect()),
            median(ratios.clone()),
        );
    }
    Ok(())
}

/// `adam` over [`SHAPES`] under `policy`, in its own arena or in two buffers of the caller's
/// (each tensor at a 256-byte boundary), after 3 untimed steps.
fn optimizer(
    ctx: &GpuContext,
    policy: NonFinitePolicy,
    caller: bool,
) -> bayesprop::Result<GpuOptimizer> {
    let mut groups = ParamGroups::new();
    let group = groups.add_group("linear", AdamConfig::adam())?;
    groups.set_policy(group, policy)?;
    let elements: u64 = SHAPES
        .iter()
        .map(|s| s.iter().product::<usize>() as u64)
        .sum();
    let pool = |label| {
        ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: elements * 4 + 256 * SHAPES.len() as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    let (theta, grad) = (pool("θ"), pool("g"));
    let mut places = Vec::new();
    let mut offset = 0;
    for (k, shape) in SHAPES.iter().enumerate() {
        let len = shape.iter().product::<usize>();
        groups.add_tensor(group, &format!("t{k}"), shape, &vec![0.0; len])?;
        let at = |b: &wgpu::Buffer| BufferRange::new(b.clone(), offset, len as u64 * 4);
        places.push(TensorBuffers {
            theta: at(&theta),
            grad: at(&grad),
        });
        offset += (len as u64 * 4).next_multiple_of(256);
    }
    let mut optimizer = match caller {
        true => GpuOptimizer::from_tensors_in(ctx, &groups, &places)?,
        false => GpuOptimizer::from_groups(ctx, &groups)?,
    };
    for _ in 0..3 {
        optimizer.step_device()?;
    }
    optimizer.group_steps()?;
    Ok(optimizer)
}

/// Milliseconds per step over a block of [`BLOCK`] steps, the device synchronised after.
fn block(optimizer: &mut GpuOptimizer) -> bayesprop::Result<f64> {
    let start = Instant::now();
    for _ in 0..BLOCK {
        optimizer.step_device()?;
    }
    optimizer.group_steps()?;
    Ok(start.elapsed().as_secs_f64() * 1e3 / BLOCK as f64)
}
