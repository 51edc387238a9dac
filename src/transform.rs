//! The training step around the update (SPEC §4b): unscaling by the loss scale S, clipping by
//! the global norm, applied to the raw gradient before weight decay, prior or momentum.
//!
//! The global norm is a sum over every group, so its rounding depends on the order of the
//! additions. That order is fixed here, once, and the device follows it, so a step is
//! bit-identical on the CPU reference and on an IEEE adapter (lavapipe), and repeats run to run
//! everywhere:
//! 1. each group's arena is cut into blocks of [`NORM_BLOCK`] elements from its start; a block
//!    sums the squares of its finite unscaled elements (0 for the rest, and past the arena's
//!    end) by halving: `v[i] += v[i + s]` for s = 512, 256, …, 1 (one GPU workgroup of 256
//!    invocations at vec4 width);
//! 2. each group's block sums ("partials") fill a region of [`partial_slots`] slots, zeros after
//!    its blocks (so that every region starts at the device's storage offset alignment), and
//!    the regions follow one another group by group;
//! 3. [`reduce_partials`]: lane k of 256 sums slots k, k + 256, k + 512, … in that order, then
//!    the 256 lane sums halve as in 1.
//!
//! N = sqrt(sum) and c = min(1, M / (N + 1e-6)) are f32 operations, correctly rounded on
//! both. A group split over several bindings keeps this order when its bindings hold whole
//! multiples of 65,536 elements (64 partials of 1,024: a region without padding), which the
//! host cuts wherever a binding holds that many (`binding_chunks`). Otherwise (bindings
//! smaller than 256 KiB, several buffers, or a scalar tail in the caller's buffers) each
//! binding has its own region: still deterministic, but the sum may then differ from the
//! reference's in the last bits. So do tensors in the caller's buffers
//! (`GpuOptimizer::from_tensors_in`): each run of their segment tables has a region, a partial
//! per row of 256 lane groups of one tensor.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Elements per partial sum: one workgroup of 256 invocations at vec4 width.
pub const NORM_BLOCK: usize = 1024;

/// A group's partials start at a multiple of this many slots: 256 bytes, the largest storage
/// offset alignment WebGPU allows, so a region is bound where it starts.
pub const PARTIAL_ALIGN: usize = 64;

/// Lanes of the final reduction (one workgroup).
pub const REDUCE_LANES: usize = 256;

/// Added to the norm before dividing, as `torch.nn.utils.clip_grad_norm_` does.
pub const NORM_EPS: f32 = 1e-6;

/// What every step does to the raw gradient g, over all groups, in this order: g ← g / S;
/// then, with clipping, g ← g · min(1, M / (‖g‖ + 1e-6)), ‖g‖ over the finite elements.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradTransform {
    /// S > 0 (default 1): the loss scale the gradient is divided by. On the GPU a device
    /// buffer may supply it instead (see `GpuOptimizer::set_grad_scale_buffer`).
    pub grad_scale: f32,
    /// M > 0 (default off): the global norm the gradient is clipped to. `inf` computes the
    /// norm for the record without clipping.
    pub clip_norm: Option<f32>,
    /// K ≥ 1 (default off): after K skipped steps in a row (a group skipped for non-finite
    /// gradients), the next step call fails, naming K, as optax's `apply_if_finite`.
    pub max_consecutive_skips: Option<u64>,
}

impl Default for GradTransform {
    fn default() -> Self {
        GradTransform {
            grad_scale: 1.0,
            clip_norm: None,
            max_consecutive_skips: None,
        }
    }
}

fn invalid(field: &'static str, value: impl std::fmt::Debug, allowed: &'static str) -> Error {
    Error::config("gradient transform", field, value, allowed)
}

impl GradTransform {
    pub fn validate(&self) -> Result<()> {
        let s = self.grad_scale;
        if !(s.is_finite() && s > 0.0) {
            return Err(invalid("grad_scale", s, "a finite scale > 0"));
        }
        if let Some(m) = self.clip_norm {
            if m.is_nan() || m <= 0.0 {
                return Err(invalid("clip_norm", m, "a norm > 0 (inf: measure only)"));
            }
        }
        if self.max_consecutive_skips == Some(0) {
            return Err(invalid("max_consecutive_skips", 0, "at least 1"));
        }
        Ok(())
    }

