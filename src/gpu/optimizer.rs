//! `GpuOptimizer`: parameters and state live in device buffers; a step of every group is one
//! pass and one submit, and never waits for the device.

use std::sync::Mutex;

use wgpu::util::DeviceExt;

use crate::checkpoint::{Checkpoint, HeldVector};
use crate::config::StateFormat;
use crate::error::{Error, Result};
use crate::gpu::buffers::{BufferRange, TensorBuffers};
use crate::gpu::context::GpuContext;
#[cfg(feature = "bench")]
use crate::gpu::group::WholeArena;
use crate::gpu::group::{GpuGroup, Placement, Vector};
use crate::gpu::segments;
use crate::gpu::tracker::{StepTracker, STATUS_BYTES, TRANSFORM_BYTES};
use crate::layout::{GroupId, Layout, ParamGroups, StateSource, Stored, TensorId, TensorSpec};
use crate::optim::{NonFinitePolicy, OptimizerConfig, StepReport};
use crate::transform::{GradTransform, NormReport, PARTIAL_ALIGN};
use crate::Stepper;

/// Parameter groups on the device.
pub struct GpuOptimizer {
    ctx: GpuContext,
    layout: Layout,
    groups: Vec<GpuGroup>,
    tracker: Mutex<StepTracker>,
    /// Where the next step's pass writes its start and end timestamps (see
    /// [`GpuOptimizer::time_next_pass`]).
    next_pass_timestamps: Option<(wgpu::QuerySet, u32)>,
    /// The step's gradient transform (`Transform` in shaders/common.wgsl), shared by every
    /// group.
    transform: wgpu::Buffer,
    /// The bind group of `reduce` over every group's partial sums of squares, bound the
    /// first time a step clips (a scan that does not clip writes none).
    reduce: Option<wgpu::BindGroup>,
    /// Where the caller's kernels write the loss scale, when it is not the host's.
    device_scale: Option<BufferRange>,
}

impl std::fmt::Debug for GpuOptimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuOptimizer")
            .field("groups", &self.layout.groups())
            .field("tensors", &self.layout.tensors().len())
            .finish()
    }
}

/// How a step is cut up on the device ([`GpuOptimizer::step_shape`]): what the device's
/// limits and the tensors' places make of the layout. Read-only; for tests and for users who
/// want to know what a step records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepShape {
    /// Storage bindings the vectors are split into (the device's binding size limit), over
    /// all groups.
    pub bindings: usize,
    /// Buffers each vector is split into (the device's buffer size limit), over all groups.
    pub buffers: usize,
    /// Update dispatches a step records, over all groups: vec4 bodies and scalar tails, one
    /// per run of caller tensors. Each group's scan and commit come on top.
    pub update_dispatches: usize,
}

impl GpuOptimizer {
    /// One vector of parameters with one config: uploads θ₀ and allocates the state.
    pub fn new(
        ctx: &GpuContext,
        config: impl Into<OptimizerConfig>,
        theta0: &[f32],
    ) -> Result<Self> {
        Self::from_groups(ctx, &ParamGroups::single(config.into(), theta0)?)
    }

    /// Every group and tensor of `groups`, in buffers the optimizer owns.
    pub fn from_groups(ctx: &GpuContext, groups: &ParamGroups) -> Result<Self> {
        Self::build(ctx, groups, |_| Placement::Owned)
    }

    /// Every group of `groups`, with θ and g in the caller's buffers (one [`TensorBuffers`]
    /// per group, each range holding the group's whole arena; zero-copy, θ₀ is whatever those
    /// buffers hold). The optimizer owns only its state.
    pub fn from_groups_in(
        ctx: &GpuContext,
        groups: &ParamGroups,
        arenas: &[TensorBuffers],
    ) -> Result<Self> {
        if arenas.len() != groups.groups().len() {
            return Err(Error::LengthMismatch {
                what: "external arenas",
                got: arenas.len(),
                expected: groups.groups().len(),
            });
        }
        Self::build(ctx, groups, |g| Placement::Arena(arenas[g].clone()))
    }

