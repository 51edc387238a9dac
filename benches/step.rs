//! criterion benches of `bayesprop bench`'s matrix at sizes that finish in minutes: one step of
//! every optimizer in the table on the reference, the fast CPU path and the GPU, and the
//! roofline (touch of the same arrays, plain copy) on the CPU and the GPU. Throughput is in
//! bytes moved per SPEC, so criterion reports GB/s. GPU samples wait for the device before the
//! clock stops (candle's `iter_custom` style), and read gradients already on the device.
//!
//! `cargo bench --bench step`; `cargo bench --bench step -- adam` for one optimizer.

use std::time::{Duration, Instant};

use bayesprop::bench::roofline::{synthetic, CpuRoofline, GpuRoofline};
use bayesprop::bench::{format_size, BenchDevice};
use bayesprop::{CpuOptimizer, CpuPath, GpuContext, GpuOptimizer, OptimizerConfig, Stepper};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// In cache (1 MiB per array) and well past it (16 MiB per array).
const SIZES: [usize; 2] = [1 << 18, 1 << 22];

fn gpu() -> Option<GpuContext> {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    GpuContext::new()
        .map_err(|e| eprintln!("GPU rows skipped: {e}"))
        .ok()
}

fn wait(ctx: &GpuContext) {
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
}

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group
}

fn steps(c: &mut Criterion) {
    let gpu = gpu();
    for config in OptimizerConfig::all_defaults() {
        let mut group = configure(c, &format!("step/{}", config.name()));
        for n in SIZES {
            let theta0 = synthetic(n, 1, 1.0);
            let grad = synthetic(n, 2, 1e-2);
            let bytes = config.as_dyn().bytes_per_element() * n;
            group.throughput(Throughput::Bytes(bytes as u64));
            for device in BenchDevice::ALL {
                let id = BenchmarkId::new(device.name(), format_size(n));
                match device {
                    BenchDevice::Reference | BenchDevice::Cpu => {
                        let path = match device {
                            BenchDevice::Reference => CpuPath::Reference,
                            _ => CpuPath::Parallel,
                        };
                        let mut cpu =
                            CpuOptimizer::with_path(config.clone(), &theta0, path).unwrap();
                        group.bench_function(id, |b| b.iter(|| cpu.step(&grad).unwrap()));
                    }
                    BenchDevice::Gpu => {
                        let Some(ctx) = &gpu else { continue };
                        let mut opt = GpuOptimizer::new(ctx, config.clone(), &theta0).unwrap();
                        // Upload the gradient once; steps then read it in place.
                        opt.step(&grad).unwrap();
                        group.bench_function(id, |b| {
                            b.iter_custom(|iters| {
                                wait(ctx);
                                let start = Instant::now();
                                for _ in 0..iters {
                                    opt.step_device().unwrap();
                                }
                                wait(ctx);
                                start.elapsed()
                            })
                        });
                    }
                }
            }
        }
        group.finish();
    }
}

fn roofline(c: &mut Criterion) {
    let gpu = gpu();
    // The state counts of the table's default configs (sgd 0, rmsprop 1, bayes and adam 2).
    let mut counts: Vec<usize> = OptimizerConfig::all_defaults()
        .iter()
        .map(|c| c.used_state_names().len())
        .collect();
    counts.sort();
    counts.dedup();
    let mut group = configure(c, "roofline");
    for n in SIZES {
        let mut cpu = CpuRoofline::new(n);
        let mut device = gpu
            .as_ref()
            .map(|ctx| (ctx, GpuRoofline::new(ctx, n).unwrap()));
        for &states in &counts {
            group.throughput(Throughput::Bytes((4 * (3 + 2 * states) * n) as u64));
            let id =
                |d: &str| BenchmarkId::new(format!("touch {states} states/{d}"), format_size(n));
            group.bench_function(id("cpu"), |b| b.iter(|| cpu.touch(states)));
            if let Some((ctx, roofline)) = &mut device {
                group.bench_function(id("gpu"), |b| {
                    b.iter_custom(|iters| {
                        wait(ctx);
                        let start = Instant::now();
                        for _ in 0..iters {
                            roofline.touch(states, None).unwrap();
                        }
                        wait(ctx);
                        start.elapsed()
                    })
                });
            }
        }
        group.throughput(Throughput::Bytes((8 * n) as u64));
        let id = |d: &str| BenchmarkId::new(format!("copy/{d}"), format_size(n));
        group.bench_function(id("cpu"), |b| b.iter(|| cpu.copy()));
        if let Some((ctx, roofline)) = &mut device {
            group.bench_function(id("gpu"), |b| {
                b.iter_custom(|iters| {
                    wait(ctx);
                    let start = Instant::now();
                    for _ in 0..iters {
                        roofline.copy(None).unwrap();
                    }
                    wait(ctx);
                    start.elapsed()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, steps, roofline);
criterion_main!(benches);