    /// Whether a step leaves g exactly as it is (then nothing is computed for it).
    pub fn is_identity(&self) -> bool {
        self.grad_scale == 1.0 && self.clip_norm.is_none()
    }
}

/// The norm and clip factor of one step, as applied.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormReport {
    /// The step call, counting every call (applied or not) from 1.
    pub call: u64,
    /// ‖g / S‖ over the finite elements of every group, before clipping.
    pub norm: f32,
    /// c = min(1, M / (norm + 1e-6)), the factor g was multiplied by.
    pub factor: f32,
}

/// Slots of a group's region of partials: its blocks, then zeros up to [`PARTIAL_ALIGN`].
pub fn partial_slots(arena_len: usize) -> usize {
    arena_len
        .div_ceil(NORM_BLOCK)
        .max(1)
        .next_multiple_of(PARTIAL_ALIGN)
}

/// Halves `v` (a power of two long) into `v[0]`: `v[i] += v[i + s]` for s = len/2, …, 1.
#[inline(always)]
fn halve(v: &mut [f32]) -> f32 {
    let mut s = v.len() / 2;
    while s > 0 {
        let (low, high) = v.split_at_mut(s);
        for (a, b) in low.iter_mut().zip(&high[..s]) {
            *a += *b;
        }
        s /= 2;
    }
    v[0]
}

/// The reciprocal of `scale` where multiplying by it gives exactly the bits of dividing by
/// `scale`: a normal power of two 2^k, whose reciprocal 2^−k (k in [−126, 127]) is exact in
/// f32, so that x · 2^−k and x / 2^k are the same real number, rounded once by the same IEEE
/// rule. Loss scales are powers of two (GradScaler's start, growth and backoff keep them so),
/// and a multiplication costs a fraction of a division: on two cores the unscaling's
/// divisions showed in the fused step's time.
#[inline(always)]
fn exact_reciprocal(scale: f32) -> Option<f32> {
    (scale.is_normal() && scale.to_bits() & 0x007f_ffff == 0).then(|| 1.0 / scale)
}

/// Runs `job` with g ↦ g / `scale`, as a multiplication where that is exact
/// ([`exact_reciprocal`]); each closure is its own loop, so both vectorize.
#[inline(always)]
fn with_unscale<R>(scale: f32, job: impl Unscaled<R>) -> R {
    match exact_reciprocal(scale) {
        Some(r) => job.run(move |x: f32| x * r),
        None => job.run(move |x: f32| x / scale),
    }
}

/// A loop over g / S, generic in how the division is done (see [`with_unscale`]).
trait Unscaled<R> {
    fn run(self, unscale: impl Fn(f32) -> f32 + Copy) -> R;
}

/// One block (at most [`NORM_BLOCK`] elements): the NaN and ±Inf elements of g / S, and the
/// sum of the squares of the finite ones in the canonical order. One read of g.
#[inline(always)]
pub fn block_partial(g: &[f32], scale: f32) -> (u64, f32) {
    struct Block<'a>(&'a [f32]);
    impl Unscaled<(u64, f32)> for Block<'_> {
        #[inline(always)]
        fn run(self, unscale: impl Fn(f32) -> f32 + Copy) -> (u64, f32) {
            match <&[f32; NORM_BLOCK]>::try_from(self.0) {
                Ok(whole) => whole_block(whole, unscale),
                Err(_) => padded_block(self.0, unscale),
            }
        }
    }
    with_unscale(scale, Block(g))
}

/// [`block_partial`] as the canonical order writes it: every square stored, zeros past the
/// end, then halved. The last block of an arena, which may be short, takes this path.
#[inline(always)]
fn padded_block(g: &[f32], unscale: impl Fn(f32) -> f32 + Copy) -> (u64, f32) {
    debug_assert!(g.len() <= NORM_BLOCK);
    let mut v = [0.0f32; NORM_BLOCK];
    let mut bad = 0u32;
    for (slot, &x) in v.iter_mut().zip(g) {
        let u = unscale(x);
        // SPEC §4's bit test, branch-free so that the loop vectorizes.
        let finite = u.to_bits() & 0x7f80_0000 != 0x7f80_0000;
        bad += u32::from(!finite);
        *slot = if finite { u * u } else { 0.0 };
    }
    (u64::from(bad), halve(&mut v))
}

