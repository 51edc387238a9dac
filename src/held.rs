//! A group's optimizer state held in `bf16` or `q8` on the CPU (SPEC §6): the codes, and the
//! decode and encode of a whole group's arena around the unchanged f32 update.
//!
//! Each step decodes every used slot to an f32 arena, runs the f32 step (reference or fast
//! path, the same bits), and encodes the new values back with `r = mix(i + key_k)`, where
//! `key_k = state_key(seed, k, t)` and `i` is the element's index in its group's flat order
//! (its tensors one after another, without the arena's padding), mod 2^32. A q8 block is 256
//! elements of one tensor's slot, from the tensor's start; its scale is the maximum over the
//! block's new values. The encode of an element depends only on its value, its block's values,
//! `i` and the key, so the bits do not depend on the path, the chunking or the threads.
//!
//! The arena's padding between tensors is not part of any block: it holds codes (bf16) or
//! nothing meaningful (q8) and decodes as the slot's start value.

use std::ops::Range;

use rayon::prelude::*;

use crate::checkpoint::HeldVector;
use crate::config::{StateFormat, STATE_Q8_BLOCK};
use crate::layout::{GroupSpec, TensorSpec};
use crate::reference::state_codec as codec;

/// One tensor of a group: where it lies in the arena, the flat index (in the group's order)
/// of its first element, and its first q8 block in the slot's scales.
#[derive(Clone, Debug)]
pub(crate) struct Piece {
    pub range: Range<usize>,
    pub flat: usize,
    pub first_block: usize,
}

/// A group's `tensors` (in its arena order), with their flat starts in the group's order and
/// their first q8 blocks.
pub(crate) fn pieces<'a>(tensors: impl IntoIterator<Item = &'a TensorSpec>) -> Vec<Piece> {
    let mut flat = 0;
    let mut first_block = 0;
    tensors
        .into_iter()
        .map(|t| {
            let piece = Piece {
                range: t.range(),
                flat,
                first_block,
            };
            flat += t.len();
            first_block += t.len().div_ceil(STATE_Q8_BLOCK);
            piece
        })
        .collect()
}

/// One slot's codes.
#[derive(Clone, Debug)]
enum Codes {
    Bf16(Vec<u16>),
    Q8 { codes: Vec<u8>, scales: Vec<f32> },
}

#[derive(Clone, Debug)]
struct HeldSlot {
    /// SPEC §6's k: the slot's index in the optimizer's row.
    k: u32,
    /// m, b, a (sign and magnitude); the others are non-negative.
    signed: bool,
    /// The slot's start value, which the padding decodes as.
    init: f32,
    codes: Codes,
}

/// A group's state in `bf16` or `q8`: one entry per slot of the optimizer's row, `None` where
/// the options leave the slot unused.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    format: StateFormat,
    seed: u32,
    pieces: Vec<Piece>,
    len: usize,
    slots: Vec<Option<HeldSlot>>,
}

/// The slots of SPEC §2–§3 whose values carry a sign.
pub(crate) fn is_signed(name: &str) -> bool {
    matches!(name, "m" | "b" | "a")
}

impl Held {
    /// The state of `spec` over an arena of `len` elements holding `pieces`, each slot at its
    /// start value encoded at t = 0; `None` for `f32`, which the caller holds as it always has.
    pub fn new(spec: &GroupSpec, pieces: Vec<Piece>, len: usize) -> Option<Self> {
        let format = spec.state_format;
        if format == StateFormat::F32 {
            return None;
        }
        let slots = spec
            .config
            .as_dyn()
            .state_slots()
            .iter()
            .enumerate()
            .map(|(k, slot)| {
                slot.used.then(|| HeldSlot {
                    k: k as u32,
                    signed: is_signed(slot.name),
                    init: slot.init,
                    codes: match format {
                        StateFormat::Bf16 => Codes::Bf16(vec![0; len]),
                        _ => Codes::Q8 {
                            codes: vec![0; len],
                            scales: vec![0.0; pieces.iter().map(blocks).sum()],
                        },
                    },
                })
            })
            .collect();
        let mut held = Held {
            format,
            seed: spec.state_seed,
            pieces,
            len,
            slots,
        };
        let start: Vec<Vec<f32>> = held
            .slots
            .iter()
            .map(|s| s.as_ref().map_or(Vec::new(), |s| vec![s.init; len]))
            .collect();
        held.encode(&start, 0, false);
        Some(held)
    }

