//! Measures ways of computing the exact q8 block scale (SPEC §6: max |x| over 256 elements)
//! on the adapter: one invocation per block, a workgroup per block (a tree in workgroup
//! memory, or a workgroup atomicMax), and subgroupMax when the adapter has subgroups. Every
//! variant takes the max of |x|'s bits as u32 (`q8_abs_bits`), so each is exact and is
//! checked against the CPU before it is timed. Then the q8 encode of every element through
//! `shaders/state_codec.wgsl`, with its mantissa lookup by selects against a `const` array
//! and a `var<private>` array indexed at run time, each checked against the twin's codes.
//!
//! ```sh
//! cargo run --release --example q8_block_max -- [elements, default 16M] [repeats, default 7]
//! ```
//!
//! Prints, per variant, the median over repeats of the wall time of one dispatch (each repeat
//! submits 10 dispatches and waits), and the rate at which it moves memory.

use std::time::Instant;

use bayesprop::kernels::STATE_CODEC;
use bayesprop::reference::state_codec::{
    element_bits, mix32, q8_encode_s, q8_scale, state_key, Q8_BLOCK,
};
use bayesprop::wgpu;

const HEADER: &str = "
@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> scales: array<u32>;
fn abs_bits(v: vec4<f32>) -> u32 {
    let b = bitcast<vec4<u32>>(v) & vec4(0x7fffffffu);
    return max(max(b.x, b.y), max(b.z, b.w));
}
fn block_of(w: vec3<u32>, n: vec3<u32>) -> u32 {
    return w.x + w.y * n.x;
}
";

struct Variant {
    name: &'static str,
    what: &'static str,
    /// Blocks per workgroup.
    blocks_per_group: u32,
    subgroups: bool,
    body: &'static str,
}

