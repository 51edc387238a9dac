//! `GpuOptimizer`: θ and every state vector live in device buffers; a step is one submit.

use std::ops::Range;
use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::context::GpuContext;
use crate::gpu::pipeline::FusedPipeline;
use crate::optim::OptimizerConfig;
use crate::Stepper;

/// One optimizer over one vector of parameters, on the device.
pub struct GpuOptimizer {
    ctx: GpuContext,
    config: OptimizerConfig,
    n: usize,
    t: u64,
    pipeline: Arc<FusedPipeline>,
    uniforms: wgpu::Buffer,
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
    host_bind_groups: Vec<wgpu::BindGroup>,
}

impl std::fmt::Debug for GpuOptimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuOptimizer")
            .field("config", &self.config)
            .field("n", &self.n)
            .field("t", &self.t)
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
        let device = ctx.device();
        let storage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        // A zero-length binding is invalid: keep at least one element's room.
        let size = bytes.max(4);

        let (uniforms, theta, grad, state, placeholder) =
            ctx.scoped("allocating buffers", || {
                let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("bayesprop uniforms"),
                    size: dyn_config.uniform_bytes(1).len() as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
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
                (uniforms, theta, grad, state, placeholder)
            })?;

        let mut optimizer = GpuOptimizer {
            ctx: ctx.clone(),
            config,
            n,
            t: 0,
            pipeline,
            uniforms,
            theta,
            grad,
            state,
            placeholder,
            chunks: binding_chunks(n as u64, &limits),
            host_bind_groups: Vec::new(),
        };
        optimizer.host_bind_groups = optimizer.bind_groups(&optimizer.grad, 0)?;
        Ok(optimizer)
    }

    /// One bind group per chunk, reading gradients from `grad` starting at byte `offset`.
    fn bind_groups(&self, grad: &wgpu::Buffer, offset: u64) -> Result<Vec<wgpu::BindGroup>> {
        let device = self.ctx.device();
        self.ctx.scoped("binding buffers", || {
            self.chunks
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
                    let mut grad_binding = binding(grad, chunk);
                    grad_binding.offset += offset;
                    self.pipeline.bind(
                        device,
                        &self.uniforms,
                        binding(&self.theta, chunk),
                        grad_binding,
                        &state,
                    )
                })
                .collect()
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
        if offset % limits.min_storage_buffer_offset_alignment as u64 != 0 {
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

    /// Encodes every chunk into one pass and submits once; does not wait for the device.
    fn submit_step(&mut self, bind_groups: &[wgpu::BindGroup]) -> Result<()> {
        let t = self.t + 1;
        let (device, queue) = (self.ctx.device(), self.ctx.queue());
        self.ctx.scoped("step", || {
            queue.write_buffer(&self.uniforms, 0, &self.config.as_dyn().uniform_bytes(t));
            let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("bayesprop step"),
            });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(self.config.name()),
                    timestamp_writes: None,
                });
                for (chunk, bind_group) in self.chunks.iter().zip(bind_groups) {
                    self.pipeline
                        .dispatch(&mut pass, bind_group, (chunk.end - chunk.start) as u32);
                }
            }
            queue.submit([encoder.finish()]);
        })?;
        self.t = t;
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
        self.t
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
        let bind_groups = std::mem::take(&mut self.host_bind_groups);
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