    pub fn format(&self) -> StateFormat {
        self.format
    }

    /// Slots of the optimizer's row, used or not.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Slot `k`'s bf16 codes over the whole arena (the padding's are 0); `None` for an
    /// unused slot or another format.
    pub fn bf16_codes(&self, k: usize) -> Option<&[u16]> {
        match &self.slots[k].as_ref()?.codes {
            Codes::Bf16(codes) => Some(codes),
            Codes::Q8 { .. } => None,
        }
    }

    /// Slot `k`'s q8 codes over the whole arena (the padding's are 0) and its scales, block
    /// after block in the pieces' order; `None` for an unused slot or another format.
    pub fn q8_codes(&self, k: usize) -> Option<(&[u8], &[f32])> {
        match &self.slots[k].as_ref()?.codes {
            Codes::Q8 { codes, scales } => Some((codes, scales)),
            Codes::Bf16(_) => None,
        }
    }

    /// Bytes the codes and scales take.
    pub fn bytes(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(|s| match &s.codes {
                Codes::Bf16(c) => 2 * c.len(),
                Codes::Q8 { codes, scales } => codes.len() + 4 * scales.len(),
            })
            .sum()
    }

    /// The codes and scales of every used slot, as bytes (for `bench`'s roofline).
    #[cfg(feature = "bench")]
    pub fn bytes_mut(&mut self) -> Vec<&mut [u8]> {
        let mut out = Vec::new();
        for slot in self.slots.iter_mut().flatten() {
            match &mut slot.codes {
                Codes::Bf16(c) => out.push(bytemuck::cast_slice_mut(&mut c[..])),
                Codes::Q8 { codes, scales } => {
                    out.push(&mut codes[..]);
                    out.push(bytemuck::cast_slice_mut(&mut scales[..]));
                }
            }
        }
        out
    }

    /// Every slot decoded to f32 (unused slots empty).
    pub fn decode(&self) -> Vec<Vec<f32>> {
        (0..self.slots.len()).map(|k| self.decode_slot(k)).collect()
    }

    /// Slot `k` decoded to f32 over the whole arena, in one parallel pass; empty if unused.
    pub fn decode_slot(&self, k: usize) -> Vec<f32> {
        self.decode_slot_in(k, 0..self.len)
    }

    /// Slot `k` decoded to f32 over `range` of the arena (the whole arena, or one tensor's
    /// range), in one parallel pass; empty if unused.
    pub fn decode_slot_in(&self, k: usize, range: Range<usize>) -> Vec<f32> {
        let Some(slot) = &self.slots[k] else {
            return Vec::new();
        };
        // Zeroed pages cost nothing until written: each element is written once, here.
        let mut out = vec![0.0; range.len()];
        let mut spans = self.spans(HELD_CHUNK);
        spans.retain(|s| range.start <= s.range.start && s.range.end <= range.end);
        debug_assert_eq!(
            spans.iter().map(|s| s.range.len()).sum::<usize>(),
            range.len()
        );
        let outs = cut_mut(&mut out, spans.iter().map(|s| s.range.len()));
        spans.par_iter().zip(outs).for_each(|(span, out)| {
            let blocks = span.first_block..span.first_block + span.blocks();
            let codes = match &slot.codes {
                Codes::Bf16(c) => CodesRef::Bf16(&c[span.range.clone()]),
                Codes::Q8 { codes, scales } => CodesRef::Q8 {
                    codes: &codes[span.range.clone()],
                    scales: &scales[blocks],
                },
            };
            match span.flat {
                Some(_) => codes.decode(slot.signed, out),
                None => out.fill(slot.init),
            }
        });
        out
    }

    /// Encodes the new values `state` (one arena per slot, as [`Held::decode`] gives) at the
    /// applied step `t`, on every core when `parallel` (the same bits either way).
    pub fn encode(&mut self, state: &[Vec<f32>], t: u64, parallel: bool) {
        let job = |mut span: HeldSpan| {
            for (k, values) in state.iter().enumerate() {
                if span.used(k) {
                    span.encode(k, &values[span.range()]);
                }
            }
        };
        let spans = self.spans_mut(t, HELD_CHUNK);
        if parallel {
            spans.into_par_iter().for_each(job);
        } else {
            spans.into_iter().for_each(job);
        }
    }

