//! Low-precision state (SPEC §6), per element: the random bits, `bf16` and `q8`. The twin of
//! `shaders/state_codec.wgsl`, function for function and operation for operation; the two
//! agree bit for bit (`tests/integration/state_codec.rs` runs the WGSL on the adapter).
//!
//! Every state element is decoded to f32, updated by the unchanged rule, and encoded back with
//! stochastic rounding driven by `r = mix(i + key)`, where the host computes the slot's `key`
//! once per step ([`state_key`]). Nothing here is generic over the float type: the codes are
//! defined by f32 arithmetic.
//!
//! Where SPEC §6 leaves a case open, this file decides it (and the WGSL does the same):
//! - a bf16 NaN keeps its top 16 bits, with the quiet bit set only when those bits alone would
//!   read as ±Inf, so that every code round-trips and a NaN stays a NaN;
//! - a finite x above the largest finite bf16 may round up to ±Inf (the next bf16 value);
//! - q8 with a non-finite scale (a NaN or ±Inf in the block) stores the scale as it is and the
//!   top code (with the sign for signed slots) everywhere: the block decodes as poisoned;
//! - q8 with scale 0 stores code 0 (no sign bit) everywhere;
//! - a signed slot keeps the sign bit of −0, so that code `0x80` round-trips.

/// Elements of one q8 block (one f32 scale each), from the tensor's start.
pub const Q8_BLOCK: usize = 256;
/// The top code of an unsigned q8 slot (s, σ, v, v_max): codes 0…255.
pub const Q8_TOP_U: u32 = 255;
/// The top code of a signed q8 slot (m, b, a): a sign bit and codes 0…127.
pub const Q8_TOP_S: u32 = 127;

