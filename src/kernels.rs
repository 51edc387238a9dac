//! The WGSL kernels: their sources, and validation with naga (no adapter needed).

use wgpu::naga;

use crate::config::StateFormat;
use crate::error::Error;

/// The lane type `V` and the non-finite test, first in every module: one of these two.
const LANES_4: &str = include_str!("../shaders/lanes_4.wgsl");
const LANES_1: &str = include_str!("../shaders/lanes_1.wgsl");
/// Element indexing and the per-group status: in every module.
pub(crate) const COMMON: &str = include_str!("../shaders/common.wgsl");
/// The low-precision state's codec (SPEC §6): the random bits, bf16 and q8, per element; no
/// bindings. Its twin is [`crate::reference::state_codec`].
pub const STATE_CODEC: &str = include_str!("../shaders/state_codec.wgsl");
/// The binding convention of fused optimizer kernels: window of scalars, status, θ, g, state.
pub(crate) const FUSED: &str = include_str!("../shaders/fused.wgsl");

/// Entries of per-step scalars in a group's uniform window (`WINDOW` in `shaders/fused.wgsl`).
pub const WINDOW: usize = 8;
/// Bytes of the window's header (base, policy, norm, a pad, then the copy of the status that
/// the update reads, t and the non-finite count, and two pads) before the scalars.
pub const WINDOW_HEADER_BYTES: usize = 32;
/// Where in the window's header the status (t, non-finite count) is copied before the update.
pub const WINDOW_STATUS_OFFSET: u64 = 16;

/// How many consecutive elements one invocation handles. Every kernel body is written over the
/// lane type `V` and compiles at both widths; per element the arithmetic is the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lanes {
    /// `V = vec4<f32>`: vec4 loads and stores, for the body of a vector (a multiple of 4
    /// elements).
    Four,
    /// `V = f32`: the tail of a vector that the vec4 width cannot bind.
    One,
}

impl Lanes {
    pub const ALL: [Lanes; 2] = [Lanes::Four, Lanes::One];

    /// Elements per invocation.
    pub fn width(self) -> u32 {
        match self {
            Lanes::Four => 4,
            Lanes::One => 1,
        }
    }

    fn prelude(self) -> &'static str {
        match self {
            Lanes::Four => LANES_4,
            Lanes::One => LANES_1,
        }
    }
}

/// One WGSL module: the lane width, preludes, the declarations generated from `scalars` and
/// `states`, then `shaders/<name>.wgsl`.
#[derive(Debug)]
pub struct Kernel {
    pub name: &'static str,
    /// Sources prepended to the body, in order.
    pub preludes: &'static [&'static str],
    /// The fields of the uniform block `struct Scalars`, f32 each, generated before the body
    /// (padded to a multiple of 16 bytes); empty: no such struct. For an optimizer kernel,
    /// the `SCALARS` of its twin's `scalars!` declaration.
    pub scalars: &'static [&'static str],
    /// The state vectors, generated as `@group(0) @binding(4 + k) var<storage, read_write>
    /// NAME: array<V>;`. For an optimizer kernel, the state slots of its table row.
    pub states: &'static [&'static str],
    /// The branches of the update that its scalars decide (see [`Flag`]), for an optimizer
    /// kernel the `FLAGS` of its twin.
    pub flags: &'static [Flag],
    /// The shader file alone.
    pub body: &'static str,
}

/// A branch of a fused kernel's update that depends on its scalars alone (AMSGrad, momentum,
/// …). The kernel gets `override NAME: u32;` and `fn name(p: Scalars) -> bool`: with NAME = 0
/// or 1 the branch is a constant, and the driver folds away the dead code and its loads and
/// stores; with 2 the function tests `p.field` at run time. The host compiles one variant per
/// set of values, choosing 0 or 1 when every step a window can apply agrees (a schedule may
/// move a value across zero), else 2.
#[derive(Clone, Copy, Debug)]
pub struct Flag {
    /// The function's name; the override's is the same in upper case.
    pub name: &'static str,
    /// The `Scalars` field it tests.
    pub field: &'static str,
    pub test: Test,
}

