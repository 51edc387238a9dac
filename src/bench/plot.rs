//! `bayesprop bench --plot FILE.svg`: throughput against N for each device, one panel per
//! optimizer. Solid: the step (GPU: device time); dashed: GPU steps submitted back to back,
//! wall clock (the host's fixed cost per step shows at small N); dotted: the touch roofline
//! of the same device. Where the GPU's dashed line meets its solid one, the fixed dispatch cost
//! has stopped dominating.

use std::error::Error as StdError;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::bench::{format_size, Report, Row};
use crate::error::{Error, Result};

type Plot<T = ()> = std::result::Result<T, Box<dyn StdError>>;

const CAPTION: (&str, u32) = ("sans-serif", 20);
const LABEL: (&str, u32) = ("sans-serif", 14);

fn color(device: &str) -> RGBColor {
    match device {
        "reference" => RGBColor(90, 90, 90),
        "cpu" => RGBColor(31, 119, 180),
        "gpu" => RGBColor(214, 39, 40),
        _ => RGBColor(140, 86, 75),
    }
}

/// Writes the figure of `report`'s matrix (one tensor, the matrix's policy) to `path`.
pub fn throughput(path: &Path, report: &Report) -> Result<()> {
    draw(path, report).map_err(|e| Error::file(path, format!("cannot draw the figure: {e}")))
}

fn draw(path: &Path, report: &Report) -> Plot {
    let rows: Vec<&Row> = report.matrix().collect();
    let mut optimizers: Vec<&str> = Vec::new();
    for r in &rows {
        if !optimizers.contains(&r.optimizer.as_str()) {
            optimizers.push(&r.optimizer);
        }
    }
    let panels = optimizers.len().max(1);
    let columns = panels.min(2);
    let lines = panels.div_ceil(columns);
    let root =
        SVGBackend::new(path, (720 * columns as u32, 520 * lines as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((lines, columns));
    for (area, optimizer) in areas.iter().zip(&optimizers) {
        let own: Vec<&Row> = rows
            .iter()
            .copied()
            .filter(|r| r.optimizer == *optimizer)
            .collect();
        panel(area, optimizer, &own)?;
    }
    root.present()?;
    Ok(())
}

/// Melem/s of the step, the back-to-back wall clock and the touch roofline.
fn series(row: &Row) -> [f64; 3] {
    let n = row.n as f64;
    [
        row.elements_per_second / 1e6,
        n / row.wall_seconds_per_step / 1e6,
        // The touch moves the optimizer's bytes, so its element rate is the roofline's.
        row.roofline_gb_per_second * 1e9 / row.bytes_per_element / 1e6,
    ]
}

fn panel(area: &DrawingArea<SVGBackend<'_>, Shift>, optimizer: &str, rows: &[&Row]) -> Plot {
    let (mut lo_n, mut hi_n, mut lo_y, mut hi_y) = (f64::MAX, 0.0f64, f64::MAX, 0.0f64);
    for r in rows {
        lo_n = lo_n.min(r.n as f64);
        hi_n = hi_n.max(r.n as f64);
        for y in series(r).into_iter().filter(|y| y.is_finite() && *y > 0.0) {
            lo_y = lo_y.min(y);
            hi_y = hi_y.max(y);
        }
    }
    if rows.is_empty() || hi_y <= 0.0 {
        area.titled(optimizer, CAPTION)?;
        return Ok(());
    }
    let (lo_n, hi_n) = (lo_n / 1.4, hi_n * 1.4);
    // Room below the lowest line for the legend.
    let (lo_y, hi_y) = (lo_y / 8.0, hi_y * 1.6);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{optimizer}: throughput against N (one tensor)"),
            CAPTION,
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d((lo_n..hi_n).log_scale().base(2.0), (lo_y..hi_y).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("parameters N")
        .y_desc("million parameters per second")
        .label_style(LABEL)
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&|v| format_size(v.round() as usize))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    let mut devices: Vec<&str> = rows.iter().map(|r| r.device.as_str()).collect();
    devices.dedup();
    devices.sort();
    devices.dedup();
    for device in devices {
        let c = color(device);
        let mut own: Vec<&Row> = rows
            .iter()
            .copied()
            .filter(|r| r.device == device)
            .collect();
        own.sort_by_key(|r| r.n);
        let points = |k: usize| -> Vec<(f64, f64)> {
            own.iter().map(|r| (r.n as f64, series(r)[k])).collect()
        };
        let timing = own.first().map_or("", |r| r.timing.as_str());
        let label = match device {
            "gpu" => format!("gpu step ({timing})"),
            d => format!("{d} step"),
        };
        chart
            .draw_series(LineSeries::new(points(0), c.stroke_width(2)).point_size(3))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        if device == "gpu" {
            chart
                .draw_series(DashedLineSeries::new(points(1), 6, 4, c.stroke_width(1)))?
                .label("gpu steps back to back (wall clock)")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c));
        }
        chart
            .draw_series(DottedLineSeries::new(points(2), 0, 5, move |p| {
                Circle::new(p, 1, c.filled())
            }))?
            .label(format!("{device} touch roofline"))
            .legend(move |(x, y)| Circle::new((x + 9, y), 2, c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .label_font(LABEL)
        .draw()?;
    Ok(())
}
