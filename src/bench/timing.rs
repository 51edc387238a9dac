//! Device time from timestamp queries: what `bench` reports for GPU rows where the adapter has
//! `TIMESTAMP_QUERY` (lavapipe does), so that host-side submission costs are not counted as
//! device work.

use crate::error::Result;
use crate::gpu::context::GpuContext;
use crate::gpu::GpuOptimizer;

/// Timestamps around up to `capacity` compute passes or encoder spans, read back together.
pub struct PassTimer {
    queries: wgpu::QuerySet,
    /// Where the queries are resolved (QUERY_RESOLVE), then copied to a mappable buffer.
    resolved: wgpu::Buffer,
    capacity: u32,
    used: u32,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
}

impl std::fmt::Debug for PassTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassTimer")
            .field("capacity", &self.capacity)
            .field("used", &self.used)
            .finish()
    }
}

impl PassTimer {
    /// The most intervals one timer holds: two timestamps each, and wgpu refuses a query set
    /// of more than `QUERY_SET_MAX_QUERIES` (4,096).
    pub const MAX_INTERVALS: u32 = wgpu::QUERY_SET_MAX_QUERIES / 2;

    /// A timer for `capacity` intervals (at most [`Self::MAX_INTERVALS`]; read them with
    /// [`Self::take_seconds`] to time more), or `None` when the device has no timestamp
    /// queries.
    pub fn new(ctx: &GpuContext, capacity: u32) -> Option<Self> {
        if !ctx.has_timestamps() || capacity == 0 {
            return None;
        }
        let capacity = capacity.min(Self::MAX_INTERVALS);
        let device = ctx.device();
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("bayesprop timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * capacity,
        });
        let resolved = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bayesprop timestamps resolved"),
            size: 2 * capacity as u64 * wgpu::QUERY_SIZE as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Some(PassTimer {
            queries,
            resolved,
            capacity,
            used: 0,
            period_ns: ctx.queue().get_timestamp_period() as f64,
        })
    }

    /// Intervals recorded and not yet read.
    pub fn len(&self) -> u32 {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Whether another interval fits before [`PassTimer::take_seconds`].
    pub fn has_room(&self) -> bool {
        self.used < self.capacity
    }

    /// Makes `optimizer`'s next step one interval (its pass, on the device); false, and the
    /// step untimed, when full.
    pub fn time_next_step(&mut self, optimizer: &mut GpuOptimizer) -> bool {
        let Some(k) = self.next() else {
            return false;
        };
        optimizer.time_next_pass(&self.queries, 2 * k);
        true
    }

    /// The timestamp writes that make the next compute pass one interval, or `None` when full.
    pub fn pass_writes(&mut self) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let k = self.next()?;
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(2 * k),
            end_of_pass_write_index: Some(2 * k + 1),
        })
    }

    /// Records `work` into `encoder` as one interval (for copies, which are not passes):
    /// empty compute passes before and after carry the timestamps, so no feature beyond
    /// `TIMESTAMP_QUERY` is needed. When full, records `work` untimed.
    pub fn span<R>(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        work: impl FnOnce(&mut wgpu::CommandEncoder) -> R,
    ) -> R {
        let Some(k) = self.next() else {
            return work(encoder);
        };
        let mark = |encoder: &mut wgpu::CommandEncoder, index: u32| {
            encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("bayesprop timestamp"),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &self.queries,
                    beginning_of_pass_write_index: Some(index),
                    end_of_pass_write_index: None,
                }),
            });
        };
        mark(encoder, 2 * k);
        let out = work(encoder);
        mark(encoder, 2 * k + 1);
        out
    }

    fn next(&mut self) -> Option<u32> {
        let k = self.used;
        if k >= self.capacity {
            return None;
        }
        self.used += 1;
        Some(k)
    }

    /// The seconds of every interval recorded since the last call, in order (waits for the
    /// device), and frees the timer for more.
    pub fn take_seconds(&mut self, ctx: &GpuContext) -> Result<Vec<f64>> {
        let count = 2 * self.used;
        if count == 0 {
            return Ok(Vec::new());
        }
        let bytes = count as u64 * wgpu::QUERY_SIZE as u64;
        let ticks: Vec<u64> = ctx.read_back("reading timestamps", bytes, |encoder, staging| {
            encoder.resolve_query_set(&self.queries, 0..count, &self.resolved, 0);
            encoder.copy_buffer_to_buffer(&self.resolved, 0, staging, 0, bytes);
        })?;
        self.used = 0;
        Ok(ticks
            .chunks_exact(2)
            .map(|pair| pair[1].saturating_sub(pair[0]) as f64 * self.period_ns * 1e-9)
            .collect())
    }
}
