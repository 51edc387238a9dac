//! One wgpu device for burn and bayesprop: set up once, then every optimizer of this crate
//! finds bayesprop's handle to it from the burn device its parameters live on.

use std::sync::Mutex;

use bayesprop::GpuContext;
use burn::tensor::wgpu::{WgpuOptions, WgpuSetup};
use burn::tensor::Device;

use crate::error::{Error, Result};

/// burn devices set up through this crate, with bayesprop's context on the same wgpu device.
/// `Device` has equality but no hash, and a process has a handful of devices at most.
static SHARED: Mutex<Vec<(Device, GpuContext)>> = Mutex::new(Vec::new());

/// Sets up burn's default wgpu device, shared with bayesprop: build the model on the returned
/// device (or on `.autodiff()` of it), in place of `Device::wgpu_options().init()`.
pub fn init_device() -> Result<Device> {
    init_device_with(Device::wgpu_options())
}

/// [`init_device`] with burn's options (adapter, graphics API, memory).
pub fn init_device_with(options: WgpuOptions) -> Result<Device> {
    let (device, setup) = options
        .init_with_setup()
        .map_err(|e| Error::Init(e.to_string()))?;
    share(&device, &setup);
    Ok(device)
}

/// Registers wgpu handles the application already has with burn (request the device the way
/// cubecl does: the adapter's features and limits), shared with bayesprop.
pub fn register_setup(setup: WgpuSetup) -> Result<Device> {
    let keep = setup.clone();
    let device = Device::wgpu_options()
        .setup(setup)
        .init()
        .map_err(|e| Error::Init(e.to_string()))?;
    share(&device, &keep);
    Ok(device)
}

fn share(device: &Device, setup: &WgpuSetup) {
    let ctx = GpuContext::from_device(
        setup.device.clone(),
        setup.queue.clone(),
        setup.adapter.get_info(),
    );
    SHARED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((device.clone().inner(), ctx));
}

/// bayesprop's context on the wgpu device behind `device`, if it was set up here.
pub fn shared_context(device: &Device) -> Result<GpuContext> {
    SHARED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        // Device equality ignores autodiff: the autodiff device of a shared one matches.
        .find(|(d, _)| d == device)
        .map(|(_, ctx)| ctx.clone())
        .ok_or_else(|| Error::UnsharedDevice(format!("{device:?}")))
}
