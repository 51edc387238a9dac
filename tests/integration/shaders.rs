//! Every shader parses and validates with naga, without any adapter, and its uniform block
//! has exactly the size of the Rust struct the host uploads.

use bayesprop::kernels::{self, WINDOW, WINDOW_HEADER_BYTES};
use bayesprop::OptimizerConfig;

#[test]
fn every_kernel_passes_naga_validation() {
    for kernel in bayesprop::optim::ALL_KERNELS {
        if let Err(message) = kernel.validate() {
            panic!("{message}");
        }
    }
}

#[test]
fn uniform_blocks_and_state_bindings_match_the_host() {
    for config in OptimizerConfig::all_defaults() {
        let optimizer = config.as_dyn();
        let checked = optimizer.kernel().validate().unwrap();
        assert_eq!(
            checked.uniform_size as usize,
            WINDOW_HEADER_BYTES + WINDOW * optimizer.uniform_bytes(1).len(),
            "{}: WGSL Window of Scalars vs the host's window of Rust scalars",
            optimizer.name()
        );
        assert_eq!(
            checked.storage_bindings as usize,
            3 + optimizer.state_slots().len(),
            "{}: storage bindings vs status, θ, g and the state slots",
            optimizer.name()
        );
    }
}

#[test]
fn a_broken_shader_is_reported_with_its_name() {
    let broken = kernels::Kernel {
        name: "broken",
        preludes: &[],
        scalars: &[],
        flags: &[],
        states: &[],
        body: "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }",
    };
    match broken.validate() {
        Err(bayesprop::Error::Shader {
            kernel: "broken",
            width: 4,
            message,
        }) => assert!(
            message.contains("1u"),
            "the diagnostic quotes the source: {message}"
        ),
        other => panic!("expected a shader error naming `broken` at width 4, got {other:?}"),
    }
}
