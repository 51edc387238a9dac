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

/// The error of a checkpoint of a group whose state is not `f32`, if `layout` has one: never
/// write decoded bf16/q8 state as if it were f32 (SPEC §6: as held, or refused).
pub(crate) fn refuse_checkpoint(layout: &crate::layout::Layout, what: &str) -> crate::Result<()> {
    match layout
        .groups()
        .iter()
        .find(|spec| spec.state_format != StateFormat::F32)
    {
        None => Ok(()),
        Some(spec) => Err(crate::Error::Unsupported(format!(
            "{what} of a {} optimizer state (group `{}`) is not yet supported; only f32 state \
             is checkpointed",
            spec.state_format, spec.name
        ))),
    }
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

    /// Slot `k`'s bf16 codes over the whole arena (the padding's are 0); `None` for an
    /// unused slot or another format.
    pub fn bf16_codes(&self, k: usize) -> Option<&[u16]> {
        match &self.slots[k].as_ref()?.codes {
            Codes::Bf16(codes) => Some(codes),
            Codes::Q8 { .. } => None,
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

    /// Every slot decoded to f32 (unused slots empty).
    pub fn decode(&self) -> Vec<Vec<f32>> {
        (0..self.slots.len()).map(|k| self.decode_slot(k)).collect()
    }

    /// Slot `k` decoded to f32 over the whole arena; empty if unused.
    pub fn decode_slot(&self, k: usize) -> Vec<f32> {
        let Some(slot) = &self.slots[k] else {
            return Vec::new();
        };
        let mut out = vec![slot.init; self.len];
        match &slot.codes {
            Codes::Bf16(codes) => {
                for piece in &self.pieces {
                    for i in piece.range.clone() {
                        out[i] = codec::bf16_decode(u32::from(codes[i]));
                    }
                }
            }
            Codes::Q8 { codes, scales } => {
                for piece in &self.pieces {
                    let block_codes = codes[piece.range.clone()].chunks(STATE_Q8_BLOCK);
                    let block_out = out[piece.range.clone()].chunks_mut(STATE_Q8_BLOCK);
                    for (b, (c, o)) in block_codes.zip(block_out).enumerate() {
                        let a = scales[piece.first_block + b];
                        for (o, &c) in o.iter_mut().zip(c) {
                            *o = match slot.signed {
                                true => codec::q8_decode_s(u32::from(c), a),
                                false => codec::q8_decode_u(u32::from(c), a),
                            };
                        }
                    }
                }
            }
        }
        out
    }

    /// Encodes the new values `state` (one arena per slot, as [`Held::decode`] gives) at the
    /// applied step `t`, on every core when `parallel` (the same bits either way).
    pub fn encode(&mut self, state: &[Vec<f32>], t: u64, parallel: bool) {
        let seed = self.seed;
        for (slot, values) in self.slots.iter_mut().zip(state) {
            let Some(slot) = slot else { continue };
            let key = codec::state_key(seed, slot.k, t as u32);
            let signed = slot.signed;
            match &mut slot.codes {
                Codes::Bf16(codes) => {
                    let jobs = block_jobs(&self.pieces, codes, values);
                    let job = |(i0, c, v): (usize, &mut [u16], &[f32])| {
                        for (j, (c, &x)) in c.iter_mut().zip(v).enumerate() {
                            let r = codec::element_bits((i0 + j) as u32, key);
                            *c = codec::bf16_encode(x, r) as u16;
                        }
                    };
                    run(jobs, parallel, job);
                }
                Codes::Q8 { codes, scales } => {
                    // The scales lie block after block in piece order, as the blocks do.
                    let jobs: Vec<_> = block_jobs(&self.pieces, codes, values)
                        .into_iter()
                        .zip(scales.iter_mut())
                        .map(|((i0, c, v), a)| (i0, c, a, v))
                        .collect();
                    let job = |(i0, c, a, v): (usize, &mut [u8], &mut f32, &[f32])| {
                        let scale = codec::q8_scale(v);
                        *a = scale;
                        for (j, (c, &x)) in c.iter_mut().zip(v).enumerate() {
                            let r = codec::element_bits((i0 + j) as u32, key);
                            *c = match signed {
                                true => codec::q8_encode_s(x, scale, r),
                                false => codec::q8_encode_u(x, scale, r),
                            } as u8;
                        }
                    };
                    run(jobs, parallel, job);
                }
            }
        }
    }
}

/// Each piece's codes and new values cut into blocks of [`STATE_Q8_BLOCK`], from the piece's
/// start, with the flat index of each block's first element: the unit of work of an encode
/// (and, in q8, the block one scale covers).
fn block_jobs<'a, C>(
    pieces: &[Piece],
    codes: &'a mut [C],
    values: &'a [f32],
) -> Vec<(usize, &'a mut [C], &'a [f32])> {
    let mut jobs = Vec::new();
    let mut rest = codes;
    let mut at = 0;
    for piece in pieces {
        let (_, tail) = rest.split_at_mut(piece.range.start - at);
        let (mine, tail) = tail.split_at_mut(piece.range.len());
        rest = tail;
        at = piece.range.end;
        let values = &values[piece.range.clone()];
        for (j, (c, v)) in mine
            .chunks_mut(STATE_Q8_BLOCK)
            .zip(values.chunks(STATE_Q8_BLOCK))
            .enumerate()
        {
            jobs.push((piece.flat + j * STATE_Q8_BLOCK, c, v));
        }
    }
    jobs
}

/// q8 blocks of one tensor's slot.
fn blocks(piece: &Piece) -> usize {
    piece.range.len().div_ceil(STATE_Q8_BLOCK)
}

/// Runs `job` on each item, on every core when `parallel`.
fn run<T: Send>(jobs: Vec<T>, parallel: bool, job: impl Fn(T) + Sync + Send) {
    if parallel {
        jobs.into_par_iter().for_each(job);
    } else {
        jobs.into_iter().for_each(job);
    }
}
