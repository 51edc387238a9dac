//! One optimizer step per iteration, on each device, reported as bytes moved per SPEC.
//! The GPU timings include a device synchronisation per sample (candle's `iter_custom` style).

use std::time::{Duration, Instant};

use bayesprop::{
    validate, BayesConfig, CpuOptimizer, GpuContext, GpuOptimizer, Optimizer, Stepper,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bayes_step(c: &mut Criterion) {
    let config = BayesConfig::default();
    let mut group = c.benchmark_group("bayes_step");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    let gpu = GpuContext::new();
    if let Err(e) = &gpu {
        eprintln!("GPU rows skipped: {e}");
    }
    for n in [1 << 16, 1 << 20, 1 << 22] {
        let theta0 = validate::initial_theta(n, 1);
        let grad = validate::gradient(n, 1, 1);
        group.throughput(Throughput::Bytes((config.bytes_per_element() * n) as u64));
        let mut reference = CpuOptimizer::reference(config, &theta0).unwrap();
        group.bench_function(BenchmarkId::new("reference", n), |b| {
            b.iter(|| reference.step(&grad).unwrap())
        });
        let mut cpu = CpuOptimizer::new(config, &theta0).unwrap();
        group.bench_function(BenchmarkId::new("cpu", n), |b| {
            b.iter(|| cpu.step(&grad).unwrap())
        });
        if let Ok(ctx) = &gpu {
            let mut opt = GpuOptimizer::new(ctx, config, &theta0).unwrap();
            // Gradients already on the device: the step alone, as in a training loop.
            opt.step(&grad).unwrap();
            group.bench_function(BenchmarkId::new("gpu", n), |b| {
                b.iter_custom(|iters| {
                    ctx.device()
                        .poll(wgpu::PollType::wait_indefinitely())
                        .unwrap();
                    let start = Instant::now();
                    for _ in 0..iters {
                        opt.step_device().unwrap();
                    }
                    ctx.device()
                        .poll(wgpu::PollType::wait_indefinitely())
                        .unwrap();
                    start.elapsed()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bayes_step);
criterion_main!(benches);
