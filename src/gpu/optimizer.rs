//! `GpuOptimizer`: θ and every state vector live in device buffers; a step is one submit.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::context::GpuContext;
use crate::gpu::pipeline::{ControlPipeline, FusedPipeline};
use crate::gpu::tracker::{StepTracker, STATUS_BYTES};
use crate::kernels::{WINDOW, WINDOW_HEADER_BYTES};
use crate::optim::{NonFinitePolicy, OptimizerConfig, StepReport};
use crate::Stepper;

/// One optimizer over one vector of parameters, on the device.
pub struct GpuOptimizer {
    ctx: GpuContext,
    config: OptimizerConfig,
    policy: NonFinitePolicy,
    n: usize,
    pipeline: Arc<FusedPipeline>,
    control: Arc<ControlPipeline>,
    /// The window of per-step scalars (`Window` in `shaders/fused.wgsl`).
    window: wgpu::Buffer,
    /// The step counter and non-finite count on the device (`Status`).
    status: wgpu::Buffer,
    tracker: Mutex<StepTracker>,
    theta: wgpu::Buffer,
    /// Where host gradients are uploaded.
    grad: wgpu::Buffer,
    /// One buffer per state slot; `None` where the options do not need that state.
    state: Vec<Option<wgpu::Buffer>>,
    /// Bound in place of an unused state slot, which the kernel then never touches.
    placeholder: wgpu::Buffer,
    /// Element ranges that each fit one storage binding.
    chunks: Vec<Range<u64>>,
    /// Bind groups of the host-gradient path, one per chunk.
    host_bind_groups: ChunkBindGroups,
}

/// Per chunk: the fused update's bind group and the control's (scan and commit).
struct ChunkBindGroups {
    update: Vec<wgpu::BindGroup>,
    control: Vec<wgpu::BindGroup>,
}

impl std::fmt::Debug for GpuOptimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuOptimizer")
            .field("config", &self.config)
            .field("policy", &self.policy)
            .field("n", &self.n)
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

/// Splits `n` elements into ranges whose bytes fit one storage binding and whose offsets meet
/// the device's storage offset alignment.
pub(crate) fn binding_chunks(n: u64, limits: &wgpu::Limits) -> Vec<Range<u64>> {
    let align = (limits.min_storage_buffer_offset_alignment as u64 / 4).max(1);
    let max_binding = limits.max_storage_buffer_binding_size / 4;
    let per_chunk = (max_binding / align * align).max(align);
    (0..n.div_ceil(per_chunk))
        .map(|c| c * per_chunk..((c + 1) * per_chunk).min(n))
        .collect()
}

fn binding<'a>(buffer: &'a wgpu::Buffer, elements: &Range<u64>) -> wgpu::BufferBinding<'a> {
    wgpu::BufferBinding {
        buffer,
        offset: elements.start * 4,
        size: wgpu::BufferSize::new((elements.end - elements.start) * 4),
    }
}

