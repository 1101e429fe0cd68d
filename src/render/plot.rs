//! Plotting toolkit shared by every report (sweep, roofline, gemm-energy): a leaf.
//!
//! In: numbers and labels. Out: the same figure as PNG and SVG (`render` + `both!`), drawn
//! with the shipped DejaVu Sans font so plots look the same on every machine. Helpers for
//! the shapes the reports use: grouped bars with error bars, scatter with a fit line and a
//! frontier. Errors from plotters become `Error::Config("plot: ...")`.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// A plotters error as perfwatt's.
pub(crate) fn pe<E: std::fmt::Display>(e: E) -> Error {
    Error::Config(format!("plot: {e}"))
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Plotters draws through generic backends; this macro instantiates one drawing body for
/// the PNG and the SVG backend (closures cannot be generic over the backend type).
macro_rules! both {
    (|$root:ident| $body:block) => {
        $crate::render::plot::Both(
            |$root: plotters::prelude::DrawingArea<
                plotters::prelude::BitMapBackend,
                plotters::coord::Shift,
            >|
             -> $crate::error::Result<()> { $body },
            |$root: plotters::prelude::DrawingArea<
                plotters::prelude::SVGBackend,
                plotters::coord::Shift,
            >|
             -> $crate::error::Result<()> { $body },
        )
    };
}

pub(crate) use both;

/// One drawing body instantiated for the PNG (`.0`) and the SVG (`.1`) backend.
pub(crate) struct Both<A, B>(pub A, pub B);

/// Draw `f` into `dir/name.png` and `dir/name.svg` on a white canvas of `size` pixels.
/// Returns the PNG's path.
pub(crate) fn render<A, B>(
    dir: &Path,
    name: &str,
    size: (u32, u32),
    f: Both<A, B>,
) -> Result<PathBuf>
where
    A: Fn(DrawingArea<BitMapBackend, Shift>) -> Result<()>,
    B: Fn(DrawingArea<SVGBackend, Shift>) -> Result<()>,
{
    register_font();
    let png = dir.join(format!("{name}.png"));
    let svg = dir.join(format!("{name}.svg"));
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        (f.0)(root.clone())?;
        root.present().map_err(pe)?;
    }
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        (f.1)(root.clone())?;
        root.present().map_err(pe)?;
    }
    Ok(png)
}

/// The palette of every report (matplotlib's first three).
pub(crate) const BLUE: RGBColor = RGBColor(31, 119, 180);
pub(crate) const ORANGE: RGBColor = RGBColor(255, 127, 14);
pub(crate) const GREEN: RGBColor = RGBColor(44, 160, 44);
pub(crate) const RED: RGBColor = RGBColor(214, 39, 40);
pub(crate) const PURPLE: RGBColor = RGBColor(148, 103, 189);

/// Grouped bars: for each category, one bar per series, optional error bars on the first.
pub(crate) fn bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    ylabel: &str,
    cats: &[String],
    series: &[(&str, RGBColor, Vec<f64>)],
    errs: Option<&[(f64, f64)]>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let ymax = series
        .iter()
        .flat_map(|s| s.2.iter().filter(|v| v.is_finite()))
        .chain(errs.iter().flat_map(|e| e.iter().map(|x| &x.1)))
        .fold(0f64, |m, &v| m.max(v))
        * 1.35;
    let n = cats.len();
    let k = series.len() as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..ymax.max(1e-12))
        .map_err(pe)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n.max(1))
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
                cats[i as usize].clone()
            } else {
                String::new()
            }
        })
        .x_label_style(("sans-serif", 14))
        .y_desc(ylabel)
        .draw()
        .map_err(pe)?;
    let w = 0.8 / k;
    for (si, (name, color, vals)) in series.iter().enumerate() {
        let c = *color;
        chart
            .draw_series(
                vals.iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, &v)| {
                        let x0 = i as f64 - 0.4 + si as f64 * w;
                        Rectangle::new([(x0, 0.0), (x0 + w * 0.9, v)], c.filled())
                    }),
            )
            .map_err(pe)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
    }
    if let Some(errs) = errs {
        chart
            .draw_series(errs.iter().enumerate().map(|(i, &(lo, hi))| {
                ErrorBar::new_vertical(
                    i as f64 - 0.4 + w * 0.45,
                    lo,
                    (lo + hi) / 2.0,
                    hi,
                    BLACK.filled(),
                    8,
                )
            }))
            .map_err(pe)?;
    }
    // Headroom above the bars keeps the legend off them.
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(pe)?;
    Ok(())
}

