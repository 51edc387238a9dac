//! The low-precision state's codec (`shaders/state_codec.wgsl`) run on the adapter through a
//! small test kernel, against its twin (`bayesprop::reference::state_codec`), output for
//! output and bit for bit: the random bits, bf16 and q8 (unsigned and signed) encode and
//! decode, the block scale's bits.

use crate::common;

use bayesprop::kernels::STATE_CODEC;
use bayesprop::reference::state_codec::*;
use bayesprop::wgpu;

/// Words of one case: x, a, r, c, seed, t.
const IN: usize = 6;
/// Words of one case's results (see `TEST_KERNEL`).
const OUT: usize = 10;

const TEST_KERNEL: &str = r#"
@group(0) @binding(0) var<storage, read> cases: array<u32>;
@group(0) @binding(1) var<storage, read_write> results: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let k = id.x + id.y * groups.x * 64u;
    if k >= arrayLength(&cases) / 6u {
        return;
    }
    let x = bitcast<f32>(cases[6u * k]);
    let a = bitcast<f32>(cases[6u * k + 1u]);
    let r = cases[6u * k + 2u];
    let c = cases[6u * k + 3u];
    let seed = cases[6u * k + 4u];
    let t = cases[6u * k + 5u];
    let o = 10u * k;
    results[o] = mix32(seed);
    results[o + 1u] = state_key(seed, c & 7u, t);
    results[o + 2u] = element_bits(c, seed);
    results[o + 3u] = bf16_encode(x, r);
    results[o + 4u] = bitcast<u32>(bf16_decode(c & 0xffffu));
    results[o + 5u] = q8_encode_u(x, a, r);
    results[o + 6u] = q8_encode_s(x, a, r);
    results[o + 7u] = bitcast<u32>(q8_decode_u(c & 0xffu, a));
    results[o + 8u] = bitcast<u32>(q8_decode_s(c & 0xffu, a));
    results[o + 9u] = q8_abs_bits(x);
}
"#;

/// What the twin says for one case, in `TEST_KERNEL`'s order.
fn twin(case: &[u32]) -> [u32; OUT] {
    let [x, a, r, c, seed, t] = case.try_into().unwrap();
    let (x, a) = (f32::from_bits(x), f32::from_bits(a));
    [
        mix32(seed),
        state_key(seed, c & 7, t),
        element_bits(c, seed),
        bf16_encode(x, r),
        bf16_decode(c & 0xffff).to_bits(),
        q8_encode_u(x, a, r),
        q8_encode_s(x, a, r),
        q8_decode_u(c & 0xff, a).to_bits(),
        q8_decode_s(c & 0xff, a).to_bits(),
        q8_abs_bits(x),
    ]
}

const NAMES: [&str; OUT] = [
    "mix32",
    "state_key",
    "element_bits",
    "bf16_encode",
    "bf16_decode",
    "q8_encode_u",
    "q8_encode_s",
    "q8_decode_u",
    "q8_decode_s",
    "q8_abs_bits",
];

/// Bits for building cases (not the codec's).
fn rnd(stream: u32, i: u32) -> u32 {
    mix32(mix32(stream ^ 0x9e37_79b9).wrapping_add(i))
}

/// A normal f32 of either sign with exponent in [lo, hi), random mantissa.
fn normal(lo: i32, hi: i32, stream: u32, i: u32) -> f32 {
    let e = lo + (rnd(stream, 3 * i) % (hi - lo) as u32) as i32;
    let bits = (((127 + e) as u32) << 23) | (rnd(stream, 3 * i + 1) & 0x7f_ffff);
    f32::from_bits(bits | (rnd(stream, 3 * i + 2) & 0x8000_0000))
}

/// The smallest binade of scales whose q8 products a·T\[q\] are all normal (a·2^-31.75 ≥
/// 2^-126): where a device that flushes subnormals (WGSL allows it) still agrees with the
/// twin. Lavapipe keeps subnormals, so on a software adapter the cases go down to the
/// smallest normal scale and include subnormal values.
const NORMAL_PRODUCTS_EXPONENT: i32 = -94;

