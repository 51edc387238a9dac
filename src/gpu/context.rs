//! Adapter selection, the device, and device errors as `Result`s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::StateFormat;
use crate::error::{Error, Result};
use crate::gpu::pipeline::{Addressing, ByWidth, Pipeline, Specialization};
use crate::kernels::{Kernel, CONTROL};

/// Environment variable: a case-insensitive substring of the adapter name to use.
pub const ADAPTER_ENV: &str = "BAYESPROP_ADAPTER";
/// Environment variable read by wgpu: a comma list of backends (`vulkan`, `gl`, `metal`, `dx12`).
pub const BACKEND_ENV: &str = "WGPU_BACKEND";
/// Environment variable: invocations per workgroup of every kernel, instead of the adapter's
/// default (see [`default_workgroup_size`]).
pub const WORKGROUP_SIZE_ENV: &str = "BAYESPROP_WORKGROUP_SIZE";
/// Environment variable: `1` runs every kernel one element per invocation (no vec4), to
/// measure what vec4 access gains.
pub const SCALAR_ONLY_ENV: &str = "BAYESPROP_SCALAR_ONLY";

/// The fix printed whenever no adapter is found.
pub const NO_ADAPTER_HELP: &str = "no GPU adapter found. On Debian/Ubuntu without a GPU, install \
the software Vulkan driver (lavapipe): `apt-get install -y mesa-vulkan-drivers`";

/// How to choose and open the device. Every knob is a field; [`GpuOptions::from_env`] fills
/// them from the environment variables above, which is what [`GpuContext::new`] and the CLI
/// start from.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Backends to consider; `None` means all (or `WGPU_BACKEND` when read from the environment).
    pub backends: Option<wgpu::Backends>,
    /// Case-insensitive substring of the adapter name.
    pub adapter_name: Option<String>,
    /// Limits to request instead of the adapter's own (e.g. small binding sizes, for tests of
    /// the chunking paths). Each must be within what the adapter supports.
    pub limits: Option<wgpu::Limits>,
    /// Invocations per workgroup (the kernels' `WORKGROUP_SIZE`); `None` picks the adapter's
    /// default.
    pub workgroup_size: Option<u32>,
    /// One element per invocation everywhere, instead of vec4 bodies and scalar tails (for
    /// measuring the vec4 gain; the results are the same).
    pub scalar_only: bool,
}

impl GpuOptions {
    /// Options from `WGPU_BACKEND`, `BAYESPROP_ADAPTER`, `BAYESPROP_WORKGROUP_SIZE` and
    /// `BAYESPROP_SCALAR_ONLY`, refusing a value that is set but malformed (an unknown
    /// backend, a workgroup size that is not a positive integer, a scalar-only flag other than
    /// 0 or 1) with an error that names the variable. [`GpuContext::new`] and the CLI start
    /// from these.
    pub fn try_from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let refuse = |what: &'static str, value: String, known: &str| Error::Unknown {
            what,
            name: value,
            known: known.into(),
        };
        if let Some(value) = var("WGPU_BACKEND") {
            if wgpu::Backends::from_comma_list(&value).is_empty() {
                let known = "vulkan (vk), metal (mtl), dx12 (d3d12), gl (gles, opengl), webgpu";
                return Err(refuse("WGPU_BACKEND value", value, known));
            }
        }
        if let Some(value) = var(WORKGROUP_SIZE_ENV) {
            if !matches!(value.trim().parse::<u32>(), Ok(size) if size > 0) {
                return Err(refuse(
                    "BAYESPROP_WORKGROUP_SIZE value",
                    value,
                    "a positive integer",
                ));
            }
        }
        if let Some(value) = var(SCALAR_ONLY_ENV) {
            if !matches!(value.trim(), "0" | "1") {
                return Err(refuse("BAYESPROP_SCALAR_ONLY value", value, "0, 1"));
            }
        }
        Ok(Self::from_env())
    }

    /// [`GpuOptions::try_from_env`], ignoring malformed values.
    pub fn from_env() -> Self {
        GpuOptions {
            backends: wgpu::Backends::from_env(),
            adapter_name: std::env::var(ADAPTER_ENV).ok().filter(|s| !s.is_empty()),
            limits: None,
            workgroup_size: std::env::var(WORKGROUP_SIZE_ENV)
                .ok()
                .and_then(|s| s.trim().parse().ok()),
            scalar_only: std::env::var(SCALAR_ONLY_ENV).as_deref() == Ok("1"),
        }
    }

    /// Only adapters whose name contains `name` (case-insensitive).
    pub fn adapter(mut self, name: impl Into<String>) -> Self {
        self.adapter_name = Some(name.into());
        self
    }

    /// Invocations per workgroup of every kernel.
    pub fn workgroup_size(mut self, size: u32) -> Self {
        self.workgroup_size = Some(size);
        self
    }

    /// One element per invocation everywhere (no vec4).
    pub fn scalar_only(mut self, scalar_only: bool) -> Self {
        self.scalar_only = scalar_only;
        self
    }

    /// What the kernels compiled on `device` look like under these options.
    fn shape(&self, info: &wgpu::AdapterInfo, device: &wgpu::Device) -> (u32, bool) {
        let workgroup_size = match self.workgroup_size {
            Some(size) => clamp_workgroup_size(size, &device.limits()),
            None => default_workgroup_size(info, &device.limits()),
        };
        (workgroup_size, self.scalar_only)
    }
}

