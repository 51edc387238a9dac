//! Lazy readback of the device's step status: which steps each group applied and how many
//! non-finite gradient elements it saw, learned without waiting for the device inside a step.
//!
//! Each step copies every group's status (t, non-finite count) into a small mappable buffer
//! and maps it asynchronously. Later calls collect whatever has arrived; only a caller that
//! asks for the answer now (`resolve(.., wait = true)`) waits.

use std::collections::VecDeque;
use std::sync::mpsc;

use crate::error::{Error, Result};
use crate::kernels::WINDOW;
use crate::optim::{NonFinitePolicy, StepReport};
use crate::transform::NormReport;

/// Bytes of one group's status on the device: `t: u32`, `nonfinite: u32`.
pub(crate) const STATUS_BYTES: u64 = 8;

/// Bytes of the step's transform (`Transform` in shaders/common.wgsl), read back after every
/// group's status: scale, clip norm, norm, factor.
pub(crate) const TRANSFORM_BYTES: u64 = 16;

/// How long a step's status may take to arrive once the device is idle: its map callback may
/// be run by another thread's poll of a shared device just after ours returns. Only a step
/// that was never submitted waits it out.
const CALLBACK_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

struct Pending {
    call: u64,
    policies: Vec<NonFinitePolicy>,
    /// Whether the step computed the norm (clipping on).
    norm: bool,
    buffer: wgpu::Buffer,
    mapped: mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>,
}

pub(crate) struct StepTracker {
    /// Step calls submitted.
    calls: u64,
    /// Calls whose status has been read back.
    resolved_calls: u64,
    /// Each group's step counter as of the last status read back.
    resolved_t: Vec<u64>,
    /// Steps recorded, oldest first: each one's readback is mapped when the command buffer
    /// that holds it is submitted (`CommandEncoder::map_buffer_on_submit`).
    pending: VecDeque<Pending>,
    /// Readback buffers ready for reuse.
    free: Vec<wgpu::Buffer>,
    reports: Vec<StepReport>,
    norms: Vec<NormReport>,
    /// Resolved step calls in a row in which some group skipped.
    pub consecutive_skips: u64,
    /// A `NonFinitePolicy::Error` step not yet returned to the caller.
    error: Option<Error>,
}

impl StepTracker {
    /// A tracker for `groups` groups whose step counters start at `t`.
    pub fn new(t: Vec<u64>) -> Self {
        StepTracker {
            calls: 0,
            resolved_calls: 0,
            resolved_t: t,
            pending: VecDeque::new(),
            free: Vec::new(),
            reports: Vec::new(),
            norms: Vec::new(),
            consecutive_skips: 0,
            error: None,
        }
    }

    /// Whether one more step fits the window of scalars (else resolve with `wait` first).
    pub fn window_has_room(&self) -> bool {
        ((self.calls - self.resolved_calls) as usize) < WINDOW
    }

    /// The window of `group` for the next step: the base t, and every t the device may then
    /// be at + 1.
    pub fn next_window(&self, group: usize) -> (u64, std::ops::RangeInclusive<u64>) {
        let in_flight = self.calls - self.resolved_calls;
        let base = self.resolved_t[group];
        (base, base + 1..=base + in_flight + 1)
    }