/// How a [`Flag`] tests its field.
#[derive(Clone, Copy, Debug)]
pub enum Test {
    /// `field > 0`.
    Positive,
    /// `field != 0`.
    NonZero,
}

impl Test {
    fn wgsl(self) -> &'static str {
        match self {
            Test::Positive => "> 0.0",
            Test::NonZero => "!= 0.0",
        }
    }

    fn holds(self, x: f32) -> bool {
        match self {
            Test::Positive => x > 0.0,
            Test::NonZero => x != 0.0,
        }
    }
}

/// A flag override's value where the steps of a window disagree (0 is off, 1 on).
pub const FLAG_RUNTIME: u32 = 2;

impl Flag {
    pub const fn positive(name: &'static str, field: &'static str) -> Self {
        Flag {
            name,
            field,
            test: Test::Positive,
        }
    }

    pub const fn nonzero(name: &'static str, field: &'static str) -> Self {
        Flag {
            name,
            field,
            test: Test::NonZero,
        }
    }

    /// The override's name.
    pub fn constant(&self) -> String {
        self.name.to_uppercase()
    }
}

/// The first binding of an optimizer kernel's state vectors (after the window, the status,
/// θ and g; `shaders/fused.wgsl`).
pub const FIRST_STATE_BINDING: usize = 4;

/// Bytes of a uniform block of `scalars` f32 fields: a multiple of 16, the stride of a
/// uniform array's element.
pub const fn scalars_bytes(scalars: usize) -> usize {
    (4 * scalars).next_multiple_of(16)
}

/// The WGSL of a kernel's generated declarations: its `Scalars` struct, flags, and its state
/// bindings with their accessors `load_NAME(at)` and `store_NAME(at, x)` for `format` at
/// width `lanes` (see [`state_accessors`]).
fn declarations(
    scalars: &[&str],
    flags: &[Flag],
    states: &[&str],
    lanes: Lanes,
    format: StateFormat,
) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    if !scalars.is_empty() {
        text.push_str(
            "// Generated from the uniform block's declaration (`scalars!`).\nstruct Scalars {\n",
        );
        for name in scalars {
            let _ = writeln!(text, "    {name}: f32,");
        }
        for k in scalars.len()..scalars_bytes(scalars.len()) / 4 {
            let _ = writeln!(text, "    pad{}: f32,", k - scalars.len());
        }
        text.push_str("}\n");
    }
    if !flags.is_empty() {
        text.push_str(
            "// Generated from the twin's flags: the override is 0 (off), 1 (on) or 2 (this \
             step's scalars decide).\n",
        );
    }
    for flag in flags {
        let (name, field, test) = (flag.name, flag.field, flag.test.wgsl());
        let constant = flag.constant();
        let _ = writeln!(
            text,
            "override {constant}: u32;\nfn {name}(p: Scalars) -> bool {{\n    \
             return {constant} == 1u || ({constant} == 2u && p.{field} {test});\n}}"
        );
    }
    text.push_str(&state_accessors(states, lanes, format));
    text
}