    /// Every tensor of `groups` with θ and g where the caller keeps them: one
    /// [`TensorBuffers`] per tensor in registration order, at any offsets that are multiples
    /// of 4 bytes, in any number of buffers (zero-copy; θ₀ is whatever those buffers hold).
    /// The optimizer owns only its state. A step is one dispatch per run of tensors that
    /// share buffers (see [`GpuOptimizer::step_shape`]), bit-identical to
    /// [`GpuOptimizer::from_groups`] except for the norm's rounding when clipping (its sum
    /// runs in another order). [`GpuOptimizer::set_tensor_buffers`] follows tensors that move.
    pub fn from_tensors_in(
        ctx: &GpuContext,
        groups: &ParamGroups,
        buffers: &[TensorBuffers],
    ) -> Result<Self> {
        let by_group = split_by_group(groups.layout(), buffers)?;
        Self::build(ctx, groups, |g| Placement::Tensors(by_group[g].clone()))
    }

    /// Points the tensors at new places in the caller's buffers (one [`TensorBuffers`] per
    /// tensor in registration order, as [`GpuOptimizer::from_tensors_in`]), for callers whose
    /// allocator moves them between steps, as burn's gradients do. The state stays. Nothing
    /// is rebound when nothing moved. Call between steps: the steps already submitted keep
    /// the places they were recorded with.
    pub fn set_tensor_buffers(&mut self, buffers: &[TensorBuffers]) -> Result<()> {
        let by_group = split_by_group(&self.layout, buffers)?;
        let mut moved = false;
        for (group, buffers) in self.groups.iter_mut().zip(&by_group) {
            moved |= group.set_tensor_buffers(&self.ctx, buffers)?;
        }
        if moved {
            self.bind_control_placeholder()?;
        }
        Ok(())
    }

    /// Binds every group's control with no norm partials; the first step that clips binds
    /// them (see [`GpuOptimizer::bind_norm`]).
    fn bind_control_placeholder(&mut self) -> Result<()> {
        let device = self.ctx.device();
        let groups = &mut self.groups;
        self.ctx.scoped("binding the step control", || {
            let placeholder = partials_buffer(device, PARTIAL_ALIGN as u64);
            for group in groups.iter_mut() {
                group.bind_control(device, &placeholder, None);
            }
        })?;
        self.reduce = None;
        Ok(())
    }