    /// A buffer to copy the next step's statuses into.
    pub fn readback_buffer(&mut self, device: &wgpu::Device) -> wgpu::Buffer {
        let size = STATUS_BYTES * self.resolved_t.len() as u64 + TRANSFORM_BYTES;
        self.free.pop().unwrap_or_else(|| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bayesprop status readback"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
    }

    /// Records a step whose statuses `encoder` copies into `buffer`: the buffer is mapped
    /// when the caller submits the encoder, whenever that is, so steps may be recorded into
    /// several encoders before they are submitted (in the order they were recorded).
    pub fn recorded(
        &mut self,
        encoder: &wgpu::CommandEncoder,
        policies: Vec<NonFinitePolicy>,
        norm: bool,
        buffer: wgpu::Buffer,
    ) {
        let (tx, mapped) = mpsc::channel();
        encoder.map_buffer_on_submit(&buffer, wgpu::MapMode::Read, .., move |r| drop(tx.send(r)));
        self.calls += 1;
        self.pending.push_back(Pending {
            call: self.calls,
            policies,
            norm,
            buffer,
            mapped,
        });
    }

    /// Collects the statuses that have arrived; with `wait`, waits for all of them first.
    /// Under `wait`, a status still missing after the device is idle gets [`CALLBACK_GRACE`]
    /// to arrive from a poll on another thread before the step counts as never submitted.
    pub fn resolve(&mut self, device: &wgpu::Device, wait: bool) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let poll = if wait {
            wgpu::PollType::wait_indefinitely()
        } else {
            wgpu::PollType::Poll
        };
        device
            .poll(poll)
            .map_err(|e| Error::device_from("waiting for a step", e))?;
        while let Some(front) = self.pending.front() {
            let arrived = match front.mapped.try_recv() {
                Err(mpsc::TryRecvError::Empty) if wait => {
                    // The device has done every submission, but another thread sharing it
                    // (burn's, say) may have collected this callback in its own poll and not
                    // yet run it: wait for it a little before calling the step unsubmitted.
                    front
                        .mapped
                        .recv_timeout(CALLBACK_GRACE)
                        .map_err(|_| mpsc::TryRecvError::Empty)
                }
                other => other,
            };
            let mapped = match arrived {
                Ok(result) => result,
                Err(mpsc::TryRecvError::Empty) if !wait => break,
                // Waited for every submission: this step's command buffer was never
                // submitted (still held, or dropped unsubmitted).
                Err(_) => {
                    return Err(Error::device(format!(
                        "step call {} was recorded by encode_step but its command buffer was \
                         never submitted; submit each encoder the step is recorded into, in order",
                        front.call
                    )))
                }
            };
            let pending = self.pending.pop_front().expect("front exists");
            mapped.map_err(|e| Error::device_from("reading step status", e))?;
            let words: Vec<u32> = {
                let view = pending
                    .buffer
                    .slice(..)
                    .get_mapped_range()
                    .map_err(|e| Error::device_from("reading step status", e))?;
                bytemuck::cast_slice(&view).to_vec()
            };
            pending.buffer.unmap();
            self.free.push(pending.buffer);
            self.resolved_calls = pending.call;
            let groups = pending.policies.len();
            if pending.norm {
                let transform = &words[2 * groups..];
                self.norms.push(NormReport {
                    call: pending.call,
                    norm: f32::from_bits(transform[2]),
                    factor: f32::from_bits(transform[3]),
                });
            }
            let mut skipped = false;
            for (group, policy) in pending.policies.iter().enumerate() {
                let (t, nonfinite) = (words[2 * group] as u64, words[2 * group + 1] as u64);
                self.resolved_t[group] = t;
                if nonfinite == 0 {
                    continue;
                }
                let (report, raised) = StepReport::of(pending.call, group, nonfinite, *policy);
                skipped |= !report.applied;
                self.reports.push(report);
                self.error = self.error.take().or(raised);
            }
            self.consecutive_skips = if skipped {
                self.consecutive_skips + 1
            } else {
                0
            };
        }
        Ok(())
    }

    /// The error of a `NonFinitePolicy::Error` step, once, if one has been read back.
    pub fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    pub fn take_reports(&mut self) -> Vec<StepReport> {
        std::mem::take(&mut self.reports)
    }

    pub fn take_norms(&mut self) -> Vec<NormReport> {
        std::mem::take(&mut self.norms)
    }

    /// Sets each group's step counter as known to the host (after a restore wrote it to the
    /// device); call after `resolve(.., true)`.
    pub fn restored(&mut self, t: Vec<u64>) {
        self.resolved_t = t;
    }

    /// Each group's step counter; call after `resolve(.., true)`.
    pub fn steps_applied(&self) -> &[u64] {
        &self.resolved_t
    }
}
