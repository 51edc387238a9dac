//! criterion benches of `bayesprop bench`'s matrix at sizes that finish in minutes: one step of
//! every optimizer in the table on the reference, the fast CPU path and the GPU, and the
//! roofline (touch of the same arrays, plain copy) on the CPU and the GPU. Throughput is in
//! bytes moved per SPEC, so criterion reports GB/s. GPU samples are the device time of their
//! passes by timestamp queries where the adapter has them (as `bayesprop bench` reports), else
//! wall time from an idle device until the last run ends (candle's `iter_custom` style); they
//! read gradients already on the device.
//!
//! `cargo bench --bench step`; `cargo bench --bench step -- adam` for one optimizer.

use std::time::{Duration, Instant};

use bayesprop::bench::format_size;
use bayesprop::bench::roofline::{synthetic, CpuRoofline, GpuRoofline};
use bayesprop::bench::timing::PassTimer;
use bayesprop::{
    CpuOptimizer, CpuPath, GpuContext, GpuOptimizer, OptimizerConfig, StepDevice, Stepper,
};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};

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

/// Runs timed between two readings of the timestamps.
const TIMED_BATCH: u32 = 256;

/// Criterion's time for `iters` runs of `run` on the GPU: with `timed`, the sum of the device
/// intervals that `seconds` reads back (a batch at a time, as the query set holds
/// `TIMED_BATCH`); else the wall time from an idle device until the last run ends.
fn gpu_time<T>(
    ctx: &GpuContext,
    target: &mut T,
    iters: u64,
    timed: bool,
    run: impl Fn(&mut T),
    seconds: impl Fn(&mut T) -> Vec<f64>,
) -> Duration {
    wait(ctx);
    if !timed {
        let start = Instant::now();
        for _ in 0..iters {
            run(target);
        }
        wait(ctx);
        return start.elapsed();
    }
    let mut total = 0.0;
    let mut left = iters;
    while left > 0 {
        let batch = left.min(u64::from(TIMED_BATCH));
        for _ in 0..batch {
            run(target);
        }
        let intervals = seconds(target);
        assert_eq!(intervals.len() as u64, batch, "one interval per run");
        total += intervals.iter().sum::<f64>();
        left -= batch;
    }
    Duration::from_secs_f64(total)
}

fn configure<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
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
            for device in StepDevice::ALL {
                let id = BenchmarkId::new(device.name(), format_size(n));
                match device {
                    StepDevice::Reference | StepDevice::Cpu => {
                        let path = match device {
                            StepDevice::Reference => CpuPath::Reference,
                            _ => CpuPath::Parallel,
                        };
                        let mut cpu =
                            CpuOptimizer::with_path(config.clone(), &theta0, path).unwrap();
                        group.bench_function(id, |b| b.iter(|| cpu.step(&grad).unwrap()));
                    }
                    StepDevice::Gpu => {
                        let Some(ctx) = &gpu else { continue };
                        let mut opt = GpuOptimizer::new(ctx, config.clone(), &theta0).unwrap();
                        // Upload the gradient once; steps then read it in place.
                        opt.step(&grad).unwrap();
                        let timer = PassTimer::new(ctx, TIMED_BATCH);
                        let timed = timer.is_some();
                        let mut target = (opt, timer);
                        group.bench_function(id, |b| {
                            b.iter_custom(|iters| {
                                gpu_time(
                                    ctx,
                                    &mut target,
                                    iters,
                                    timed,
                                    |(opt, timer)| {
                                        if let Some(timer) = timer {
                                            timer.time_next_step(opt);
                                        }
                                        opt.step_device().unwrap()
                                    },
                                    |(_, timer)| match timer {
                                        Some(timer) => timer.take_seconds(ctx).unwrap(),
                                        None => Vec::new(),
                                    },
                                )
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
                bench_gpu_roofline(&mut group, id("gpu"), ctx, roofline, |r, timer| {
                    r.touch(states, timer).unwrap()
                });
            }
        }
        group.throughput(Throughput::Bytes((8 * n) as u64));
        let id = |d: &str| BenchmarkId::new(format!("copy/{d}"), format_size(n));
        group.bench_function(id("cpu"), |b| b.iter(|| cpu.copy()));
        if let Some((ctx, roofline)) = &mut device {
            bench_gpu_roofline(&mut group, id("gpu"), ctx, roofline, |r, timer| {
                r.copy(timer).unwrap()
            });
        }
    }
    group.finish();
}

/// One GPU roofline kernel as a criterion row: `run` records one pass, into the timer it is
/// given where the adapter has timestamp queries.
fn bench_gpu_roofline(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    ctx: &GpuContext,
    roofline: &mut GpuRoofline,
    run: impl Fn(&mut GpuRoofline, Option<&mut PassTimer>),
) {
    let mut target = (roofline, PassTimer::new(ctx, TIMED_BATCH));
    let timed = target.1.is_some();
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            gpu_time(
                ctx,
                &mut target,
                iters,
                timed,
                |(r, timer)| run(r, timer.as_mut()),
                |(_, timer)| match timer {
                    Some(t) => t.take_seconds(ctx).unwrap(),
                    None => Vec::new(),
                },
            )
        })
    });
}

criterion_group!(benches, steps, roofline);
criterion_main!(benches);
