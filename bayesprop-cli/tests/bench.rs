//! `bayesprop bench`: its JSON interface, its table, the plot, and the CPU rows without an
//! adapter. Small sizes and few steps; no test here asserts a speed.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use bayesprop::bench::{format_size, parse_size};
use bayesprop::OptimizerConfig;

const KEYS: [&str; 10] = [
    "optimizer",
    "n",
    "device",
    "adapter",
    "step_seconds_median",
    "elements_per_second",
    "bytes_per_element",
    "gb_per_second",
    "roofline_gb_per_second",
    "roofline_fraction",
];

fn bayesprop(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bayesprop"));
    command.args(args).env("XDG_RUNTIME_DIR", "/tmp");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn rows(out: &Output) -> Vec<serde_json::Map<String, serde_json::Value>> {
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)));
    value
        .as_array()
        .expect("one JSON array")
        .iter()
        .map(|row| row.as_object().expect("an object per row").clone())
        .collect()
}

#[test]
fn sizes_parse_and_print_in_binary_units() {
    assert_eq!(parse_size("16M").unwrap(), 16 << 20);
    assert_eq!(parse_size("64K").unwrap(), 64 << 10);
    assert_eq!(parse_size("1000").unwrap(), 1000);
    assert!(parse_size("0").is_err() && parse_size("lots").is_err());
    assert_eq!(format_size(16 << 20), "16M");
    assert_eq!(format_size(4 << 30), "4G");
    assert_eq!(format_size(10_000_000), "10e6");
    assert_eq!(format_size(1003), "1003");
}

#[test]
fn json_rows_carry_every_documented_key_for_every_optimizer() {
    let out = bayesprop(
        &[
            "bench",
            "--device",
            "cpu",
            "--sizes",
            "4K,8K",
            "--steps",
            "2",
            "--json",
            "--matrix-only",
        ],
        &[],
    );
    let rows = rows(&out);
    let table = OptimizerConfig::all_defaults();
    assert_eq!(
        rows.len(),
        2 * table.len(),
        "one row per optimizer and size"
    );
    for row in &rows {
        for key in KEYS {
            assert!(row.contains_key(key), "missing {key}: {row:?}");
        }
        assert_eq!(row["device"], "cpu");
        let name = row["optimizer"].as_str().unwrap();
        let config = OptimizerConfig::default_for(name).unwrap();
        // The default policy is skip-step: its scan reads g once more than SPEC's update.
        assert_eq!(
            row["bytes_per_element"].as_f64().unwrap(),
            (config.as_dyn().bytes_per_element() + 4) as f64,
            "{name}: bytes really moved"
        );
        assert_eq!(row["step"], "update");
        for key in [
            "step_seconds_median",
            "roofline_gb_per_second",
            "roofline_fraction",
        ] {
            let v = row[key].as_f64().unwrap();
            assert!(v.is_finite() && v > 0.0, "{name} {key} = {v}");
        }
    }
}

#[test]
fn without_an_adapter_the_cpu_rows_run_and_one_line_says_why() {
    let absent = if cfg!(target_os = "macos") {
        "dx12"
    } else {
        "metal"
    };
    let out = bayesprop(
        &[
            "bench",
            "--optimizer",
            "bayes",
            "--sizes",
            "4K",
            "--steps",
            "1",
            "--matrix-only",
        ],
        &[("WGPU_BACKEND", absent)],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let why: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("GPU rows skipped"))
        .collect();
    assert_eq!(why.len(), 1, "{stdout}");
    assert!(why[0].contains("mesa-vulkan-drivers"), "{stdout}");
    for device in ["cpu", "reference"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("bayes") && l.contains(device)),
            "no {device} row: {stdout}"
        );
    }
    assert!(!stdout
        .lines()
        .any(|l| l.starts_with("bayes") && l.contains(" gpu ")));
}

/// How `bench` times GPU rows on this context.
fn timing_of(ctx: &bayesprop::GpuContext) -> &'static str {
    if ctx.has_timestamps() {
        "timestamp-query"
    } else {
        "wall-clock"
    }
}