    /// The arena cut into spans, in order and covering it: each piece in runs of `chunk`
    /// elements (whole q8 blocks) from its start, each gap of padding whole.
    fn spans(&self, chunk: usize) -> Vec<Span> {
        debug_assert_eq!(chunk % STATE_Q8_BLOCK, 0);
        let mut spans = Vec::new();
        let mut at = 0;
        let gap = |range: Range<usize>, first_block| Span {
            range,
            flat: None,
            first_block,
        };
        for piece in &self.pieces {
            if piece.range.start > at {
                spans.push(gap(at..piece.range.start, piece.first_block));
            }
            for start in piece.range.clone().step_by(chunk) {
                let offset = start - piece.range.start;
                spans.push(Span {
                    range: start..(start + chunk).min(piece.range.end),
                    flat: Some(piece.flat + offset),
                    first_block: piece.first_block + offset / STATE_Q8_BLOCK,
                });
            }
            at = piece.range.end;
        }
        if at < self.len {
            let blocks = self.pieces.iter().map(blocks).sum();
            spans.push(gap(at..self.len, blocks));
        }
        spans
    }

    /// The codes of every used slot cut into spans of at most `chunk` elements (see
    /// [`Held::spans`]), keyed for encoding at the applied step `t`: the fused step's units
    /// of work, independent of each other.
    pub fn spans_mut(&mut self, t: u64, chunk: usize) -> Vec<HeldSpan<'_>> {
        let spans = self.spans(chunk);
        let seed = self.seed;
        let mut per_slot: Vec<Option<(SlotKey, std::vec::IntoIter<SpanCodes>)>> = self
            .slots
            .iter_mut()
            .map(|slot| {
                let slot = slot.as_mut()?;
                let key = SlotKey {
                    key: codec::state_key(seed, slot.k, t as u32),
                    signed: slot.signed,
                    init: slot.init,
                };
                let lens = spans.iter().map(|s| s.range.len());
                let codes: Vec<SpanCodes> = match &mut slot.codes {
                    Codes::Bf16(c) => cut_mut(c, lens).into_iter().map(SpanCodes::Bf16).collect(),
                    Codes::Q8 { codes, scales } => cut_mut(codes, lens)
                        .into_iter()
                        .zip(cut_mut(scales, spans.iter().map(Span::blocks)))
                        .map(|(codes, scales)| SpanCodes::Q8 { codes, scales })
                        .collect(),
                };
                Some((key, codes.into_iter()))
            })
            .collect();
        spans
            .into_iter()
            .map(|span| HeldSpan {
                span,
                slots: per_slot
                    .iter_mut()
                    .map(|s| {
                        let (key, codes) = s.as_mut()?;
                        Some((*key, codes.next().expect("one per span")))
                    })
                    .collect(),
            })
            .collect()
    }
}

/// q8 blocks of one tensor's slot.
fn blocks(piece: &Piece) -> usize {
    piece.range.len().div_ceil(STATE_Q8_BLOCK)
}

/// Elements of one span of the fused held step ([`Held::spans_mut`]): whole q8 blocks, so that
/// a span's θ, g, codes and decoded state (64 KiB per f32 array) stay in L2 between its decode,
/// update and encode.
pub(crate) const HELD_CHUNK: usize = 64 * STATE_Q8_BLOCK;

/// A stretch of the arena: part of one tensor's piece, whole blocks from the piece's start,
/// with the flat index of its first element and its first block; or a gap of padding
/// (`flat` is `None`), which holds no codes and decodes as each slot's start value.
#[derive(Clone, Debug)]
struct Span {
    range: Range<usize>,
    flat: Option<usize>,
    first_block: usize,
}

impl Span {
    /// q8 blocks (scales) the span covers.
    fn blocks(&self) -> usize {
        match self.flat {
            Some(_) => self.range.len().div_ceil(STATE_Q8_BLOCK),
            None => 0,
        }
    }
}

/// What a span needs of one used slot to encode: SPEC §6's key at the step, and the slot's
/// sign and start value.
#[derive(Clone, Copy, Debug)]
struct SlotKey {
    key: u32,
    signed: bool,
    init: f32,
}

/// One slot's codes over a span.
#[derive(Debug)]
enum SpanCodes<'a> {
    Bf16(&'a mut [u16]),
    Q8 {
        codes: &'a mut [u8],
        scales: &'a mut [f32],
    },
}