const VARIANTS: &[Variant] = &[
    Variant {
        name: "read",
        what: "roofline: 64 invocations read one block as vec4s, no max",
        blocks_per_group: 1,
        subgroups: false,
        body: "
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>,
        @builtin(local_invocation_index) l: u32) {
    let b = block_of(w, n);
    let v = bitcast<vec4<u32>>(x[b * 64u + l]);
    if (v.x & v.y & v.z & v.w) == 0xffffffffu { scales[b] = l; }
}",
    },
    Variant {
        name: "thread",
        what: "one invocation per block, 256 scalar loads",
        blocks_per_group: 64,
        subgroups: false,
        body: "
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>,
        @builtin(local_invocation_index) l: u32) {
    let b = block_of(w, n) * 64u + l;
    var m = 0u;
    for (var k = 0u; k < 256u; k++) {
        let e = b * 256u + k;
        m = max(m, bitcast<u32>(x[e / 4u][e % 4u]) & 0x7fffffffu);
    }
    scales[b] = m;
}",
    },
    Variant {
        name: "thread_vec4",
        what: "one invocation per block, 64 vec4 loads",
        blocks_per_group: 64,
        subgroups: false,
        body: "
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>,
        @builtin(local_invocation_index) l: u32) {
    let b = block_of(w, n) * 64u + l;
    var m = vec4(0u);
    for (var k = 0u; k < 64u; k++) {
        m = max(m, bitcast<vec4<u32>>(x[b * 64u + k]) & vec4(0x7fffffffu));
    }
    scales[b] = max(max(m.x, m.y), max(m.z, m.w));
}",
    },
    Variant {
        name: "tree_256",
        what: "a workgroup of 256 per block, one element each, 8-level tree",
        blocks_per_group: 1,
        subgroups: false,
        body: "
var<workgroup> partial: array<u32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>,
        @builtin(local_invocation_index) l: u32) {
    let b = block_of(w, n);
    let v = bitcast<vec4<u32>>(x[b * 64u + l / 4u]);
    partial[l] = v[l % 4u] & 0x7fffffffu;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if l < s { partial[l] = max(partial[l], partial[l + s]); }
        workgroupBarrier();
    }
    if l == 0u { scales[b] = partial[0]; }
}",
    },
    Variant {
        name: "tree_vec4",
        what: "a workgroup of 64 per block, one vec4 each, 6-level tree",
        blocks_per_group: 1,
        subgroups: false,
        body: "
var<workgroup> partial: array<u32, 64>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>,
        @builtin(local_invocation_index) l: u32) {
    let b = block_of(w, n);
    partial[l] = abs_bits(x[b * 64u + l]);
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if l < s { partial[l] = max(partial[l], partial[l + s]); }
        workgroupBarrier();
    }
    if l == 0u { scales[b] = partial[0]; }
}",
    },
    Variant {
        name: "atomic_vec4",
        what: "a workgroup of 64 per block, one vec4 each, workgroup atomicMax",
        blocks_per_group: 1,
        subgroups: false,
        body: "
var<workgroup> top: atomic<u32>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>,
        @builtin(local_invocation_index) l: u32) {
    let b = block_of(w, n);
    if l == 0u { atomicStore(&top, 0u); }
    workgroupBarrier();
    atomicMax(&top, abs_bits(x[b * 64u + l]));
    workgroupBarrier();
    if l == 0u { scales[b] = atomicLoad(&top); }
}",
    },
    Variant {
        name: "subgroup_vec4",
        what: "a workgroup of 64 per block, one vec4 each, subgroupMax, then atomicMax of leaders",
        blocks_per_group: 1,
        subgroups: true,
        body: "
var<workgroup> top: atomic<u32>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>,
        @builtin(local_invocation_index) l: u32,
        @builtin(subgroup_invocation_id) s: u32) {
    let b = block_of(w, n);
    if l == 0u { atomicStore(&top, 0u); }
    workgroupBarrier();
    let m = subgroupMax(abs_bits(x[b * 64u + l]));
    if s == 0u { atomicMax(&top, m); }
    workgroupBarrier();
    if l == 0u { scales[b] = atomicLoad(&top); }
}",
    },
    Variant {
        name: "read_256",
        what: "roofline: 256 invocations read four blocks as vec4s, no max",
        blocks_per_group: 4,
        subgroups: false,
        body: "
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>,
        @builtin(local_invocation_index) l: u32) {
    let b = block_of(w, n) * 4u + l / 64u;
    let v = bitcast<vec4<u32>>(x[b * 64u + l % 64u]);
    if (v.x & v.y & v.z & v.w) == 0xffffffffu { scales[b] = l; }
}",
    },
    Variant {
        name: "atomic_256",
        what: "a workgroup of 256 for four blocks, one vec4 each, workgroup atomicMax per block",
        blocks_per_group: 4,
        subgroups: false,
        body: "
var<workgroup> top: array<atomic<u32>, 4>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>,
        @builtin(local_invocation_index) l: u32) {
    let b = block_of(w, n) * 4u + l / 64u;
    if l < 4u { atomicStore(&top[l], 0u); }
    workgroupBarrier();
    atomicMax(&top[l / 64u], abs_bits(x[b * 64u + l % 64u]));
    workgroupBarrier();
    if l % 64u == 0u { scales[b] = atomicLoad(&top[l / 64u]); }
}",
    },
    Variant {
        name: "subgroup_256",
        what:
            "a workgroup of 256 for four blocks, one vec4 each, subgroupMax, atomicMax of leaders",
        blocks_per_group: 4,
        subgroups: true,
        body: "
var<workgroup> top: array<atomic<u32>, 4>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>,
        @builtin(local_invocation_index) l: u32,
        @builtin(subgroup_invocation_id) s: u32) {
    let b = block_of(w, n) * 4u + l / 64u;
    if l < 4u { atomicStore(&top[l], 0u); }
    workgroupBarrier();
    // Subgroups (8 on lavapipe) never straddle two blocks of 64 invocations.
    let m = subgroupMax(abs_bits(x[b * 64u + l % 64u]));
    if s == 0u { atomicMax(&top[l / 64u], m); }
    workgroupBarrier();
    if l % 64u == 0u { scales[b] = atomicLoad(&top[l / 64u]); }
}",
    },
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .map(|s| parse_count(s))
        .unwrap_or(16 << 20)
        .next_multiple_of(Q8_BLOCK * 64 * 256);
    let repeats: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(7);
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .expect("no adapter (install mesa-vulkan-drivers for lavapipe)");
    let info = adapter.get_info();
    let subgroups = adapter.features().contains(wgpu::Features::SUBGROUP);
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("q8 block max"),
        required_features: adapter.features() & wgpu::Features::SUBGROUP,
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .expect("request_device");
    let blocks = n / Q8_BLOCK;
    println!(
        "adapter: {} ({:?}), subgroups: {subgroups} (sizes {}..{}); {n} elements, {blocks} blocks, {repeats} repeats",
        info.name,
        info.backend,
        info.subgroup_min_size,
        info.subgroup_max_size,
    );

    // Values of both signs over many magnitudes, a few zeros.
    let x: Vec<f32> = (0..n as u32)
        .map(|i| {
            let r = mix32(i ^ 0x5bd1_e995);
            let e = (r % 40) as i32 - 20;
            let v = f32::from_bits(((127 + e) as u32) << 23 | (mix32(r) & 0x7f_ffff));
            match r % 97 {
                0 => 0.0,
                k if k % 2 == 0 => -v,
                _ => v,
            }
        })
        .collect();
    let expected: Vec<u32> = x.chunks(Q8_BLOCK).map(|b| q8_scale(b).to_bits()).collect();

    let input = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("x"),
        size: (n * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&input, 0, bytemuck::cast_slice(&x));
    let out_bytes = (blocks * 4) as u64;
    let output = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("scales"),
        size: out_bytes,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });

    println!("\nBlock maximum:\n");
    println!("| variant | ms per dispatch (median) | range | GB/s read | how |");
    println!("| --- | ---: | ---: | ---: | --- |");
    for v in VARIANTS {
        if v.subgroups && !subgroups {
            println!("| {} | – | – | – | adapter has no subgroups |", v.name);
            continue;
        }
        let source = format!("{HEADER}{}", v.body);
        let groups = (blocks as u32) / v.blocks_per_group;
        let m = measure(
            &device,
            &queue,
            v.name,
            &source,
            &[&input, &output],
            groups,
            repeats,
        );
        if !v.name.starts_with("read") {
            assert_eq!(
                m.result, expected,
                "{}: not the exact block maximum",
                v.name
            );
        }
        println!(
            "| {} | {:.1} | {:.1}–{:.1} | {:.1} | {} |",
            v.name,
            m.median * 1e3,
            m.min * 1e3,
            m.max * 1e3,
            (n * 4) as f64 / m.median / 1e9,
            v.what
        );
    }

    // q8 encode of every element (scale given), with the codec's mantissa lookup by selects
    // against a `const` array and a `var<private>` array indexed at run time.
    let scales: Vec<f32> = expected.iter().map(|&b| f32::from_bits(b)).collect();
    let scale_buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("scales f32"),
        size: out_bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&scale_buffer, 0, bytemuck::cast_slice(&scales));
    let codes = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("codes"),
        size: n as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let key = state_key(0, 0, 1);
    let expected_codes: Vec<u32> = x
        .chunks(4)
        .enumerate()
        .map(|(w, v)| {
            let a = scales[w * 4 / Q8_BLOCK];
            (0..4).fold(0, |word, k| {
                let e = (4 * w + k) as u32;
                word | q8_encode_s(v[k], a, element_bits(e, key)) << (8 * k)
            })
        })
        .collect();
    let select_fn = STATE_CODEC
        .find("fn q8_mantissa")
        .map(|start| {
            let end = start + STATE_CODEC[start..].find("\n}\n").unwrap() + 3;
            &STATE_CODEC[start..end]
        })
        .unwrap();
    let mantissas =
        "0x000000u, 0x0b95c2u, 0x1837f0u, 0x25fed7u, 0x3504f3u, 0x45672au, 0x5744fdu, 0x6ac0c7u";
    let lookups = [
        ("select", select_fn.to_string()),
        (
            "const array",
            format!("const MANTISSAS = array<u32, 8>({mantissas});\nfn q8_mantissa(j: u32) -> u32 {{ return MANTISSAS[j]; }}\n"),
        ),
        (
            "var<private> array",
            format!("var<private> MANTISSAS: array<u32, 8> = array<u32, 8>({mantissas});\nfn q8_mantissa(j: u32) -> u32 {{ return MANTISSAS[j]; }}\n"),
        ),
    ];
    println!("\nq8 encode (signed slot, scale given, 4 codes per word), q8_mantissa by:\n");
    println!("| round | lookup | ms per dispatch (median) | range | GB/s moved |");
    println!("| ---: | --- | ---: | ---: | ---: |");
    // Two rounds, the second in reverse order: the machine's load drifts.
    let order: Vec<usize> = (0..lookups.len()).chain((0..lookups.len()).rev()).collect();
    for (k, &which) in order.iter().enumerate() {
        let (name, lookup) = &lookups[which];
        let round = 1 + k / lookups.len();
        let codec = STATE_CODEC.replace(select_fn, lookup);
        let source = format!(
            "{codec}
@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> scales: array<f32>;
@group(0) @binding(2) var<storage, read_write> codes: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>,
        @builtin(local_invocation_index) l: u32) {{
    let b = w.x + w.y * n.x;
    let v = x[b * 64u + l];
    let a = scales[b];
    let e = (b * 64u + l) * 4u;
    let key = {key}u;
    codes[b * 64u + l] = q8_encode_s(v.x, a, element_bits(e, key))
        | (q8_encode_s(v.y, a, element_bits(e + 1u, key)) << 8u)
        | (q8_encode_s(v.z, a, element_bits(e + 2u, key)) << 16u)
        | (q8_encode_s(v.w, a, element_bits(e + 3u, key)) << 24u);
}}"
        );
        let m = measure(
            &device,
            &queue,
            name,
            &source,
            &[&input, &scale_buffer, &codes],
            blocks as u32,
            repeats,
        );
        assert_eq!(m.result, expected_codes, "{name}: not the twin's codes");
        println!(
            "| {round} | {name} | {:.1} | {:.1}–{:.1} | {:.1} |",
            m.median * 1e3,
            m.min * 1e3,
            m.max * 1e3,
            (n * 5 + blocks * 4) as f64 / m.median / 1e9,
        );
    }
}

