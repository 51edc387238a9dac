//! The demo's figures, as SVG (plotters' SVG backend: text is written as `<text>` elements that
//! the viewer renders, so no font files are needed here).

use std::error::Error as StdError;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::demo::train::{Run, SIGMA_QUANTILES};
use crate::demo::{fmt_value, Entry, Model, Report, CONTENDERS};
use crate::error::{Error, Result};

type Plot<T = ()> = std::result::Result<T, Box<dyn StdError>>;

const CAPTION: (&str, u32) = ("sans-serif", 20);
const LABEL: (&str, u32) = ("sans-serif", 14);

/// Colours by row of the optimizer table (Tableau's, in the order the demo first used them).
const PALETTE: [RGBColor; 10] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(90, 90, 90),
    RGBColor(44, 160, 44),
    RGBColor(31, 119, 180),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
];

/// One colour per contender (by its label), the same in every figure: the table's rows in
/// order, then the ablations.
pub fn color(label: &str) -> RGBColor {
    let row = (CONTENDERS.iter().position(|c| c.label() == label))
        .or_else(|| CONTENDERS.iter().position(|c| c.name == label));
    PALETTE[row.unwrap_or(PALETTE.len() - 1) % PALETTE.len()]
}

fn save(path: &Path, draw: impl FnOnce(&Path) -> Plot) -> Result<()> {
    draw(path).map_err(|e| Error::file(path, format!("cannot draw the figure: {e}")))
}

/// A log axis range that holds every positive finite value of `values`, with some room.
fn log_bounds(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .into_iter()
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo.is_finite() && hi > 0.0 {
        (lo / 1.5, hi * 1.5)
    } else {
        (1e-3, 1.0)
    }
}

fn empty_panel(area: &DrawingArea<SVGBackend<'_>, Shift>, caption: &str, why: &str) -> Plot {
    area.titled(caption, CAPTION)?;
    area.draw(&Text::new(
        why.to_string(),
        (40, 60),
        LABEL.into_font().color(&BLACK),
    ))?;
    Ok(())
}