/// One slot's codes over a span, read-only: its codes, and the scales of its blocks (the
/// first covering the first code).
#[derive(Clone, Copy, Debug)]
enum CodesRef<'a> {
    Bf16(&'a [u16]),
    Q8 { codes: &'a [u8], scales: &'a [f32] },
}

impl CodesRef<'_> {
    /// The codes decoded into `out` (as long as the codes).
    fn decode(self, signed: bool, out: &mut [f32]) {
        match self {
            CodesRef::Bf16(codes) => bf16_decode_run(codes, out),
            CodesRef::Q8 { codes, scales } => {
                let blocks = out
                    .chunks_mut(STATE_Q8_BLOCK)
                    .zip(codes.chunks(STATE_Q8_BLOCK));
                for ((o, c), &a) in blocks.zip(scales) {
                    match signed {
                        true => q8_decode_block_s(c, a, o),
                        false => q8_decode_block_u(c, a, o),
                    }
                }
            }
        }
    }
}

/// The codes of every used slot over one span of the arena, for the fused step: decode,
/// update and encode while the span is in cache.
#[derive(Debug)]
pub(crate) struct HeldSpan<'a> {
    span: Span,
    slots: Vec<Option<(SlotKey, SpanCodes<'a>)>>,
}

impl HeldSpan<'_> {
    /// Where the span lies in the arena.
    pub fn range(&self) -> Range<usize> {
        self.span.range.clone()
    }

    /// Slots of the optimizer's row, used or not.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Whether slot `k` is held (used by the options).
    pub fn used(&self, k: usize) -> bool {
        self.slots[k].is_some()
    }

    fn codes(&self, k: usize) -> Option<(SlotKey, CodesRef<'_>)> {
        let (key, codes) = self.slots[k].as_ref()?;
        let codes = match codes {
            SpanCodes::Bf16(c) => CodesRef::Bf16(c),
            SpanCodes::Q8 { codes, scales } => CodesRef::Q8 { codes, scales },
        };
        Some((*key, codes))
    }

    /// Slot `k` decoded into `out` (as long as the span); the padding reads as the slot's
    /// start value.
    pub fn decode(&self, k: usize, out: &mut [f32]) {
        let Some((key, codes)) = self.codes(k) else {
            return;
        };
        match self.span.flat {
            Some(_) => codes.decode(key.signed, out),
            None => out.fill(key.init),
        }
    }

    /// Element `j` of slot `k`, decoded.
    pub fn decode_at(&self, k: usize, j: usize) -> f32 {
        let mut out = [0.0];
        if let Some((key, codes)) = self.codes(k) {
            let one = match (self.span.flat, codes) {
                (None, _) => return key.init,
                (_, CodesRef::Bf16(c)) => CodesRef::Bf16(&c[j..=j]),
                (_, CodesRef::Q8 { codes, scales }) => CodesRef::Q8 {
                    codes: &codes[j..=j],
                    scales: &scales[j / STATE_Q8_BLOCK..],
                },
            };
            one.decode(key.signed, &mut out);
        }
        out[0]
    }

    /// Encodes the new `values` (as long as the span) of slot `k`: SPEC §6, with each q8
    /// block's scale the maximum of its values. The padding stores nothing.
    pub fn encode(&mut self, k: usize, values: &[f32]) {
        let (Some(flat), Some((key, codes))) = (self.span.flat, &mut self.slots[k]) else {
            return;
        };
        let (key, signed) = (key.key, key.signed);
        match codes {
            SpanCodes::Bf16(codes) => bf16_encode_run(values, codes, flat as u32, key),
            SpanCodes::Q8 { codes, scales } => {
                let blocks = codes
                    .chunks_mut(STATE_Q8_BLOCK)
                    .zip(values.chunks(STATE_Q8_BLOCK));
                for (b, ((c, v), a)) in blocks.zip(scales.iter_mut()).enumerate() {
                    let i0 = flat + b * STATE_Q8_BLOCK;
                    let (scale, fast) = match signed {
                        true => q8_block_s(v, c, i0 as u32, key),
                        false => q8_block_u(v, c, i0 as u32, key),
                    };
                    *a = scale;
                    if fast {
                        continue;
                    }
                    for (j, (c, &x)) in c.iter_mut().zip(v).enumerate() {
                        let r = codec::element_bits((i0 + j) as u32, key);
                        *c = match signed {
                            true => codec::q8_encode_s(x, scale, r),
                            false => codec::q8_encode_u(x, scale, r),
                        } as u8;
                    }
                }
            }
        }
    }
}

