//! The `bayesprop` binary: `replay` on every device, its error paths (exit 2, one line on
//! stderr, no panic), `validate` and `info`.

mod common;

use std::process::Command;

use common::cli::bayesprop;
use common::TempDir;

use bayesprop::validate::{self, Oracle, Rule};
use bayesprop::{
    BayesConfig, CpuOptimizer, CpuPath, GroupId, Optimizer, OptimizerConfig, ParamGroups,
    StateFormat, Stepper, Stored,
};
use ndarray::{Array1, Array2};
use ndarray_npy::{read_npy, write_npy};

/// A scratch folder of this binary's tests.
fn scratch(name: &str) -> TempDir {
    TempDir::new("cli", name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// θ₀ and gradients spanning several magnitudes, with some exact zeros (sparse elements).
fn inputs(t: usize, n: usize) -> (Array1<f32>, Array2<f32>) {
    let theta0 = Array1::from_shape_fn(n, |i| {
        ((i as f32) * 0.731).sin() * 10f32.powi(i as i32 % 5 - 2)
    });
    let grads = Array2::from_shape_fn((t, n), |(k, i)| {
        if i % 7 == 3 && k < t / 2 {
            0.0
        } else {
            ((k * n + i) as f32 * 0.377).cos() * 10f32.powi((i + k) as i32 % 9 - 6)
        }
    });
    (theta0, grads)
}

/// Writes θ₀ and the gradients as `params.npy` and `grads.npy` in `dir`.
fn write_inputs(dir: &TempDir, t: usize, n: usize) -> (Array1<f32>, Array2<f32>) {
    let (theta0, grads) = inputs(t, n);
    write_npy(dir.join("params.npy"), &theta0).unwrap();
    write_npy(dir.join("grads.npy"), &grads).unwrap();
    (theta0, grads)
}

/// Runs `replay` with `extra` arguments; returns θ after each step, asserting success.
fn replay_ok(dir: &TempDir, device: &str, extra: &[&str]) -> Array2<f32> {
    replay_with(
        dir,
        device,
        "grads.npy",
        &format!("out-{device}.npy"),
        extra,
    )
}

/// `replay_ok` on the gradients in `grads`, writing θ to `out`.
fn replay_with(dir: &TempDir, device: &str, grads: &str, out: &str, extra: &[&str]) -> Array2<f32> {
    let mut args = vec![
        "replay",
        "--optimizer",
        "bayes",
        "--params",
        "params.npy",
        "--grads",
        grads,
        "--out",
        out,
        "--device",
        device,
    ];
    args.extend_from_slice(extra);
    let output = bayesprop(&args, dir.path());
    assert!(
        output.status.success(),
        "replay --device {device} failed: {:?}\nstderr: {}",
        output.status,
        text(&output.stderr)
    );
    read_npy(dir.join(out)).unwrap()
}

/// θ after each step from the in-process reference.
fn reference_run(
    config: OptimizerConfig,
    theta0: &Array1<f32>,
    grads: &Array2<f32>,
) -> Array2<f32> {
    let mut optimizer = CpuOptimizer::reference(config, &theta0.to_vec()).unwrap();
    let mut out = Array2::zeros(grads.dim());
    for (grad, mut row) in grads.rows().into_iter().zip(out.rows_mut()) {
        optimizer.step(&grad.to_vec()).unwrap();
        row.assign(&Array1::from(optimizer.theta().unwrap()));
    }
    out
}

/// θ after each step of a replay on a hardware adapter against the reference's, under
/// `validate`'s rule for hardware, with the f64 oracle stepped alongside.
fn assert_follows_oracle_rule(
    got: &Array2<f32>,
    reference: &Array2<f32>,
    config: &OptimizerConfig,
    theta0: &Array1<f32>,
    grads: &Array2<f32>,
    what: &str,
) {
    let mut oracle = Oracle::new(config, &theta0.to_vec());
    for (k, grad) in grads.rows().into_iter().enumerate() {
        oracle.step(&grad.to_vec());
        let (t, row) = (k as u64 + 1, |a: &Array2<f32>| a.row(k).to_vec());
        let exact = oracle.vector(Stored::Theta);
        if let Err(why) = validate::judge(Rule::Oracle, t, &row(got), &row(reference), exact) {
            panic!("{what}: step {t}: {why}");
        }
    }
}

fn assert_bits_equal(a: &Array2<f32>, b: &Array2<f32>, what: &str) {
    assert_eq!(a.dim(), b.dim(), "{what}: shapes");
    for ((k, i), (x, y)) in a
        .indexed_iter()
        .zip(b.iter())
        .map(|((ix, x), y)| (ix, (x, y)))
    {
        assert_eq!(
            x.to_bits(),
            y.to_bits(),
            "{what}: step {k}, element {i}: {x:e} vs {y:e}"
        );
    }
}

#[test]
fn replay_on_the_cpu_devices_matches_the_reference() {
    let dir = scratch("cpu");
    let (t, n) = (25, 301);
    let (theta0, grads) = write_inputs(&dir, t, n);
    let reference = replay_ok(&dir, "reference", &[]);
    assert_eq!(reference.dim(), (t, n));
    let cpu = replay_ok(&dir, "cpu", &[]);
    assert_bits_equal(&cpu, &reference, "cpu vs reference");
    let in_process = reference_run(
        OptimizerConfig::default_for("bayes").unwrap(),
        &theta0,
        &grads,
    );
    assert_bits_equal(&reference, &in_process, "replay vs in-process reference");
    // The steps did something.
    assert_ne!(reference.row(t - 1), theta0);
}

#[test]
fn replay_on_the_gpu_is_bit_identical_on_a_software_adapter() {
    let Some(ctx) = common::gpu("replay_on_the_gpu_is_bit_identical_on_a_software_adapter") else {
        return;
    };
    let dir = scratch("gpu");
    let (t, n) = (25, 301);
    let (theta0, grads) = write_inputs(&dir, t, n);
    let reference = replay_ok(&dir, "reference", &[]);
    let cpu = replay_ok(&dir, "cpu", &[]);
    let gpu = replay_ok(&dir, "gpu", &[]);
    assert_eq!(gpu.dim(), (t, n));
    assert_bits_equal(&cpu, &reference, "cpu vs reference");
    if ctx.is_software() {
        assert_bits_equal(&gpu, &reference, "gpu vs reference");
    } else {
        let bayes = OptimizerConfig::default_for("bayes").unwrap();
        assert_follows_oracle_rule(&gpu, &reference, &bayes, &theta0, &grads, "gpu");
    }
    // `--device gpu` is the default.
    let output = bayesprop(
        &[
            "replay",
            "--optimizer",
            "bayes",
            "--params",
            "params.npy",
            "--grads",
            "grads.npy",
            "--out",
            "default.npy",
        ],
        dir.path(),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let default: Array2<f32> = read_npy(dir.join("default.npy")).unwrap();
    assert_bits_equal(&default, &gpu, "default device vs --device gpu");
}

#[test]
fn replay_honours_set() {
    let dir = scratch("set");
    let (t, n) = (12, 64);
    let (theta0, grads) = write_inputs(&dir, t, n);
    let settings = [
        ("eta", "1e-2"),
        ("sigma_init", "fixed_point"),
        ("bias_correction", "false"),
    ];
    let set_args: Vec<String> = settings
        .iter()
        .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
        .collect();
    let set_args: Vec<&str> = set_args.iter().map(String::as_str).collect();
    let config = OptimizerConfig::from_settings("bayes", settings).unwrap();
    let expected = reference_run(config, &theta0, &grads);
    for device in ["reference", "cpu"] {
        let got = replay_ok(&dir, device, &set_args);
        assert_bits_equal(&got, &expected, &format!("--set on {device}"));
    }
    // The settings made a difference.
    let default = replay_ok(&dir, "reference", &[]);
    assert_ne!(default, expected, "--set changed nothing");
}

#[test]
fn replay_honours_set_on_the_gpu() {
    let Some(ctx) = common::gpu("replay_honours_set_on_the_gpu") else {
        return;
    };
    let dir = scratch("set-gpu");
    let (t, n) = (12, 64);
    let (theta0, grads) = write_inputs(&dir, t, n);
    let settings = [
        ("eta", "1e-2"),
        ("sigma_init", "fixed_point"),
        ("bias_correction", "false"),
    ];
    let config = OptimizerConfig::from_settings("bayes", settings).unwrap();
    let expected = reference_run(config.clone(), &theta0, &grads);
    let got = replay_ok(
        &dir,
        "gpu",
        &[
            "--set",
            "eta=1e-2",
            "--set",
            "sigma_init=fixed_point",
            "--set",
            "bias_correction=false",
        ],
    );
    if ctx.is_software() {
        assert_bits_equal(&got, &expected, "--set on gpu");
    } else {
        assert_follows_oracle_rule(&got, &expected, &config, &theta0, &grads, "--set on gpu");
    }
}

#[test]
fn replay_holds_state_as_set() {
    // `--set state_format=… --set state_seed=…` hold the state as SPEC §6 says: the same θ
    // as the library's reference with those options, on both CPU devices; the formats and
    // seeds each change θ.
    let dir = scratch("state-format");
    let (t, n) = (20, 600);
    let (theta0, grads) = write_inputs(&dir, t, n);
    let held = |format: StateFormat, seed: u32| {
        let mut groups = ParamGroups::single(
            OptimizerConfig::default_for("bayes").unwrap(),
            &theta0.to_vec(),
        )
        .unwrap();
        groups.set_state_format(GroupId(0), format, seed).unwrap();
        let mut optimizer = CpuOptimizer::from_groups(&groups, CpuPath::Reference);
        let mut out = Array2::zeros(grads.dim());
        for (grad, mut row) in grads.rows().into_iter().zip(out.rows_mut()) {
            optimizer.step(&grad.to_vec()).unwrap();
            row.assign(&Array1::from(optimizer.theta().unwrap()));
        }
        out
    };
    let mut seen = Vec::new();
    for (format, seed) in [
        (StateFormat::Bf16, 0),
        (StateFormat::Q8, 0),
        (StateFormat::Q8, 7),
    ] {
        let expected = held(format, seed);
        let format_arg = format!("state_format={format}");
        let seed_arg = format!("state_seed={seed}");
        for device in ["reference", "cpu"] {
            let got = replay_ok(&dir, device, &["--set", &format_arg, "--set", &seed_arg]);
            assert_bits_equal(
                &got,
                &expected,
                &format!("{format_arg} {seed_arg} on {device}"),
            );
        }
        seen.push(expected);
    }
    seen.push(replay_ok(&dir, "reference", &[]));
    for (i, a) in seen.iter().enumerate() {
        for b in &seen[i + 1..] {
            assert_ne!(a, b, "a format or seed changed nothing");
        }
    }
}

/// Runs a failing `replay` and checks exit code 2, one line on stderr naming what is wrong,
/// no panic, and no output file.
fn replay_fails(dir: &TempDir, args: &[&str], mentions: &[&str]) -> String {
    let out = dir.join("never.npy");
    let _ = std::fs::remove_file(&out);
    let mut all = vec!["replay"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", "never.npy", "--device", "cpu"]);
    let output = bayesprop(&all, dir.path());
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{args:?}: exit status {:?}, stderr: {stderr}",
        output.status
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert_eq!(
        stderr.trim_end_matches('\n').lines().count(),
        1,
        "{args:?}: stderr is not one line:\n{stderr}"
    );
    assert!(stderr.ends_with('\n'), "{args:?}: {stderr:?}");
    for word in mentions {
        assert!(
            stderr.contains(word),
            "{args:?}: stderr lacks {word:?}: {stderr}"
        );
    }
    assert!(
        !out.exists(),
        "{args:?}: wrote an output file although it failed"
    );
    stderr
}

#[test]
fn replay_errors_exit_2_with_one_line() {
    let dir = scratch("errors");
    let (t, n) = (4, 6);
    let (theta0, _) = write_inputs(&dir, t, n);
    write_npy(dir.join("grads-wide.npy"), &Array2::<f32>::ones((t, n + 1))).unwrap();
    write_npy(dir.join("grads-f64.npy"), &Array2::<f64>::ones((t, n))).unwrap();
    write_npy(
        dir.join("params-2d.npy"),
        &theta0.clone().into_shape_with_order((n, 1)).unwrap(),
    )
    .unwrap();
    let base = |params: &'static str, grads: &'static str| {
        vec!["--optimizer", "bayes", "--params", params, "--grads", grads]
    };

    replay_fails(&dir, &base("missing.npy", "grads.npy"), &["missing.npy"]);
    replay_fails(
        &dir,
        &base("params.npy", "grads-wide.npy"),
        &["grads-wide.npy", "7", "6"],
    );
    replay_fails(
        &dir,
        &base("params.npy", "grads-f64.npy"),
        &["grads-f64.npy"],
    );
    replay_fails(
        &dir,
        &base("params-2d.npy", "grads.npy"),
        &["params-2d.npy"],
    );

    let mut args = base("params.npy", "grads.npy");
    args[1] = "no_such_optimizer";
    replay_fails(&dir, &args, &["optimizer", "no_such_optimizer", "bayes"]);

    let with = |extra: &[&'static str]| {
        let mut args = base("params.npy", "grads.npy");
        args.extend_from_slice(extra);
        args
    };
    replay_fails(&dir, &with(&["--set", "lr=1e-3"]), &["lr", "eta"]);
    replay_fails(&dir, &with(&["--set", "eta"]), &["eta", "KEY=VALUE"]);
    replay_fails(
        &dir,
        &with(&["--set", "eta=-1"]),
        &["eta", "-1", "eta >= 0"],
    );
    replay_fails(
        &dir,
        &with(&["--set", "eta=abc"]),
        &["eta", "abc", "a number"],
    );
    replay_fails(
        &dir,
        &with(&["--set", "eta=0", "--set", "sigma_init=fixed_point"]),
        &["sigma_init", "eta = 0"],
    );
    replay_fails(
        &dir,
        &with(&["--set", "beta=1"]),
        &["beta", "1.0", "0 <= beta < 1"],
    );
    replay_fails(
        &dir,
        &with(&["--set", "momentum=nan"]),
        &["momentum", "NaN"],
    );
    replay_fails(
        &dir,
        &with(&["--set", "state_format=fp8"]),
        &["state format", "fp8", "f32, bf16, q8"],
    );
    replay_fails(
        &dir,
        &with(&["--set", "state_seed=-1"]),
        &["state_seed", "-1", "4294967295"],
    );
}

#[test]
fn validate_passes_and_states_its_bound() {
    if common::gpu("validate_passes_and_states_its_bound").is_none() {
        return;
    }
    let dir = scratch("validate");
    let output = bayesprop(&["validate"], dir.path());
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert!(
        output.status.success(),
        "validate: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("rule: bit-identical")
            || stdout.contains("rule: mean error from the f64 oracle"),
        "validate names the rule it applied: {stdout}"
    );
    assert!(stdout.contains("0 case(s) over their bound"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn info_prints_the_memory_of_a_parameter_count_per_format() {
    // 1G parameters: θ and g are 8 GiB; bayes holds 8, 4 and 2 + 4/256 bytes of state per
    // parameter in f32, bf16 and q8.
    let dir = scratch("info-params");
    let output = bayesprop(&["info", "--params", "1G"], dir.path());
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    let bayes: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("bayes "))
        .expect("a bayes line")
        .split_whitespace()
        .collect();
    assert_eq!(
        bayes,
        ["bayes", "8.000", "4.000", "2.031", "16.00", "12.00", "10.03"],
        "{stdout}"
    );
    let bad = bayesprop(&["info", "--params", "many"], dir.path());
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("many"));
}

#[test]
fn info_names_the_chosen_adapter() {
    let Some(ctx) = common::gpu("info_names_the_chosen_adapter") else {
        return;
    };
    let dir = scratch("info");
    let output = bayesprop(&["info"], dir.path());
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "info: {:?}\n{stdout}\n{}",
        output.status,
        text(&output.stderr)
    );
    let name = &ctx.adapter_info().name;
    assert!(
        stdout.contains(&format!("chosen: {name}")),
        "info does not name the adapter {name:?}:\n{stdout}"
    );
    assert!(stdout.contains("kernels: "), "{stdout}");
}

#[test]
fn starts_quietly_without_xdg_runtime_dir() {
    let Some(_) = common::gpu("starts_quietly_without_xdg_runtime_dir") else {
        return;
    };
    let dir = scratch("quiet");
    // Unset, and set to what libwayland calls invalid (not an absolute path).
    for value in [None, Some(""), Some("relative")] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bayesprop"));
        command.arg("info").current_dir(dir.path());
        match value {
            None => command.env_remove("XDG_RUNTIME_DIR"),
            Some(value) => command.env("XDG_RUNTIME_DIR", value),
        };
        let output = command.output().expect("the binary runs");
        let stderr = text(&output.stderr);
        assert!(output.status.success(), "{value:?}: {stderr}");
        assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{value:?}: {stderr}");
    }
}

/// The subcommands that open the GPU.
fn gpu_subcommands() -> Vec<&'static str> {
    vec!["info", "validate", "replay", "bench", "demo"]
}

#[test]
fn every_gpu_subcommand_takes_the_same_gpu_flags() {
    let dir = scratch("flags");
    for subcommand in gpu_subcommands() {
        let help = text(&bayesprop(&[subcommand, "--help"], dir.path()).stdout);
        for flag in ["--adapter <NAME>", "--workgroup-size <W>", "--scalar-only"] {
            assert!(help.contains(flag), "{subcommand} has no {flag}:\n{help}");
        }
    }
}

#[test]
fn an_adapter_flag_that_matches_nothing_says_so() {
    let dir = scratch("adapter");
    for subcommand in ["info", "validate"] {
        let output = bayesprop(&[subcommand, "--adapter", "no such adapter"], dir.path());
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{subcommand}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("no such adapter"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// The schedules of SPEC §4b, each with its CLI spelling and the factor from its definition.
/// A schedule's factor as a function of t.
type Factor = fn(f64) -> f64;

const SCHEDULES: [(&str, Factor); 4] = [
    ("constant", |_| 1.0),
    ("linear:warmup=5", |t| (t / 5.0).min(1.0)),
    ("cosine:warmup=3,total=20,final=0.1", |t| {
        if t <= 3.0 {
            t / 3.0
        } else {
            let p = ((t - 3.0) / 17.0).min(1.0);
            0.1 + 0.9 * (1.0 + (std::f64::consts::PI * p).cos()) / 2.0
        }
    }),
    ("step:every=4,gamma=0.5", |t| 0.5f64.powf((t / 4.0).floor())),
];

const LOSS_SCALE: f32 = 128.0;
const CLIP_NORM: f64 = 20.0;

/// θ after each step in f64 of SPEC §4b around `bayes`: g / S, the norm of that, the clip
/// factor min(1, M / (N + 1e-6)), and η times the schedule's factor, written here from the
/// definitions; the update is the crate's f64 oracle of SPEC §2. Also whether any step clipped.
fn float64_path(theta0: &Array1<f32>, scaled: &Array2<f32>, factor: Factor) -> (Array2<f64>, bool) {
    let base = BayesConfig::default();
    let mut theta: Vec<f64> = theta0.iter().map(|&x| x as f64).collect();
    let slots = base.state_slots();
    let mut state: Vec<Vec<f64>> = slots
        .iter()
        .map(|s| match s.used {
            true => vec![s.init as f64; theta.len()],
            false => Vec::new(),
        })
        .collect();
    let mut out = Array2::zeros(scaled.dim());
    let mut clipped = false;
    for (k, row) in scaled.rows().into_iter().enumerate() {
        let t = k as u64 + 1;
        let unscaled: Vec<f64> = row.iter().map(|&g| g as f64 / LOSS_SCALE as f64).collect();
        let norm = unscaled.iter().map(|u| u * u).sum::<f64>().sqrt();
        let c = (CLIP_NORM / (norm + 1e-6)).min(1.0);
        clipped |= c < 1.0;
        let grad: Vec<f64> = unscaled.iter().map(|u| u * c).collect();
        let config = BayesConfig {
            eta: base.eta * factor(t as f64),
            ..base
        };
        let mut views: Vec<&mut [f64]> = state.iter_mut().map(|v| &mut v[..]).collect();
        config.oracle_step(t, &mut theta, &grad, &mut views);
        out.row_mut(k).assign(&Array1::from(theta.clone()));
    }
    (out, clipped)
}

/// The largest error of any element, relative to the largest |θ| along that element's f64
/// path (so that an element passing through 0 is judged by its scale, not by the crossing).
fn path_relative_error(got: &Array2<f32>, want: &Array2<f64>) -> f64 {
    (0..want.ncols())
        .map(|i| {
            let scale = want.column(i).iter().fold(0f64, |m, x| m.max(x.abs()));
            let err = got
                .column(i)
                .iter()
                .zip(want.column(i))
                .fold(0f64, |m, (&g, &w)| m.max((g as f64 - w).abs()));
            err / scale
        })
        .fold(0.0, f64::max)
}

/// Gradients times the loss scale, as a mixed-precision run hands them over.
fn write_scaled_inputs(dir: &TempDir, t: usize, n: usize) -> (Array1<f32>, Array2<f32>) {
    let (theta0, grads) = inputs(t, n);
    let scaled = grads.mapv(|g| g * LOSS_SCALE);
    write_npy(dir.join("params.npy"), &theta0).unwrap();
    write_npy(dir.join("grads.npy"), &scaled).unwrap();
    (theta0, scaled)
}

/// `--grad-scale`, `--clip-norm` and each schedule kind agree with the f64 definitions on every
/// device, to path-relative error 1e-5.
#[test]
fn replay_unscales_clips_and_schedules_as_defined() {
    let gpu = common::gpu("replay_unscales_clips_and_schedules_as_defined").is_some();
    let dir = scratch("train");
    let (theta0, scaled) = write_scaled_inputs(&dir, 24, 64);
    let scale = LOSS_SCALE.to_string();
    let clip = CLIP_NORM.to_string();
    let devices: &[&str] = if gpu {
        &["reference", "cpu", "gpu"]
    } else {
        &["reference", "cpu"]
    };
    for (spelling, factor) in SCHEDULES {
        let (want, clipped) = float64_path(&theta0, &scaled, factor);
        assert!(clipped, "no step clipped: the check would not see clipping");
        let schedule = format!("eta:{spelling}");
        for device in devices {
            let got = replay_ok(
                &dir,
                device,
                &[
                    "--grad-scale",
                    &scale,
                    "--clip-norm",
                    &clip,
                    "--schedule",
                    &schedule,
                ],
            );
            let err = path_relative_error(&got, &want);
            eprintln!("{schedule} on {device}: path-relative error {err:e}");
            assert!(err <= 1e-5, "{schedule} on {device}: {err:e}");
        }
    }
}

/// Stopping after 8 steps with `--state-out` and going on with `--state-in` alone (the
/// transform and the schedule come back from the checkpoint) is the straight run, bit for bit.
#[test]
fn a_split_replay_resumes_schedule_and_clipping_bit_exactly() {
    let gpu = common::gpu("a_split_replay_resumes_schedule_and_clipping_bit_exactly").is_some();
    let dir = scratch("split");
    let (_, scaled) = write_scaled_inputs(&dir, 20, 64);
    write_npy(
        dir.join("first.npy"),
        &scaled.slice(ndarray::s![..8, ..]).to_owned(),
    )
    .unwrap();
    write_npy(
        dir.join("rest.npy"),
        &scaled.slice(ndarray::s![8.., ..]).to_owned(),
    )
    .unwrap();
    let scale = LOSS_SCALE.to_string();
    let clip = CLIP_NORM.to_string();
    let flags = [
        "--grad-scale",
        &scale,
        "--clip-norm",
        &clip,
        "--schedule",
        "eta:cosine:warmup=3,total=20,final=0.1",
    ];
    let devices: &[&str] = if gpu {
        &["reference", "cpu", "gpu"]
    } else {
        &["reference", "cpu"]
    };
    for device in devices {
        let straight = replay_ok(&dir, device, &flags);
        let state = format!("state-{device}.safetensors");
        let mut first_flags = flags.to_vec();
        first_flags.extend(["--state-out", &state]);
        let first = replay_with(&dir, device, "first.npy", "first-out.npy", &first_flags);
        let rest = replay_with(
            &dir,
            device,
            "rest.npy",
            "rest-out.npy",
            &["--state-in", &state],
        );
        let joined = ndarray::concatenate(ndarray::Axis(0), &[first.view(), rest.view()]).unwrap();
        assert_bits_equal(
            &joined,
            &straight,
            &format!("split vs straight on {device}"),
        );
        // Without the checkpoint's settings the rest would differ: the check can fail.
        let plain = replay_with(
            &dir,
            device,
            "rest.npy",
            "plain-out.npy",
            &[
                "--state-in",
                &state,
                "--clip-norm",
                "inf",
                "--schedule",
                "eta:constant",
            ],
        );
        assert_ne!(
            plain, rest,
            "{device}: flags did not override the checkpoint"
        );
    }
}

/// Bad transform and schedule values: one line naming the flag or key, exit 2, no output and
/// no checkpoint written.
#[test]
fn replay_refuses_bad_transforms_and_schedules() {
    let dir = scratch("train-errors");
    write_inputs(&dir, 4, 6);
    let with = |extra: &[&'static str]| {
        let base = "--optimizer bayes --params params.npy --grads grads.npy";
        let mut args: Vec<&str> = base.split_whitespace().collect();
        args.extend(["--state-out", "never.safetensors"]);
        args.extend_from_slice(extra);
        args
    };
    for (extra, mentions) in [
        (&["--clip-norm", "-1"][..], &["clip_norm", "-1", "> 0"][..]),
        (&["--clip-norm", "abc"], &["--clip-norm", "abc", "a number"]),
        (&["--grad-scale", "0"], &["grad_scale", "0", "> 0"]),
        (&["--grad-scale", "-2"], &["grad_scale", "> 0"]),
        (
            &["--schedule", "eta:exp"],
            &["schedule kind", "exp", "cosine"],
        ),
        (
            &["--schedule", "eta:linear:length=3"],
            &["linear:length", "warmup"],
        ),
        (
            &["--schedule", "eta:cosine:warmup=10,total=10,final=0.1"],
            &["total", "total > warmup"],
        ),
        (
            &["--schedule", "eta:cosine:warmup=1,total=10,final=2"],
            &["final", "0 <= final <= 1"],
        ),
        (&["--schedule", "eta:linear:warmup=0"], &["warmup", ">= 1"]),
        (&["--schedule", "lr:constant"], &["lr", "eta"]),
        (&["--schedule", "eta"], &["HYPER:KIND"]),
    ] {
        replay_fails(&dir, &with(extra), mentions);
        assert!(!dir.join("never.safetensors").exists(), "{extra:?}");
    }
}

/// A malformed GPU environment variable is refused by name, not ignored.
#[test]
fn malformed_gpu_environment_variables_exit_2_naming_them() {
    let dir = scratch("environment");
    for (name, value) in [
        ("BAYESPROP_WORKGROUP_SIZE", "abc"),
        ("BAYESPROP_WORKGROUP_SIZE", "0"),
        ("BAYESPROP_SCALAR_ONLY", "yes"),
        ("WGPU_BACKEND", "cuda"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bayesprop"))
            .arg("validate")
            .current_dir(dir.path())
            .env("XDG_RUNTIME_DIR", "/tmp")
            .env(name, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(name) && stderr.contains(value),
            "{name}={value}: {stderr}"
        );
    }
}
