// Per-group step control, around the fused update of a group (after the lane width and
// common.wgsl), and the global norm of the gradient transform:
//   scan    one read of g / scale: counts the group's non-finite elements before the update
//           (SkipStep and Error), and with clipping writes one partial sum of the squares of
//           the finite ones per workgroup (any policy); `scan_segments` does the same over a
//           segment table of the caller's buffers; `count` and `count_segments` only count
//   reduce  one workgroup: sums every group's partials, then writes the norm and clip factor
//   commit  advances the group's step counter if the step was applied
//
// The order of every addition is the one src/transform.rs defines, so that the CPU reference
// gets the same bits: a workgroup is 256 invocations (the host compiles this module with
// WORKGROUP_SIZE = NORM_LANES), a block of 1,024 elements at vec4 width, halved in shared
// memory; the partials are summed lane by lane, then halved.

const NORM_LANES: u32 = 256u;
const NORM_EPS: f32 = 1e-6;

struct WindowHeader {
    base: u32,
    policy: u32,
    norm: u32,   // 1: the scan writes partial sums of squares (clipping is on)
    pad1: u32,
}

// Whether the scan divides g by the scale: not for a scale of 1, which leaves g's bits as
// they are.
override UNSCALE: bool;

@group(0) @binding(0) var<uniform> header: WindowHeader;
@group(0) @binding(1) var<storage, read_write> status: Status;
@group(0) @binding(2) var<storage, read> grad: array<V>;
// This binding's region of the partials: one per workgroup (see src/transform.rs); for
// `reduce`, every region of every group.
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;
@group(1) @binding(0) var<storage, read_write> transform: Transform;

var<workgroup> squares: array<V, NORM_LANES>;
var<workgroup> sums: array<f32, NORM_LANES>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn scan(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = element_index(workgroup, workgroups, local);
    var square = V(0.0);
    if i < arrayLength(&grad) {
        square = count_and_square(grad[i]);
    }
    // A workgroup of the 2-D grid's last row may lie wholly past the end: it owns no slot.
    let block = block_index(workgroup, workgroups);
    write_partial(local, square, block, block * NORM_LANES < arrayLength(&grad));
}

// `scan` over a segment table (see `Block` in common.wgsl): one row per workgroup, each row
// one partial sum. Rows hold at most ROW_LANES (= NORM_LANES) lane groups.
@compute @workgroup_size(WORKGROUP_SIZE)
fn scan_segments(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let b = block_index(workgroup, workgroups);
    let owned = b < arrayLength(&blocks);
    var square = V(0.0);
    if owned && local < blocks[b].count {
        square = count_and_square(grad[blocks[b].grad + local]);
    }
    write_partial(local, square, b, owned);
}

// `scan` and `scan_segments` without the norm (no clipping): the count alone. Without a
// barrier, which software adapters honour by running the whole kernel as coroutines (figures
// in docs/performance.md). Each invocation checks COUNT_SPAN lane groups, a workgroup's
// width apart (`count_segments` in one row of its own table, where the host merged up to
// COUNT_SPAN rows whose gradients follow one another), then adds its count with one atomic:
// llvmpipe pays per invocation, and a lane group each made the count cost more than reading
// g does (docs/performance.md).
override COUNT_SPAN: u32;

@compute @workgroup_size(WORKGROUP_SIZE)
fn count(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let first = block_index(workgroup, workgroups) * WORKGROUP_SIZE * COUNT_SPAN + local;
    var bad = 0u;
    for (var k = 0u; k < COUNT_SPAN; k++) {
        let i = first + k * WORKGROUP_SIZE;
        if i < arrayLength(&grad) {
            bad += nonfinite_lanes(unscaled(grad[i]));
        }
    }
    add_count(bad);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn count_segments(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let b = block_index(workgroup, workgroups);
    if b >= arrayLength(&blocks) {
        return;
    }
    let row = blocks[b];
    var bad = 0u;
    for (var k = 0u; k < COUNT_SPAN; k++) {
        let lane = k * WORKGROUP_SIZE + local;
        if lane < row.count {
            bad += nonfinite_lanes(unscaled(grad[row.grad + lane]));
        }
    }
    add_count(bad);
}

// g / scale, or g where the scale is 1 (which leaves g's bits as they are).
fn unscaled(raw: V) -> V {
    if UNSCALE {
        return raw / transform.scale;
    }
    return raw;
}

// Adds an invocation's non-finite lanes to the group's count, under SkipStep and Error
// (SkipElement's update counts its own, Propagate counts none).
fn add_count(bad: u32) {
    if (header.policy == POLICY_SKIP_STEP || header.policy == POLICY_ERROR) && bad > 0u {
        atomicAdd(&status.nonfinite, bad);
    }
}

// Counts the non-finite lanes of g / scale and returns the squares of its finite lanes.
fn count_and_square(raw: V) -> V {
    let u = unscaled(raw);
    add_count(nonfinite_lanes(u));
    return select(V(0.0), u * u, finite(u));
}

// With clipping, halves the workgroup's squares in shared memory and writes their sum to
// partial `slot`, if the workgroup owns one.
fn write_partial(local: u32, square: V, slot: u32, owned: bool) {
    if header.norm == 0u {
        return;
    }
    squares[local] = square;
    for (var s = NORM_LANES / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if local < s {
            squares[local] = squares[local] + squares[local + s];
        }
    }
    if local == 0u && owned {
        partials[slot] = lane_sum(squares[0]);
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn reduce(@builtin(local_invocation_index) local: u32) {
    var sum = 0.0;
    for (var k = local; k < arrayLength(&partials); k = k + NORM_LANES) {
        sum = sum + partials[k];
    }
    sums[local] = sum;
    for (var s = NORM_LANES / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if local < s {
            sums[local] = sums[local] + sums[local + s];
        }
    }
    if local == 0u {
        let norm = sqrt(sums[0]);
        let m = transform.clip_norm;
        transform.norm = norm;
        // As a comparison rather than min(), so that M = inf gives 1 even for norm = inf.
        transform.factor = select(1.0, m / (norm + NORM_EPS), m < norm + NORM_EPS);
    }
}

@compute @workgroup_size(1)
fn commit() {
    if header.policy == POLICY_SKIP_ELEMENT || header.policy == POLICY_PROPAGATE
        || atomicLoad(&status.nonfinite) == 0u {
        status.t = status.t + 1u;
    }
}
