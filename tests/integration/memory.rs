//! The state's memory as the device's allocator reports it (`gpu::measure_allocations`,
//! `info --params N --measure`), against the figure computed from the layout
//! (`OptimizerConfig::state_bytes`, SPEC §6).

use bayesprop::gpu::measure_allocations;
use bayesprop::{GroupId, OptimizerConfig, ParamGroups, StateFormat};

use crate::common;

/// Every optimizer of the table in every format over 2^20 parameters: in f32 and bf16 the
/// allocations beyond θ and g are the computed state and a few small fixed buffers (window,
/// status, transform, partials, placeholders, the q8 kernels' table of stretches: under 8
/// KiB); in q8 they hold the computed codes and scales, plus scale room for every slot of
/// the row, used or not. θ and g are 8 bytes per parameter, padding aside. And issue #19's
/// bounds: in q8, `bayes` and `adam` hold at most 2.05 bytes per parameter, `bayes_fp` 1.05.
#[test]
fn allocations_hold_the_computed_state() {
    let Some(ctx) = common::gpu("allocations_hold_the_computed_state") else {
        return;
    };
    let n = 1 << 20;
    let blocks = (n / 256) as u64;
    for config in OptimizerConfig::all_defaults() {
        for format in StateFormat::ALL {
            let mut groups = ParamGroups::single(config.clone(), &vec![0.0; n]).unwrap();
            groups
                .set_group_option(GroupId(0), "state_format", format.name())
                .unwrap();
            let measured = measure_allocations(&ctx, &groups)
                .unwrap()
                .expect("Vulkan keeps an allocator report");
            let computed = config.state_bytes(format, n) as u64;
            let name = format!("{} {format}", config.name());
            assert!(
                (8 * n as u64..8 * n as u64 + 4096).contains(&measured.theta_and_grad),
                "{name}: θ and g {}",
                measured.theta_and_grad
            );
            let slots = config.as_dyn().state_slots().len() as u64;
            let overhead = match format {
                StateFormat::Q8 => 4 * blocks * slots,
                _ => 0,
            };
            assert!(
                measured.optimizer >= computed && measured.optimizer <= computed + overhead + 8192,
                "{name}: measured {} bytes, computed {computed}, allowed overhead {overhead}",
                measured.optimizer
            );
            let bound = match (config.name(), format) {
                ("bayes" | "adam", StateFormat::Q8) => Some(2.05),
                ("bayes_fp", StateFormat::Q8) => Some(1.05),
                _ => None,
            };
            if let Some(bound) = bound {
                let per = measured.optimizer as f64 / n as f64;
                assert!(per <= bound, "{name}: {per} bytes per parameter");
            }
        }
    }
}
