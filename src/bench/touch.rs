//! The roofline kernel (`shaders/touch.wgsl`): reads and writes the arrays of an optimizer
//! with `STATES` state vectors, with trivial arithmetic. Bench-only, so it lives here and not
//! among the optimizer kernels.

use crate::gpu::pipeline::{storage, uniform, Addressing, Pipeline};
use crate::kernels::{Kernel, COMMON, ENTRY_POINT};

/// The roofline of a fused step: reads and writes the arrays of an optimizer with `STATES`
/// state vectors, with trivial arithmetic.
pub const TOUCH: Kernel = Kernel {
    name: "touch",
    preludes: &[COMMON],
    scalars: &[],
    flags: &[],
    states: &[],
    body: include_str!("../../shaders/touch.wgsl"),
};

/// State vectors the touch kernel can stand in for.
pub const MAX_STATES: u32 = 4;

/// Compiles `shaders/touch.wgsl` for `states` state vectors (at most [`MAX_STATES`]): uniform
/// at 0, θ at 2, g at 3, and [`MAX_STATES`] state bindings from 4 (unused ones may be any
/// small buffer).
pub fn pipeline(device: &wgpu::Device, states: u32, workgroup_size: u32) -> Pipeline {
    assert!(states <= MAX_STATES, "touch: {states} state vectors");
    let mut bindings = vec![uniform(0), storage(2, false), storage(3, true)];
    bindings.extend((0..MAX_STATES).map(|k| storage(4 + k, false)));
    Pipeline::new(
        device,
        &TOUCH,
        &bindings,
        None,
        Addressing::Arena,
        &[ENTRY_POINT],
        workgroup_size,
        &[("STATES", states as f64)],
        crate::config::StateFormat::F32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // `optim::ALL_KERNELS` (validated by tests/integration/shaders.rs) holds only the core's kernels.
    #[test]
    fn touch_kernel_validates_at_both_widths() {
        let checked = TOUCH.validate().unwrap();
        assert_eq!(checked.storage_bindings, 2 + MAX_STATES);
    }
}
