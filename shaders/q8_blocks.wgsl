// Appended to a fused optimizer kernel whose state is held in q8 (SPEC §6), at lane width 1,
// after the accessors that src/kernels.rs (`q8_accessors`) generates for its slots. A q8 block
// is 256 consecutive elements of one tensor's slot, and its scale is the maximum of the
// block's new values, so one invocation steps one block, in two passes over its elements:
// the first ("measure") runs the update with every store captured (`store_<slot>` and
// `store_theta` write private variables) and folds the new values into each slot's block
// maximum, writing nothing; the second ("commit") runs the identical update again, encodes
// with the new scales and writes θ, the codes (a whole word per 4 elements: blocks start at
// multiples of 4, tensors do) and the scales. Loads decode the old codes with the old scales.
// One invocation per block, not a workgroup per block with barriers: barriers are slow on
// software adapters (examples/q8_block_max.rs measured it).
//
// A new state value that is not finite counts as a non-finite gradient element (SPEC §6),
// as the CPU's `trial` and `apply` count it (src/cpu.rs): under SkipStep and Error
// `q8_count` runs the first pass alone before the step and adds such elements to the status
// (the host copies the status into the window again, and any count skips the step); under
// SkipElement such an element keeps its old θ and state, which enter the block's maximum and
// are encoded again, and counts once with the non-finite gradient elements.

// The step's g of one element, unscaled and clipped as `step_element` does.
fn q8_gradient(raw: f32) -> f32 {
    var g = raw;
    if UNSCALE {
        g = g / transform.scale;
    }
    if CLIP {
        g = g * transform.factor;
    }
    return g;
}

// One element's update into the captures (θ and every used slot), from its old values; 1 if
// it counts as non-finite (its g, or, under a policy that tests, a new state value), else 0.
// Under SkipElement such an element's captures are its old values.
fn q8_element(at: At, raw: f32, p: Scalars) -> u32 {
    let g = q8_gradient(raw);
    let th_old = theta[at.theta];
    q8_capture_old(at);
    q8_theta = th_old;
    if POLICY == POLICY_PROPAGATE {
        update(at, g, true, p);
        return 0u;
    }
    if POLICY == POLICY_SKIP_ELEMENT && !finite(g) {
        return 1u;
    }
    update(at, g, true, p);
    if q8_overflowed() {
        if POLICY == POLICY_SKIP_ELEMENT {
            q8_capture_old(at);
            q8_theta = th_old;
        }
        return 1u;
    }
    return 0u;
}

// Whether this step writes nothing: under SkipStep and Error, the scan (and `q8_count`)
// found a non-finite element.
fn q8_skipped() -> bool {
    return (POLICY == POLICY_SKIP_STEP || POLICY == POLICY_ERROR) && window.nonfinite != 0u;
}

// Block b of the dispatch, found in its stretch of the table (the last whose first block is
// at or before b), with its old scales and keys loaded; a length of 0 past the last block or
// in a step that writes nothing.
fn q8_start(b: u32) -> Q8Block {
    if q8_skipped() {
        return Q8Block(0u, 0u, 0u, 0u, 0u, 0u, 0u, 0u);
    }
    var lo = 0u;
    var hi = arrayLength(&q8_blocks);
    while hi - lo > 1u {
        let mid = (lo + hi) / 2u;
        if q8_blocks[mid].first <= b {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let stretch = q8_blocks[lo];
    let j = b - stretch.first;
    let skip = j * Q8_BLOCK;
    if j >= (stretch.len + Q8_BLOCK - 1u) / Q8_BLOCK {
        return Q8Block(0u, 0u, 0u, 0u, 0u, 0u, 0u, 0u);
    }
    let row = Q8Block(stretch.theta + skip, stretch.grad + skip, stretch.state + skip,
        min(Q8_BLOCK, stretch.len - skip), stretch.flat + skip, stretch.scale + j, b, 0u);
    q8_begin(row.scale);
    return row;
}

// One pass over a block: each element's update into the captures, folded into the block's
// maxima, or with `commit` encoded and written with θ. Returns the elements that count.
fn q8_pass(row: Q8Block, p: Scalars, commit: bool) -> u32 {
    var bad = 0u;
    for (var j = 0u; j < row.len; j++) {
        let at = At(row.theta + j, row.state + j);
        bad += q8_element(at, grad[row.grad + j], p);
        if commit {
            q8_put(at.state, row.flat + j, j + 1u == row.len);
            theta[at.theta] = q8_theta;
        } else {
            q8_fold();
        }
    }
    return bad;
}

// The step of one block: measure, then commit.
@compute @workgroup_size(WORKGROUP_SIZE)
fn q8_main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let row = q8_start(element_index(workgroup, workgroups, local));
    if row.len == 0u {
        return;
    }
    let p = step_scalars();
    q8_pass(row, p, false);
    let bad = q8_pass(row, p, true);
    q8_end(row.scale);
    if POLICY == POLICY_SKIP_ELEMENT && bad > 0u {
        atomicAdd(&status.nonfinite, bad);
    }
}

// Under SkipStep and Error, before the step: the elements whose new state would not be
// finite, added to the status (nothing else written). Runs only where the scan found every
// g finite, as the CPU's `trial`.
@compute @workgroup_size(WORKGROUP_SIZE)
fn q8_count(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let row = q8_start(element_index(workgroup, workgroups, local));
    let bad = q8_pass(row, step_scalars(), false);
    if bad > 0u {
        atomicAdd(&status.nonfinite, bad);
    }
}
