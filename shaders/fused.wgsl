// Prepended (after the lane width and common.wgsl) to every fused optimizer kernel, which
// defines `Scalars`, its state bindings and `fn update(at: At, g: V, ok: B, p: Scalars)`.
//
// Binding convention (the host builds every kernel's layout from it):
//   @binding(0) uniform  Window   policy and a window of per-step scalars (`Scalars` is the
//                                 optimizer's own struct), computed by the host in f64
//   @binding(1) storage  Status   this group's step counter and non-finite count
//   @binding(2) storage  theta    read_write, array<V>
//   @binding(3) storage  grad     array<V>, only read; declared read_write because a caller's θ
//                                 and g may share one buffer, which WebGPU refuses to bind
//                                 read-only and read_write in one dispatch
//   @binding(4..) storage state   read_write, array<V>, in the optimizer's state-slot order
//   @group(1) @binding(0) storage Transform  read: the step's gradient transform, shared by
//                                 every group (its scale and clip factor apply to the raw g
//                                 before anything else; 1 and 1 leave g's bits as they are)
//   @group(2)            the run's segment table and header (common.wgsl), `segments` only
//
// Two entry points share `update`: `main` steps the optimizer's own arena, element i at index i
// of θ, g and every state; `segments` steps tensors in the caller's buffers, where θ and g are
// whole caller buffers (at any element offset) and a table row per workgroup says where.
//
// Why a window: under SkipStep the device decides whether a step is applied, so the host does
// not know the device's t when it records the next step without waiting for it. It uploads
// the scalars of every t the device can be at (base + 1 … base + in-flight + 1), and the
// kernel picks the entry of its own t.

const WINDOW: u32 = 8u;

struct Window {
    base: u32,     // the device t the host last read back; entry k is for step base + k + 1
    policy: u32,
    pad0: u32,
    pad1: u32,
    scalars: array<Scalars, WINDOW>,
}

@group(0) @binding(0) var<uniform> window: Window;
@group(0) @binding(1) var<storage, read_write> status: Status;
@group(0) @binding(2) var<storage, read_write> theta: array<V>;
@group(0) @binding(3) var<storage, read_write> grad: array<V>;
@group(1) @binding(0) var<storage, read> transform: Transform;

// The scalars of the step being applied.
fn step_scalars() -> Scalars {
    return window.scalars[min(status.t - window.base, WINDOW - 1u)];
}

// Which lanes of this invocation are updated. Under SkipStep and Error the scan pass has
// counted the group's non-finite gradients, and any one skips the whole step (no lane). Under
// SkipElement only the non-finite lanes are skipped, and counted here. A kernel returns when no
// lane is admitted, and otherwise stores `select(old, new, admitted)`.
fn admit(g: V) -> B {
    if window.policy == POLICY_SKIP_ELEMENT {
        let bad = nonfinite_lanes(g);
        if bad > 0u {
            atomicAdd(&status.nonfinite, bad);
        }
        return finite(g);
    }
    return B(atomicLoad(&status.nonfinite) == 0u);
}

// The arena's entry point: this invocation's element and its admitted lanes, then the
// optimizer's own `update(at, g, ok, p)`, which reads θ and its state where `at` says and
// stores `select(old, new, ok)` into θ and every state.
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
    step_element(At(i, i), grad[i]);
}

// The transform, the policy, then the optimizer's update.
fn step_element(at: At, raw: V) {
    let g = raw / transform.scale * transform.factor;
    let ok = admit(g);
    if !any(ok) {
        return;
    }
    update(at, g, ok, step_scalars());
}

// The segment table's entry point: ceil(ROW_LANES / WORKGROUP_SIZE) workgroups per row, each
// invocation at most one lane group: straight-line code, which software adapters vectorize
// across invocations (a loop over the row, even one never taken, defeats that; figures in
// docs/performance.md). Width 1 takes any element offset; the host uses width 4 where θ, g and the state
// reach 16-byte boundaries together, with indices in vec4s.
@compute @workgroup_size(WORKGROUP_SIZE)
fn segments(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let per_row = (ROW_LANES + WORKGROUP_SIZE - 1u) / WORKGROUP_SIZE;
    let w = block_index(workgroup, workgroups);
    let b = w / per_row;
    if b >= arrayLength(&blocks) {
        return;
    }
    let row = blocks[b];
    let k = (w % per_row) * WORKGROUP_SIZE + local;
    if k < row.count {
        step_element(At(row.theta + k, row.state + k), grad[row.grad + k]);
    }
}
