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

#[test]
fn the_state_codec_prelude_passes_naga_validation() {
    // A prelude has no entry point of its own: validate it under one that calls everything.
    let codec = kernels::Kernel {
        name: "state_codec",
        preludes: &[kernels::STATE_CODEC],
        scalars: &[],
        states: &[],
        flags: &[],
        body: "@group(0) @binding(0) var<uniform> u: vec4<u32>;
@group(0) @binding(1) var<storage, read_write> o: array<u32>;
@compute @workgroup_size(1) fn main() {
    let x = bitcast<f32>(u.x);
    let a = bitcast<f32>(u.y);
    let r = element_bits(u.z, state_key(u.w, 1u, 2u));
    o[0] = bf16_encode(bf16_decode(u.x) + x, r) + q8_encode_u(x, a, r) + q8_encode_s(x, a, r)
        + bitcast<u32>(q8_decode_u(u.z, a) + q8_decode_s(u.z, a)) + q8_abs_bits(x);
}",
    };
    if let Err(message) = codec.validate() {
        panic!("{message}");
    }
}