/// Lanes a whole block's first three halvings leave: [`NORM_BLOCK`] / 8.
const FOLDED: usize = NORM_BLOCK / 8;

/// [`block_partial`] of a whole block, with the same additions in the same order but the
/// first three halvings (s = 512, 256, 128) done as each lane's eight squares are loaded,
/// in registers: the block is read once and only 128 sums are stored, where writing all
/// 1024 squares out and reading them back made the scan cost twice the plain step's count.
///
/// The squares are first summed as they are, without the finite test: when every g / S is
/// finite the test selects every square, so a finite sum has the bits the test would give,
/// and no element was NaN or ±Inf (its square would have made the sum NaN or ∞). Only a
/// block whose sum is not finite (a non-finite element, or squares too large) is summed
/// again with the test and counted. The scan then does little more arithmetic per element
/// than the plain step's count.
#[inline(always)]
fn whole_block(g: &[f32; NORM_BLOCK], unscale: impl Fn(f32) -> f32 + Copy) -> (u64, f32) {
    let sum = folded_sum(g, unscale, |u| u * u);
    if sum.is_finite() {
        return (0, sum);
    }
    let bad_of = |u: f32| u.to_bits() & 0x7f80_0000 == 0x7f80_0000;
    let bad = g.iter().filter(|&&x| bad_of(unscale(x))).count() as u64;
    let square = move |u: f32| if bad_of(u) { 0.0 } else { u * u };
    (bad, folded_sum(g, unscale, square))
}

/// The canonical sum of `square(g / S)` over a whole block, its first three halvings folded
/// into the loads (see [`whole_block`]).
#[inline(always)]
fn folded_sum(
    g: &[f32; NORM_BLOCK],
    unscale: impl Fn(f32) -> f32 + Copy,
    square: impl Fn(f32) -> f32 + Copy,
) -> f32 {
    // Lane i's squares lie at i + 128·j: s = 512 adds j + 4 to j, s = 256 j + 2, s = 128 j + 1.
    let rows: [&[f32; FOLDED]; 8] =
        std::array::from_fn(|j| g[j * FOLDED..][..FOLDED].try_into().expect("a row"));
    let mut v = [0.0f32; FOLDED];
    for (i, slot) in v.iter_mut().enumerate() {
        let q = rows.map(|row| square(unscale(row[i])));
        *slot = ((q[0] + q[4]) + (q[2] + q[6])) + ((q[1] + q[5]) + (q[3] + q[7]));
    }
    halve(&mut v)
}

crate::reference::simd_fn! {
    /// [`block_partial`] of each block of `g` into `partials` in order, at the widest SIMD
    /// the CPU has; the non-finite count.
    fn scan_blocks(g: &[f32], scale: f32, partials: &mut [f32]) -> u64 {
        let mut bad = 0;
        for (block, slot) in g.chunks(NORM_BLOCK).zip(partials.iter_mut()) {
            let (count, partial) = block_partial(block, scale);
            bad += count;
            *slot = partial;
        }
        bad
    }
}

crate::reference::simd_fn! {
    /// `out[i] = g[i] / scale · factor`, the transformed gradient, as the device computes it.
    pub fn transform_into(g: &[f32], scale: f32, factor: f32, out: &mut [f32]) {
        struct Into<'a>(&'a [f32], f32, &'a mut [f32]);
        impl Unscaled<()> for Into<'_> {
            #[inline(always)]
            fn run(self, unscale: impl Fn(f32) -> f32 + Copy) {
                let Into(g, factor, out) = self;
                for (o, &x) in out.iter_mut().zip(g) {
                    *o = unscale(x) * factor;
                }
            }
        }
        with_unscale(scale, Into(g, factor, out))
    }
}