#[test]
fn gpu_rows_name_the_adapter_and_how_they_were_timed() {
    let Some(ctx) = common::gpu("gpu_rows_name_the_adapter_and_how_they_were_timed") else {
        return;
    };
    let out = bayesprop(
        &[
            "bench",
            "--device",
            "gpu",
            "--optimizer",
            "adam",
            "--sizes",
            "4K",
            "--steps",
            "2",
            "--json",
        ],
        &[],
    );
    let rows = rows(&out);
    // The matrix, the scan-cost row, and one tensor of 10M against the same in 10,000 tensors,
    // in the optimizer's arena and in the caller's buffers.
    assert_eq!(rows.len(), 5, "{rows:?}");
    let cases: Vec<&str> = rows.iter().map(|r| r["case"].as_str().unwrap()).collect();
    assert_eq!(
        cases[2..],
        [
            "one tensor",
            "10000 tensors of 1000",
            "10000 tensors of 1000 in caller buffers"
        ]
    );
    let timing = timing_of(&ctx);
    for row in &rows {
        assert_eq!(row["device"], "gpu");
        assert!(row["adapter"]
            .as_str()
            .unwrap()
            .contains(&ctx.adapter_info().name));
        assert_eq!(row["timing"], timing);
        assert_eq!(row["vec4"], true);
    }
}

