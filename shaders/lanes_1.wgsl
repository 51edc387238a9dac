// Lane width 1, prepended first: one invocation updates one element (the tail of a vector that
// the vec4 width cannot bind). The same kernel bodies compile at both widths.

alias V = f32;
alias B = bool;
alias U = u32;

// WGSL has no isnan/isinf: an all-ones exponent is NaN or ±Inf.
fn finite(x: V) -> B {
    return (bitcast<U>(x) & 0x7f800000u) != 0x7f800000u;
}

fn lane_sum(x: V) -> f32 {
    return x;
}

// 1 if x is NaN or ±Inf, else 0.
fn nonfinite_lanes(x: V) -> u32 {
    return select(0u, 1u, !finite(x));
}