/// A group's arena: its non-finite count (of g / S) and its region of partials, in jobs of
/// `chunk` elements (a multiple of [`NORM_BLOCK`]) on every core when `parallel`.
pub fn scan_arena(arena: &[f32], scale: f32, parallel: bool, chunk: usize) -> (u64, Vec<f32>) {
    use rayon::prelude::*;
    debug_assert!(chunk.is_multiple_of(NORM_BLOCK));
    let mut partials = vec![0.0; partial_slots(arena.len())];
    let slots = chunk / NORM_BLOCK;
    let count = if parallel {
        arena
            .par_chunks(chunk)
            .zip(partials.par_chunks_mut(slots))
            .map(|(g, p)| scan_blocks(g, scale, p))
            .sum()
    } else {
        scan_blocks(arena, scale, &mut partials)
    };
    (count, partials)
}

/// The sum of every group's partials, regions concatenated, in the canonical order.
pub fn reduce_partials(partials: &[f32]) -> f32 {
    let mut lanes = [0.0f32; REDUCE_LANES];
    for (k, p) in partials.iter().enumerate() {
        lanes[k % REDUCE_LANES] += *p;
    }
    halve(&mut lanes)
}

/// N = sqrt(sum) and c = min(1, M / (N + 1e-6)); c = 1 without clipping. Written as a
/// comparison rather than `min` so that M = ∞ gives 1 even for N = ∞ (and the device does
/// the same).
pub fn norm_and_factor(sum_of_squares: f32, clip_norm: Option<f32>) -> (f32, f32) {
    let norm = sum_of_squares.sqrt();
    let factor = match clip_norm {
        Some(m) if m < norm + NORM_EPS => m / (norm + NORM_EPS),
        _ => 1.0,
    };
    (norm, factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The halving tree is the vec4 workgroup's: 256 vec4 sums halved by 128, …, 1, then
    /// (x + z) + (y + w).
    #[test]
    fn block_order_is_the_vec4_workgroup_tree() {
        let g: Vec<f32> = (0..NORM_BLOCK)
            .map(|i| ((i as f32) * 0.37).sin() * 10f32.powi((i % 13) as i32 - 6))
            .collect();
        let mut v4: Vec<[f32; 4]> = g
            .chunks(4)
            .map(|c| [c[0] * c[0], c[1] * c[1], c[2] * c[2], c[3] * c[3]])
            .collect();
        let mut s = 128;
        while s > 0 {
            let (low, high) = v4.split_at_mut(s);
            for (a, b) in low.iter_mut().zip(&high[..s]) {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
            }
            s /= 2;
        }
        let [x, y, z, w] = v4[0];
        assert_eq!(block_partial(&g, 1.0), (0, (x + z) + (y + w)));
        // A sequential sum rounds differently: the order is what is being pinned.
        let sequential: f32 = g.iter().map(|x| x * x).sum();
        assert_ne!(sequential, (x + z) + (y + w));
    }

    /// Values that stress the rounding of g / S: normal, subnormal, huge (g / S overflows
    /// for S < 1), zero, NaN and ±Inf.
    fn awkward_block(seed: u32) -> Vec<f32> {
        (0..NORM_BLOCK as u32)
            .map(|i| {
                let k = i.wrapping_mul(2_654_435_761).wrapping_add(seed);
                match k % 11 {
                    0 => f32::from_bits(k % 0x0080_0000),
                    1 => f32::from_bits(0x7f00_0000 | (k % 0x0080_0000)),
                    2 => 0.0,
                    3 if k % 5 == 0 => f32::NAN,
                    4 if k % 7 == 0 => f32::NEG_INFINITY,
                    _ => f32::from_bits(0x3000_0000 + k % 0x1800_0000),
                }
            })
            .map(|x| {
                if x.is_finite() && seed % 2 == 1 {
                    -x
                } else {
                    x
                }
            })
            .collect()
    }

    /// A whole block folds its first three halvings in registers; the bits must be those
    /// of the canonical order written out, for every kind of value.
    #[test]
    fn whole_blocks_sum_in_the_canonical_order() {
        for seed in 0..8 {
            let g = awkward_block(seed);
            let whole: &[f32; NORM_BLOCK] = g[..].try_into().unwrap();
            for scale in [1.0f32, 1000.0, 3.0e-5] {
                let unscale = move |x: f32| x / scale;
                let (a, b) = (whole_block(whole, unscale), padded_block(&g, unscale));
                assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()), "S = {scale}");
                assert!(a.0 > 0 && a.1 > 0.0);
            }
        }
        // Every element finite, but squares past f32::MAX: counted as finite, summed to ∞.
        let finite: Vec<f32> = (0..NORM_BLOCK).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut huge = finite.clone();
        huge[77] = 3e19;
        for g in [&finite, &huge] {
            let whole: &[f32; NORM_BLOCK] = g[..].try_into().unwrap();
            let (a, b) = (whole_block(whole, |x| x), padded_block(g, |x| x));
            assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()));
            assert_eq!(a.0, 0);
        }
        assert_eq!(block_partial(&huge, 1.0).1, f32::INFINITY);
    }

    /// Multiplying by 2^−k is dividing by 2^k, bit for bit, over the whole exponent range;
    /// any other scale is divided.
    #[test]
    fn powers_of_two_unscale_by_their_exact_reciprocal() {
        let powers = (-126..=127).map(|k| 2f32.powi(k));
        for (n, scale) in powers.enumerate() {
            assert!(exact_reciprocal(scale).is_some(), "{scale}");
            let g = awkward_block(n as u32);
            let divided = padded_block(&g, |x| x / scale);
            let (count, sum) = block_partial(&g, scale);
            assert_eq!(
                (count, sum.to_bits()),
                (divided.0, divided.1.to_bits()),
                "S = {scale}"
            );
            let mut out = vec![0.0; g.len()];
            transform_into(&g, scale, 0.75, &mut out);
            for (x, o) in g.iter().zip(&out) {
                assert_eq!(o.to_bits(), (x / scale * 0.75).to_bits(), "{x} / {scale}");
            }
        }
        for scale in [3.0, 1000.0, 1e-40, f32::MAX, 2f32.powi(-127)] {
            assert_eq!(exact_reciprocal(scale), None, "{scale}");
        }
    }

    #[test]
    fn nonfinite_elements_count_and_add_nothing() {
        let mut g = vec![3.0f32; 10];
        g[2] = f32::NAN;
        g[7] = f32::NEG_INFINITY;
        let (bad, sum) = block_partial(&g, 1.0);
        assert_eq!((bad, sum), (2, 72.0));
        // Unscaling can overflow a finite gradient: g / S is what is tested.
        let (bad, _) = block_partial(&[1e30, 1.0], 1e-10);
        assert_eq!(bad, 1);
    }

    #[test]
    fn partials_reduce_lane_by_lane_then_by_halving() {
        let partials: Vec<f32> = (0..700).map(|k| 1.0 + k as f32 * 1e-3).collect();
        let mut lanes = [0.0f32; REDUCE_LANES];
        for (k, p) in partials.iter().enumerate() {
            lanes[k % 256] += p;
        }
        let want = halve(&mut lanes.clone());
        assert_eq!(reduce_partials(&partials), want);
        let exact: f64 = partials.iter().map(|&p| p as f64).sum();
        assert!((want as f64 - exact).abs() / exact < 1e-6);
    }

    #[test]
    fn factor_clips_like_torch_and_never_scales_up() {
        assert_eq!(norm_and_factor(16.0, None), (4.0, 1.0));
        assert_eq!(norm_and_factor(16.0, Some(8.0)), (4.0, 1.0));
        assert_eq!(norm_and_factor(16.0, Some(2.0)), (4.0, 2.0 / (4.0 + 1e-6)));
        assert_eq!(norm_and_factor(f32::INFINITY, Some(f32::INFINITY)).1, 1.0);
        assert_eq!(norm_and_factor(f32::INFINITY, Some(1.0)).1, 0.0);
    }

    #[test]
    fn bad_values_are_refused() {
        for (bad, field) in [
            (
                GradTransform {
                    grad_scale: 0.0,
                    ..Default::default()
                },
                "grad_scale",
            ),
            (
                GradTransform {
                    clip_norm: Some(-1.0),
                    ..Default::default()
                },
                "clip_norm",
            ),
            (
                GradTransform {
                    max_consecutive_skips: Some(0),
                    ..Default::default()
                },
                "max_consecutive_skips",
            ),
        ] {
            assert!(bad.validate().unwrap_err().to_string().contains(field));
        }
    }
}
