// Shared by every module (after lanes_4.wgsl or lanes_1.wgsl, which define the lane type `V`
// and the non-finite test): element indexing and the per-group status.
//
// One invocation handles one `V`: 4 consecutive elements at width 4, 1 at width 1. The dispatch
// is 2-D so that N may exceed 65,535 workgroups; the count is the length of the bound `theta`
// (or `grad`) range, so a chunk of a larger vector is just a smaller binding.

override WORKGROUP_SIZE: u32 = 256u;

// Non-finite gradient policies (SPEC §4); the host's NonFinitePolicy has the same values.
const POLICY_SKIP_STEP: u32 = 0u;
const POLICY_SKIP_ELEMENT: u32 = 1u;
const POLICY_ERROR: u32 = 2u;
const POLICY_PROPAGATE: u32 = 3u;

// Per parameter group, on the device, so a skipped step needs no round trip to the host.
struct Status {
    t: u32,                  // steps applied so far
    nonfinite: atomic<u32>,  // non-finite gradient elements seen in the current step
}

// The gradient transform of a step (SPEC §4b), one for every group: g ← g / scale · factor.
// The host writes scale and clip_norm (or copies a device scale in); `reduce` in control.wgsl
// writes norm and factor.
struct Transform {
    scale: f32,
    clip_norm: f32,  // M; unused (and factor 1) without clipping
    norm: f32,       // ‖g / scale‖ over the finite elements of every group
    factor: f32,     // min(1, M / (norm + 1e-6))
}

fn element_index(workgroup: vec3<u32>, workgroups: vec3<u32>, local: u32) -> u32 {
    return (workgroup.y * workgroups.x + workgroup.x) * WORKGROUP_SIZE + local;
}

// Where an invocation's element lives: its index in θ and in the state vectors. They are the
// same in the optimizer's own arena; for a tensor in the caller's buffers θ is wherever the
// caller keeps it and the state is in the optimizer's arena.
struct At {
    theta: u32,
    state: u32,
}

// One row of a segment table (`segments` in fused.wgsl, `scan_segments` in control.wgsl): the
// workgroup at this row handles lane groups k < count of one stretch of one tensor, at
// θ[theta + k], g[grad + k] and state[state + k] (indices in V). The host cuts every tensor
// into rows of ROW_LANES lane groups, so a row is also one partial sum of the norm.
struct Block {
    theta: u32,
    grad: u32,
    state: u32,
    count: u32,
}

const ROW_LANES: u32 = 256u;

// The segment table of the `segments` pipelines (group 2), declared here for both kernels
// that read it.
@group(2) @binding(0) var<storage, read> blocks: array<Block>;

// The row of this workgroup in a 2-D grid of one workgroup per row.
fn block_index(workgroup: vec3<u32>, workgroups: vec3<u32>) -> u32 {
    return workgroup.y * workgroups.x + workgroup.x;
}