/// `data` cut into consecutive pieces of `lens`.
fn cut_mut<T>(mut data: &mut [T], lens: impl IntoIterator<Item = usize>) -> Vec<&mut [T]> {
    lens.into_iter()
        .map(|n| {
            let (head, tail) = std::mem::take(&mut data).split_at_mut(n);
            data = tail;
            head
        })
        .collect()
}

crate::reference::simd_fn! {
    /// `codec::bf16_encode` over a run of `values` whose first flat index is `i0`,
    /// branch-free, at the widest SIMD the CPU has.
    fn bf16_encode_run(values: &[f32], codes: &mut [u16], i0: u32, key: u32) {
        for (j, (c, &x)) in codes.iter_mut().zip(values).enumerate() {
            let r = codec::element_bits(i0.wrapping_add(j as u32), key);
            let b = x.to_bits();
            let top = b >> 16;
            // A NaN whose top bits alone would read as ±Inf gets its quiet bit.
            let nan = (b & 0x007f_ffff != 0) & (top & 0x7f == 0);
            let kept = if nan { top | 0x40 } else { top };
            let finite = b & 0x7f80_0000 != 0x7f80_0000;
            *c = if finite { b.wrapping_add(r >> 16) >> 16 } else { kept } as u16;
        }
    }
}

crate::reference::simd_fn! {
    /// `codec::bf16_decode` over a run, at the widest SIMD the CPU has.
    fn bf16_decode_run(codes: &[u16], out: &mut [f32]) {
        for (o, &c) in out.iter_mut().zip(codes) {
            *o = codec::bf16_decode(u32::from(c));
        }
    }
}

crate::reference::simd_fn! {
    /// `codec::q8_decode_u` over a block, branch-free, at the widest SIMD the CPU has.
    fn q8_decode_block_u(codes: &[u8], a: f32, out: &mut [f32]) {
        for (o, &c) in out.iter_mut().zip(codes) {
            *o = a * table::<{ codec::Q8_TOP_U as usize }>(u32::from(c));
        }
    }
}

crate::reference::simd_fn! {
    /// `codec::q8_decode_s` over a block, branch-free, at the widest SIMD the CPU has.
    fn q8_decode_block_s(codes: &[u8], a: f32, out: &mut [f32]) {
        for (o, &c) in out.iter_mut().zip(codes) {
            let v = a * table::<{ codec::Q8_TOP_S as usize }>(u32::from(c & 0x7f));
            *o = if c & 0x80 != 0 { -v } else { v };
        }
    }
}

crate::reference::simd_fn! {
    /// [`q8_block`] of an unsigned slot, at the widest SIMD the CPU has.
    fn q8_block_u(values: &[f32], codes: &mut [u8], i0: u32, key: u32) -> (f32, bool) {
        q8_block::<{ codec::Q8_TOP_U as usize }, false>(values, codes, i0, key)
    }
}

crate::reference::simd_fn! {
    /// [`q8_block`] of a signed slot, at the widest SIMD the CPU has.
    fn q8_block_s(values: &[f32], codes: &mut [u8], i0: u32, key: u32) -> (f32, bool) {
        q8_block::<{ codec::Q8_TOP_S as usize }, true>(values, codes, i0, key)
    }
}

/// Whole eighths of an octave of the normal f32 with bits `b` (`8·exponent + j`, j the
/// eighths its mantissa reaches), given `eighths`, the mantissas of 2^(k/8) for k = 1…7.
#[inline(always)]
fn eighths_of(b: u32, eighths: &[u32; 7]) -> i32 {
    let m = b & 0x7f_ffff;
    8 * (b >> 23) as i32 + eighths.iter().map(|&e| i32::from(m >= e)).sum::<i32>()
}

/// `T[q]` of the table with top code `TOP` as `codec::q8_table` makes it, and +∞ above `TOP`,
/// branch-free (the mantissa picked by a tree of selects, as the WGSL picks it) so that loops
/// over it vectorize.
#[inline(always)]
fn table<const TOP: usize>(q: u32) -> f32 {
    let n = q as i32 - TOP as i32;
    let e = n >> 3;
    let j = (n & 7) as u32;
    let m = &codec::MANTISSAS;
    let pick = |bit: u32, one: u32, zero: u32| if j & bit != 0 { one } else { zero };
    let low = pick(2, pick(1, m[3], m[2]), pick(1, m[1], m[0]));
    let high = pick(2, pick(1, m[7], m[6]), pick(1, m[5], m[4]));
    let t = f32::from_bits(((127 + e) as u32) << 23 | pick(4, high, low));
    match (q == 0, q > TOP as u32) {
        (true, _) => 0.0,
        (_, true) => f32::INFINITY,
        _ => t,
    }
}

