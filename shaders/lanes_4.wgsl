// Lane width 4, prepended first: one invocation loads, updates and stores 4 consecutive
// elements as one vec4 (the body of a vector; the host binds a multiple of 4 elements). Every
// operation is per lane, so each element gets exactly the arithmetic of the scalar width.

alias V = vec4<f32>;
alias B = vec4<bool>;
alias U = vec4<u32>;

// WGSL has no isnan/isinf: an all-ones exponent is NaN or ±Inf.
fn finite(x: V) -> B {
    return (bitcast<U>(x) & U(0x7f800000u)) != U(0x7f800000u);
}

// The lanes' sum in the order of the norm's halving tree (src/transform.rs): strides 2, 1.
fn lane_sum(x: V) -> f32 {
    return (x.x + x.z) + (x.y + x.w);
}

// How many lanes of x are NaN or ±Inf.
fn nonfinite_lanes(x: V) -> u32 {
    let bad = select(U(0u), U(1u), !finite(x));
    return bad.x + bad.y + bad.z + bad.w;
}