    fn build(
        ctx: &GpuContext,
        groups: &ParamGroups,
        placement: impl Fn(usize) -> Placement,
    ) -> Result<Self> {
        if groups.total_len() > u32::MAX as usize {
            return Err(Error::TooLarge {
                what: "the parameters",
                needed: groups.total_len() as u64 * 4,
                allowed: u32::MAX as u64 * 4,
                limit: "2^32 elements",
            });
        }
        if groups.groups().is_empty() {
            return Err(Error::Layout("no parameter groups".into()));
        }
        // The kernels are generated for f32 and bf16 state; never run a q8 group as f32.
        if let Some(spec) = groups
            .groups()
            .iter()
            .find(|s| !crate::kernels::GPU_STATE_FORMATS.contains(&s.state_format))
        {
            return Err(Error::Unsupported(format!(
                "state_format {} (group `{}`) is not yet supported by the GPU kernels; the CPU \
                 paths support it",
                spec.state_format, spec.name
            )));
        }
        let device = ctx.device();
        let transform = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bayesprop transform"),
            size: TRANSFORM_BYTES,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let built = groups
            .groups()
            .iter()
            .enumerate()
            .map(|(g, spec)| {
                let tensors: Vec<&TensorSpec> =
                    groups.tensors().iter().filter(|t| t.group.0 == g).collect();
                GpuGroup::new(
                    ctx,
                    spec,
                    &tensors,
                    groups.arena_theta0(GroupId(g)),
                    placement(g),
                    &transform,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let mut optimizer = GpuOptimizer {
            ctx: ctx.clone(),
            tracker: Mutex::new(StepTracker::new(vec![0; built.len()])),
            groups: built,
            layout: groups.layout().clone(),
            next_pass_timestamps: None,
            transform,
            reduce: None,
            device_scale: None,
        };
        optimizer.bind_control_placeholder()?;
        Ok(optimizer)
    }

    /// Allocates the partial sums of squares of every group's scan and binds the scans to
    /// their regions and `reduce` to all of them, once, on the first step that clips.
    fn bind_norm(&mut self) -> Result<()> {
        if self.reduce.is_some() {
            return Ok(());
        }
        let slots: u64 = self.groups.iter().map(GpuGroup::partial_slots).sum();
        let limits = self.ctx.limits();
        let allowed = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        if slots * 4 > allowed {
            return Err(Error::TooLarge {
                what: "the partial sums of the gradient norm",
                needed: slots * 4,
                allowed,
                limit: "max_storage_buffer_binding_size",
            });
        }
        let device = self.ctx.device();
        let groups = &mut self.groups;
        let reduce = self.ctx.scoped("binding the gradient norm", || {
            let partials = partials_buffer(device, slots);
            let mut base = 0;
            for group in groups.iter_mut() {
                base = group.bind_control(device, &partials, Some(base));
            }
            groups[0].bind_reduce(device, &partials)
        })?;
        self.reduce = Some(reduce);
        Ok(())
    }

    /// Divides every step's gradient by the f32 at `scale`, which the caller's kernels write
    /// (a loss scaler's), instead of the host `grad_scale`; `None` goes back to the host
    /// value. It is copied inside each step's command encoder, so each step reads the value
    /// its own commands left there. The buffer needs COPY_SRC; the offset is a multiple of 4.
    pub fn set_grad_scale_buffer(&mut self, scale: Option<BufferRange>) -> Result<()> {
        if let Some(range) = &scale {
            if !range.buffer.usage().contains(wgpu::BufferUsages::COPY_SRC)
                || !range.offset.is_multiple_of(4)
            {
                return Err(Error::Layout(format!(
                    "the grad scale buffer needs COPY_SRC usage and an f32 at a multiple of 4 \
                     bytes (offset {})",
                    range.offset
                )));
            }
            range.check_holds("the grad scale", 4)?;
        }
        self.device_scale = scale;
        Ok(())
    }

    /// Sets the non-finite policy of every group (builder style).
    pub fn with_nonfinite_policy(mut self, policy: NonFinitePolicy) -> Self {
        self.set_nonfinite_policy(policy);
        self
    }

    /// Steps on the gradients already in the gradient arenas, written there by the caller's
    /// own kernels (see [`GpuOptimizer::tensor_grad`]). Nothing crosses to the host.
    pub fn step_device(&mut self) -> Result<()> {
        self.submit_step()
    }

    /// Records one step of every group into the caller's `encoder`, for the caller to submit
    /// on this optimizer's queue (with its own work before and after, e.g. copies into and out
    /// of the arenas). Never waits for the device.
    ///
    /// Everything the step needs travels in the encoder: its per-step scalars are copied in
    /// from a staging buffer of its own, and its status readback is mapped when the encoder
    /// is submitted. So several steps may be recorded, into one encoder or several, before
    /// any is submitted; submit them in the order they were recorded. A call that must know
    /// a step's outcome (reading θ or the state, `steps_taken`, the reports) returns an error
    /// naming a recorded step that was never submitted. Validation errors in the recorded
    /// commands surface at the caller's `encoder.finish()` or submit.
    pub fn encode_step(&mut self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        if self.layout.transform.clip_norm.is_some() {
            self.bind_norm()?;
        }
        let device = self.ctx.device();
        let mut tracker = self.tracker.lock().unwrap();
        tracker.resolve(device, false)?;
        if let Some(error) = tracker.take_error() {
            return Err(error);
        }
        let transform = self.layout.transform;
        if let Some(limit) = transform.max_consecutive_skips {
            if tracker.consecutive_skips >= limit {
                return Err(Error::TooManySkips { count: limit });
            }
        }
        let norm = transform.clip_norm.is_some();
        if !tracker.window_has_room() {
            // The device is a whole window of steps behind: wait before adding one more.
            tracker.resolve(device, true)?;
        }
        let windows: Vec<Vec<u8>> = (0..self.groups.len())
            .map(|g| {
                let (base, steps) = tracker.next_window(g);
                self.groups[g].window_bytes(&self.layout.groups()[g], base, steps, norm)
            })
            .collect();
        // The update and the scan divide by the scale only where it is not 1 (the host's),
        // and the update multiplies by the factor only with clipping.
        let unscale = self.device_scale.is_some() || transform.grad_scale != 1.0;
        let variants = self
            .groups
            .iter()
            .zip(self.layout.groups())
            .zip(&windows)
            .map(|((group, spec), window)| {
                let scan = norm || spec.policy.counts_first();
                group.variants(&self.ctx, spec, window, unscale, norm, scan)
            })
            .collect::<Result<Vec<_>>>()?;
        let readback = tracker.readback_buffer(device);
        let timestamps = self.next_pass_timestamps.take();
        let timestamp_writes =
            timestamps
                .as_ref()
                .map(|(queries, index)| wgpu::ComputePassTimestampWrites {
                    query_set: queries,
                    beginning_of_pass_write_index: Some(*index),
                    end_of_pass_write_index: Some(index + 1),
                });
        // Without clipping the factor stays 1: `reduce` does not run.
        let clip_norm = transform.clip_norm.unwrap_or(0.0);
        let transform_values = [transform.grad_scale, clip_norm, 0.0, 1.0];
        let scans = norm || self.layout.groups().iter().any(|g| g.policy.counts_first());
        let recorded = self.ctx.scoped("step", || {
            // This step's scalars, staged in the encoder rather than written on the queue, so
            // that each step recorded before a submit sees its own.
            let mut staged = Vec::new();
            let mut targets = Vec::new();
            for (group, window) in self.groups.iter().zip(&windows) {
                targets.push((
                    group.window_buffer(),
                    staged.len() as u64,
                    window.len() as u64,
                ));
                staged.extend_from_slice(window);
            }
            targets.push((&self.transform, staged.len() as u64, TRANSFORM_BYTES));
            staged.extend_from_slice(bytemuck::cast_slice(&transform_values));
            let staging = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("bayesprop step scalars"),
                contents: &staged,
                usage: wgpu::BufferUsages::COPY_SRC,
            });
            for (target, from, bytes) in targets {
                encoder.copy_buffer_to_buffer(&staging, from, target, 0, bytes);
            }
            for group in &self.groups {
                group.clear_count(encoder);
            }
            if let Some(scale) = &self.device_scale {
                encoder.copy_buffer_to_buffer(&scale.buffer, scale.offset, &self.transform, 0, 4);
            }
            // Two passes where there is a scan, with the status copied between them: the pass
            // timed is both, from the first's start to the second's end.
            let (scan_writes, update_writes) = match (&timestamp_writes, scans) {
                (Some(writes), true) => (
                    Some(wgpu::ComputePassTimestampWrites {
                        end_of_pass_write_index: None,
                        ..writes.clone()
                    }),
                    Some(wgpu::ComputePassTimestampWrites {
                        beginning_of_pass_write_index: None,
                        ..writes.clone()
                    }),
                ),
                _ => (None, timestamp_writes),
            };
            if scans {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("bayesprop scan"),
                    timestamp_writes: scan_writes,
                });
                // Every scan before the norm, the norm before any update: one read of g
                // gives the counts and the norm, and the updates apply the factor.
                for ((group, spec), variants) in
                    self.groups.iter().zip(self.layout.groups()).zip(&variants)
                {
                    if norm || spec.policy.counts_first() {
                        group.encode_scan(&mut pass, norm, variants);
                    }
                }
                if let (true, Some(reduce)) = (norm, &self.reduce) {
                    self.groups[0].encode_reduce(&mut pass, reduce);
                }
            }
            for group in &self.groups {
                group.copy_status(encoder);
            }
            // q8 under SkipStep and Error: a new state that would not be finite counts before
            // anything is written (SPEC §6), where the scan found every g finite; then the
            // status goes into the window again.
            let q8_counts: Vec<_> = (self.groups.iter().zip(self.layout.groups()))
                .zip(&variants)
                .filter(|((group, spec), _)| group.counts_q8_overflow(spec))
                .collect();
            if !q8_counts.is_empty() {
                {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("bayesprop q8 count"),
                        timestamp_writes: None,
                    });
                    for ((group, _), variants) in &q8_counts {
                        group.encode_q8_count(&mut pass, variants);
                    }
                }
                for ((group, _), _) in &q8_counts {
                    group.copy_status(encoder);
                }
            }
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("bayesprop step"),
                    timestamp_writes: update_writes,
                });
                for (group, variants) in self.groups.iter().zip(&variants) {
                    group.encode_update(&mut pass, variants);
                }
            }
            for (g, group) in self.groups.iter().enumerate() {
                encoder.copy_buffer_to_buffer(
                    &group.status,
                    0,
                    &readback,
                    g as u64 * STATUS_BYTES,
                    STATUS_BYTES,
                );
            }
            encoder.copy_buffer_to_buffer(
                &self.transform,
                0,
                &readback,
                self.groups.len() as u64 * STATUS_BYTES,
                TRANSFORM_BYTES,
            );
        });
        recorded?;
        tracker.recorded(
            encoder,
            self.layout.groups().iter().map(|g| g.policy).collect(),
            norm,
            readback,
        );
        Ok(())
    }

    /// Records a step into an encoder of its own and submits it.
    fn submit_step(&mut self) -> Result<()> {
        let mut encoder =
            self.ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("bayesprop step"),
                });
        self.encode_step(&mut encoder)?;
        let queue = self.ctx.queue();
        self.ctx
            .scoped("step", || queue.submit([encoder.finish()]))?;
        Ok(())
    }

    /// The norms of the steps whose status has come back, without waiting: a training loop
    /// can log every step's norm this way while the device stays steps ahead (the steps
    /// still in flight report on a later call). `Stepper::norm_reports` waits for all.
    pub fn arrived_norm_reports(&mut self) -> Result<Vec<NormReport>> {
        let mut tracker = self.tracker.lock().unwrap();
        tracker.resolve(self.ctx.device(), false)?;
        Ok(tracker.take_norms())
    }

    /// Makes the next step's pass write its start and end timestamps into `queries` at
    /// `index` and `index + 1`, to measure its device time (`bench` does; the device needs
    /// `TIMESTAMP_QUERY`, see [`GpuContext::has_timestamps`]). One step only: the steps after
    /// it go untimed unless asked again.
    #[cfg(feature = "bench")]
    pub(crate) fn time_next_pass(&mut self, queries: &wgpu::QuerySet, index: u32) {
        self.next_pass_timestamps = Some((queries.clone(), index));
    }

    /// Where a tensor's θ lives on the device.
    pub fn tensor_theta(&self, id: TensorId) -> Result<BufferRange> {
        self.tensor_slice(id, Vector::Theta)
    }

    fn tensor_slice(&self, id: TensorId, vector: Vector) -> Result<BufferRange> {
        let t = self.layout.tensor(id)?;
        Ok(self.groups[t.group.0]
            .slice_of(vector, &t.range())
            .expect("a tensor lies in one piece"))
    }

    /// Where a tensor's gradient goes on the device: the caller's kernels may write it here
    /// and then call [`GpuOptimizer::step_device`].
    pub fn tensor_grad(&self, id: TensorId) -> Result<BufferRange> {
        self.tensor_slice(id, Vector::Grad)
    }

    /// Where a tensor's state vector lives on the device, e.g. σ, the posterior variance, as
    /// f32 values: refused for a group whose state is held in another format (its buffers
    /// hold codes; [`GpuOptimizer::tensor_state`] decodes them).
    pub fn tensor_state_range(&self, id: TensorId, name: &str) -> Result<BufferRange> {
        let group = self.layout.tensor(id)?.group;
        let slot = self.layout.slot(group, name)?;
        let format = self.groups[group.0].format();
        if format != StateFormat::F32 {
            return Err(Error::Unsupported(format!(
                "the device range of state `{name}` held in {format}: its buffer holds codes, \
                 not f32 values; read it with tensor_state"
            )));
        }
        self.tensor_slice(id, Vector::State(slot))
    }

    /// A tensor's state vector, read back to the host (waits for the device).
    pub fn tensor_state(&self, id: TensorId, name: &str) -> Result<Vec<f32>> {
        let t = self.layout.tensor(id)?;
        match self.layout.state_source(t.group, name)? {
            StateSource::Slot(slot) if self.groups[t.group.0].format() != StateFormat::F32 => {
                let arena = self.groups[t.group.0].read_arena(&self.ctx, Vector::State(slot))?;
                Ok(arena[t.range()].to_vec())
            }
            StateSource::Slot(_) => {
                let range = self.tensor_state_range(id, name)?;
                self.ctx
                    .read_f32(&range.buffer, range.offset, range.elements() as usize)
            }
            StateSource::Derived => Ok(self.derived(t.group, name)?[t.range()].to_vec()),
        }
    }

    /// A group's derived vector over its whole arena, from its stored states read back.
    fn derived(&self, group: GroupId, name: &str) -> Result<Vec<f32>> {
        let t = self.group_steps()?[group.0];
        let slots = self.layout.group(group)?.config.as_dyn().state_slots();
        let stored = (0..slots.len())
            .map(|k| match slots[k].used {
                true => self.groups[group.0].read_arena(&self.ctx, Vector::State(k)),
                false => Ok(Vec::new()),
            })
            .collect::<Result<Vec<_>>>()?;
        let stored: Vec<&[f32]> = stored.iter().map(Vec::as_slice).collect();
        self.layout.derive_state(group, name, t, &stored)
    }

    /// A tensor's θ, read back to the host (waits for the device).
    pub fn tensor_values(&self, id: TensorId) -> Result<Vec<f32>> {
        let range = self.tensor_theta(id)?;
        self.ctx
            .read_f32(&range.buffer, range.offset, range.elements() as usize)
    }

    /// Each group's applied step count (waits for the steps in flight).
    pub fn group_steps(&self) -> Result<Vec<u64>> {
        let mut tracker = self.tracker.lock().unwrap();
        tracker.resolve(self.ctx.device(), true)?;
        Ok(tracker.steps_applied().to_vec())
    }

    /// Group 0's arena when it lies in single buffers this optimizer owns, to run other
    /// kernels over the same arrays (`bench`'s roofline does).
    #[cfg(feature = "bench")]
    pub(crate) fn whole_arena(&self) -> Option<WholeArena> {
        self.groups.first()?.whole_arena()
    }

    /// How a step is cut up on this device: bindings, buffers and dispatches.
    pub fn step_shape(&self) -> StepShape {
        StepShape {
            bindings: self.groups.iter().map(GpuGroup::chunk_count).sum(),
            buffers: self.groups.iter().map(GpuGroup::piece_count).sum(),
            update_dispatches: self.groups.iter().map(GpuGroup::dispatch_count).sum(),
        }
    }

    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// A vector (θ, or a state by name) of every tensor, flat in registration order.
    fn gather(&self, name: Option<&str>) -> Result<Vec<f32>> {
        let arenas = self
            .groups
            .iter()
            .enumerate()
            .map(|(g, group)| {
                let vector = match name {
                    Some(n) => match self.layout.state_source(GroupId(g), n)? {
                        StateSource::Slot(slot) => Vector::State(slot),
                        StateSource::Derived => return self.derived(GroupId(g), n),
                    },
                    None => Vector::Theta,
                };
                group.read_arena(&self.ctx, vector)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.layout.flatten(&arenas))
    }
}