/// The scale A of one block of `values` (`codec::q8_scale`) and its q8 codes (its first
/// element's flat index `i0`), branch-free so that the loop vectorizes: the same codes as
/// `codec::q8_encode_u`/`_s` (SPEC §6). Each element's code is searched among four products
/// A·T\[q\] around its own eighths against A's, then rounded as the codec rounds. `false`
/// (codes unwritten or partly written) where the scale is 0 or not finite, or an element's
/// code lay outside its four: the caller then encodes the block with the codec.
#[inline(always)]
fn q8_block<const TOP: usize, const SIGNED: bool>(
    values: &[f32],
    codes: &mut [u8],
    i0: u32,
    key: u32,
) -> (f32, bool) {
    let ab = values
        .iter()
        .map(|&x| codec::q8_abs_bits(x))
        .fold(0, u32::max);
    let a = f32::from_bits(ab);
    if ab == 0 || ab & 0x7f80_0000 == 0x7f80_0000 {
        return (a, false);
    }
    let eighths: [u32; 7] = std::array::from_fn(|k| codec::MANTISSAS[k + 1]);
    let a_eighths = eighths_of(ab, &eighths);
    let mut exact = true;
    for (j, (c, &x)) in codes.iter_mut().zip(values).enumerate() {
        let b = x.to_bits() & 0x7fff_ffff;
        let y = f32::from_bits(b);
        // The code lies within one of TOP + (y's eighths − A's); zero and subnormal y at the
        // bottom.
        let guess = TOP as i32 + eighths_of(b, &eighths) - a_eighths;
        let k = match b < 0x0080_0000 {
            true => 1,
            false => guess.clamp(1, TOP as i32) as u32,
        };
        let s0 = a * table::<TOP>(k - 1);
        let s1 = a * table::<TOP>(k);
        let s2 = a * table::<TOP>(k + 1);
        let s3 = a * table::<TOP>(k + 2);
        let (up1, up2) = (s1 <= y, s2 <= y);
        let q = k - 1 + u32::from(up1) + u32::from(up2);
        let lo = if up2 {
            s2
        } else if up1 {
            s1
        } else {
            s0
        };
        let hi = if up2 {
            s3
        } else if up1 {
            s2
        } else {
            s1
        };
        let r = codec::element_bits(i0.wrapping_add(j as u32), key);
        let u = (r >> 8) as f32 * f32::from_bits(0x3380_0000); // 2^-24
        let q = q + u32::from((y - lo) > u * (hi - lo));
        let top = y >= a;
        let q = if top { TOP as u32 } else { q };
        // The largest q with A·T[q] ≤ y lay in the window: A·T[k − 1] ≤ y < A·T[k + 2].
        // (Bitwise, not short-circuit: no branch in the loop.)
        exact &= top | ((s0 <= y) & (s3 > y));
        *c = match SIGNED {
            true => ((x.to_bits() >> 24) & 0x80) | q,
            false => q,
        } as u8;
    }
    (a, exact)
}

/// Checkpoints: a tensor's state as held, out and back in (SPEC §6: stored as held, never
/// reinterpreted).
impl Held {
    /// The used slots of tensor `piece` as held, with their SPEC names (`names[k]` is slot
    /// k's), in slot order.
    pub fn export(&self, piece: usize, names: &[&str]) -> Vec<(String, HeldVector)> {
        let piece = &self.pieces[piece];
        let blocks = piece.first_block..piece.first_block + blocks(piece);
        self.slots
            .iter()
            .flatten()
            .map(|slot| {
                let vector = match &slot.codes {
                    Codes::Bf16(codes) => HeldVector::Bf16(codes[piece.range.clone()].to_vec()),
                    Codes::Q8 { codes, scales } => HeldVector::Q8 {
                        codes: codes[piece.range.clone()].to_vec(),
                        scales: scales[blocks.clone()].to_vec(),
                    },
                };
                (names[slot.k as usize].to_string(), vector)
            })
            .collect()
    }