/// `loss.svg`: training loss against step for every optimizer's chosen run, one panel per model;
/// the low-precision rows are left to the table, where they sit beside their f32 rows.
pub fn loss(path: &Path, report: &Report) -> Result<()> {
    save(path, |path| {
        let models = &report.budget.models;
        let root =
            SVGBackend::new(path, (640 * models.len().max(1) as u32, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let panels = root.split_evenly((1, models.len().max(1)));
        for (area, &model) in panels.iter().zip(models) {
            loss_panel(area, report, model)?;
        }
        root.present()?;
        Ok(())
    })
}

fn chosen_runs(report: &Report, model: Model) -> Vec<(&Entry, &Run)> {
    report
        .entries
        .iter()
        .filter(|e| e.model == model && !e.contender.is_low_precision())
        .filter_map(|e| e.chosen().map(|r| (e, r)))
        .collect()
}

fn loss_panel(area: &DrawingArea<SVGBackend<'_>, Shift>, report: &Report, model: Model) -> Plot {
    let caption = format!(
        "{model}: training loss, best value of each ({}, {} budget)",
        report.device_short, report.budget.name
    );
    let runs = chosen_runs(report, model);
    if runs.is_empty() {
        return empty_panel(area, &caption, "no optimizer produced a run");
    }
    // Powers of two at both ends, so the axis always has labelled ticks.
    let (lo, hi) = log_bounds(runs.iter().flat_map(|(_, r)| r.curve.iter().map(|p| p.1)));
    let (lo, hi) = (
        2f64.powf((lo * 1.5).log2().floor()),
        2f64.powf((hi / 1.5).log2().ceil()),
    );
    let steps = runs.iter().map(|(_, r)| r.steps).max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, CAPTION)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..steps as f64, (lo..hi).log_scale().base(2.0))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("mean cross-entropy on the training split")
        .label_style(LABEL)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| {
            let s = format!("{v:.4}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        })
        .draw()?;
    for (entry, run) in runs {
        let c = color(&entry.contender.label());
        let points: Vec<(f64, f64)> = run
            .curve
            .iter()
            .filter(|p| p.1.is_finite() && p.1 > 0.0)
            .map(|&(s, l)| (s as f64, l))
            .collect();
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(2)))?
            .label(format!(
                "{} {}={} (final {:.3})",
                entry.contender.label(),
                entry.contender.knob,
                fmt_value(run.value),
                run.final_loss()
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font(LABEL)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

/// `sigma.svg`: quantiles of σ over training for `bayes`' chosen run on each model, with the
/// fixed point σ*(h) of the median curvature; beside it the ablation without the bound
/// (`sigma_max=none`): its median, its 95% quantile and its own σ*(h).
pub fn sigma(path: &Path, report: &Report) -> Result<()> {
    save(path, |path| {
        let models = &report.budget.models;
        let root =
            SVGBackend::new(path, (640 * models.len().max(1) as u32, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let panels = root.split_evenly((1, models.len().max(1)));
        for (area, &model) in panels.iter().zip(models) {
            sigma_panel(area, report, model)?;
        }
        root.present()?;
        Ok(())
    })
}

/// The chosen run of the row labelled `label` on `model`, if it recorded σ.
fn sigma_run<'a>(report: &'a Report, model: Model, label: &str) -> Option<&'a Run> {
    report
        .entries
        .iter()
        .filter(|e| e.model == model && e.contender.label() == label)
        .find_map(|e| e.chosen())
        .filter(|r| !r.sigma.is_empty())
}

fn sigma_panel(area: &DrawingArea<SVGBackend<'_>, Shift>, report: &Report, model: Model) -> Plot {
    let Some(run) = sigma_run(report, model, "bayes") else {
        return empty_panel(
            area,
            &format!("{model}: σ of bayes"),
            "no bayes run to show (see results.md)",
        );
    };
    let ablation = sigma_run(report, model, "bayes sigma_max=none");
    let last = run.sigma.last().expect("not empty");
    let caption = format!(
        "{model}: σ of bayes, η={} ({}% of elements at σ=0)",
        fmt_value(run.value),
        (100.0 * last.zero_fraction).round()
    );
    let (lo, hi) = log_bounds(
        run.sigma
            .iter()
            .chain(ablation.iter().flat_map(|r| &r.sigma))
            .flat_map(|p| p.quantiles.iter().copied().chain([p.sigma_star])),
    );
    // Room above the bands for the legend.
    let hi = hi * 1e3;
    let first = run.sigma[0].step as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, CAPTION)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (first..(last.step as f64).max(first + 1.0)).log_scale(),
            (lo..hi).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("step (log scale)")
        .y_desc("σ (per-element step size)")
        .label_style(LABEL)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()?;
    let c = color("bayes");
    let band = |lower: usize, upper: usize| -> Vec<(f64, f64)> {
        let up = run
            .sigma
            .iter()
            .map(|p| (p.step as f64, p.quantiles[upper]));
        let down = run
            .sigma
            .iter()
            .rev()
            .map(|p| (p.step as f64, p.quantiles[lower]));
        up.chain(down).filter(|p| p.1 > 0.0).collect()
    };
    let pct = |i: usize| (SIGMA_QUANTILES[i] * 100.0).round();
    for ((lower, upper), alpha) in [((0, 4), 0.15), ((1, 3), 0.3)] {
        chart
            .draw_series(std::iter::once(Polygon::new(
                band(lower, upper),
                c.mix(alpha).filled(),
            )))?
            .label(format!("σ, {}–{}% of elements", pct(lower), pct(upper)))
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 20, y + 5)], c.mix(alpha).filled())
            });
    }
    chart
        .draw_series(LineSeries::new(
            run.sigma.iter().map(|p| (p.step as f64, p.quantiles[2])),
            c.stroke_width(2),
        ))?
        .label("σ, median")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    chart
        .draw_series(DashedLineSeries::new(
            run.sigma.iter().map(|p| (p.step as f64, p.sigma_star)),
            8,
            5,
            BLACK.stroke_width(2),
        ))?
        .label("σ*(h) at the median h = ŝ + λ (the bound)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    if let Some(free) = ablation {
        let a = color("bayes sigma_max=none");
        let eta = fmt_value(free.value);
        chart
            .draw_series(LineSeries::new(
                free.sigma.iter().map(|p| (p.step as f64, p.quantiles[2])),
                a.stroke_width(2),
            ))?
            .label(format!("sigma_max=none (η={eta}): σ, median"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], a.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(
                free.sigma.iter().map(|p| (p.step as f64, p.quantiles[4])),
                3,
                3,
                a.stroke_width(2),
            ))?
            .label(format!("sigma_max=none: σ, {}% quantile", pct(4)))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], a.stroke_width(1)));
        chart
            .draw_series(DashedLineSeries::new(
                free.sigma.iter().map(|p| (p.step as f64, p.sigma_star)),
                8,
                5,
                a.mix(0.6).stroke_width(1),
            ))?
            .label("sigma_max=none: σ*(h) at its median h")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], a.mix(0.6).stroke_width(1))
            });
    }
    chart
        .configure_series_labels()
        .label_font(LABEL)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