/// The state bindings and their accessors. In `f32` a slot is an `array<V>` and the accessors
/// are its plain element access. In `bf16` (SPEC §6) a slot is bound as the words of one
/// binding chunk, two codes each (the element at even index in the low half), read and
/// written through `state_codec.wgsl`; the bindings after the states give the dispatch's
/// place in the chunk and the chunk's in the arena, and the group's tensors (see
/// [`held_bindings`]). A store encodes with the slot's key
/// at the step applied (`window.t + 1`) and the element's index in the group's flat order. At
/// width 4 an invocation owns two whole words (the host binds vec4 parts at even elements);
/// at width 1 it clears and sets its half of a word with atomics, as its neighbour may write
/// the other half at the same time.
fn state_accessors(states: &[&str], lanes: Lanes, format: StateFormat) -> String {
    use std::fmt::Write;
    if format == StateFormat::Q8 && !states.is_empty() {
        return q8_accessors(states);
    }
    let mut text = String::new();
    if !states.is_empty() {
        // θ's store, which the q8 kernels capture (see `q8_accessors`): a plain write here.
        text.push_str("fn store_theta(at: At, x: V) {\n    theta[at.theta] = x;\n}\n");
    }
    let held = format != StateFormat::F32 && !states.is_empty();
    if held {
        let (uniform, tensors) = held_bindings(states.len());
        let width = lanes.width();
        let _ = write!(
            text,
            "// Generated for state held in {format} (src/kernels.rs `state_accessors`).
struct Held {{
    start: u32,  // the element of the bound words at this dispatch's state index 0
    base: u32,   // the arena element of the bound words' first
    seed: u32,   // state_seed
    pad: u32,
}}
@group(0) @binding({uniform}) var<uniform> held: Held;
// Each tensor of the group: its first element in the arena, and that minus its first in the
// group's flat order, by arena order.
@group(0) @binding({tensors}) var<storage, read> held_tensors: array<vec2<u32>>;
// The element of the bound words of this invocation's first lane.
fn held_index(at: At) -> u32 {{
    return held.start + at.state * {width}u;
}}
// The index in the group's flat order of this invocation's first lane (its lanes lie in one
// tensor: tensors start at multiples of 4 in the arena).
fn held_flat(at: At) -> u32 {{
    let e = held.base + held_index(at);
    var lo = 0u;
    var hi = arrayLength(&held_tensors);
    while hi - lo > 1u {{
        let mid = (lo + hi) / 2u;
        if held_tensors[mid].x <= e {{
            lo = mid;
        }} else {{
            hi = mid;
        }}
    }}
    return e - held_tensors[lo].y;
}}
// The random bits of each lane for slot k at the step being applied.
fn held_bits(at: At, k: u32) -> U {{
    let key = state_key(held.seed, k, window.t + 1u);
    let i = held_flat(at);
"
        );
        text.push_str(match lanes {
            Lanes::Four => {
                "    return U(element_bits(i, key), element_bits(i + 1u, key),
        element_bits(i + 2u, key), element_bits(i + 3u, key));
}
fn held_decode(lo: u32, hi: u32) -> V {
    return V(bf16_decode(lo & 0xffffu), bf16_decode(lo >> 16u), bf16_decode(hi & 0xffffu),
        bf16_decode(hi >> 16u));
}
fn held_encode(x: V, r: U) -> vec2<u32> {
    let c = U(bf16_encode(x.x, r.x), bf16_encode(x.y, r.y), bf16_encode(x.z, r.z),
        bf16_encode(x.w, r.w));
    return vec2<u32>(c.x | (c.y << 16u), c.z | (c.w << 16u));
}
"
            }
            Lanes::One => {
                "    return element_bits(i, key);
}
// The half of word e / 2 that element e takes.
fn held_shift(e: u32) -> u32 {
    return (e & 1u) * 16u;
}
"
            }
        });
    }
    if !states.is_empty() {
        text.push_str(
            "// Generated from the table row's state slots. A slot the options leave unused is \
             bound to a\n// 16-byte placeholder, and the body never reads or writes it.\n",
        );
    }
    for (k, name) in states.iter().enumerate() {
        let binding = FIRST_STATE_BINDING + k;
        let array = if held {
            "array<atomic<u32>>"
        } else {
            "array<V>"
        };
        let _ = writeln!(
            text,
            "@group(0) @binding({binding}) var<storage, read_write> {name}: {array};"
        );
        let (load, store) = match (held, lanes) {
            (false, _) => (
                format!("return {name}[at.state];"),
                format!("{name}[at.state] = x;"),
            ),
            (true, Lanes::Four) => (
                format!(
                    "let w = held_index(at) >> 1u;\n    \
                     return held_decode(atomicLoad(&{name}[w]), atomicLoad(&{name}[w + 1u]));"
                ),
                format!(
                    "let w = held_index(at) >> 1u;\n    \
                     let c = held_encode(x, held_bits(at, {k}u));\n    \
                     atomicStore(&{name}[w], c.x);\n    \
                     atomicStore(&{name}[w + 1u], c.y);"
                ),
            ),
            (true, Lanes::One) => (
                format!(
                    "let e = held_index(at);\n    \
                     return bf16_decode((atomicLoad(&{name}[e >> 1u]) >> held_shift(e)) & 0xffffu);"
                ),
                format!(
                    "let e = held_index(at);\n    \
                     let c = bf16_encode(x, held_bits(at, {k}u));\n    \
                     atomicAnd(&{name}[e >> 1u], ~(0xffffu << held_shift(e)));\n    \
                     atomicOr(&{name}[e >> 1u], c << held_shift(e));"
                ),
            ),
        };
        let _ = writeln!(
            text,
            "fn load_{name}(at: At) -> V {{\n    {load}\n}}\nfn store_{name}(at: At, x: V) {{\n    {store}\n}}"
        );
    }
    text
}

