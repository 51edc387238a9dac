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

use crate::config::{StateFormat, STATE_Q8_BLOCK};
use crate::layout::GroupSpec;
use crate::reference::state_codec as codec;

/// One tensor of a group: where it lies in the arena, the flat index (in the group's order)
/// of its first element, and its first q8 block in the slot's scales.
#[derive(Clone, Debug)]
pub(crate) struct Piece {
    pub range: Range<usize>,
    pub flat: usize,
    pub first_block: usize,
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
fn is_signed(name: &str) -> bool {
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

    /// Every slot decoded to f32 (unused slots empty).
    pub fn decode(&self) -> Vec<Vec<f32>> {
        (0..self.slots.len()).map(|k| self.decode_slot(k)).collect()
    }

    /// Slot `k` decoded to f32 over the whole arena, in one parallel pass; empty if unused.
    pub fn decode_slot(&self, k: usize) -> Vec<f32> {
        let Some(slot) = &self.slots[k] else {
            return Vec::new();
        };
        // Zeroed pages cost nothing until written: each element is written once, here.
        let mut out = vec![0.0; self.len];
        let spans = self.spans(HELD_CHUNK);
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
            CodesRef::Bf16(codes) => {
                for (o, &c) in out.iter_mut().zip(codes) {
                    *o = codec::bf16_decode(u32::from(c));
                }
            }
            CodesRef::Q8 { codes, scales } => {
                let blocks = out
                    .chunks_mut(STATE_Q8_BLOCK)
                    .zip(codes.chunks(STATE_Q8_BLOCK));
                for ((o, c), &a) in blocks.zip(scales) {
                    if signed {
                        for (o, &c) in o.iter_mut().zip(c) {
                            *o = codec::q8_decode_s(u32::from(c), a);
                        }
                    } else {
                        for (o, &c) in o.iter_mut().zip(c) {
                            *o = codec::q8_decode_u(u32::from(c), a);
                        }
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
            SpanCodes::Bf16(codes) => {
                for (j, (c, &x)) in codes.iter_mut().zip(values).enumerate() {
                    let r = codec::element_bits((flat + j) as u32, key);
                    *c = codec::bf16_encode(x, r) as u16;
                }
            }
            SpanCodes::Q8 { codes, scales } => {
                let blocks = codes
                    .chunks_mut(STATE_Q8_BLOCK)
                    .zip(values.chunks(STATE_Q8_BLOCK));
                for (b, ((c, v), a)) in blocks.zip(scales.iter_mut()).enumerate() {
                    let scale = codec::q8_scale(v);
                    *a = scale;
                    let i0 = flat + b * STATE_Q8_BLOCK;
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