/// A device and queue, with errors captured instead of wgpu's default panicking handler.
///
/// A kernel's name, its addressing, for the control kernels whether the scan unscales, and
/// for the fused kernels the format their state is held in.
type PipelineKey = (&'static str, Addressing, bool, StateFormat);

/// Cheap to clone: clones share the device, its error sink and its pipeline cache.
#[derive(Clone)]
pub struct GpuContext {
    inner: Arc<Inner>,
}

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    /// Invocations per workgroup of every kernel compiled on this context.
    workgroup_size: u32,
    /// No vec4 width (see [`GpuOptions::scalar_only`]).
    scalar_only: bool,
    /// Errors that reached no error scope (on a device we created) and device loss.
    sink: Arc<Mutex<Vec<String>>>,
    /// By kernel name ("control" for the step control) and addressing.
    pipelines: Mutex<HashMap<PipelineKey, Arc<Pipeline>>>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .finish()
    }
}

fn instance(backends: Option<wgpu::Backends>) -> wgpu::Instance {
    quiet_wayland();
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends.unwrap_or(wgpu::Backends::all());
    wgpu::Instance::new(desc)
}

/// Gives the process a private `XDG_RUNTIME_DIR` when it has none, before the first instance.
///
/// Vulkan drivers load their window-system code when the instance is created, even for
/// compute; without `XDG_RUNTIME_DIR`, libwayland then prints `error: XDG_RUNTIME_DIR is
/// invalid or not set in the environment` once per driver, which reads as a failure although
/// nothing failed. An empty directory of our own (mode 0700, so no other user can plant a
/// display socket in it) silences it; an absolute path the caller set is never touched.
fn quiet_wayland() {
    #[cfg(target_os = "linux")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // libwayland accepts only an absolute path; anything else it reports the same way.
            let set = std::env::var_os("XDG_RUNTIME_DIR");
            if set.is_some_and(|v| std::path::Path::new(&v).is_absolute()) {
                return;
            }
            if let Some(dir) = private_runtime_dir() {
                // Racy only against threads reading the environment concurrently; this runs
                // once, before wgpu or its drivers start any.
                std::env::set_var("XDG_RUNTIME_DIR", dir);
            }
        });
    }
}