/// The declarations of a fused kernel whose state is held in `q8` (SPEC §6), at lane width 1,
/// for `shaders/q8_blocks.wgsl` (one invocation per q8 block, in two passes): each slot's codes
/// as words of 4 (the element at index 4w + j in byte j of word w), bound from the dispatch's
/// first element (a multiple of 4); the dispatch's uniform `Q8` (the seed, the used slots
/// as bits, the piece's blocks: the stride of one slot's scales), its block table, and the
/// piece's scales, slot k's at `k * q8.blocks`. `load_NAME` decodes an old code with the
/// block's old scale; `store_NAME` and `store_theta` capture the new value in a private
/// variable, which the block's passes then fold into the block's maximum or encode.
fn q8_accessors(states: &[&str]) -> String {
    use std::fmt::Write;
    let (uniform, table) = held_bindings(states.len());
    let scales = q8_scales_binding(states.len());
    let mut text = format!(
        "// Generated for state held in q8 (src/kernels.rs `q8_accessors`).
struct Q8 {{
    seed: u32,    // state_seed
    used: u32,    // bit k: slot k is used
    blocks: u32,  // q8 blocks of the piece: the stride of one slot's scales
    pad: u32,
}}
@group(0) @binding({uniform}) var<uniform> q8: Q8;
// One block, or (in the table) a stretch of consecutive whole blocks of one tensor and the
// block after them: its first element in the bound θ, g and codes, its length (a block's at
// most 256), the index of its first element in the group's flat order, its first scale's
// index among the piece's blocks, and (in the table) its first block among the dispatch's.
struct Q8Block {{
    theta: u32,
    grad: u32,
    state: u32,
    len: u32,
    flat: u32,
    scale: u32,
    first: u32,
    pad: u32,
}}
@group(0) @binding({table}) var<storage, read> q8_blocks: array<Q8Block>;
@group(0) @binding({scales}) var<storage, read_write> q8_scales: array<f32>;
var<private> q8_theta: f32;
fn store_theta(at: At, x: V) {{
    q8_theta = x;
}}
fn q8_used(k: u32) -> bool {{
    return (q8.used & (1u << k)) != 0u;
}}
"
    );
    let [mut begin, mut capture, mut overflowed, mut fold, mut put, mut end]: [String; 6] =
        Default::default();
    for (k, name) in states.iter().enumerate() {
        let binding = FIRST_STATE_BINDING + k;
        let sign = if crate::held::is_signed(name) {
            "s"
        } else {
            "u"
        };
        let _ = write!(
            text,
            "@group(0) @binding({binding}) var<storage, read_write> {name}: array<u32>;
var<private> q8_old_{name}: f32;  // the block's old scale
var<private> q8_new_{name}: f32;  // the element's new value
var<private> q8_max_{name}: u32;  // the largest |new value| of the block, as bits
var<private> q8_key_{name}: u32;
var<private> q8_word_{name}: u32;
fn load_{name}(at: At) -> V {{
    return q8_decode_{sign}(({name}[at.state >> 2u] >> ((at.state & 3u) * 8u)) & 0xffu, q8_old_{name});
}}
fn store_{name}(at: At, x: V) {{
    q8_new_{name} = x;
}}
"
        );
        let scale = format!("q8_scales[{k}u * q8.blocks + b]");
        let encode = format!(
            "let c = q8_encode_{sign}(q8_new_{name}, bitcast<f32>(q8_max_{name}), \
             element_bits(i, q8_key_{name}));
        q8_word_{name} |= c << ((e & 3u) * 8u);
        if (e & 3u) == 3u || last {{
            {name}[e >> 2u] = q8_word_{name};
            q8_word_{name} = 0u;
        }}"
        );
        let parts: [(&mut String, String); 5] = [
            (
                &mut begin,
                format!(
                    "q8_old_{name} = {scale};
        q8_max_{name} = 0u;
        q8_key_{name} = state_key(q8.seed, {k}u, window.t + 1u);
        q8_word_{name} = 0u;"
                ),
            ),
            (&mut capture, format!("q8_new_{name} = load_{name}(at);")),
            (
                &mut fold,
                format!("q8_max_{name} = max(q8_max_{name}, q8_abs_bits(q8_new_{name}));"),
            ),
            (&mut put, encode),
            (&mut end, format!("{scale} = bitcast<f32>(q8_max_{name});")),
        ];
        for (part, body) in parts {
            let _ = writeln!(part, "    if q8_used({k}u) {{\n        {body}\n    }}");
        }
        let _ = writeln!(
            overflowed,
            "    bad = bad || (q8_used({k}u) && !finite(q8_new_{name}));"
        );
    }
    let _ = write!(
        text,
        "// Block b's old scales and keys at the step applied, before its first pass.
fn q8_begin(b: u32) {{
{begin}}}
// Every used slot's old value into its capture.
fn q8_capture_old(at: At) {{
{capture}}}
// Whether a captured new state value is not finite.
fn q8_overflowed() -> bool {{
    var bad = false;
{overflowed}    return bad;
}}
// The captures into the block's maxima (the first pass).
fn q8_fold() {{
{fold}}}
// The captures of element e of the binding (i in the group's flat order) encoded with the
// block's new scales; a word is written once its 4 codes are in, or at the block's end.
fn q8_put(e: u32, i: u32, last: bool) {{
{put}}}
// The block's new scales.
fn q8_end(b: u32) {{
{end}}}
"
    );
    text
}