/// SPEC §6's `mix` (`mix32` in WGSL, whose builtin `mix` is something else); wrapping u32.
pub fn mix32(x0: u32) -> u32 {
    let mut x = x0;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// `key_k = mix(mix(state_seed + k) + t)`: the key of state slot `slot` at the applied step
/// `t` (taken mod 2^32), computed by the host once per step and slot.
pub fn state_key(seed: u32, slot: u32, t: u32) -> u32 {
    mix32(mix32(seed.wrapping_add(slot)).wrapping_add(t))
}

/// `r = mix(i + key)`: the random bits of element `i` (its index in the group's flat order,
/// mod 2^32).
pub fn element_bits(i: u32, key: u32) -> u32 {
    mix32(i.wrapping_add(key))
}

fn is_finite_bits(b: u32) -> bool {
    (b & 0x7f80_0000) != 0x7f80_0000
}

/// The bf16 code (low 16 bits) of `x`. A finite x rounds stochastically, as
/// `(bits + (r >> 16)) >> 16`, so |x| rounds up with probability equal to its fraction of a
/// bf16 step; a non-finite x keeps its top 16 bits (a NaN whose top bits would read as ±Inf
/// gets its quiet bit).
pub fn bf16_encode(x: f32, r: u32) -> u32 {
    let b = x.to_bits();
    if is_finite_bits(b) {
        return b.wrapping_add(r >> 16) >> 16;
    }
    if (b & 0x007f_ffff) != 0 {
        let top = b >> 16;
        // ±Inf's top bits with a payload below them: keep it a NaN.
        return if (top & 0x7f) == 0 { top | 0x40 } else { top };
    }
    b >> 16
}

/// The f32 whose bits are the code followed by 16 zero bits (exact).
pub fn bf16_decode(c: u32) -> f32 {
    f32::from_bits(c << 16)
}

/// The bits of |x|. A block's scale is the f32 of the largest of these over the block
/// ([`q8_scale`]): an integer max, exact in any order, that a NaN (then ±Inf) wins.
pub fn q8_abs_bits(x: f32) -> u32 {
    x.to_bits() & 0x7fff_ffff
}

/// The scale A of a q8 block: max |x| over its (new) values, as [`q8_abs_bits`] orders them.
pub fn q8_scale(block: &[f32]) -> f32 {
    f32::from_bits(block.iter().map(|&x| q8_abs_bits(x)).max().unwrap_or(0))
}

/// The mantissa bits of f32(2^(j/8)), j = 0…7 (the WGSL picks one by a tree of selects).
pub(crate) const MANTISSAS: [u32; 8] = [
    0x000000, 0x0b95c2, 0x1837f0, 0x25fed7, 0x3504f3, 0x45672a, 0x5744fd, 0x6ac0c7,
];

fn q8_mantissa(j: u32) -> u32 {
    MANTISSAS[(j & 7) as usize]
}

/// `T[q]` of the table with top code `top`: f32(2^((q − top)/8)) for 0 < q ≤ top, 0 for
/// q = 0; built as 2^e · f32(2^(j/8)) with q − top = 8e + j, which is exact because every
/// entry is normal. `q8_table(q, Q8_TOP_U)` is SPEC's `U[q]`, `q8_table(q, Q8_TOP_S)` its
/// `S[q]`.
pub fn q8_table(q: u32, top: u32) -> f32 {
    if q == 0 {
        return 0.0;
    }
    let n = q as i32 - top as i32;
    let e = n >> 3;
    let j = (n & 7) as u32;
    f32::from_bits(((127 + e) as u32) << 23 | q8_mantissa(j))
}

/// 8·log2 of the f32 with bits `b`, plus a constant, in whole eighths, rounded down and at
/// most two below (the bits read as a piecewise-linear log2, subnormals normalised first): only where
/// [`q8_magnitude`]'s search starts, never its answer.
fn q8_log8(b: u32) -> i32 {
    if b >= 0x0080_0000 {
        return (b >> 20) as i32;
    }
    let shift = b.leading_zeros().wrapping_sub(8);
    ((b.wrapping_shl(shift)) >> 20) as i32 - (8u32.wrapping_mul(shift)) as i32
}

/// The code of `y` = |x| ≥ 0 against scale `a` ≥ 0 in the table with top code `top`: the
/// largest q with a·T\[q\] ≤ y (f32 products), raised by one when (y − lo) > u·(hi − lo), with
/// lo = a·T\[q\], hi = a·T\[q + 1\] and u = (r >> 8)·2^-24. y ≥ a gives the top code, a = 0
/// code 0, a non-finite a the top code.
pub fn q8_magnitude(y: f32, a: f32, r: u32, top: u32) -> u32 {
    let ab = a.to_bits();
    if !is_finite_bits(ab) {
        return top;
    }
    if ab == 0 {
        return 0;
    }
    if y >= a {
        return top;
    }
    let start = top as i32 + q8_log8(y.to_bits()) - q8_log8(ab);
    let mut q = start.clamp(0, top as i32 - 1) as u32;
    while q > 0 && a * q8_table(q, top) > y {
        q -= 1;
    }
    while q + 1 < top && a * q8_table(q + 1, top) <= y {
        q += 1;
    }
    let lo = a * q8_table(q, top);
    let hi = a * q8_table(q + 1, top);
    let u = (r >> 8) as f32 * f32::from_bits(0x3380_0000); // 2^-24
    if (y - lo) > u * (hi - lo) {
        q += 1;
    }
    q
}

/// The code 0…255 of `x` in an unsigned slot (s, σ, v, v_max) of a block with scale `a`.
pub fn q8_encode_u(x: f32, a: f32, r: u32) -> u32 {
    q8_magnitude(f32::from_bits(q8_abs_bits(x)), a, r, Q8_TOP_U)
}

/// The code of `x` in a signed slot (m, b, a) of a block with scale `a`: x's sign bit as bit
/// 7, then the code 0…127 of |x|; code 0 when the scale is 0.
pub fn q8_encode_s(x: f32, a: f32, r: u32) -> u32 {
    let q = q8_magnitude(f32::from_bits(q8_abs_bits(x)), a, r, Q8_TOP_S);
    if a.to_bits() == 0 {
        return 0;
    }
    ((x.to_bits() >> 24) & 0x80) | q
}

/// A·U\[c\] (one f32 multiply).
pub fn q8_decode_u(c: u32, a: f32) -> f32 {
    a * q8_table(c & 0xff, Q8_TOP_U)
}

/// ±A·S\[c & 0x7f\], negative when bit 7 is set.
pub fn q8_decode_s(c: u32, a: f32) -> f32 {
    let v = a * q8_table(c & 0x7f, Q8_TOP_S);
    if (c & 0x80) != 0 {
        -v
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random bits for the tests themselves (not the codec's): the i-th of stream `s`.
    fn bits(s: u32, i: u32) -> u32 {
        mix32(mix32(s).wrapping_add(i))
    }

    fn f32_in(lo_exp: i32, hi_exp: i32, s: u32, i: u32) -> f32 {
        // A normal f32 with exponent in [lo_exp, hi_exp) and random mantissa.
        let span = (hi_exp - lo_exp) as u32;
        let e = lo_exp + (bits(s, 2 * i) % span) as i32;
        f32::from_bits((((127 + e) as u32) << 23) | (bits(s, 2 * i + 1) & 0x7f_ffff))
    }

    #[test]
    fn mix_matches_an_independent_computation() {
        // From a Python transcription of SPEC §6's mix.
        assert_eq!(mix32(0), 0);
        assert_eq!(mix32(1), 0x688990c0);
        assert_eq!(mix32(2), 0xd1132181);
        assert_eq!(mix32(0xffff_ffff), 0x6768824a);
        assert_eq!(mix32(12345), 0x912efcf7);
        assert_eq!(state_key(7, 2, 100), 0xbc504dbf);
        assert_eq!(element_bits(5, 0xffff_fffe), mix32(3));
    }

    /// Exact check that `c` = m·2^E (m < 2^24) is 2^(n/8) rounded once to nearest: the two
    /// midpoints around it, raised to the 8th power in integers, straddle 2^n.
    fn is_correctly_rounded_root(c: f32, n: i32) -> bool {
        if n % 8 == 0 {
            return c == 2f32.powi(n / 8);
        }
        let b = c.to_bits();
        let m = ((b & 0x7f_ffff) | 0x80_0000) as u64;
        let e = ((b >> 23) & 0xff) as i32 - 127 - 23; // c = m·2^e
                                                      // midpoint (2m ± 1)·2^(e−1); its 8th power (2m ± 1)^8·2^(8e−8) against 2^n.
        let p = n - 8 * e + 8; // compare (2m ± 1)^8 with 2^p
        let below = pow8(2 * m - 1);
        let above = pow8(2 * m + 1);
        less_than_pow2(&below, p) && !less_than_pow2(&above, p) && !is_pow2(&above, p)
    }

    /// x^8 as little-endian u32 limbs.
    fn pow8(x: u64) -> Vec<u32> {
        let mut acc = vec![1u32];
        for _ in 0..8 {
            let mut next = vec![0u32; acc.len() + 3];
            for (i, &limb) in acc.iter().enumerate() {
                let mut carry = 0u128;
                let prod = limb as u128 * x as u128;
                let mut k = i;
                let mut v = prod;
                while v != 0 || carry != 0 {
                    let s = next[k] as u128 + (v & 0xffff_ffff) + carry;
                    next[k] = s as u32;
                    carry = s >> 32;
                    v >>= 32;
                    k += 1;
                }
            }
            while next.len() > 1 && *next.last().unwrap() == 0 {
                next.pop();
            }
            acc = next;
        }
        acc
    }

    fn bit_length(x: &[u32]) -> i32 {
        let top = x.len() - 1;
        32 * top as i32 + (32 - x[top].leading_zeros() as i32)
    }

    fn is_pow2(x: &[u32], p: i32) -> bool {
        bit_length(x) == p + 1 && x.iter().map(|l| l.count_ones()).sum::<u32>() == 1
    }

    fn less_than_pow2(x: &[u32], p: i32) -> bool {
        bit_length(x) <= p
    }

    #[test]
    fn tables_are_the_f64_expressions_rounded_once() {
        for (top, name) in [(Q8_TOP_U, "U"), (Q8_TOP_S, "S")] {
            assert_eq!(q8_table(0, top), 0.0);
            for q in 1..=top {
                let n = q as i32 - top as i32;
                let t = q8_table(q, top);
                let f64_value = 2f64.powf(n as f64 / 8.0) as f32;
                assert_eq!(t.to_bits(), f64_value.to_bits(), "{name}[{q}] vs powf");
                assert!(is_correctly_rounded_root(t, n), "{name}[{q}] = {t:e}");
                assert!(t.is_normal());
            }
            assert_eq!(q8_table(top, top), 1.0);
        }
        // The exact check can fail: the neighbour of an entry is not correctly rounded.
        let t = q8_table(200, Q8_TOP_U);
        assert!(!is_correctly_rounded_root(
            f32::from_bits(t.to_bits() + 1),
            200 - 255
        ));
        assert!(!is_correctly_rounded_root(
            f32::from_bits(t.to_bits() - 1),
            200 - 255
        ));
    }

    #[test]
    fn every_bf16_code_round_trips() {
        for r in [
            0,
            1,
            0x7fff_ffff,
            0xffff_ffff,
            0x1234_5678,
            0xffff_0000,
            0x0000_ffff,
        ] {
            for c in 0..=0xffffu32 {
                let x = bf16_decode(c);
                assert_eq!(bf16_encode(x, r), c, "code {c:#06x}, r {r:#x}");
            }
        }
    }

    #[test]
    fn bf16_non_finite_values() {
        assert_eq!(bf16_encode(f32::INFINITY, u32::MAX), 0x7f80);
        assert_eq!(bf16_encode(f32::NEG_INFINITY, u32::MAX), 0xff80);
        // A NaN with payload only in its low 16 bits stays a NaN.
        let low_nan = f32::from_bits(0x7f80_0001);
        assert!(low_nan.is_nan());
        assert_eq!(bf16_encode(low_nan, 0), 0x7fc0);
        assert!(bf16_decode(bf16_encode(low_nan, 0)).is_nan());
        assert_eq!(bf16_encode(f32::NAN, 0), f32::NAN.to_bits() >> 16);
        assert_eq!(
            bf16_encode(-f32::NAN, u32::MAX),
            (-f32::NAN).to_bits() >> 16
        );
        // The largest finite f32 rounds up to Inf with r's top bits set: the next bf16 value.
        assert_eq!(bf16_encode(f32::MAX, u32::MAX), 0x7f80);
        assert_eq!(bf16_encode(f32::MAX, 0), 0x7f7f);
    }

    #[test]
    fn bf16_rounds_to_a_neighbour_and_without_bias() {
        let n = 40_000u32;
        for case in 0..200u32 {
            let x = f32_in(-40, 40, 11, case);
            let x = if case.is_multiple_of(2) { x } else { -x };
            let down = f32::from_bits(x.to_bits() & 0xffff_0000);
            let up = f32::from_bits((x.to_bits() & 0xffff_0000) + 0x1_0000);
            let key = state_key(case, 0, 1);
            let mut sum = 0f64;
            for i in 0..n {
                let y = bf16_decode(bf16_encode(x, element_bits(i, key)));
                assert!(y == down || y == up, "{x:e} -> {y:e}");
                sum += y as f64;
            }
            let mean = sum / n as f64;
            let step = (up as f64 - down as f64).abs();
            let p = (x as f64 - down as f64).abs() / step;
            let se = step * (p * (1.0 - p) / n as f64).sqrt();
            // 5 standard errors, plus the 2^-16 of a step that r's 16 bits cannot resolve.
            let bound = 5.0 * se + step * 2f64.powi(-16);
            assert!(
                (mean - x as f64).abs() <= bound,
                "{x:e}: mean {mean:e}, {} se",
                (mean - x as f64).abs() / se
            );
        }
    }

    /// Scales A at which every q8 code must round-trip: normal, across the range.
    fn scales() -> Vec<f32> {
        let mut scales = vec![1.0, f32::MAX, f32::from_bits(0x7f7f_fffe), 3.0e-3, 1e-30];
        scales.extend((0..2000).map(|i| f32_in(SMALLEST_EXACT_EXPONENT, 128, 5, i)));
        scales
    }

    /// The smallest binade from which every code round-trips at every A checked. Below it
    /// the products A·U\[q\] of small q are subnormal and two of them can coincide, so the
    /// larger code wins (signed slots, with S\[1\] = 2^-15.75, round-trip at every normal A
    /// checked).
    const SMALLEST_EXACT_EXPONENT: i32 = -113;

    /// The smallest A above which the products A·U\[q\] strictly increase (a scan of every
    /// f32 in \[2^-115, 2^-112\)): about 5.33706e-35 = 2^-113.85. The round trip holds from
    /// here on and fails just below.
    const SMALLEST_EXACT_SCALE_BITS: u32 = 0x068d_e226;

    fn round_trips(a: f32, r: u32) -> bool {
        (0..=Q8_TOP_U).all(|c| q8_encode_u(q8_decode_u(c, a), a, r) == c)
            && (0..=0xffu32).all(|c| q8_encode_s(q8_decode_s(c, a), a, r) == c)
    }

    #[test]
    fn every_q8_code_round_trips_at_normal_scales() {
        for (k, a) in scales().into_iter().enumerate() {
            for r in [0, u32::MAX, bits(3, k as u32)] {
                for c in 0..=Q8_TOP_U {
                    let x = q8_decode_u(c, a);
                    assert_eq!(q8_encode_u(x, a, r), c, "U code {c} at A = {a:e}, r {r:#x}");
                }
                for c in 0..=0xffu32 {
                    let x = q8_decode_s(c, a);
                    assert_eq!(q8_encode_s(x, a, r), c, "S code {c:#x} at A = {a:e}");
                }
            }
        }
    }

    #[test]
    fn q8_round_trip_fails_at_tiny_normal_scales() {
        // SPEC §6 claims it for every normal A; below about 2^-113.85 it fails (unsigned).
        let threshold = f32::from_bits(SMALLEST_EXACT_SCALE_BITS);
        assert!(round_trips(threshold, 0) && round_trips(threshold, u32::MAX));
        assert!(!round_trips(
            f32::from_bits(SMALLEST_EXACT_SCALE_BITS - 1),
            0
        ));
        assert!(!round_trips(f32::MIN_POSITIVE, 0));
        let failing = (0..400)
            .map(|i| f32_in(-126, -115, 9, i))
            .filter(|&a| !round_trips(a, 0))
            .count();
        assert_eq!(failing, 400);
        // Signed slots alone round-trip at every normal scale checked.
        for i in 0..400 {
            let a = f32_in(-126, -100, 10, i);
            assert!((0..=0xffu32).all(|c| q8_encode_s(q8_decode_s(c, a), a, 0) == c));
        }
        // From the threshold's binade up, every mantissa checked.
        for m in (0..(1u32 << 23)).step_by(997) {
            let a = f32::from_bits(((127 + SMALLEST_EXACT_EXPONENT) as u32) << 23 | m);
            assert!(round_trips(a, 0), "A = {a:e}");
        }
    }

    type Encode = fn(f32, f32, u32) -> u32;
    type Decode = fn(u32, f32) -> f32;

    #[test]
    fn q8_codes_bracket_the_value_and_are_unbiased() {
        let n = 20_000u32;
        for case in 0..300u32 {
            let a = f32_in(-60, 60, 21, case);
            // y spread over the whole table, down to and below the smallest nonzero code.
            let ratio = 2f32.powf(-((bits(22, case) % 40_000) as f32) / 1000.0);
            let x = a * ratio;
            let x = if case.is_multiple_of(2) { x } else { -x };
            let signed = case % 3 == 0;
            let (top, enc, dec): (u32, Encode, Decode) = if signed {
                (Q8_TOP_S, q8_encode_s, q8_decode_s)
            } else {
                (Q8_TOP_U, q8_encode_u, q8_decode_u)
            };
            let y = x.abs().min(a);
            let q = (0..=top)
                .rev()
                .find(|&q| a * q8_table(q, top) <= y)
                .unwrap();
            let lo = a * q8_table(q, top);
            let hi = if q == top {
                lo
            } else {
                a * q8_table(q + 1, top)
            };
            let key = state_key(case, 1, 7);
            let mut sum = 0f64;
            for i in 0..n {
                let v = dec(enc(x, a, element_bits(i, key)), a);
                assert!(
                    v.abs() == lo || v.abs() == hi,
                    "{x:e} in [{lo:e}, {hi:e}]: {v:e}"
                );
                if signed && v != 0.0 {
                    assert_eq!(v.is_sign_negative(), x.is_sign_negative());
                }
                sum += v.abs() as f64;
            }
            let mean = sum / n as f64;
            let step = hi as f64 - lo as f64;
            if step == 0.0 {
                assert_eq!(mean, y as f64);
                continue;
            }
            let p = (y as f64 - lo as f64) / step;
            let se = step * (p * (1.0 - p) / n as f64).sqrt();
            // 5 standard errors, plus the 2^-24 of a step that u cannot resolve and the
            // rounding of u·(hi − lo).
            let bound = 5.0 * se + step * 2f64.powi(-22);
            assert!(
                (mean - y as f64).abs() <= bound,
                "A = {a:e}, x = {x:e}: mean {mean:e} is {} se off",
                (mean - y as f64).abs() / se
            );
        }
    }

    #[test]
    fn a_block_of_equal_values_and_a_block_maximum_are_stored_exactly() {
        for case in 0..500u32 {
            let x = f32_in(-126, 128, 31, case);
            let x = if case.is_multiple_of(2) { x } else { -x };
            let block = [x; Q8_BLOCK];
            let a = q8_scale(&block);
            assert_eq!(a, x.abs());
            for (i, &v) in block.iter().enumerate() {
                let r = bits(case, i as u32);
                assert_eq!(q8_decode_u(q8_encode_u(v, a, r), a), x.abs());
                assert_eq!(q8_decode_s(q8_encode_s(v, a, r), a).to_bits(), x.to_bits());
            }
            // A random block: its maximum (either sign) decodes to itself.
            let block: Vec<f32> = (0..Q8_BLOCK as u32)
                .map(|i| {
                    let v = f32_in(-30, 30, case + 1000, i);
                    if bits(case + 2000, i).is_multiple_of(2) {
                        v
                    } else {
                        -v
                    }
                })
                .collect();
            let a = q8_scale(&block);
            let top = block.iter().find(|v| v.abs() == a).unwrap();
            let r = bits(case, 9);
            assert_eq!(
                q8_decode_s(q8_encode_s(*top, a, r), a).to_bits(),
                top.to_bits()
            );
            assert_eq!(q8_decode_u(q8_encode_u(*top, a, r), a), a);
        }
    }

    #[test]
    fn q8_non_finite_and_zero_blocks() {
        let mut block = [0.5f32; Q8_BLOCK];
        block[7] = f32::INFINITY;
        block[9] = -f32::INFINITY;
        let a = q8_scale(&block);
        assert_eq!(a, f32::INFINITY);
        block[100] = f32::NAN;
        let a_nan = q8_scale(&block);
        assert!(a_nan.is_nan());
        for r in [0, u32::MAX] {
            assert_eq!(q8_encode_u(0.5, a, r), Q8_TOP_U);
            assert_eq!(q8_encode_s(-0.5, a, r), 0x80 | Q8_TOP_S);
            assert_eq!(q8_decode_s(q8_encode_s(-0.5, a, r), a), -f32::INFINITY);
            assert!(q8_decode_u(q8_encode_u(0.5, a_nan, r), a_nan).is_nan());
            assert!(q8_decode_s(q8_encode_s(f32::NAN, a_nan, r), a_nan).is_nan());
        }
        // A = 0: scale 0, codes 0, whatever the sign of zero.
        let zeros = [0.0f32, -0.0, 0.0];
        let a = q8_scale(&zeros);
        assert_eq!(a.to_bits(), 0);
        for (i, &z) in zeros.iter().enumerate() {
            assert_eq!(q8_encode_u(z, a, bits(1, i as u32)), 0);
            assert_eq!(q8_encode_s(z, a, bits(1, i as u32)), 0);
        }
        assert_eq!(q8_decode_u(0, 0.0).to_bits(), 0);
        assert_eq!(q8_decode_s(0, 0.0).to_bits(), 0);
    }

    #[test]
    fn the_search_starts_at_most_two_eighths_below() {
        // Only speed depends on it, but a far start would mean long loops: at most two steps.
        for i in 0..100_000u32 {
            let y = f32_in(-149 + 30, 127, 41, i);
            let exact = 8.0 * (y as f64).log2();
            let start = (q8_log8(y.to_bits()) - q8_log8(1f32.to_bits())) as f64;
            assert!(
                start <= exact && start > exact - 2.0,
                "{y:e}: {start} vs {exact}"
            );
        }
        for b in 1..0x80_0000u32 {
            if b % 4099 != 1 {
                continue;
            }
            let exact = 8.0 * (f32::from_bits(b) as f64).log2();
            let start = (q8_log8(b) - q8_log8(1f32.to_bits())) as f64;
            assert!(
                start <= exact && start > exact - 2.0,
                "subnormal {b:#x}: {start} vs {exact}"
            );
        }
    }
}