impl GpuOptimizer {
    /// Uploads θ₀ and allocates the state the config needs.
    pub fn new(
        ctx: &GpuContext,
        config: impl Into<OptimizerConfig>,
        theta0: &[f32],
    ) -> Result<Self> {
        let config = config.into();
        config.validate()?;
        let n = theta0.len();
        let limits = ctx.limits();
        let bytes = n as u64 * 4;
        if bytes > limits.max_buffer_size {
            return Err(Error::TooLarge {
                what: "the parameter vector",
                needed: bytes,
                allowed: limits.max_buffer_size,
                limit: "max_buffer_size",
            });
        }
        if n > u32::MAX as usize {
            return Err(Error::TooLarge {
                what: "the parameter vector",
                needed: bytes,
                allowed: u32::MAX as u64 * 4,
                limit: "2^32 elements per vector",
            });
        }
        let dyn_config = config.as_dyn();
        let slots = dyn_config.state_slots();
        let pipeline = ctx.pipeline(dyn_config.kernel(), slots.len() as u32)?;
        let control = ctx.control_pipeline()?;
        let window_bytes = WINDOW_HEADER_BYTES + WINDOW * dyn_config.uniform_bytes(1).len();
        let device = ctx.device();
        let storage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        // A zero-length binding is invalid: keep at least one element's room.
        let size = bytes.max(4);

        let (window, status, theta, grad, state, placeholder) =
            ctx.scoped("allocating buffers", || {
                let window = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("bayesprop window"),
                    size: window_bytes as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                // Zeroed at creation: t = 0, no non-finite gradients.
                let status = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("bayesprop status"),
                    size: STATUS_BYTES,
                    usage: storage,
                    mapped_at_creation: false,
                });
                let theta = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("bayesprop theta"),
                    contents: if n == 0 {
                        &[0; 4]
                    } else {
                        bytemuck::cast_slice(theta0)
                    },
                    usage: storage,
                });
                let grad = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("bayesprop grad"),
                    size,
                    usage: storage,
                    mapped_at_creation: false,
                });
                let state: Vec<Option<wgpu::Buffer>> = slots
                    .iter()
                    .map(|slot| {
                        slot.used.then(|| match slot.init {
                            // New buffers are zeroed; upload only a start that is not 0.
                            0.0 => device.create_buffer(&wgpu::BufferDescriptor {
                                label: Some(slot.name),
                                size,
                                usage: storage,
                                mapped_at_creation: false,
                            }),
                            init => device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                                label: Some(slot.name),
                                contents: bytemuck::cast_slice(&vec![init; n.max(1)]),
                                usage: storage,
                            }),
                        })
                    })
                    .collect();
                let placeholder = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("bayesprop unused state"),
                    size: 16,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                });
                (window, status, theta, grad, state, placeholder)
            })?;

        let mut optimizer = GpuOptimizer {
            ctx: ctx.clone(),
            config,
            policy: NonFinitePolicy::default(),
            n,
            pipeline,
            control,
            window,
            status,
            tracker: Mutex::new(StepTracker::default()),
            theta,
            grad,
            state,
            placeholder,
            chunks: binding_chunks(n as u64, &limits),
            host_bind_groups: ChunkBindGroups {
                update: Vec::new(),
                control: Vec::new(),
            },
        };
        optimizer.host_bind_groups = optimizer.bind_groups(&optimizer.grad, 0)?;
        Ok(optimizer)
    }

    /// Sets the non-finite policy (builder style).
    pub fn with_nonfinite_policy(mut self, policy: NonFinitePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The bind groups of every chunk, reading gradients from `grad` from byte `offset` on.
    fn bind_groups(&self, grad: &wgpu::Buffer, offset: u64) -> Result<ChunkBindGroups> {
        let device = self.ctx.device();
        let window = || self.window.as_entire_buffer_binding();
        let status = || self.status.as_entire_buffer_binding();
        let grad_chunk = |chunk: &Range<u64>| {
            let mut b = binding(grad, chunk);
            b.offset += offset;
            b
        };
        self.ctx.scoped("binding buffers", || {
            let update = self
                .chunks
                .iter()
                .map(|chunk| {
                    let state: Vec<_> = self
                        .state
                        .iter()
                        .map(|b| match b {
                            Some(b) => binding(b, chunk),
                            None => self.placeholder.as_entire_buffer_binding(),
                        })
                        .collect();
                    let theta = binding(&self.theta, chunk);
                    self.pipeline
                        .bind(device, window(), status(), theta, grad_chunk(chunk), &state)
                })
                .collect();
            // The commit needs a gradient binding too; an empty vector binds the first element.
            let whole = 0..(self.n as u64).max(1);
            let control_chunks = if self.chunks.is_empty() {
                std::slice::from_ref(&whole)
            } else {
                &self.chunks[..]
            };
            let control = control_chunks
                .iter()
                .map(|chunk| {
                    self.control
                        .bind(device, window(), status(), grad_chunk(chunk))
                })
                .collect();
            ChunkBindGroups { update, control }
        })
    }

    /// Steps with a gradient already on the device: `n` f32 at byte `offset` of `grad`, which
    /// needs STORAGE usage. Nothing crosses to the host.
    pub fn step_with_grad_buffer(&mut self, grad: &wgpu::Buffer, offset: u64) -> Result<()> {
        let limits = self.ctx.limits();
        let needed = offset + self.n as u64 * 4;
        if !grad.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::Device(
                "the gradient buffer needs STORAGE usage".into(),
            ));
        }
        if !offset.is_multiple_of(limits.min_storage_buffer_offset_alignment as u64) {
            return Err(Error::Device(format!(
                "gradient offset {offset} is not a multiple of min_storage_buffer_offset_alignment ({})",
                limits.min_storage_buffer_offset_alignment
            )));
        }
        if grad.size() < needed {
            return Err(Error::LengthMismatch {
                what: "gradient buffer (elements after offset)",
                got: (grad.size().saturating_sub(offset) / 4) as usize,
                expected: self.n,
            });
        }
        let bind_groups = self.bind_groups(grad, offset)?;
        self.submit_step(&bind_groups)
    }

    /// Encodes the step into one pass and submits once; never waits for the device.
    ///
    /// In the pass: the scan of g for non-finite values (SkipStep and Error), the fused update
    /// of every chunk, and the commit of the step counter. After it, the status is copied for
    /// the lazy readback.
    fn submit_step(&mut self, bind_groups: &ChunkBindGroups) -> Result<()> {
        let (device, queue) = (self.ctx.device(), self.ctx.queue());
        let mut tracker = self.tracker.lock().unwrap();
        tracker.resolve(device, false)?;
        if let Some(error) = tracker.take_error() {
            return Err(error);
        }
        if !tracker.window_has_room() {
            // The device is WINDOW steps behind: wait for the oldest before adding one more.
            tracker.resolve(device, true)?;
        }
        let (base, steps) = tracker.next_window();
        let mut window = Vec::with_capacity(WINDOW_HEADER_BYTES + WINDOW * 64);
        window.extend_from_slice(bytemuck::cast_slice(&[
            base as u32,
            self.policy as u32,
            0,
            0,
        ]));
        for t in steps {
            window.extend_from_slice(&self.config.as_dyn().uniform_bytes(t));
        }
        let readback = tracker.readback_buffer(device);
        self.ctx.scoped("step", || {
            queue.write_buffer(&self.window, 0, &window);
            let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("bayesprop step"),
            });
            // The count is per step; t carries over.
            encoder.clear_buffer(&self.status, 4, Some(4));
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(self.config.name()),
                    timestamp_writes: None,
                });
                if self.policy != NonFinitePolicy::SkipElement {
                    for (chunk, bind_group) in self.chunks.iter().zip(&bind_groups.control) {
                        self.control
                            .scan(&mut pass, bind_group, (chunk.end - chunk.start) as u32);
                    }
                }
                for (chunk, bind_group) in self.chunks.iter().zip(&bind_groups.update) {
                    self.pipeline
                        .dispatch(&mut pass, bind_group, (chunk.end - chunk.start) as u32);
                }
                self.control.commit(&mut pass, &bind_groups.control[0]);
            }
            encoder.copy_buffer_to_buffer(&self.status, 0, &readback, 0, STATUS_BYTES);
            queue.submit([encoder.finish()]);
        })?;
        tracker.submitted(self.policy, readback);
        Ok(())
    }

    /// The device buffer holding θ (STORAGE | COPY_SRC | COPY_DST).
    pub fn theta_buffer(&self) -> &wgpu::Buffer {
        &self.theta
    }

    /// The device buffer that host gradients are uploaded to; a caller's kernel may write
    /// gradients here and call [`GpuOptimizer::step_with_grad_buffer`] with it.
    pub fn grad_buffer(&self) -> &wgpu::Buffer {
        &self.grad
    }

    /// How many storage bindings each vector is split into.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }
}

