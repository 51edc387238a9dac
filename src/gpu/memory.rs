//! What an optimizer really holds on the device, read from the device's memory allocator
//! rather than computed from the layout (SPEC §6's memory figures, measured).

use std::collections::HashMap;

use crate::error::Result;
use crate::gpu::{GpuContext, GpuOptimizer};
use crate::layout::ParamGroups;

/// The device memory an optimizer allocates over `groups`, by the allocator's report:
/// everything it holds beyond θ and g (its state, scales and tables, the per-step window, the
/// status), and θ and g themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocated {
    /// Bytes of every allocation the optimizer added except θ's and g's.
    pub optimizer: u64,
    /// Bytes of θ's and g's allocations.
    pub theta_and_grad: u64,
}

/// Builds an optimizer over `groups` in its own arenas, runs one step and waits for it (so
/// that upload staging is gone), and reads what it added to the device's allocations. `None`
/// where the backend keeps no report (wgpu reports for Vulkan, DX12 and Metal). wgpu's own
/// buffers (staging, zero-initialisation) are not counted.
pub fn measure_allocations(ctx: &GpuContext, groups: &ParamGroups) -> Result<Option<Allocated>> {
    let device = ctx.device();
    let Some(before) = device.generate_allocator_report() else {
        return Ok(None);
    };
    let mut optimizer = GpuOptimizer::from_groups(ctx, groups)?;
    optimizer.step_device()?;
    optimizer.group_steps()?;
    let after = device
        .generate_allocator_report()
        .expect("a report before is a report after");
    // The allocations present after and not before (as a multiset of name, offset, size).
    let mut existing: HashMap<(&str, u64, u64), usize> = HashMap::new();
    for a in &before.allocations {
        *existing.entry((&a.name, a.offset, a.size)).or_default() += 1;
    }
    let mut allocated = Allocated {
        optimizer: 0,
        theta_and_grad: 0,
    };
    for a in &after.allocations {
        if let Some(count) = existing.get_mut(&(&a.name[..], a.offset, a.size)) {
            if *count > 0 {
                *count -= 1;
                continue;
            }
        }
        match a.name.as_str() {
            name if name.starts_with("(wgpu internal)") => {}
            "bayesprop theta" | "bayesprop grad" => allocated.theta_and_grad += a.size,
            _ => allocated.optimizer += a.size,
        }
    }
    drop(optimizer);
    Ok(Some(allocated))
}
