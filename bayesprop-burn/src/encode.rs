//! What both optimizers record around bayesprop's step: the copy of a shared parameter into
//! the fresh tensor it is stepped in, burn's learning rate, and a checked submit.

use bayesprop::wgpu;
use bayesprop::{GpuOptimizer, Stepper};
use burn::optim::LearningRate;

use crate::config::LrTarget;
use crate::error::Result;
use crate::view::GpuView;

/// A device buffer that carries a shared parameter's values when its fresh tensor lies in the
/// same wgpu buffer as θ: burn's pool packs many tensors into one buffer, and wgpu refuses a
/// copy whose source and destination are one buffer, even between disjoint ranges. Kept
/// between steps, grown to the largest total it has carried.
#[derive(Default)]
pub(crate) struct Scratch {
    buffer: Option<wgpu::Buffer>,
}

impl Scratch {
    /// Records the copy of each shared parameter (θ, fresh) into the fresh tensor that replaces
    /// it in the module: directly between two buffers, through the scratch buffer within one.
    pub(crate) fn copy_shared(
        &mut self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        shared: Vec<(&GpuView, &GpuView)>,
    ) {
        let within: u64 = shared
            .iter()
            .filter(|(from, to)| from.buffer() == to.buffer())
            .map(|(from, _)| from.bytes())
            .sum();
        let scratch = self.holding(device, within);
        let mut at = 0;
        for (from, to) in shared {
            let bytes = from.bytes();
            if from.buffer() != to.buffer() {
                encoder.copy_buffer_to_buffer(
                    from.buffer(),
                    from.offset(),
                    to.buffer(),
                    to.offset(),
                    bytes,
                );
                continue;
            }
            let scratch = scratch.expect("sized above for every copy within one buffer");
            // Commands of one encoder run in order: θ is in the scratch before it is read.
            encoder.copy_buffer_to_buffer(from.buffer(), from.offset(), scratch, at, bytes);
            encoder.copy_buffer_to_buffer(scratch, at, to.buffer(), to.offset(), bytes);
            at += bytes;
        }
    }

    /// The scratch buffer, at least `bytes` long; none while nothing needs it.
    fn holding(&mut self, device: &wgpu::Device, bytes: u64) -> Option<&wgpu::Buffer> {
        if bytes == 0 {
            return None;
        }
        if self.buffer.as_ref().is_none_or(|b| b.size() < bytes) {
            self.buffer = Some(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bayesprop-burn shared-parameter scratch"),
                size: bytes,
                usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        self.buffer.as_ref()
    }
}

/// burn hands the learning rate to every step (schedules): it sets `lr`, ignored by optimizers
/// without one (`bayes`), or the hyperparameter the config names (see
/// [`BayespropConfig::with_lr_as`]).
pub(crate) fn set_lr(gpu: &mut GpuOptimizer, lr: LearningRate, target: &LrTarget) -> Result<()> {
    let key = match target {
        LrTarget::Lr => "lr",
        LrTarget::Field(name) => name.as_str(),
        LrTarget::Ignored => return Ok(()),
    };
    let mut config = gpu.config().clone();
    match config.as_dyn_mut().set(key, &lr.to_string()) {
        Err(bayesprop::Error::UnknownOption { .. }) if *target == LrTarget::Lr => return Ok(()),
        other => other?,
    }
    if &config != gpu.config() {
        gpu.set_config(config)?;
    }
    Ok(())
}

/// Submits `encoder` on the shared queue, returning the validation errors it raises.
pub(crate) fn submit_checked(
    ctx: &bayesprop::GpuContext,
    encoder: wgpu::CommandEncoder,
    what: &str,
) -> Result<()> {
    let scope = ctx.device().push_error_scope(wgpu::ErrorFilter::Validation);
    ctx.queue().submit([encoder.finish()]);
    match pollster::block_on(scope.pop()) {
        None => Ok(()),
        Some(e) => Err(bayesprop::Error::device_from(what, e).into()),
    }
}