/// Cases over the whole input space the kernels will see, in four families of 2^18 each:
/// every q8 code decoded at random scales and nudged one ULP either way (the boundaries of the
/// stochastic rounding); |x| ≤ a over the whole table; arbitrary f32 bits (bf16, non-finite,
/// subnormal, with scales ≥ |x|, non-finite and 0); round numbers and extremes.
fn cases(subnormals: bool) -> Vec<u32> {
    let lowest = if subnormals {
        -126
    } else {
        NORMAL_PRODUCTS_EXPONENT
    };
    let family = 1u32 << 18;
    let mut cases = Vec::with_capacity(4 * family as usize * IN);
    let mut push = |x: f32, a: f32, r: u32, c: u32, seed: u32, t: u32| {
        cases.extend_from_slice(&[x.to_bits(), a.to_bits(), r, c, seed, t]);
    };
    for i in 0..family {
        // Decoded codes, exactly and one ULP off.
        let a = normal(lowest, 128, 1, i).abs();
        let c = rnd(2, i) & 0xff;
        let signed = i % 2 == 0;
        let v = if signed {
            q8_decode_s(c, a)
        } else {
            q8_decode_u(c, a)
        };
        let x = match rnd(3, i) % 3 {
            0 => v,
            1 => f32::from_bits(v.to_bits().saturating_sub(1)),
            _ => f32::from_bits(v.to_bits() + 1).clamp(-a, a),
        };
        push(x, a, rnd(4, i), rnd(5, i), rnd(6, i), rnd(7, i));
    }
    for i in 0..family {
        // |x| ≤ a, anywhere in the table and below it.
        let a = normal(lowest, 128, 8, i).abs();
        let ratio = f32::from_bits(0x3f80_0000 - (rnd(9, i) % (60 << 23)));
        let x = (a * ratio).min(a);
        let x = if rnd(10, i).is_multiple_of(2) { x } else { -x };
        push(x, a, rnd(11, i), rnd(12, i), rnd(13, i), i);
    }
    for i in 0..family {
        // Any bits: NaNs, infinities, subnormals, zeros; the scale the block would have.
        let x = f32::from_bits(rnd(14, i));
        let y = f32::from_bits(x.to_bits() & 0x7fff_ffff);
        let a = match rnd(15, i) % 4 {
            0 => y,
            1 => f32::INFINITY,
            2 => f32::NAN,
            _ => y * 2.0,
        };
        // Without subnormals: a tiny x becomes a zero of its sign, a tiny scale 0.
        let tiny = |v: f32| v != 0.0 && v.abs() < 2f32.powi(-126 + 32);
        let small_scale = a.is_finite() && a < 2f32.powi(NORMAL_PRODUCTS_EXPONENT);
        let (x, a) = if !subnormals && (tiny(y) || small_scale) {
            (f32::from_bits(x.to_bits() & 0x8000_0000), 0.0)
        } else {
            (x, a)
        };
        push(x, a, rnd(16, i), rnd(17, i), rnd(18, i), rnd(19, i));
    }
    for i in 0..family {
        // Round numbers, zeros, extremes, r at its ends.
        let specials = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::MAX,
            -f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            2f32.powi(lowest),
            if subnormals { f32::from_bits(1) } else { 0.5 },
        ];
        let x = specials[(rnd(20, i) % specials.len() as u32) as usize];
        let a = match rnd(21, i) % 3 {
            0 => f32::from_bits(x.to_bits() & 0x7fff_ffff),
            1 => f32::MAX,
            _ => 0.0,
        };
        let r = [0, u32::MAX, 0xff, 0x100, rnd(22, i)][(i % 5) as usize];
        push(x, a, r, i, rnd(23, i), u32::MAX - i);
    }
    cases
}

fn run_on_device(ctx: &bayesprop::GpuContext, cases: &[u32]) -> Vec<u32> {
    let device = ctx.device();
    let source = format!("{STATE_CODEC}\n{TEST_KERNEL}");
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("state codec test"),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("state codec test"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let n = cases.len() / IN;
    let input = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("cases"),
        size: (cases.len() * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    ctx.queue()
        .write_buffer(&input, 0, bytemuck::cast_slice(cases));
    let out_bytes = (n * OUT * 4) as u64;
    let output = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("results"),
        size: out_bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("results staging"),
        size: out_bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: input.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: output.as_entire_binding(),
            },
        ],
    });
    let workgroups = n.div_ceil(64) as u32;
    let (x, y) = (workgroups.min(32_768), workgroups.div_ceil(32_768));
    let mut encoder = device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }
    encoder.copy_buffer_to_buffer(&output, 0, &staging, 0, out_bytes);
    ctx.queue().submit([encoder.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging
        .slice(..)
        .map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    rx.recv().unwrap().unwrap();
    let words = bytemuck::cast_slice(&staging.slice(..).get_mapped_range().unwrap()).to_vec();
    words
}

/// The first case where an output differs: its index, its words, the device's and the twin's.
type Mismatch = (usize, Vec<u32>, u32, u32);

#[test]
fn the_wgsl_codec_equals_its_twin_bit_for_bit() {
    let Some(ctx) = common::gpu("the_wgsl_codec_equals_its_twin_bit_for_bit") else {
        return;
    };
    let cases = cases(ctx.is_software());
    let device = run_on_device(&ctx, &cases);
    let n = cases.len() / IN;
    assert_eq!(device.len(), n * OUT);
    let mut differ = [0usize; OUT];
    let mut first: [Option<Mismatch>; OUT] = Default::default();
    for (k, case) in cases.chunks_exact(IN).enumerate() {
        let expected = twin(case);
        for j in 0..OUT {
            if device[k * OUT + j] != expected[j] {
                differ[j] += 1;
                first[j].get_or_insert((k, case.to_vec(), device[k * OUT + j], expected[j]));
            }
        }
    }
    let report: Vec<String> = (0..OUT)
        .filter(|&j| differ[j] > 0)
        .map(|j| {
            let (k, case, got, want) = first[j].clone().unwrap();
            format!(
                "{}: {} of {n} differ, first case {k} {case:x?}: device {got:#x}, twin {want:#x}",
                NAMES[j], differ[j]
            )
        })
        .collect();
    eprintln!(
        "state codec: {n} cases x {OUT} outputs on {}",
        ctx.adapter_info().name
    );
    assert!(report.is_empty(), "{}", report.join("\n"));
}
