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
//! both. A device that splits a group over several bindings (more than one storage binding's
//! worth, or a scalar tail in the caller's buffers) gives each binding its own region: still
//! deterministic, but the sum may then differ from the reference's in the last bits. So do
//! tensors in the caller's buffers (`GpuOptimizer::from_tensors_in`): each run of their
//! segment tables has a region, a partial per row of 256 lane groups of one tensor.

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

/// One block (at most [`NORM_BLOCK`] elements): the NaN and ±Inf elements of g / S, and the
/// sum of the squares of the finite ones in the canonical order. One read of g.
#[inline(always)]
pub fn block_partial(g: &[f32], scale: f32) -> (u64, f32) {
    debug_assert!(g.len() <= NORM_BLOCK);
    let mut v = [0.0f32; NORM_BLOCK];
    let mut bad = 0u32;
    for (slot, &x) in v.iter_mut().zip(g) {
        let u = x / scale;
        // SPEC §4's bit test, branch-free so that the loop vectorizes.
        let finite = u.to_bits() & 0x7f80_0000 != 0x7f80_0000;
        bad += u32::from(!finite);
        *slot = if finite { u * u } else { 0.0 };
    }
    (u64::from(bad), halve(&mut v))
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
        for (o, x) in out.iter_mut().zip(g) {
            *o = x / scale * factor;
        }
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
