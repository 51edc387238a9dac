// The training step as PyTorch runs it around a plain optimizer step, for `bayesprop bench`
// to set against the fused step (after the lane width and common.wgsl). Bench-only; host:
// src/bench/unfused.rs, which runs, one kernel after another:
//   unscale  GradScaler.unscale_: reads the raw gradient, writes g = raw / scale
//   the norm of clip_grad_norm_: control.wgsl's scan (reads g) and reduce, which write the
//            clip factor into the transform buffer
//   scale    clip_grad_norm_'s scale: reads g, writes g · factor
// then the optimizer's plain step reads g.
//
// Bindings: the loss scale at 0, the raw gradient at 1, g (the optimizer's gradient buffer)
// at 2, the transform that the norm wrote at 3.

struct Unscale {
    scale: f32,
    pad0: f32,
    pad1: f32,
    pad2: f32,
}

@group(0) @binding(0) var<uniform> unscaling: Unscale;
@group(0) @binding(1) var<storage, read> raw: array<V>;
@group(0) @binding(2) var<storage, read_write> grad: array<V>;
@group(0) @binding(3) var<storage, read> transform: Transform;

@compute @workgroup_size(WORKGROUP_SIZE)
fn unscale(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = element_index(workgroup, workgroups, local);
    if i < arrayLength(&grad) {
        grad[i] = raw[i] / unscaling.scale;
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn scale(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = element_index(workgroup, workgroups, local);
    if i < arrayLength(&grad) {
        grad[i] = grad[i] * transform.factor;
    }
}
