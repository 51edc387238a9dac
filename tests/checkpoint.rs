//! Checkpoints resume bit-exactly on every device and across devices, and a damaged or
//! mismatched file is refused with the live optimizer left as it was.

mod common;

use std::path::PathBuf;

use bayesprop::validate::gradient;
use bayesprop::{
    BayesConfig, Checkpoint, CpuOptimizer, CpuPath, Error, GpuContext, GpuOptimizer, ParamGroups,
    Stepper,
};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bayesprop-checkpoint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The two-group model with a few tensors, so every kind of state is saved.
fn model() -> ParamGroups {
    common::two_groups(
        "w",
        &[
            (0, vec![5, 3]),
            (1, vec![7]),
            (0, vec![2, 2, 3]),
            (1, vec![33]),
        ],
    )
}

/// The gradient of step `t`, with a NaN at step 4 so a step is skipped and the saved step
/// counters differ from the number of calls.
fn grad(n: usize, t: u64) -> Vec<f32> {
    let mut g = gradient(n, 77, t);
    if t == 4 {
        g[3] = f32::NAN;
    }
    g
}

fn steps(o: &mut dyn Stepper, range: std::ops::RangeInclusive<u64>) {
    for t in range {
        o.step(&grad(o.len(), t)).unwrap();
    }
}

fn everything(o: &dyn Stepper) -> Vec<u32> {
    let mut bits: Vec<u32> = o.theta().unwrap().iter().map(|x| x.to_bits()).collect();
    for name in ["s", "sigma"] {
        bits.extend(o.state(name).unwrap().iter().map(|x| x.to_bits()));
    }
    bits
}

type Make<'a> = dyn Fn() -> Box<dyn Stepper> + 'a;

fn devices(ctx: Option<&GpuContext>) -> Vec<(&'static str, Box<Make<'_>>)> {
    let mut devices: Vec<(&'static str, Box<Make<'_>>)> = vec![
        (
            "reference",
            Box::new(|| Box::new(CpuOptimizer::from_groups(&model(), CpuPath::Reference))),
        ),
        (
            "cpu",
            Box::new(|| Box::new(CpuOptimizer::from_groups(&model(), CpuPath::Parallel))),
        ),
    ];
    if let Some(ctx) = ctx {
        devices.push((
            "gpu",
            Box::new(move || Box::new(GpuOptimizer::from_groups(ctx, &model()).unwrap())),
        ));
    }
    devices
}

#[test]
fn resume_is_bit_exact_on_every_device_and_across_devices() {
    let ctx = common::gpu("resume_is_bit_exact_on_every_device_and_across_devices");
    let devices = devices(ctx.as_ref());
    for (saver, make_saver) in &devices {
        let mut first = make_saver();
        steps(&mut *first, 1..=6);
        let path = scratch(&format!("{saver}.safetensors"));
        first.checkpoint().unwrap().save(&path).unwrap();
        for (loader, make_loader) in &devices {
            let mut straight = make_loader();
            steps(&mut *straight, 1..=10);
            let mut resumed = make_loader();
            resumed.restore(&Checkpoint::load(&path).unwrap()).unwrap();
            assert_eq!(
                resumed.steps_taken().unwrap(),
                5,
                "one of 6 steps was skipped"
            );
            steps(&mut *resumed, 7..=10);
            let what = format!("saved on {saver}, resumed on {loader}");
            if *saver == *loader || ctx.as_ref().is_none_or(|c| c.is_software()) {
                assert_eq!(everything(&*resumed), everything(&*straight), "{what}");
            }
        }
    }
}

#[test]
fn save_and_load_through_the_stepper_methods() {
    let mut cpu = CpuOptimizer::from_groups(&model(), CpuPath::Reference);
    steps(&mut cpu, 1..=3);
    let path = scratch("methods.safetensors");
    cpu.save(&path).unwrap();
    let mut fresh = CpuOptimizer::from_groups(&model(), CpuPath::Reference);
    fresh.load(&path).unwrap();
    assert_eq!(everything(&fresh), everything(&cpu));
    assert_eq!(fresh.group_steps(), cpu.group_steps());
    // No temporary file is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Every way a file can be wrong is refused, and the optimizer it was loaded into is as before.
#[test]
fn damaged_and_mismatched_checkpoints_are_refused() {
    let mut saved = CpuOptimizer::from_groups(&model(), CpuPath::Reference);
    steps(&mut saved, 1..=3);
    let path = scratch("good.safetensors");
    saved.save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();

    let mut live = CpuOptimizer::from_groups(&model(), CpuPath::Reference);
    steps(&mut live, 1..=2);
    let before = everything(&live);

    let header = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut flipped = good.clone();
    let data_byte = 8 + header + 100;
    flipped[data_byte] ^= 0x01;
    let mut broken_header = good.clone();
    broken_header[8 + 2] = b'#';
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("flipped data byte", flipped, "checksum"),
        ("truncated", good[..good.len() - 7].to_vec(), "not a valid"),
        ("header only", good[..8 + header].to_vec(), "not a valid"),
        ("broken header", broken_header, "not a valid"),
        ("empty", Vec::new(), "not a valid"),
    ];
    for (what, bytes, expected) in cases {
        let bad = scratch(&format!("{}.safetensors", what.replace(' ', "_")));
        std::fs::write(&bad, bytes).unwrap();
        let err = live.load(&bad).unwrap_err();
        assert!(matches!(err, Error::File { .. }), "{what}: {err:?}");
        assert!(err.to_string().contains(expected), "{what}: {err}");
        assert_eq!(
            everything(&live),
            before,
            "{what}: the live optimizer changed"
        );
    }
    assert!(live.load(scratch("missing.safetensors")).is_err());

    // Another layout: a tensor of another shape.
    let other_shape = common::two_groups(
        "w",
        &[
            (0, vec![3, 5]),
            (1, vec![7]),
            (0, vec![2, 2, 3]),
            (1, vec![33]),
        ],
    );
    let mut single = CpuOptimizer::new(BayesConfig::default(), &[0.0; 64]).unwrap();
    let mut shaped = CpuOptimizer::from_groups(&other_shape, CpuPath::Reference);
    for (what, target) in [
        ("one group", &mut single),
        ("transposed tensor", &mut shaped),
    ] {
        let before = everything(target);
        let err = target.load(&path).unwrap_err();
        assert!(
            matches!(err, Error::CheckpointMismatch(_)),
            "{what}: {err:?}"
        );
        assert!(err.to_string().contains("does not match"), "{what}: {err}");
        assert_eq!(everything(target), before, "{what}");
    }
}

#[test]
fn checkpoints_are_plain_safetensors() {
    let mut cpu = CpuOptimizer::from_groups(&model(), CpuPath::Reference);
    steps(&mut cpu, 1..=2);
    let path = scratch("plain.safetensors");
    cpu.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = file.names();
    names.sort();
    assert!(names.contains(&"decay.w0.sigma"), "{names:?}");
    assert!(names.contains(&"decay.w0.m"), "{names:?}");
    assert!(names.contains(&"plain.w1.theta"), "{names:?}");
    assert!(
        !names.contains(&"plain.w1.m"),
        "no momentum state without momentum"
    );
    let sigma = file.tensor("decay.w2.sigma").unwrap();
    assert_eq!(sigma.shape(), &[2, 2, 3]);
    assert_eq!(sigma.dtype(), safetensors::Dtype::F32);
}