/// `buffers`, one per tensor in registration order, checked (see [`segments::check`]) and
/// split by group (in each group's tensor order).
fn split_by_group(layout: &Layout, buffers: &[TensorBuffers]) -> Result<Vec<Vec<TensorBuffers>>> {
    if buffers.len() != layout.tensors().len() {
        return Err(Error::LengthMismatch {
            what: "tensor buffers",
            got: buffers.len(),
            expected: layout.tensors().len(),
        });
    }
    let named: Vec<_> = layout
        .tensors()
        .iter()
        .zip(buffers)
        .map(|(t, b)| (t.name.as_str(), t.len(), b))
        .collect();
    segments::check(&named)?;
    let mut by_group = vec![Vec::new(); layout.groups().len()];
    for (t, b) in layout.tensors().iter().zip(buffers) {
        by_group[t.group.0].push(b.clone());
    }
    Ok(by_group)
}

/// Partial sums of squares, `slots` f32, zeroed at creation: the slots past each region's
/// blocks are never written, and add nothing.
fn partials_buffer(device: &wgpu::Device, slots: u64) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("bayesprop norm partials"),
        size: slots * 4,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    })
}

impl Stepper for GpuOptimizer {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    crate::layout_setters!();

    /// The step count of group 0 (see [`GpuOptimizer::group_steps`] for every group).
    fn steps_taken(&self) -> Result<u64> {
        Ok(self.group_steps()?.first().copied().unwrap_or(0))
    }