impl Stepper for GpuOptimizer {
    fn len(&self) -> usize {
        self.n
    }

    fn steps_taken(&self) -> u64 {
        let mut tracker = self.tracker.lock().unwrap();
        // A device error here also reaches the caller through the next step or readback.
        let _ = tracker.resolve(self.ctx.device(), true);
        tracker.steps_applied()
    }

    fn nonfinite_policy(&self) -> NonFinitePolicy {
        self.policy
    }

    fn set_nonfinite_policy(&mut self, policy: NonFinitePolicy) {
        self.policy = policy;
    }

    fn step_reports(&mut self) -> Result<Vec<StepReport>> {
        let mut tracker = self.tracker.lock().unwrap();
        tracker.resolve(self.ctx.device(), true)?;
        match tracker.take_error() {
            Some(error) => Err(error),
            None => Ok(tracker.take_reports()),
        }
    }

    fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    fn set_config(&mut self, config: OptimizerConfig) -> Result<()> {
        config.validate()?;
        self.config.check_same_layout(&config)?;
        self.config = config;
        Ok(())
    }

    fn step(&mut self, grad: &[f32]) -> Result<()> {
        if grad.len() != self.n {
            return Err(Error::LengthMismatch {
                what: "gradient",
                got: grad.len(),
                expected: self.n,
            });
        }
        if self.n > 0 {
            let queue = self.ctx.queue();
            self.ctx.scoped("uploading the gradient", || {
                queue.write_buffer(&self.grad, 0, bytemuck::cast_slice(grad))
            })?;
        }
        let bind_groups = std::mem::replace(
            &mut self.host_bind_groups,
            ChunkBindGroups {
                update: Vec::new(),
                control: Vec::new(),
            },
        );
        let result = self.submit_step(&bind_groups);
        self.host_bind_groups = bind_groups;
        result
    }

    fn theta(&self) -> Result<Vec<f32>> {
        self.ctx.read_f32(&self.theta, 0, self.n)
    }

    fn state(&self, name: &str) -> Result<Vec<f32>> {
        let slots = self.config.as_dyn().state_slots();
        let index = slots.iter().position(|s| s.name == name && s.used);
        match index.and_then(|i| self.state[i].as_ref()) {
            Some(buffer) => self.ctx.read_f32(buffer, 0, self.n),
            None => Err(Error::Unknown {
                what: "state",
                name: name.to_string(),
                known: self.config.used_state_names().join(", "),
            }),
        }
    }
}