/// `$TMPDIR/bayesprop-runtime-UID`, created with mode 0700, or `None` when it cannot be made
/// ours (then the warning is merely printed).
#[cfg(target_os = "linux")]
fn private_runtime_dir() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let dir = std::env::temp_dir().join(format!("bayesprop-runtime-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    let private = meta.is_dir() && meta.uid() == uid && meta.permissions().mode() & 0o077 == 0;
    private.then_some(dir)
}

/// Hardware before software, native APIs before GL.
fn preference(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let device = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (device, backend)
}

/// Invocations per workgroup when the options name none: 256, within the device's limits.
/// Measured with `bayesprop bench --workgroup-size` (README, Performance): on lavapipe every
/// size from 64 to 1,024 gives the same step time within noise for the vec4 kernels, since it
/// runs a workgroup's invocations as SIMD lanes of a CPU thread; 256 is a common best choice for
/// streaming kernels on hardware GPUs (a multiple of every vendor's SIMD width).
pub fn default_workgroup_size(_info: &wgpu::AdapterInfo, limits: &wgpu::Limits) -> u32 {
    clamp_workgroup_size(crate::gpu::pipeline::WORKGROUP_SIZE, limits)
}

/// The largest power of two ≤ `size` that the limits allow (at least 1).
fn clamp_workgroup_size(size: u32, limits: &wgpu::Limits) -> u32 {
    let max = size
        .min(limits.max_compute_invocations_per_workgroup)
        .min(limits.max_compute_workgroup_size_x)
        .max(1);
    1 << (31 - max.leading_zeros())
}

/// Every adapter the options' backends can see, best first.
pub fn enumerate_adapters(options: &GpuOptions) -> Vec<wgpu::AdapterInfo> {
    let instance = instance(options.backends);
    let mut infos: Vec<_> = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(|a| a.get_info())
        .collect();
    infos.sort_by_key(preference);
    infos
}

impl GpuContext {
    /// Opens the best adapter, as selected by `WGPU_BACKEND` and `BAYESPROP_ADAPTER`.
    pub fn new() -> Result<Self> {
        Self::with_options(&GpuOptions::try_from_env()?)
    }

    /// Opens the best adapter that the options allow, with its own limits unless overridden.
    pub fn with_options(options: &GpuOptions) -> Result<Self> {
        let instance = instance(options.backends);
        let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        adapters.sort_by_key(|a| preference(&a.get_info()));
        let found: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?})", i.name, i.backend)
            })
            .collect();
        let wanted = options.adapter_name.as_ref().map(|s| s.to_lowercase());
        let adapter = adapters
            .into_iter()
            .find(|a| {
                wanted
                    .as_ref()
                    .is_none_or(|w| a.get_info().name.to_lowercase().contains(w))
            })
            .ok_or_else(|| match (&wanted, found.is_empty()) {
                (_, true) => Error::NoAdapter(NO_ADAPTER_HELP.to_string()),
                (Some(w), false) => Error::NoAdapter(format!(
                    "no adapter name contains `{w}` (--adapter, {ADAPTER_ENV}); found: {}",
                    found.join(", ")
                )),
                (None, false) => unreachable!("an adapter exists and no filter was set"),
            })?;

        let info = adapter.get_info();
        let limits = options.limits.clone().unwrap_or_else(|| adapter.limits());
        // Timestamps let `bench` time device work alone; they cost nothing when unused.
        let timing = wgpu::Features::TIMESTAMP_QUERY;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("bayesprop"),
            required_features: adapter.features() & timing,
            required_limits: limits,
            ..Default::default()
        }))
        .map_err(|e| Error::device_from(format!("request_device on {}", info.name), e))?;

        let sink = Arc::new(Mutex::new(Vec::new()));
        // wgpu's default handler panics; ours records, and the next operation returns it.
        let errors = sink.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            errors.lock().unwrap().push(e.to_string());
        }));
        let lost = sink.clone();
        device.set_device_lost_callback(move |reason, message| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                lost.lock()
                    .unwrap()
                    .push(format!("device lost ({reason:?}): {message}"));
            }
        });
        let shape = options.shape(&info, &device);
        Ok(Self::assemble(device, queue, info, sink, shape))
    }

    /// Wraps a device and queue the caller already has (a drop-in step), with the kernel
    /// options of the environment ([`GpuOptions::from_env`]). The caller's error handlers are
    /// left alone: bayesprop catches its own errors with error scopes.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Self {
        Self::from_device_with(device, queue, info, &GpuOptions::from_env())
    }

    /// [`GpuContext::from_device`] with the kernels shaped by `options` (workgroup size,
    /// scalar-only); its adapter choice and limits do not apply to a device that exists.
    pub fn from_device_with(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        options: &GpuOptions,
    ) -> Self {
        let shape = options.shape(&info, &device);
        let sink = Arc::new(Mutex::new(Vec::new()));
        Self::assemble(device, queue, info, sink, shape)
    }

    fn assemble(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        sink: Arc<Mutex<Vec<String>>>,
        (workgroup_size, scalar_only): (u32, bool),
    ) -> Self {
        GpuContext {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                workgroup_size,
                scalar_only,
                sink,
                pipelines: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    pub fn limits(&self) -> wgpu::Limits {
        self.inner.device.limits()
    }

    /// Invocations per workgroup of every kernel compiled on this context.
    pub fn workgroup_size(&self) -> u32 {
        self.inner.workgroup_size
    }

    /// Whether kernels run one element per invocation everywhere (no vec4).
    pub fn scalar_only(&self) -> bool {
        self.inner.scalar_only
    }

    /// Whether compute passes can be timed on the device (timestamp queries).
    pub fn has_timestamps(&self) -> bool {
        self.inner
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// True for adapters that run on the CPU (lavapipe, llvmpipe, WARP): IEEE f32 division
    /// and square root, no contraction to FMA.
    pub fn is_software(&self) -> bool {
        self.inner.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Runs `f` inside error scopes for validation, out-of-memory and internal errors, and
    /// returns the first error it raised (or one recorded earlier by the uncaptured handler).
    /// On native wgpu, errors are raised synchronously, so this never waits for the device.
    pub(crate) fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        let device = &self.inner.device;
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        let value = f();
        let mut errors = [internal.pop(), memory.pop(), validation.pop()]
            .into_iter()
            .filter_map(pollster::block_on);
        // The first error scoped here is kept whole as the source; any other, and those the
        // uncaptured handler recorded earlier, are named in the message.
        let first = errors.next();
        let mut others: Vec<String> = errors.map(|e| e.to_string()).collect();
        others.append(&mut self.inner.sink.lock().unwrap());
        let what = match others.is_empty() {
            true => what.to_string(),
            false => format!("{what} ({})", others.join("; ")),
        };
        match first {
            Some(error) => Err(Error::device_from(what, error)),
            None if others.is_empty() => Ok(value),
            None => Err(Error::device(what)),
        }
    }

    /// The pipeline of `kernel`, its layout made once per context and addressing (its
    /// variants are compiled as steps need them: [`GpuContext::variant`]).
    pub(crate) fn pipeline(
        &self,
        kernel: &'static Kernel,
        states: u32,
        addressing: Addressing,
        format: StateFormat,
    ) -> Result<Arc<Pipeline>> {
        self.cached((kernel.name, addressing, false, format), || {
            Pipeline::fused(
                &self.inner.device,
                kernel,
                states,
                self.workgroup_size(),
                addressing,
                format,
            )
        })
    }

    /// The variant of a fused kernel's `pipeline` for `values`, compiled once per context.
    pub(crate) fn variant(
        &self,
        pipeline: &Pipeline,
        values: &Specialization,
    ) -> Result<Arc<ByWidth>> {
        if let Some(variant) = pipeline.compiled_variant(values) {
            return Ok(variant);
        }
        self.scoped("compiling a kernel variant", || {
            pipeline.compile_variant(&self.inner.device, values)
        })
    }

    /// The step-control pipelines, compiled once per context, addressing and whether the
    /// scan divides g by the scale (`unscale`).
    pub(crate) fn control_pipeline(
        &self,
        addressing: Addressing,
        unscale: bool,
    ) -> Result<Arc<Pipeline>> {
        self.cached(
            (CONTROL.name, addressing, unscale, StateFormat::F32),
            || Pipeline::control(&self.inner.device, addressing, unscale),
        )
    }

    fn cached(
        &self,
        key: PipelineKey,
        compile: impl FnOnce() -> Pipeline,
    ) -> Result<Arc<Pipeline>> {
        if let Some(p) = self.inner.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let pipeline = Arc::new(self.scoped(key.0, compile)?);
        self.inner
            .pipelines
            .lock()
            .unwrap()
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Reads `len` f32 starting at byte `offset` of `buffer` (which needs COPY_SRC). Waits for
    /// the device: this is the explicit synchronisation point, never called inside a step.
    pub fn read_f32(&self, buffer: &wgpu::Buffer, offset: u64, len: usize) -> Result<Vec<f32>> {
        let bytes = (len * 4) as u64;
        self.read_back("readback", bytes, |encoder, staging| {
            encoder.copy_buffer_to_buffer(buffer, offset, staging, 0, bytes);
        })
    }

    /// Reads `bytes` bytes as `T`s, from what `record` copies into a staging buffer of that
    /// size, in one submit; waits for the device. Errors are named after `what`.
    pub(crate) fn read_back<T: bytemuck::Pod>(
        &self,
        what: &str,
        bytes: u64,
        record: impl FnOnce(&mut wgpu::CommandEncoder, &wgpu::Buffer),
    ) -> Result<Vec<T>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let device = &self.inner.device;
        let staging = self.scoped(what, || {
            // MAP_READ can only be combined with COPY_DST: copy, then map the copy.
            let staging = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bayesprop readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = device.create_command_encoder(&Default::default());
            record(&mut encoder, &staging);
            self.inner.queue.submit([encoder.finish()]);
            staging
        })?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::device_from(what, e))?;
        rx.recv()
            .map_err(|_| Error::device(format!("{what}: the map callback never ran")))?
            .map_err(|e| Error::device_from(what, e))?;
        let values = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| Error::device_from(what, e))?;
            bytemuck::cast_slice::<u8, T>(&view).to_vec()
        };
        staging.unmap();
        self.scoped(what, || ())?;
        Ok(values)
    }
}