    fn step_reports(&mut self) -> Result<Vec<StepReport>> {
        let mut tracker = self.tracker.lock().unwrap();
        tracker.resolve(self.ctx.device(), true)?;
        match tracker.take_error() {
            Some(error) => Err(error),
            None => Ok(tracker.take_reports()),
        }
    }

    /// The norms travel with the statuses each step already copies back (16 bytes more), so
    /// steps never wait for them; this call waits for the steps in flight, as `step_reports`.
    fn norm_reports(&mut self) -> Result<Vec<NormReport>> {
        let mut tracker = self.tracker.lock().unwrap();
        tracker.resolve(self.ctx.device(), true)?;
        Ok(tracker.take_norms())
    }

    /// The count of steps skipped in a row is reset; on the GPU it is learned as statuses
    /// are read back, so the refusal may come a few calls late unless something waited.
    fn set_grad_transform(&mut self, transform: GradTransform) -> Result<()> {
        self.layout.set_transform(transform)?;
        let mut tracker = self.tracker.lock().unwrap();
        tracker.resolve(self.ctx.device(), true)?;
        tracker.consecutive_skips = 0;
        Ok(())
    }

    /// `grad` holds every tensor's gradient, flat in registration order.
    fn step(&mut self, grad: &[f32]) -> Result<()> {
        self.layout.check_gradient(grad)?;
        let queue = self.ctx.queue();
        self.ctx.scoped("uploading the gradient", || {
            for (g, group) in self.groups.iter().enumerate() {
                group.write_arena(queue, Vector::Grad, &self.layout.arena_of(g, grad));
            }
        })?;
        self.submit_step()
    }