/// Scatter of `pts` (legend `pts_label`) with an optional fit line (intercept, slope) and
/// an optional frontier polyline.
#[allow(clippy::too_many_arguments)]
pub(crate) fn scatter<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    xl: &str,
    yl: &str,
    pts: &[(f64, f64)],
    pts_label: &str,
    fit: Option<(f64, f64)>,
    frontier: Option<&[(f64, f64)]>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (x0, x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = |a: f64, b: f64| {
        let d = (b - a).abs().max(b.abs() * 0.05).max(1e-12);
        (a - d * 0.1, b + d * 0.1)
    };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(pe)?;
    chart
        .configure_mesh()
        .x_desc(xl)
        .y_desc(yl)
        .draw()
        .map_err(pe)?;
    chart
        .draw_series(pts.iter().map(|&p| Circle::new(p, 5, BLUE.filled())))
        .map_err(pe)?
        .label(pts_label)
        .legend(|(x, y)| Circle::new((x + 5, y), 5, BLUE.filled()));
    if let Some((a, b)) = fit {
        chart
            .draw_series(LineSeries::new(
                [(x0, a + b * x0), (x1, a + b * x1)],
                ORANGE.stroke_width(2),
            ))
            .map_err(pe)?
            .label("least-squares fit")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], ORANGE.stroke_width(2)));
    }
    if let Some(f) = frontier {
        chart
            .draw_series(LineSeries::new(f.iter().copied(), GREEN.stroke_width(2)))
            .map_err(pe)?
            .label("Pareto frontier")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], GREEN.stroke_width(2)));
        chart
            .draw_series(f.iter().map(|&p| Circle::new(p, 7, GREEN.stroke_width(2))))
            .map_err(pe)?;
    }
    legend(&mut chart)
}

/// The series legend every line/scatter plot draws: boxed, on a translucent white.
pub(crate) fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(pe)
}

/// Power over time: the driver-averaged series `w` and, where finite, the instantaneous
/// field's `instant` (both at times `t`), over shaded labelled windows `spans` (name, start,
/// end; one colour per name, overlaps show through each other).
pub(crate) fn power_over_time<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    t: &[f64],
    w: &[f64],
    instant: &[f64],
    spans: &[(String, f64, f64)],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let t0 = t.first().copied().unwrap_or(0.0).min(0.0);
    let t1 = t.last().copied().unwrap_or(1.0).max(t0 + 1e-3);
    let wmax = w
        .iter()
        .chain(instant)
        .filter(|v| v.is_finite())
        .fold(0f64, |m, &v| m.max(v))
        * 1.1;
    let wmax = wmax.max(1.0);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(t0..t1, 0f64..wmax)
        .map_err(pe)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("GPU power (W)")
        .draw()
        .map_err(pe)?;
    let palette = [ORANGE, GREEN, PURPLE, RED, BLUE];
    let mut names: Vec<&str> = Vec::new();
    for (name, _, _) in spans {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    for (k, name) in names.iter().enumerate() {
        let color = palette[k % palette.len()].mix(0.2);
        chart
            .draw_series(
                spans
                    .iter()
                    .filter(|s| s.0 == *name)
                    .map(|s| Rectangle::new([(s.1, 0.0), (s.2, wmax)], color.filled())),
            )
            .map_err(pe)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .draw_series(LineSeries::new(
            t.iter()
                .copied()
                .zip(w.iter().copied())
                .filter(|p| p.1.is_finite()),
            BLUE.stroke_width(2),
        ))
        .map_err(pe)?
        .label("power, driver-averaged")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], BLUE.stroke_width(2)));
    if instant.iter().any(|v| v.is_finite()) {
        chart
            .draw_series(LineSeries::new(
                t.iter()
                    .copied()
                    .zip(instant.iter().copied())
                    .filter(|p| p.1.is_finite()),
                RED.stroke_width(1),
            ))
            .map_err(pe)?
            .label("power, instantaneous field")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], RED.stroke_width(1)));
    }
    legend(&mut chart)
}