/// The state formats the fused kernels are generated for (SPEC §6).
pub const GPU_STATE_FORMATS: [StateFormat; 3] =
    [StateFormat::F32, StateFormat::Bf16, StateFormat::Q8];

/// The q8 driver, appended to a fused kernel held in `q8` (see [`q8_accessors`]).
const Q8_BLOCKS: &str = include_str!("../shaders/q8_blocks.wgsl");

/// The binding of a q8 kernel's scales, after [`held_bindings`] (whose table is its block
/// table).
pub const fn q8_scales_binding(states: usize) -> usize {
    FIRST_STATE_BINDING + states + 2
}

/// The entry points of a fused kernel held in `q8` (`shaders/q8_blocks.wgsl`): the step of
/// one block per invocation, and the count of overflowing elements before it.
pub const Q8_ENTRY_POINT: &str = "q8_main";
pub const Q8_COUNT_ENTRY_POINT: &str = "q8_count";

/// The bindings after a fused kernel's `states` state slots that a held format adds: in
/// `bf16` the dispatch's uniform `Held` and the group's tensor table, in `q8` the uniform `Q8`
/// and the dispatch's block table (then its scales, [`q8_scales_binding`]).
pub const fn held_bindings(states: usize) -> (usize, usize) {
    (
        FIRST_STATE_BINDING + states,
        FIRST_STATE_BINDING + states + 1,
    )
}

/// The per-group step control: entry points `scan` and `commit`.
pub const CONTROL: Kernel = Kernel {
    name: "control",
    preludes: &[COMMON],
    scalars: &[],
    flags: &[],
    states: &[],
    body: include_str!("../shaders/control.wgsl"),
};

/// The entry point of every fused optimizer kernel.
pub const ENTRY_POINT: &str = "main";
/// The entry point of every fused optimizer kernel over a segment table (tensors in the
/// caller's buffers).
pub const SEGMENTS_ENTRY_POINT: &str = "segments";

