// The roofline of a fused step (`bayesprop bench`): reads θ, g and STATES state vectors and
// writes θ and the states back, with one multiply-add each, so it moves exactly the bytes of
// an optimizer with that many state vectors and almost nothing else. Bindings follow
// fused.wgsl, without the status: a uniform at 0, θ at 2, g at 3, states from 4 (unused ones
// bound to a placeholder and never touched). Host: src/bench/roofline.rs.

override STATES: u32 = 0u;

struct Touch {
    scale: f32,
    pad0: f32,
    pad1: f32,
    pad2: f32,
}

@group(0) @binding(0) var<uniform> touch: Touch;
@group(0) @binding(2) var<storage, read_write> theta: array<V>;
@group(0) @binding(3) var<storage, read> grad: array<V>;
@group(0) @binding(4) var<storage, read_write> state0: array<V>;
@group(0) @binding(5) var<storage, read_write> state1: array<V>;
@group(0) @binding(6) var<storage, read_write> state2: array<V>;
@group(0) @binding(7) var<storage, read_write> state3: array<V>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = element_index(workgroup, workgroups, local);
    if i >= arrayLength(&theta) {
        return;
    }
    let g = touch.scale * grad[i];
    theta[i] = theta[i] + g;
    if STATES > 0u {
        state0[i] = state0[i] + g;
    }
    if STATES > 1u {
        state1[i] = state1[i] + g;
    }
    if STATES > 2u {
        state2[i] = state2[i] + g;
    }
    if STATES > 3u {
        state3[i] = state3[i] + g;
    }
}