    /// Puts back what [`Held::export`] gave for tensor `piece`, checked by the caller to fit
    /// (the same format, slots and lengths).
    pub fn import(&mut self, piece: usize, vectors: &[(String, HeldVector)]) {
        let piece = &self.pieces[piece];
        let blocks = piece.first_block..piece.first_block + blocks(piece);
        for (slot, (_, vector)) in self.slots.iter_mut().flatten().zip(vectors) {
            match (&mut slot.codes, vector) {
                (Codes::Bf16(codes), HeldVector::Bf16(saved)) => {
                    codes[piece.range.clone()].copy_from_slice(saved);
                }
                (
                    Codes::Q8 { codes, scales },
                    HeldVector::Q8 {
                        codes: c,
                        scales: a,
                    },
                ) => {
                    codes[piece.range.clone()].copy_from_slice(c);
                    scales[blocks.clone()].copy_from_slice(a);
                }
                _ => unreachable!("the checkpoint was checked to hold this format"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i0_of(seed: u32) -> u32 {
        seed.wrapping_mul(0x9e37_79b9)
    }

    /// Blocks over many decades, with zeros, subnormals, equal values, both signs and a
    /// maximum that repeats.
    fn block(seed: u32) -> Vec<f32> {
        (0..STATE_Q8_BLOCK as u32)
            .map(|j| {
                let r = codec::mix32(seed.wrapping_mul(7919).wrapping_add(j));
                let decades = [1e-30f32, 1e-6, 1.0, 3e4, 1e30][(seed % 5) as usize];
                let x = match r % 11 {
                    0 if seed.is_multiple_of(13) => {
                        [f32::NAN, f32::INFINITY, f32::from_bits(0x7f80_0001)][(r % 3) as usize]
                    }
                    0 => 0.0,
                    1 => f32::from_bits(r >> 10),
                    2 => decades,
                    _ => decades * (r >> 8) as f32 / (1 << 24) as f32,
                };
                if r & 1 == 1 {
                    -x
                } else {
                    x
                }
            })
            .collect()
    }

    /// The vectorized block encode gives the codec's codes, element for element, and takes
    /// the fast way on ordinary blocks; the block decode gives the codec's values.
    #[test]
    fn q8_block_equals_the_codec() {
        let mut fast_blocks = 0;
        for seed in 0..2000u32 {
            let mut v = block(seed);
            if seed.is_multiple_of(7) {
                v.truncate(1 + seed as usize % 255);
            }
            let a = codec::q8_scale(&v);
            let key = codec::mix32(seed);
            let mut bf16 = vec![0u16; v.len()];
            bf16_encode_run(&v, &mut bf16, i0_of(seed), key);
            for (j, (&c, &x)) in bf16.iter().zip(&v).enumerate() {
                let r = codec::element_bits(i0_of(seed).wrapping_add(j as u32), key);
                assert_eq!(u32::from(c), codec::bf16_encode(x, r), "bf16 {x:e}");
            }
            let i0 = i0_of(seed);
            for signed in [false, true] {
                let mut codes = vec![0u8; v.len()];
                let (scale, fast) = match signed {
                    true => q8_block_s(&v, &mut codes, i0, key),
                    false => q8_block_u(&v, &mut codes, i0, key),
                };
                assert_eq!(scale.to_bits(), a.to_bits());
                if !fast {
                    continue;
                }
                fast_blocks += 1;
                let mut decoded = vec![0.0; v.len()];
                match signed {
                    true => q8_decode_block_s(&codes, a, &mut decoded),
                    false => q8_decode_block_u(&codes, a, &mut decoded),
                }
                for (&c, &d) in codes.iter().zip(&decoded) {
                    let want = match signed {
                        true => codec::q8_decode_s(u32::from(c), a),
                        false => codec::q8_decode_u(u32::from(c), a),
                    };
                    assert_eq!(d.to_bits(), want.to_bits(), "decode {c} at {a:e}");
                }
                for (j, (&c, &x)) in codes.iter().zip(&v).enumerate() {
                    let r = codec::element_bits(i0.wrapping_add(j as u32), key);
                    let want = match signed {
                        true => codec::q8_encode_s(x, a, r),
                        false => codec::q8_encode_u(x, a, r),
                    };
                    assert_eq!(
                        u32::from(c),
                        want,
                        "seed {seed} signed {signed} x {x:e} a {a:e}"
                    );
                }
            }
        }
        assert!(fast_blocks > 3000, "{fast_blocks} blocks took the fast way");
    }
}
