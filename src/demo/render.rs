//! What a demo run shows: the results and sweep tables, `results.md`, and the files written
//! with the figures. The runs themselves are orchestrated in the parent module.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::demo::{plots, sparse, Outcome, Report};
use crate::error::{Error, Result};

/// A hyperparameter value as the tables and legends print it.
pub fn fmt_value(v: f64) -> String {
    match format!("{v:e}") {
        one if one == "1e0" => "1".into(),
        s => s,
    }
}

impl Report {
    /// The results table (markdown), one row per model and optimizer.
    pub fn results_table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "| model | optimizer | device | chosen | val loss | final train loss | test acc | steps | wall (s) | sweep wall (s) |"
        );
        let _ = writeln!(t, "|---|---|---|---|---:|---:|---:|---:|---:|---:|");
        for e in &self.entries {
            let (model, name) = (e.model, e.contender.label());
            let dev = self.device_short;
            match &e.outcome {
                Outcome::Skipped(why) => {
                    let _ = writeln!(
                        t,
                        "| {model} | {name} | {dev} | skipped: {} | | | | | | |",
                        why.replace('|', "\\|")
                    );
                }
                Outcome::Trained(sweep) => {
                    let sweep_wall: f64 = sweep
                        .runs
                        .iter()
                        .filter_map(|(_, r)| r.as_ref().ok())
                        .map(|r| r.wall_s)
                        .sum();
                    match sweep.chosen_run() {
                        Some(run) => {
                            let edge = if sweep.chosen_at_edge() { " *" } else { "" };
                            let _ = writeln!(
                                t,
                                "| {model} | {name} | {dev} | {}={}{edge} | {:.4} | {:.4} | {:.1}% | {} | {:.2} | {:.2} |",
                                e.contender.knob,
                                fmt_value(run.value),
                                run.val_loss,
                                run.final_loss(),
                                100.0 * sweep.test_acc,
                                run.steps,
                                run.wall_s,
                                sweep_wall
                            );
                        }
                        None => {
                            let why = sweep
                                .runs
                                .iter()
                                .find_map(|(_, r)| r.as_ref().err().cloned())
                                .unwrap_or_else(|| "diverged at every value".into());
                            let _ = writeln!(
                                t,
                                "| {model} | {name} | {dev} | failed: {} | | | | | | {sweep_wall:.2} |",
                                why.replace('|', "\\|")
                            );
                        }
                    }
                }
            }
        }
        t
    }

    /// Validation loss at every value of every sweep.
    pub fn sweep_table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "| model | optimizer | value: validation loss (chosen in bold) |"
        );
        let _ = writeln!(t, "|---|---|---|");
        for e in &self.entries {
            let Outcome::Trained(sweep) = &e.outcome else {
                continue;
            };
            let cells: Vec<String> = sweep
                .runs
                .iter()
                .enumerate()
                .map(|(i, (v, r))| {
                    let v = format!("{}={}", e.contender.knob, fmt_value(*v));
                    let cell = match r {
                        Ok(run) if run.diverged => format!("{v}: diverged at step {}", run.steps),
                        Ok(run) => format!("{v}: {:.4}", run.val_loss),
                        Err(err) => format!("{v}: error ({})", err.replace('|', "\\|")),
                    };
                    if Some(i) == sweep.chosen {
                        format!("**{cell}**")
                    } else {
                        cell
                    }
                })
                .collect();
            let _ = writeln!(
                t,
                "| {} | {} | {} |",
                e.model,
                e.contender.label(),
                cells.join("; ")
            );
        }
        t
    }

    /// The whole `results.md`.
    pub fn markdown(&self) -> String {
        let b = &self.budget;
        let (tr, va, te) = self.split_sizes;
        let mut md = String::new();
        let _ = writeln!(md, "# bayesprop demo: results ({} budget)\n", b.name);
        let _ = writeln!(md, "- Device: {}", self.device);
        let _ = writeln!(
            md,
            "- Data: UCI optical handwritten digits (8×8, 10 classes, {} samples; `data/README.md`), pixels scaled to [0, 1], split {tr} train / {va} validation / {te} test (seed {}).",
            tr + va + te,
            self.seed
        );
        let models: Vec<String> = b
            .models
            .iter()
            .map(|m| format!("{m} ({} parameters)", m.num_params()))
            .collect();
        let _ = writeln!(
            md,
            "- Sparse problem: a seeded synthetic logistic regression (`src/demo/sparse.rs`): {} binary features whose frequencies follow a power law, 0.5·(j + 1)^−0.8 (98% of features are on in fewer than 5% of samples, half in fewer than 0.35%), labels drawn from sigmoid(x·w + b) with w ~ N(0, 1.5²); split {} train / {} validation / {} test.",
            sparse::FEATURES,
            sparse::TRAIN,
            sparse::VALIDATION,
            sparse::TEST
        );
        let _ = writeln!(
            md,
            "- Models: {}; mean cross-entropy, gradients by hand-derived backprop on the CPU.",
            models.join(", ")
        );
        let _ = writeln!(
            md,
            "- Training: {} steps per run, minibatches of {} in the same seeded order and from the same θ₀ for every optimizer; every optimizer steps on the device above.",
            b.steps, b.batch
        );
        // What the table's demo rows say: the knobs other than lr, and the fixed settings.
        let mut knobs: Vec<(&str, Vec<&str>)> = Vec::new();
        for c in b.contenders.iter().filter(|c| c.knob != "lr") {
            match knobs.iter_mut().find(|(knob, _)| *knob == c.knob) {
                Some((_, names)) if names.contains(&c.name) => {}
                Some((_, names)) => names.push(c.name),
                None => knobs.push((c.knob, vec![c.name])),
            }
        }
        let knobs: Vec<String> = knobs
            .iter()
            .map(|(knob, names)| format!(" (`{knob}` for {})", names.join(", ")))
            .collect();
        let fixed: String = b
            .contenders
            .iter()
            .filter(|c| !c.fixed.is_empty())
            .map(|c| format!(", {} runs with {}", c.name, c.fixed))
            .collect();
        let _ = writeln!(
            md,
            "- Sweep: {} values of each optimizer's learning rate{}; the value with the lowest validation loss is chosen; the test split is read only for the chosen run. `*` marks a chosen value at either end of the values tried (the best may lie outside them). Other settings are each optimizer's defaults (torch.optim's for the classic ones; adamw: weight_decay 1e-2){fixed}.",
            b.sweep,
            knobs.concat()
        );
        if let Some(storage) = self.storage {
            let _ = writeln!(
                md,
                "- State: every optimizer's state held as {storage} (SPEC §6), θ and gradients in f32."
            );
        }
        let _ = writeln!(
            md,
            "- Final train loss: on the whole training split after the last step. Wall: seconds in the training loop of the chosen run (gradients, steps, read-backs, loss curve); sweep wall: all its values.\n"
        );
        md.push_str(&self.results_table());
        md.push_str("\n## Sweeps\n\n");
        md.push_str(&self.sweep_table());
        md.push_str("\n## Regimes (regimes.svg)\n\n");
        match &self.regimes {
            Ok(r) => {
                let s = &r.settings;
                let _ = writeln!(
                    md,
                    "bayes (defaults, β = 0.999, fixed-point start) on {} replicas of a noisy 1-D quadratic: gradients g = H·θ + ξ, ξ ~ N(0, h), h = {}, H = {:e} (the loss's own curvature, kept tiny so that SGD with lr η² stays stable: with H = h the η²h ≫ 4 regime would diverge, since σ ≥ η²); at least {} steps per η, more for small η so that σ has relaxed (column \"steps\"); |Δθ|/|g| = Σ|Δθ| / Σ|g| over the second half of the steps. σ*(h) is the fixed point of the variance update.\n",
                    s.replicas, s.h, s.hessian, s.steps
                );
                let _ = writeln!(md, "| η | steps | measured \\|Δθ\\|/\\|g\\| | σ*(h) | measured / σ*(h) | η² (SGD-like) | η/√h (RMSProp-like) |");
                let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|");
                for p in &r.points {
                    let _ = writeln!(
                        md,
                        "| {:.3e} | {} | {:.4e} | {:.4e} | {:.4} | {:.3e} | {:.3e} |",
                        p.eta,
                        p.steps,
                        p.measured,
                        p.sigma_star,
                        p.measured / p.sigma_star,
                        p.eta * p.eta,
                        p.eta / s.h.sqrt()
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(md, "failed: {e}");
            }
        }
        let _ = writeln!(md, "\nTotal wall time: {:.1} s.", self.wall_s);
        md
    }

    /// Writes `loss.svg`, `sigma.svg`, `regimes.svg` and `results.md` into `dir` (created if
    /// needed) and returns their paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
        let paths = [
            dir.join("loss.svg"),
            dir.join("sigma.svg"),
            dir.join("regimes.svg"),
            dir.join("results.md"),
        ];
        plots::loss(&paths[0], self)?;
        plots::sigma(&paths[1], self)?;
        plots::regimes(&paths[2], self)?;
        std::fs::write(&paths[3], self.markdown()).map_err(|e| Error::file(&paths[3], e))?;
        Ok(paths.to_vec())
    }
}