    fn theta(&self) -> Result<Vec<f32>> {
        self.gather(None)
    }

    fn state(&self, name: &str) -> Result<Vec<f32>> {
        self.gather(Some(name))
    }

    fn checkpoint(&self) -> Result<Checkpoint> {
        let steps = self.group_steps()?;
        let arenas = self
            .groups
            .iter()
            .zip(self.layout.groups())
            .map(|(group, spec)| {
                spec.f32_vectors()
                    .into_iter()
                    .map(|(name, which)| {
                        Ok((name.to_string(), group.read_arena(&self.ctx, which.into())?))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let mut checkpoint = Checkpoint::from_arenas(&self.layout, &steps, &arenas);
        // bf16 and q8 state as held, never decoded (SPEC §6).
        for (g, (group, spec)) in self.groups.iter().zip(self.layout.groups()).enumerate() {
            if spec.state_format == StateFormat::F32 {
                continue;
            }
            let pieces = crate::held::pieces(self.layout.tensors_of(g));
            for (name, which) in spec.vectors().into_iter().skip(1) {
                let Stored::State(k) = which else { continue };
                let q8 = match spec.state_format {
                    StateFormat::Q8 => Some(group.read_q8(&self.ctx, k)?),
                    _ => None,
                };
                let codes = match q8 {
                    Some(_) => Vec::new(),
                    None => group.read_codes(&self.ctx, k)?,
                };
                let tensors = self.layout.tensors().iter().zip(&mut checkpoint.tensors);
                for (t, saved) in tensors.filter(|(t, _)| t.group.0 == g) {
                    let held = match &q8 {
                        Some((codes, scales)) => {
                            let blocks = q8_blocks_of(&pieces, &t.range());
                            HeldVector::Q8 {
                                codes: codes[t.range()].to_vec(),
                                scales: scales[blocks].to_vec(),
                            }
                        }
                        None => HeldVector::Bf16(codes[t.range()].to_vec()),
                    };
                    saved.held.push((name.to_string(), held));
                }
            }
        }
        Ok(checkpoint)
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let arenas = checkpoint.to_arenas(&self.layout)?;
        let mut tracker = self.tracker.lock().unwrap();
        // Let the steps in flight land first, so none overwrites what is restored.
        tracker.resolve(self.ctx.device(), true)?;
        let queue = self.ctx.queue();
        self.ctx.scoped("restoring a checkpoint", || {
            for ((group, spec), (steps, vectors)) in
                self.groups.iter().zip(self.layout.groups()).zip(&arenas)
            {
                for ((_, which), values) in spec.f32_vectors().into_iter().zip(vectors) {
                    group.write_arena(queue, which.into(), values);
                }
                group.write_step_counter(queue, *steps);
            }
            // bf16 and q8 state as held: to_arenas checked each tensor's codes fit its group.
            for (g, (group, spec)) in self.groups.iter().zip(self.layout.groups()).enumerate() {
                if spec.state_format == StateFormat::F32 {
                    continue;
                }
                let pieces = crate::held::pieces(self.layout.tensors_of(g));
                let blocks = pieces.last().map_or(0, |p| {
                    p.first_block + p.range.len().div_ceil(crate::config::STATE_Q8_BLOCK)
                });
                for (name, which) in spec.vectors().into_iter().skip(1) {
                    let Stored::State(k) = which else { continue };
                    let mut codes = vec![0u16; spec.arena_len];
                    let (mut q8_codes, mut q8_scales) =
                        (vec![0u8; spec.arena_len], vec![0.0; blocks]);
                    let tensors = self.layout.tensors().iter().zip(&checkpoint.tensors);
                    for (t, saved) in tensors.filter(|(t, _)| t.group.0 == g) {
                        let held = saved.held.iter().find(|(n, _)| n == name);
                        match held {
                            Some((_, HeldVector::Bf16(saved))) => {
                                codes[t.range()].copy_from_slice(saved);
                            }
                            Some((_, HeldVector::Q8 { codes, scales })) => {
                                q8_codes[t.range()].copy_from_slice(codes);
                                q8_scales[q8_blocks_of(&pieces, &t.range())]
                                    .copy_from_slice(scales);
                            }
                            None => {}
                        }
                    }
                    match spec.state_format {
                        StateFormat::Q8 => group.write_q8(queue, k, &q8_codes, &q8_scales),
                        _ => group.write_codes(queue, k, &codes),
                    }
                }
            }
        })?;
        tracker.restored(arenas.iter().map(|(steps, _)| *steps).collect());
        tracker.consecutive_skips = 0;
        Ok(())
    }
}

/// The q8 blocks (indices of a slot's scales) of the tensor at `range` among a group's
/// `pieces`.
fn q8_blocks_of(
    pieces: &[crate::held::Piece],
    range: &std::ops::Range<usize>,
) -> std::ops::Range<usize> {
    let piece = pieces
        .iter()
        .find(|p| p.range.start == range.start)
        .expect("a tensor of the group");
    piece.first_block..piece.first_block + range.len().div_ceil(crate::config::STATE_Q8_BLOCK)
}
