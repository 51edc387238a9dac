// Low-precision state (SPEC §6): the random bits, bf16 and q8, per element. A prelude with no
// bindings; `src/reference/state_codec.rs` is its twin, function for function, and the two
// agree bit for bit. Every function takes and returns scalars; packing codes into words is the
// kernel's business.
//
// No lookup table is indexed at run time: a q8 table entry is built from its exponent and one
// of eight mantissas, chosen by `select` (see `q8_mantissa`).

// Elements of one q8 block (one scale each).
const Q8_BLOCK: u32 = 256u;
// The top code of an unsigned (s, σ, v, v_max) and of a signed (m, b, a) q8 slot.
const Q8_TOP_U: u32 = 255u;
const Q8_TOP_S: u32 = 127u;

// SPEC §6's `mix` (named `mix32`: WGSL has a builtin `mix`). u32 arithmetic wraps.
fn mix32(x0: u32) -> u32 {
    var x = x0;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

// key_k = mix(mix(state_seed + k) + t): computed by the host once per step and slot.
fn state_key(seed: u32, slot: u32, t: u32) -> u32 {
    return mix32(mix32(seed + slot) + t);
}

// r = mix(i + key_k), i the element's index in its group's flat order.
fn element_bits(i: u32, key: u32) -> u32 {
    return mix32(i + key);
}

fn codec_is_finite_bits(b: u32) -> bool {
    return (b & 0x7f800000u) != 0x7f800000u;
}

// bf16: a finite x rounds stochastically (bits + (r >> 16), top half); a non-finite x keeps
// its top 16 bits, with the quiet bit set when those alone would read as ±Inf from a NaN.
fn bf16_encode(x: f32, r: u32) -> u32 {
    let b = bitcast<u32>(x);
    if codec_is_finite_bits(b) {
        return (b + (r >> 16u)) >> 16u;
    }
    let top = b >> 16u;
    if (b & 0x007fffffu) != 0u && (top & 0x7fu) == 0u {
        // A NaN whose payload lies in the low 16 bits alone: keep it a NaN.
        return top | 0x0040u;
    }
    return top;
}

fn bf16_decode(c: u32) -> f32 {
    return bitcast<f32>(c << 16u);
}

// The bits of |x|. A block's scale is bitcast<f32>(the largest of these over the block): an
// integer max, exact in any order; a NaN (then ±Inf) in the block wins.
fn q8_abs_bits(x: f32) -> u32 {
    return bitcast<u32>(x) & 0x7fffffffu;
}

// The mantissa bits of f32(2^(j/8)), j = 0…7, by a tree of selects.
fn q8_mantissa(j: u32) -> u32 {
    let b0 = (j & 1u) != 0u;
    let b1 = (j & 2u) != 0u;
    let low = select(select(0x000000u, 0x0b95c2u, b0), select(0x1837f0u, 0x25fed7u, b0), b1);
    let high = select(select(0x3504f3u, 0x45672au, b0), select(0x5744fdu, 0x6ac0c7u, b0), b1);
    return select(low, high, (j & 4u) != 0u);
}

// T[q] = f32(2^((q − top)/8)) for 0 < q ≤ top, T[0] = 0: 2^e · f32(2^(j/8)) with
// q − top = 8e + j, exact because scaling by 2^e is (every entry is normal).
fn q8_table(q: u32, top: u32) -> f32 {
    if q == 0u {
        return 0.0;
    }
    let n = i32(q) - i32(top);
    let e = n >> 3u;
    let j = u32(n & 7);
    return bitcast<f32>((u32(127 + e) << 23u) | q8_mantissa(j));
}

// 8·log2(y) + const, in whole eighths, within about one eighth (the bits read as a piecewise
// linear log2; subnormals normalised first): only a starting point for `q8_magnitude`.
fn q8_log8(b: u32) -> i32 {
    if b >= 0x00800000u {
        return i32(b >> 20u);
    }
    let shift = countLeadingZeros(b) - 8u;
    return i32((b << shift) >> 20u) - i32(8u * shift);
}

// The code of y = |x| ≥ 0 against scale a ≥ 0 in a table with top code `top`: the largest q
// with a·T[q] ≤ y, raised by one when (y − lo) > u·(hi − lo), u = (r >> 8)·2^-24. A non-finite
// a gives the top code (the block is poisoned, and decodes as such); a = 0 gives code 0.
fn q8_magnitude(y: f32, a: f32, r: u32, top: u32) -> u32 {
    let ab = bitcast<u32>(a);
    if !codec_is_finite_bits(ab) {
        return top;
    }
    if ab == 0u {
        return 0u;
    }
    if y >= a {
        return top;
    }
    var q = u32(clamp(i32(top) + q8_log8(bitcast<u32>(y)) - q8_log8(ab), 0, i32(top) - 1));
    while q > 0u && a * q8_table(q, top) > y {
        q -= 1u;
    }
    while q + 1u < top && a * q8_table(q + 1u, top) <= y {
        q += 1u;
    }
    let lo = a * q8_table(q, top);
    let hi = a * q8_table(q + 1u, top);
    let u = f32(r >> 8u) * 0x1p-24f;
    if (y - lo) > u * (hi - lo) {
        q += 1u;
    }
    return q;
}

// Unsigned slot: code 0…255 of |x|.
fn q8_encode_u(x: f32, a: f32, r: u32) -> u32 {
    return q8_magnitude(bitcast<f32>(q8_abs_bits(x)), a, r, Q8_TOP_U);
}

// Signed slot: the sign bit of x (bit 7), then the code 0…127 of |x|. With a = 0 the code is 0.
fn q8_encode_s(x: f32, a: f32, r: u32) -> u32 {
    let q = q8_magnitude(bitcast<f32>(q8_abs_bits(x)), a, r, Q8_TOP_S);
    if bitcast<u32>(a) == 0u {
        return 0u;
    }
    return ((bitcast<u32>(x) >> 24u) & 0x80u) | q;
}

fn q8_decode_u(c: u32, a: f32) -> f32 {
    return a * q8_table(c & 0xffu, Q8_TOP_U);
}

fn q8_decode_s(c: u32, a: f32) -> f32 {
    let v = a * q8_table(c & 0x7fu, Q8_TOP_S);
    return select(v, -v, (c & 0x80u) != 0u);
}