struct Measured {
    median: f64,
    min: f64,
    max: f64,
    /// The last binding's contents after one dispatch.
    result: Vec<u32>,
}

/// Compiles `source`, binds `buffers` at 0, 1, … (the last is the output), checks one
/// dispatch of `groups` workgroups (256 per row of a 2-D grid), then times `repeats` submits
/// of 10 dispatches each.
fn measure(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    label: &str,
    source: &str,
    buffers: &[&wgpu::Buffer],
    groups: u32,
    repeats: usize,
) -> Measured {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let entries: Vec<wgpu::BindGroupEntry> = buffers
        .iter()
        .enumerate()
        .map(|(k, b)| wgpu::BindGroupEntry {
            binding: k as u32,
            resource: b.as_entire_binding(),
        })
        .collect();
    let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    });
    let output = buffers[buffers.len() - 1];
    let (gx, gy) = (groups.min(256), groups.div_ceil(256));
    assert_eq!(gx * gy, groups);
    let dispatches = |count: usize| {
        let mut encoder = device.create_command_encoder(&Default::default());
        encoder.clear_buffer(output, 0, None);
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            for _ in 0..count {
                pass.dispatch_workgroups(gx, gy, 1);
            }
        }
        queue.submit([encoder.finish()]);
        device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    };
    dispatches(1);
    let bytes = output.size();
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("staging"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(output, 0, &staging, 0, bytes);
    queue.submit([encoder.finish()]);
    staging
        .slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.unwrap());
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    let result: Vec<u32> =
        bytemuck::cast_slice(&staging.slice(..).get_mapped_range().unwrap()).to_vec();
    let per_submit = 10;
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            dispatches(per_submit);
            start.elapsed().as_secs_f64() / per_submit as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    Measured {
        median: times[times.len() / 2],
        min: times[0],
        max: times[times.len() - 1],
        result,
    }
}

fn parse_count(s: &str) -> usize {
    let (digits, scale) = match s.strip_suffix('M') {
        Some(d) => (d, 1 << 20),
        None => (s, 1),
    };
    digits
        .parse::<usize>()
        .expect("elements: a count such as 16M")
        * scale
}
