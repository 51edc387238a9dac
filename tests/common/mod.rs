//! Shared by the integration tests: the GPU context, which never skips silently; the devices
//! under test; snapshots of θ and the state and their bitwise comparison; the two-group model.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use bayesprop::validate::initial_theta;
use bayesprop::{
    BayesConfig, CpuOptimizer, Error, GpuContext, GpuOptimizer, OptimizerConfig, ParamGroups,
    Stepper, Stored,
};

/// Set to 1 to let GPU tests print "skipped" instead of failing when no adapter exists.
pub const SKIP_ENV: &str = "BAYESPROP_SKIP_GPU_TESTS";

/// The GPU context for a test. With no adapter the test fails with the fix, unless
/// `BAYESPROP_SKIP_GPU_TESTS=1`, in which case it prints "skipped" and gets `None`.
pub fn gpu(test: &str) -> Option<GpuContext> {
    // Lavapipe warns on every start when this is unset.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    match GpuContext::new() {
        Ok(ctx) => Some(ctx),
        Err(Error::NoAdapter(message)) if std::env::var(SKIP_ENV).as_deref() == Ok("1") => {
            eprintln!("{test}: skipped ({SKIP_ENV}=1): {message}");
            None
        }
        Err(e) => panic!(
            "{test}: {e}\n(GPU tests fail without an adapter; set {SKIP_ENV}=1 to skip them explicitly)"
        ),
    }
}

/// Makes a fresh stepper from a config and θ₀.
pub type Factory<'a> = dyn FnMut(OptimizerConfig, &[f32]) -> Box<dyn Stepper> + 'a;

/// The reference, the parallel CPU path and, given a context, the GPU, by name.
pub fn devices(ctx: Option<&GpuContext>) -> Vec<(&'static str, Box<Factory<'_>>)> {
    let mut devices: Vec<(&'static str, Box<Factory<'_>>)> = vec![
        (
            "reference",
            Box::new(|c, t| Box::new(CpuOptimizer::reference(c, t).unwrap())),
        ),
        (
            "cpu",
            Box::new(|c, t| Box::new(CpuOptimizer::new(c, t).unwrap())),
        ),
    ];
    if let Some(ctx) = ctx {
        devices.push((
            "gpu",
            Box::new(move |c, t| Box::new(GpuOptimizer::new(ctx, c, t).unwrap())),
        ));
    }
    devices
}

/// θ, then group 0's used state vectors in slot order, flat over every tensor.
pub fn snapshot(o: &dyn Stepper) -> Vec<Vec<f32>> {
    o.layout().groups()[0]
        .vectors()
        .into_iter()
        .map(|(name, which)| match which {
            Stored::Theta => o.theta().unwrap(),
            Stored::State(_) => o.state(name).unwrap(),
        })
        .collect()
}

/// Asserts two snapshots are equal bit for bit, naming the first element that differs.
pub fn assert_same_bits(a: &[Vec<f32>], b: &[Vec<f32>], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: number of vectors");
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        assert_same_bits_flat(x, y, &format!("{what}: vector {k}"));
    }
}

/// Asserts two vectors are equal bit for bit, naming the first element that differs and how
/// many do.
pub fn assert_same_bits_flat(x: &[f32], y: &[f32], what: &str) {
    assert_eq!(x.len(), y.len(), "{what}: length");
    let differ = |(p, q): (&f32, &f32)| p.to_bits() != q.to_bits();
    if let Some(i) = x.iter().zip(y).position(differ) {
        let count = x.iter().zip(y).filter(|&pair| differ(pair)).count();
        panic!(
            "{what}: {count} element(s) differ, first at {i}: {} vs {}",
            x[i], y[i]
        );
    }
}

/// Two groups as in a real model: `decay` (bayes_adam with weight decay 1e-2, so every kind
/// of state) and `plain` (defaults), with tensors `{prefix}{k}` of `shapes` in order (group 0
/// is `decay`, 1 is `plain`), θ₀ of tensor k from `validate::initial_theta(len, k)`.
pub fn two_groups(prefix: &str, shapes: &[(usize, Vec<usize>)]) -> ParamGroups {
    let mut groups = ParamGroups::new();
    let decay = BayesConfig {
        weight_decay: 1e-2,
        ..BayesConfig::bayes_adam()
    };
    let ids = [
        groups.add_group("decay", decay).unwrap(),
        groups.add_group("plain", BayesConfig::default()).unwrap(),
    ];
    for (k, (group, shape)) in shapes.iter().enumerate() {
        let len = shape.iter().product();
        groups
            .add_tensor(
                ids[*group],
                &format!("{prefix}{k}"),
                shape,
                &initial_theta(len, k as u64),
            )
            .unwrap();
    }
    groups
}

/// A fresh folder under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `test` names the test binary, `name` the case, so that parallel tests never share one.
    pub fn new(test: &str, name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "bayesprop-{test}-{}-{name}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// f32 arithmetic against an f64 hand calculation: a few f32 roundings per step.
pub fn assert_close(got: &[f32], want: &[f64; 3], what: &str) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tolerance = 1e-6 * w.abs().max(1.0);
        assert!(
            (g as f64 - w).abs() <= tolerance,
            "{what}[{i}]: got {g}, hand-computed {w}"
        );
    }
}
