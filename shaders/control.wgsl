// Per-group step control, around the fused update of a group (after the lane width and
// common.wgsl):
//   scan    counts the group's non-finite gradients before the update (SkipStep and Error
//           only: it reads g once more, 4 bytes per element)
//   commit  advances the group's step counter if the step was applied

struct WindowHeader {
    base: u32,
    policy: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> header: WindowHeader;
@group(0) @binding(1) var<storage, read_write> status: Status;
@group(0) @binding(2) var<storage, read> grad: array<V>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn scan(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = element_index(workgroup, workgroups, local);
    if i < arrayLength(&grad) {
        let bad = nonfinite_lanes(grad[i]);
        if bad > 0u {
            atomicAdd(&status.nonfinite, bad);
        }
    }
}

@compute @workgroup_size(1)
fn commit() {
    if header.policy == POLICY_SKIP_ELEMENT || atomicLoad(&status.nonfinite) == 0u {
        status.t = status.t + 1u;
    }
}