#[test]
fn training_step_rows_set_fused_against_unfused_by_real_bytes() {
    let Some(_ctx) = common::gpu("training_step_rows_set_fused_against_unfused_by_real_bytes")
    else {
        return;
    };
    let args = [
        "bench",
        "--optimizer",
        "sgd",
        "--sizes",
        "4K",
        "--steps",
        "2",
        "--matrix-only",
        "--training-step",
    ];
    let rows = rows(&bayesprop(&[&args[..], &["--json"]].concat(), &[]));
    let training: Vec<_> = rows.iter().filter(|r| r["step"] != "update").collect();
    // bayes and adam; cpu and gpu; skip-step and skip-element; fused and unfused.
    assert_eq!(training.len(), 2 * 2 * 2 * 2, "{training:?}");
    for row in &training {
        let (name, policy) = (&row["optimizer"], &row["policy"]);
        let fused = row["step"] == "fused training step";
        // bayes and adam: g, θ and two state vectors; the scan reads g under every policy
        // once the step unscales and clips; the unfused passes move 8 + 4 + 8 more, and
        // its plain step scans only under skip-step.
        let expected = match (fused, policy.as_str().unwrap()) {
            (true, _) => 32.0,
            (false, "skip-step") => 52.0,
            (false, _) => 48.0,
        };
        assert_eq!(row["bytes_per_element"], expected, "{row:?}");
        let fraction = row["roofline_fraction"].as_f64().unwrap();
        assert!(fraction.is_finite() && fraction > 0.0, "{row:?}");
        let ratio = &row["unfused_over_fused"];
        if fused {
            let r = ratio.as_f64().unwrap();
            assert!(r.is_finite() && r > 0.0, "{name} {policy}: {r}");
        } else {
            assert!(ratio.is_null(), "{row:?}");
        }
    }
    let out = bayesprop(&args, &[]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for name in ["bayes", "adam"] {
        for policy in ["skip-step", "skip-element"] {
            let line = format!("training step ({name}, cpu, n=4K, {policy}): fused");
            let found = stdout.lines().find(|l| l.starts_with(&line));
            assert!(
                found.is_some_and(|l| l.contains("unfused/fused")),
                "{line}: {stdout}"
            );
        }
    }
}

#[test]
fn plot_writes_an_svg() {
    let path: PathBuf =
        std::env::temp_dir().join(format!("bayesprop-bench-{}.svg", std::process::id()));
    let out = bayesprop(
        &[
            "bench",
            "--device",
            "cpu",
            "--optimizer",
            "sgd",
            "--sizes",
            "4K,16K",
            "--steps",
            "1",
            "--matrix-only",
            "--plot",
            path.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let svg = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        svg.starts_with("<svg") && svg.contains("sgd: throughput"),
        "{svg:.200}"
    );
}

/// Exit 2 and one line on stderr that mentions each of `mentions`, and no panic.
fn refused(args: &[&str], mentions: &[&str]) {
    let out = bayesprop(args, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    for m in mentions {
        assert!(
            stderr.contains(m),
            "{args:?} does not mention {m:?}: {stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The training step's flags: bad values are refused in one line; unscaling alone under
/// skip-element needs no scan, so its fused rows move the plain step's bytes.
#[test]
fn training_step_flags_set_the_transform_and_refuse_bad_values() {
    let row = [
        "bench",
        "--sizes",
        "4K",
        "--device",
        "cpu",
        "--optimizer",
        "sgd",
        "--steps",
        "2",
        "--matrix-only",
        "--training-step",
    ];
    refused(
        &[&row[..], &["--clip-norm", "-1"]].concat(),
        &["clip_norm", "-1"],
    );
    refused(
        &[&row[..], &["--grad-scale", "0"]].concat(),
        &["grad_scale", "0"],
    );
    refused(
        &[&row[..], &["--clip-norm", "big"]].concat(),
        &["--clip-norm", "big"],
    );
    let unscale_only = [
        &row[..],
        &[
            "--clip-norm",
            "off",
            "--nonfinite",
            "skip-element",
            "--json",
        ],
    ];
    let fused: Vec<_> = rows(&bayesprop(&unscale_only.concat(), &[]))
        .into_iter()
        .filter(|r| r["step"] == "fused training step")
        .collect();
    assert_eq!(fused.len(), 2, "bayes and adam: {fused:?}");
    for r in &fused {
        assert_eq!(r["bytes_per_element"], 28.0, "{r:?}");
    }
}

#[test]
fn zero_steps_and_zero_repeats_are_refused() {
    let row = ["bench", "--sizes", "4K", "--device", "cpu", "--matrix-only"];
    refused(
        &[&row[..], &["--steps", "0"]].concat(),
        &["step count", "0"],
    );
    refused(
        &[&row[..], &["--repeat", "0"]].concat(),
        &["repeat count", "0"],
    );
}

#[test]
fn a_row_larger_than_the_memory_available_is_refused_before_allocating() {
    // 2^40 parameters: terabytes on every machine this runs on, so the check, not the
    // out-of-memory killer, must answer (and at once: nothing is allocated).
    let start = std::time::Instant::now();
    refused(
        &[
            "bench",
            "--sizes",
            "1024G",
            "--device",
            "cpu",
            "--optimizer",
            "sgd",
        ],
        &["1024G", "bytes of host memory", "MemAvailable"],
    );
    assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
}

#[test]
fn more_timed_steps_than_one_query_set_holds() {
    let Some(ctx) = common::gpu("more_timed_steps_than_one_query_set_holds") else {
        return;
    };
    // 5,000 steps need 10,000 timestamps; wgpu allows 4,096 per query set.
    let out = bayesprop(
        &[
            "bench",
            "--device",
            "gpu",
            "--optimizer",
            "sgd",
            "--sizes",
            "1K",
            "--steps",
            "5000",
            "--matrix-only",
            "--json",
        ],
        &[],
    );
    let rows = rows(&out);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["timing"], timing_of(&ctx));
    assert!(rows[0]["step_seconds_median"].as_f64().unwrap() > 0.0);
}

/// The GPU's unfused passes hand the plain step the gradient the fused training step applies:
/// three steps from the same raw gradient put θ within a few ULPs of the reference's fused
/// step. The size leaves many workgroups of partials.
#[test]
fn gpu_unfused_passes_step_like_the_fused_training_step() {
    use bayesprop::bench::roofline::synthetic;
    use bayesprop::bench::unfused::GpuUnfused;
    use bayesprop::bench::TRAINING_STEP;
    use bayesprop::{CpuOptimizer, GpuOptimizer, Stepper};
    let Some(ctx) = common::gpu("gpu_unfused_passes_step_like_the_fused_training_step") else {
        return;
    };
    let n = 70_001;
    let theta0 = synthetic(n, 1, 1.0);
    let grad = synthetic(n, 2, 1e-2);
    for name in ["adam", "bayes"] {
        let config = OptimizerConfig::default_for(name).unwrap();
        let mut gpu = GpuOptimizer::new(&ctx, config.clone(), &theta0).unwrap();
        let unfused = GpuUnfused::over(&ctx, &gpu, &grad, &TRAINING_STEP).unwrap();
        let mut reference = CpuOptimizer::reference(config, &theta0).unwrap();
        reference.set_grad_transform(TRAINING_STEP).unwrap();
        for _ in 0..3 {
            unfused.submit(None).unwrap();
            gpu.step_device().unwrap();
            reference.step(&grad).unwrap();
        }
        let (got, want) = (gpu.theta().unwrap(), reference.theta().unwrap());
        let moved = bayesprop::ulp::max_ulp_distance(&theta0, &want).0;
        let (ulps, at) = bayesprop::ulp::max_ulp_distance(&got, &want);
        eprintln!("{name}: {ulps} ULP at {at} (the steps moved θ by up to {moved})");
        // 0 on lavapipe, whose norm (the step's own scan and reduce) sums in the reference's
        // order; an adapter that rounds otherwise may move the factor.
        assert!(ulps <= 4, "{name}: {ulps} ULP at {at}");
        assert!(
            moved > 1000,
            "{name}: the steps barely moved θ ({moved} ULP)"
        );
    }
}

/// `bench` of one optimizer at 4K, two timed steps, the matrix only, with `extra` flags.
fn small_bench(optimizer: &str, device: &str, extra: &[&str]) -> Output {
    let base = [
        "bench",
        "--optimizer",
        optimizer,
        "--sizes",
        "4K",
        "--device",
        device,
        "--steps",
        "2",
        "--matrix-only",
    ];
    bayesprop(&[&base[..], extra].concat(), &[])
}

/// `--set state_format=…` gives the matrix's rows once per format, each counting the state's
/// bytes as held; a bad option fails before anything is measured.
#[test]
fn bench_rows_per_state_format() {
    let out = small_bench(
        "bayes",
        "cpu",
        &[
            "--nonfinite",
            "skip-element",
            "--json",
            "--set",
            "state_format=f32,bf16,q8",
            "--set",
            "state_seed=7",
        ],
    );
    let rows = rows(&out);
    let got: Vec<(&str, f64)> = rows
        .iter()
        .map(|r| {
            let format = r["state_format"].as_str().unwrap();
            (format, r["bytes_per_element"].as_f64().unwrap())
        })
        .collect();
    // g, θ and s, σ read and written: f32 4 bytes, bf16 2, q8 1 and 4 per 256 of scale.
    assert_eq!(
        got,
        [("f32", 28.0), ("bf16", 20.0), ("q8", 12.0 + 4.0 * 1.015625)]
    );
    for r in &rows {
        let fraction = r["roofline_fraction"].as_f64().unwrap();
        assert!(fraction.is_finite() && fraction > 0.0, "{r:?}");
    }
    let table = text(&small_bench("bayes", "cpu", &["--set", "state_format=q8"]).stdout);
    assert!(table.contains("bayes q8"), "{table}");
    for (bad, needle) in [
        ("state_format=fp8", "unknown state format `fp8`"),
        ("state_sead=1", "unknown group option `state_sead`"),
        ("state_format", "KEY=VALUE"),
    ] {
        let out = bayesprop(&["bench", "--device", "cpu", "--set", bad], &[]);
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(needle), "{}", text(&out.stderr));
    }
}

/// GPU rows per state format: bf16's and q8's are measured, by the bytes they really move.
#[test]
fn bench_gpu_rows_per_state_format() {
    let Some(_ctx) = common::gpu("bench_gpu_rows_per_state_format") else {
        return;
    };
    let out = small_bench("adam", "gpu", &["--set", "state_format=f32,bf16,q8"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let row = |prefix: &str| stdout.lines().find(|l| l.starts_with(prefix));
    // θ, g read, θ written, m and v read and written: 2 bytes each in bf16, plus the scan.
    let bf16 = row("adam bf16").unwrap_or_else(|| panic!("no bf16 row: {stdout}"));
    assert!(bf16.split_whitespace().any(|f| f == "24.00"), "{bf16}");
    assert!(
        row("adam ").is_some_and(|l| l.contains("32.00")),
        "{stdout}"
    );
    // q8 is measured by the codes and scales it moves (1 + 4/256 bytes per element and
    // slot): the update 8 + 4 + 2·2·1.015625, the q8 count before it (g, θ and the codes
    // read) 8 + 2·1.015625, and the scan's read of g.
    let q8 = row("adam q8").unwrap_or_else(|| panic!("no q8 row: {stdout}"));
    assert!(!q8.contains("skipped"), "{q8}");
    assert!(q8.split_whitespace().any(|f| f == "30.09"), "{q8}");
}