impl Kernel {
    /// The values of this kernel's flag overrides for a window of per-step uniform blocks
    /// (`entries`, one `Scalars` each): 0 or 1 where every entry agrees, else 2.
    pub fn flag_values<'a>(&self, entries: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u32> {
        self.flags
            .iter()
            .map(|flag| {
                let k = self
                    .scalars
                    .iter()
                    .position(|&f| f == flag.field)
                    .expect("a flag tests one of the kernel's scalars");
                let mut seen = entries.clone().map(|entry| {
                    let x: f32 = bytemuck::pod_read_unaligned(&entry[4 * k..4 * k + 4]);
                    flag.test.holds(x)
                });
                match seen.next() {
                    Some(first) if seen.all(|on| on == first) => u32::from(first),
                    _ => FLAG_RUNTIME,
                }
            })
            .collect()
    }

    /// The complete WGSL module at vec4 width: lane width, preludes, then the body.
    pub fn source(&self) -> String {
        self.source_for(Lanes::Four)
    }

    /// The complete WGSL module at `lanes` width, with f32 state.
    pub fn source_for(&self, lanes: Lanes) -> String {
        self.source_in(lanes, StateFormat::F32)
    }

    /// The complete WGSL module at `lanes` width with its state held in `format` (`f32`,
    /// `bf16` or `q8`; a held format adds the codec, `state_codec.wgsl`, to the preludes).
    /// A `q8` module is generated at width 1 whatever `lanes` says: one invocation steps one
    /// q8 block (`shaders/q8_blocks.wgsl`, appended after the body).
    pub fn source_in(&self, lanes: Lanes, format: StateFormat) -> String {
        let q8 = format == StateFormat::Q8 && !self.states.is_empty();
        let lanes = if q8 { Lanes::One } else { lanes };
        let mut source = String::from(lanes.prelude());
        let declarations = declarations(self.scalars, self.flags, self.states, lanes, format);
        let codec = match format != StateFormat::F32 && !self.states.is_empty() {
            true => STATE_CODEC,
            false => "",
        };
        for part in self
            .preludes
            .iter()
            .chain([&codec, &declarations.as_str(), &self.body])
            .chain(q8.then_some(&Q8_BLOCKS))
        {
            if !part.is_empty() {
                source.push('\n');
                source.push_str(part);
            }
        }
        source
    }

    /// Parses and validates the module at both widths with naga, as wgpu would, without any
    /// adapter, with f32 state and (where it has state) bf16 and q8. Returns what it learned of the
    /// f32 module's interface.
    pub fn validate(&self) -> Result<ValidatedKernel, Error> {
        let mut checked = Vec::new();
        let formats = match self.states.is_empty() {
            true => &GPU_STATE_FORMATS[..1],
            false => &GPU_STATE_FORMATS[..],
        };
        let variants = formats
            .iter()
            .flat_map(|&format| Lanes::ALL.map(|lanes| (lanes, format)));
        for (lanes, format) in variants {
            let source = self.source_in(lanes, format);
            let width = lanes.width();
            let refused = |message: String| Error::Shader {
                kernel: self.name,
                width,
                message,
            };
            let module = naga::front::wgsl::parse_str(&source)
                .map_err(|e| refused(e.emit_to_string(&source)))?;
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::empty(),
            )
            .validate(&module)
            .map_err(|e| refused(e.emit_to_string(&source)))?;
            checked
                .push(interface(&module).ok_or_else(|| refused("no uniform at binding 0".into()))?);
        }
        Ok(checked[0])
    }
}

/// What a fused kernel's bindings say of its interface; `None` without a uniform at binding 0.
fn interface(module: &naga::Module) -> Option<ValidatedKernel> {
    let binding = |index: u32| {
        module.global_variables.iter().find_map(|(_, var)| {
            var.binding
                .as_ref()
                .filter(|b| b.group == 0 && b.binding == index)
                .map(|_| var)
        })
    };
    let uniform = binding(0)?;
    let uniform_size = module.types[uniform.ty].inner.size(module.to_ctx());
    let storage_bindings = (1..=MAX_BINDING).filter(|&b| binding(b).is_some()).count() as u32;
    Some(ValidatedKernel {
        uniform_size,
        storage_bindings,
    })
}

/// Bindings looked at by validation (lavapipe allows 32 storage buffers per stage).
const MAX_BINDING: u32 = 32;

/// What validation learned about a kernel's interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidatedKernel {
    /// Bytes of the uniform block at binding 0.
    pub uniform_size: u32,
    /// Storage bindings 1, 2, … (for fused kernels: status, θ, g, then the state slots).
    pub storage_bindings: u32,
}