/// `regimes.svg`: the measured mean step size |Δθ|/|g| of `bayes` at its fixed point against η,
/// with σ*(h) and its two asymptotes.
pub fn regimes(path: &Path, report: &Report) -> Result<()> {
    save(path, |path| {
        let root = SVGBackend::new(path, (860, 620)).into_drawing_area();
        root.fill(&WHITE)?;
        let r = match &report.regimes {
            Ok(r) if !r.points.is_empty() => r,
            Ok(_) => return empty_panel(&root, "regimes", "no η measured"),
            Err(e) => return empty_panel(&root, "regimes", &format!("failed: {e}")),
        };
        let s = &r.settings;
        let h = s.h;
        let (e_lo, e_hi) = (s.eta_min / 1.5, s.eta_max * 1.5);
        let etas: Vec<f64> = (0..=200)
            .map(|i| 10f64.powf(e_lo.log10() + (e_hi / e_lo).log10() * i as f64 / 200.0))
            .collect();
        let star = |eta: f64| eta * eta / 2.0 + eta * (eta * eta / 4.0 + 1.0 / h).sqrt();
        let (lo, hi) = log_bounds(r.points.iter().map(|p| p.measured).chain([
            e_lo * e_lo,
            e_lo / h.sqrt(),
            star(e_hi),
            e_hi * e_hi,
        ]));
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "bayes on a noisy quadratic (h = {h}): step size at the fixed point ({})",
                    report.device_short
                ),
                CAPTION,
            )
            .margin(14)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((e_lo..e_hi).log_scale(), (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("η (diffusion per step)")
            .y_desc("mean |Δθ| / |g|")
            .label_style(LABEL)
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                etas.iter().map(|&e| (e, star(e))),
                BLACK.stroke_width(2),
            ))?
            .label("σ*(h) = η²/2 + η·sqrt(η²/4 + 1/h)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        let sgd = color("sgd");
        chart
            .draw_series(DashedLineSeries::new(
                etas.iter().map(|&e| (e, e * e)),
                8,
                5,
                sgd.stroke_width(2),
            ))?
            .label("η²: SGD with lr η² (η²h/4 ≫ 1)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], sgd.stroke_width(2)));
        let rms = color("rmsprop");
        chart
            .draw_series(DashedLineSeries::new(
                etas.iter().map(|&e| (e, e / h.sqrt())),
                8,
                5,
                rms.stroke_width(2),
            ))?
            .label("η/√h: RMSProp with lr η (small η)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], rms.stroke_width(2)));
        let cross = 2.0 / h.sqrt();
        let light = RGBColor(150, 150, 150);
        chart
            .draw_series(DashedLineSeries::new(
                [(cross, lo), (cross, hi)],
                3,
                4,
                light.stroke_width(1),
            ))?
            .label("η²h/4 = 1")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], light.stroke_width(1))
            });
        let c = color("bayes");
        chart
            .draw_series(
                r.points
                    .iter()
                    .filter(|p| p.measured.is_finite() && p.measured > 0.0)
                    .map(|p| Circle::new((p.eta, p.measured), 5, c.filled())),
            )?
            .label(format!(
                "measured: {} replicas, ≥ {} steps per η",
                s.replicas, s.steps
            ))
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.filled()));
        chart
            .configure_series_labels()
            .label_font(LABEL)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
        Ok(())
    })
}
