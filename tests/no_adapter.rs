//! Without an adapter, GPU tests fail with the fix, unless explicitly skipped; and a caller's
//! own device works as it is. A test binary of its own: it changes environment variables.

mod common;

use bayesprop::gpu::{GpuOptions, NO_ADAPTER_HELP};
use bayesprop::{BayesConfig, CpuOptimizer, Error, GpuContext, GpuOptimizer, Stepper};

/// The tests here run in parallel threads of one process; the environment is shared.
static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A backend this machine cannot have, so that no adapter is found.
fn absent_backend() -> wgpu::Backends {
    if cfg!(target_os = "macos") {
        wgpu::Backends::DX12
    } else {
        wgpu::Backends::METAL
    }
}

#[test]
fn no_adapter_fails_with_the_fix_unless_skipped_explicitly() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let options = GpuOptions {
        backends: Some(absent_backend()),
        ..GpuOptions::default()
    };
    match GpuContext::with_options(&options) {
        Err(Error::NoAdapter(message)) => {
            assert_eq!(message, NO_ADAPTER_HELP);
            assert!(message.contains("mesa-vulkan-drivers"), "{message}");
        }
        other => panic!("expected NoAdapter, got {other:?}"),
    }

    // The same through the tests' helper, which reads WGPU_BACKEND: it panics, naming the
    // package and the opt-out, and returns None only when the opt-out is set.
    std::env::set_var("WGPU_BACKEND", "metal");
    std::env::remove_var(common::SKIP_ENV);
    let failure = std::panic::catch_unwind(|| common::gpu("probe")).unwrap_err();
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("mesa-vulkan-drivers"), "{message}");
    assert!(message.contains(common::SKIP_ENV), "{message}");
    std::env::set_var(common::SKIP_ENV, "1");
    assert!(common::gpu("probe").is_none());
    std::env::remove_var(common::SKIP_ENV);
    std::env::remove_var("WGPU_BACKEND");

    // A name that matches no adapter lists the ones found.
    let options = GpuOptions {
        adapter_name: Some("no such adapter".into()),
        ..GpuOptions::default()
    };
    if let Err(Error::NoAdapter(message)) = GpuContext::with_options(&options) {
        assert!(message.contains("no such adapter"), "{message}");
    }
}

#[test]
fn the_callers_own_device_and_queue() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_) = common::gpu("the_callers_own_device_and_queue") else {
        return;
    };
    let (device, queue, info) = callers_device();
    let ctx = GpuContext::from_device(device, queue, info);

    steps_like_the_reference(&ctx, 1000);
}

#[test]
fn the_callers_own_device_takes_the_kernel_options() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_) = common::gpu("the_callers_own_device_takes_the_kernel_options") else {
        return;
    };
    let (device, queue, info) = callers_device();
    let options = GpuOptions::default().workgroup_size(64).scalar_only(true);
    let ctx = GpuContext::from_device_with(device, queue, info, &options);
    assert_eq!(ctx.workgroup_size(), 64);
    assert!(ctx.scalar_only());

    // The results do not depend on the kernels' shape (1,001: a scalar tail too).
    steps_like_the_reference(&ctx, 1001);
}

/// The caller's own instance, adapter and device, as an application would have them.
fn callers_device() -> (wgpu::Device, wgpu::Queue, wgpu::AdapterInfo) {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&Default::default())).unwrap();
    (device, queue, adapter.get_info())
}

/// Five `bayes` steps of `n` elements on `ctx` move θ, bit-identically to the reference on a
/// software adapter.
fn steps_like_the_reference(ctx: &GpuContext, n: usize) {
    let theta0: Vec<f32> = (0..n).map(|i| (i as f32 - 500.0) / 100.0).collect();
    let grad: Vec<f32> = theta0.iter().map(|x| 2.0 * x).collect();
    let mut gpu = GpuOptimizer::new(ctx, BayesConfig::default(), &theta0).unwrap();
    let mut cpu = CpuOptimizer::reference(BayesConfig::default(), &theta0).unwrap();
    for _ in 0..5 {
        gpu.step(&grad).unwrap();
        cpu.step(&grad).unwrap();
    }
    if ctx.is_software() {
        assert_eq!(gpu.theta().unwrap(), cpu.theta().unwrap());
    }
    assert_ne!(gpu.theta().unwrap(), theta0);
}
