//! Checkpoints resume bit-exactly on every device and across devices, and a damaged or
//! mismatched file is refused with the live optimizer left as it was.

use crate::common;

use std::path::PathBuf;

use bayesprop::validate::gradient;
use bayesprop::{
    BayesConfig, Checkpoint, CpuOptimizer, CpuPath, Error, GpuContext, GpuOptimizer, GradTransform,
    GroupId, NonFinitePolicy, ParamGroups, Stepper,
};

/// A file in a scratch folder that is removed when the folder is dropped.
fn scratch(name: &str) -> (common::TempDir, PathBuf) {
    let dir = common::TempDir::new("checkpoint", "");
    let path = dir.join(name);
    (dir, path)
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
        let (_path_dir, path) = scratch(&format!("{saver}.safetensors"));
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
    let (_path_dir, path) = scratch("methods.safetensors");
    cpu.save(&path).unwrap();
    let mut fresh = CpuOptimizer::from_groups(&model(), CpuPath::Reference);
    fresh.load(&path).unwrap();
    assert_eq!(everything(&fresh), everything(&cpu));
    assert_eq!(fresh.group_steps(), cpu.group_steps());
    // No temporary file is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        // Other tests save into the same folder at the same time: only this file's own.
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".methods.safetensors.tmp")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Every way a file can be wrong is refused, and the optimizer it was loaded into is as before.
#[test]
fn damaged_and_mismatched_checkpoints_are_refused() {
    let mut saved = CpuOptimizer::from_groups(&model(), CpuPath::Reference);
    steps(&mut saved, 1..=3);
    let (_path_dir, path) = scratch("good.safetensors");
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
        let (_bad_dir, bad) = scratch(&format!("{}.safetensors", what.replace(' ', "_")));
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
    assert!(live.load(scratch("missing.safetensors").1).is_err());

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
    let (_path_dir, path) = scratch("plain.safetensors");
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

/// Settings that make a run differ from the defaults in every saved way: a changed config, a
/// policy, a schedule and clipping with unscaling.
fn train_settings(o: &mut dyn Stepper) {
    o.set_group_config(
        GroupId(1),
        BayesConfig {
            eta: 3e-3,
            ..BayesConfig::default()
        }
        .into(),
    )
    .unwrap();
    o.set_group_policy(GroupId(0), NonFinitePolicy::SkipElement)
        .unwrap();
    o.set_schedule("eta:cosine:warmup=2,total=9,final=0.1".parse().unwrap())
        .unwrap();
    o.set_grad_transform(GradTransform {
        grad_scale: 8.0,
        clip_norm: Some(0.5),
        max_consecutive_skips: Some(3),
    })
    .unwrap();
}

/// `restore_all` puts back the configs, policies, schedules and transform: a fresh optimizer
/// with default settings goes on exactly as the saved run, on every device and across devices;
/// a plain `restore` keeps the live settings.
#[test]
fn restore_all_resumes_the_whole_training_step() {
    let ctx = common::gpu("restore_all_resumes_the_whole_training_step");
    let devices = devices(ctx.as_ref());
    for (saver, make_saver) in &devices {
        let mut first = make_saver();
        train_settings(&mut *first);
        steps(&mut *first, 1..=5);
        let bytes = first.checkpoint().unwrap().to_bytes().unwrap();
        for (loader, make_loader) in &devices {
            let mut straight = make_loader();
            train_settings(&mut *straight);
            steps(&mut *straight, 1..=10);
            let mut resumed = make_loader();
            resumed
                .restore_all(&Checkpoint::from_bytes(&bytes).unwrap())
                .unwrap();
            assert_eq!(resumed.layout(), straight.layout());
            steps(&mut *resumed, 6..=10);
            let what = format!("saved on {saver}, resumed on {loader}");
            if *saver == *loader || ctx.as_ref().is_none_or(|c| c.is_software()) {
                assert_eq!(everything(&*resumed), everything(&*straight), "{what}");
            }
        }
    }
    let mut saved = CpuOptimizer::from_groups(&model(), CpuPath::Reference);
    train_settings(&mut saved);
    let mut plain = CpuOptimizer::from_groups(&model(), CpuPath::Reference);
    let before = plain.layout().clone();
    plain.restore(&saved.checkpoint().unwrap()).unwrap();
    assert_eq!(plain.layout(), &before);
}

/// The checksum covers the manifest: one changed digit of a step count, a hyperparameter, a
/// schedule or the transform is refused like a flipped data bit, and changes nothing.
#[test]
fn an_altered_manifest_is_refused() {
    let mut saved = CpuOptimizer::from_groups(&model(), CpuPath::Reference);
    train_settings(&mut saved);
    steps(&mut saved, 1..=3);
    let good = saved.checkpoint().unwrap().to_bytes().unwrap();
    assert_eq!(
        Checkpoint::from_bytes(&good).unwrap(),
        saved.checkpoint().unwrap()
    );
    let mut live = CpuOptimizer::from_groups(&model(), CpuPath::Reference);
    steps(&mut live, 1..=2);
    let before = (everything(&live), live.layout().clone());
    // The manifest is a JSON string inside the header's JSON, so its quotes are escaped.
    for (what, from, to) in [
        ("a step count", r#"\"steps\":3"#, r#"\"steps\":7"#),
        ("a hyperparameter", r#"\"eta\":0.003"#, r#"\"eta\":0.004"#),
        ("a schedule", r#"\"total\":9"#, r#"\"total\":8"#),
        (
            "the transform",
            r#"\"clip_norm\":0.5"#,
            r#"\"clip_norm\":0.7"#,
        ),
    ] {
        let at = good
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .unwrap_or_else(|| panic!("{what}: no {from} in the header"));
        let mut altered = good.clone();
        altered[at..at + to.len()].copy_from_slice(to.as_bytes());
        let err = Checkpoint::from_bytes(&altered).unwrap_err();
        assert!(
            err.to_string().contains("manifest: checksum"),
            "{what}: {err}"
        );
        let (_path_dir, path) = scratch(&format!("altered {what}.safetensors"));
        std::fs::write(&path, &altered).unwrap();
        assert!(live.load_all(&path).is_err(), "{what}");
        assert_eq!((everything(&live), live.layout().clone()), before, "{what}");
    }
}

/// Every optimizer of the table, with every state slot it can have, saves and resumes bit for
/// bit through a checkpoint's bytes: the state names and slots come from the table, so a new
/// row is saved with nothing written for it here.
#[test]
fn every_optimizer_of_the_table_resumes_bit_for_bit() {
    let battery = bayesprop::validate::standard_battery();
    for row in bayesprop::optim::TABLE {
        let config = battery
            .iter()
            .filter(|case| case.name.split(' ').next() == Some(row.name))
            .map(|case| case.config.clone())
            .max_by_key(|c| c.used_state_names().len())
            .unwrap_or_else(|| (row.config)());
        let theta0 = bayesprop::validate::initial_theta(301, 5);
        let make = || CpuOptimizer::reference(config.clone(), &theta0).unwrap();
        let (mut straight, mut first) = (make(), make());
        steps(&mut straight, 1..=6);
        steps(&mut first, 1..=3);
        let bytes = first.checkpoint().unwrap().to_bytes().unwrap();
        let mut resumed = make();
        resumed
            .restore(&Checkpoint::from_bytes(&bytes).unwrap())
            .unwrap();
        steps(&mut resumed, 4..=6);
        let state = |o: &CpuOptimizer| {
            let mut v = vec![o.theta().unwrap()];
            v.extend(
                config
                    .used_state_names()
                    .iter()
                    .map(|name| o.state(name).unwrap()),
            );
            v
        };
        common::assert_same_bits(&state(&resumed), &state(&straight), row.name);
        assert_eq!(
            resumed.steps_taken().unwrap(),
            straight.steps_taken().unwrap()
        );
    }
}
