//! The whole training step in one pass: gradients that a mixed-precision loss scaler has
//! multiplied by S, unscaled, clipped to a global norm, under a warmup-then-cosine learning
//! rate, with the norm of every step logged. The model is a least-squares fit with a few
//! outlier rows, whose large gradients the clip tames.
//!
//! Run: `cargo run --release --example training_step` (on the GPU when there is one, else on
//! every CPU core; the same `Stepper` API either way).

use bayesprop::optim::AdamConfig;
use bayesprop::{CpuOptimizer, GpuContext, GpuOptimizer, GradTransform, Stepper};

const N: usize = 4096;
const STEPS: u64 = 60;
const LOSS_SCALE: f32 = 1024.0;

/// The gradient of ½·Σ (θᵢ − targetᵢ)², with one element in 97 an outlier whose gradient is a
/// hundred times larger on odd steps, times the loss scale.
fn scaled_gradient(theta: &[f32], t: u64) -> Vec<f32> {
    theta
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let target = ((i % 13) as f32 - 6.0) * 0.1;
            let outlier = if i % 97 == 0 && t % 2 == 1 {
                100.0
            } else {
                1.0
            };
            (x - target) * outlier * LOSS_SCALE
        })
        .collect()
}

fn main() -> bayesprop::Result<()> {
    let config = AdamConfig {
        lr: 0.05,
        ..AdamConfig::adam()
    };
    let theta0 = vec![0.0f32; N];
    let mut opt: Box<dyn Stepper> = match GpuContext::new() {
        Ok(ctx) => {
            println!("stepping on {}", ctx.adapter_info().name);
            Box::new(GpuOptimizer::new(&ctx, config, &theta0)?)
        }
        Err(why) => {
            println!("stepping on the CPU ({why})");
            Box::new(CpuOptimizer::new(config, &theta0)?)
        }
    };
    opt.set_grad_transform(GradTransform {
        grad_scale: LOSS_SCALE,
        clip_norm: Some(1.0),
        max_consecutive_skips: Some(5),
    })?;
    opt.set_schedule("lr:cosine:warmup=10,total=60,final=0.1".parse()?)?;

    println!("{:>5} {:>12} {:>10}", "step", "‖g‖", "clip");
    for t in 1..=STEPS {
        // The host reads θ back for this host-side gradient; a model on the device would
        // write its gradient into the optimizer's arena instead (examples/device_gradients.rs).
        let grad = scaled_gradient(&opt.theta()?, t);
        opt.step(&grad)?;
        // The next θ read waits for this step anyway; a loop that must never wait logs
        // `GpuOptimizer::arrived_norm_reports` instead.
        for r in opt.norm_reports()? {
            if r.call % 10 == 0 || r.call <= 2 {
                println!("{:>5} {:>12.4e} {:>10.4}", r.call, r.norm, r.factor);
            }
        }
    }
    let theta = opt.theta()?;
    let worst = theta
        .iter()
        .enumerate()
        .map(|(i, &x)| (x - ((i % 13) as f32 - 6.0) * 0.1).abs())
        .fold(0.0f32, f32::max);
    println!("largest distance from the target after {STEPS} steps: {worst:.3}");
    Ok(())
}
