//! A roofline as files and text: CSV (one row per kernel), JSON, the table `perfwatt
//! roofline` prints, and the plot (kernels on the measured roofs, PNG + SVG).
//!
//! In: `RooflineReport`. Out: the files in the run folder.

use std::path::{Path, PathBuf};

use super::RooflineReport;
use crate::error::{Error, Result};
use crate::files::write_atomic;

const CSV_HEADER: &str = "name,category,model,shape,dtype,flops,bytes,intensity_flop_per_byte,median_s,p5_s,p95_s,min_s,max_s,repeats,flop_per_s,bytes_per_s,roof_flop_per_s,roof_dtype,roof_fraction,bound,energy_launches,j_per_launch,j_per_launch_above_idle,avg_w,error";

/// One row per kernel; empty cells where a figure is not available.
pub fn to_csv(r: &RooflineReport) -> String {
    let o = |v: Option<f64>| v.map(|v| format!("{v:e}")).unwrap_or_default();
    let q = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for k in &r.kernels {
        let t = k.timing.as_ref();
        let e = k.energy.as_ref();
        let cells = [
            q(&k.name),
            k.category.clone(),
            k.model.clone(),
            q(&k.shape),
            q(&k.dtype),
            format!("{:e}", k.flops),
            format!("{:e}", k.bytes),
            format!("{:e}", k.intensity),
            o(t.map(|t| t.median_s)),
            o(t.map(|t| t.p5_s)),
            o(t.map(|t| t.p95_s)),
            o(t.map(|t| t.min_s)),
            o(t.map(|t| t.max_s)),
            t.map(|t| t.repeats.to_string()).unwrap_or_default(),
            o(k.flop_per_s),
            o(k.bytes_per_s),
            o(k.roof_flop_per_s),
            k.roof_dtype.clone().unwrap_or_default(),
            o(k.roof_fraction),
            k.bound.unwrap_or("").into(),
            e.map(|e| e.launches.to_string()).unwrap_or_default(),
            o(e.map(|e| e.j_per_launch)),
            o(e.and_then(|e| e.j_per_launch_above_idle)),
            o(e.map(|e| e.avg_w)),
            q(k.error.as_deref().unwrap_or("")),
        ];
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

pub(super) fn write_results(r: &RooflineReport, out: &Path) -> Result<()> {
    write_atomic(
        &out.join("roofline.json"),
        (serde_json::to_string_pretty(r).expect("serializable") + "\n").as_bytes(),
    )?;
    write_atomic(&out.join("roofline.csv"), to_csv(r).as_bytes())
}

/// FLOP/s in TFLOP/s or, below one, GFLOP/s.
fn flops_str(f: f64) -> String {
    if f >= 1e12 {
        format!("{:.1} TFLOP/s", f / 1e12)
    } else {
        format!("{:.1} GFLOP/s", f / 1e9)
    }
}

/// A human summary: peaks, ridge points, and each kernel's latency, rate and energy.
pub fn to_table(r: &RooflineReport) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "roofline of {} ({} kernels, {})\n",
        r.device_name,
        r.config.dtype,
        r.kernels.len()
    );
    let bw = r
        .bandwidth_bytes_per_s
        .map_or("n/a".into(), |b| format!("{:.1} GB/s", b / 1e9));
    let _ = writeln!(s, "peak bandwidth (copy, read+write): {bw}");
    for p in &r.peaks {
        let ridge = p
            .ridge_flop_per_byte
            .map_or("n/a".into(), |x| format!("{x:.1}"));
        let _ = writeln!(
            s,
            "peak {:<5} {:>15} (n={})  ridge {ridge} FLOP/byte",
            p.dtype,
            flops_str(p.flop_per_s),
            p.at_n
        );
    }
    let _ = writeln!(
        s,
        "{:<34} {:<13} {:>9} {:>11} {:>11} {:>10} {:>7} {:>12}",
        "kernel", "model", "FLOP/B", "median us", "GFLOP/s", "GB/s", "roof%", "uJ/launch"
    );
    for k in &r.kernels {
        let Some(t) = &k.timing else {
            let _ = writeln!(
                s,
                "{:<34} {:<13} error: {}",
                k.name,
                k.model,
                k.error.as_deref().unwrap_or("?")
            );
            continue;
        };
        let _ = writeln!(
            s,
            "{:<34} {:<13} {:>9.2} {:>11.1} {:>11.1} {:>10.1} {:>7} {:>12}",
            k.name,
            k.model,
            k.intensity,
            t.median_s * 1e6,
            k.flop_per_s.unwrap_or(0.0) / 1e9,
            k.bytes_per_s.unwrap_or(0.0) / 1e9,
            k.roof_fraction
                .map_or("".into(), |f| format!("{:.0}", f * 100.0)),
            k.energy
                .as_ref()
                .map_or("n/a".into(), |e| format!("{:.1}", e.j_per_launch * 1e6)),
        );
    }
    if let Some(reason) = &r.energy_reason {
        let _ = writeln!(s, "energy: {reason}");
    }
    s
}

/// Log-log roofline: the bandwidth slope and each dtype's compute roof, kernels as points
/// by category (zero-FLOP kernels such as the embedding have no place on it: see the CSV).
pub fn plot(r: &RooflineReport, out: &Path) -> Result<PathBuf> {
    use crate::render::plot::{both, pe, render};
    use plotters::prelude::*;
    let pts: Vec<(&str, f64, f64)> = r
        .kernels
        .iter()
        .filter_map(|k| Some((k.category.as_str(), k.intensity, k.flop_per_s?)))
        .filter(|p| p.1 > 0.0 && p.2 > 0.0)
        .collect();
    let (x0, x1, y0, y1) = plot_bounds(r, &pts)?;
    let cats = [
        "peak-matmul",
        "linear",
        "qmatmul",
        "attention",
        "attention-decode",
        "rmsnorm",
        "silu",
        "rope",
    ];
    let color = |c: &str| Palette99::pick(cats.iter().position(|x| *x == c).unwrap_or(9)).to_rgba();
    let title = format!("Roofline: {} ({})", r.device_name, r.config.dtype);
    render(
        out,
        "roofline",
        (1100, 750),
        both!(|root| {
            let mut chart = ChartBuilder::on(&root)
                .caption(&title, ("sans-serif", 22))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(90)
                .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
                .map_err(pe)?;
            chart
                .configure_mesh()
                .x_desc("arithmetic intensity (FLOP/byte)")
                .y_desc("achieved FLOP/s")
                .y_label_formatter(&|v| format!("{v:.0e}"))
                .x_label_formatter(&|v| format!("{v:.2}"))
                .draw()
                .map_err(pe)?;
            if let Some(bw) = r.bandwidth_bytes_per_s {
                // Roofs in greys, so they never share a colour with a kernel category.
                let greys = [
                    RGBColor(0, 0, 0),
                    RGBColor(110, 110, 110),
                    RGBColor(180, 180, 180),
                ];
                for (i, p) in r.peaks.iter().enumerate() {
                    let ridge = p.flop_per_s / bw;
                    let style = greys[i % greys.len()].stroke_width(2);
                    chart
                        .draw_series(LineSeries::new(
                            [(x0, x0 * bw), (ridge, p.flop_per_s), (x1, p.flop_per_s)],
                            style,
                        ))
                        .map_err(pe)?
                        .label(format!(
                            "roof {} {}, {:.0} GB/s",
                            p.dtype,
                            flops_str(p.flop_per_s),
                            bw / 1e9
                        ))
                        .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], style));
                }
            }
            for c in cats {
                let these: Vec<(f64, f64)> = pts
                    .iter()
                    .filter(|p| p.0 == c)
                    .map(|p| (p.1, p.2))
                    .collect();
                if these.is_empty() {
                    continue;
                }
                let col = color(c);
                chart
                    .draw_series(these.into_iter().map(|p| Circle::new(p, 5, col.filled())))
                    .map_err(pe)?
                    .label(c)
                    .legend(move |(x, y)| Circle::new((x + 5, y), 5, col.filled()));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.85))
                .draw()
                .map_err(pe)?;
            Ok(())
        }),
    )
}

/// The plot's axes: every kernel and every roof with its ridge point, with a margin.
fn plot_bounds(r: &RooflineReport, pts: &[(&str, f64, f64)]) -> Result<(f64, f64, f64, f64)> {
    if pts.is_empty() {
        return Err(Error::Model(
            "roofline plot: no kernel has a measured FLOP rate".into(),
        ));
    }
    let peak_max = r.peaks.iter().map(|p| p.flop_per_s).fold(0.0, f64::max);
    let (x0, x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (y0, y1) = pts
        .iter()
        .fold((f64::MAX, peak_max), |(a, b), p| (a.min(p.2), b.max(p.2)));
    let ridge_max = r
        .peaks
        .iter()
        .filter_map(|p| p.ridge_flop_per_byte)
        .fold(0.0, f64::max);
    Ok((
        x0 / 2.0,
        (x1 * 2.0).max(ridge_max * 4.0),
        y0 / 2.0,
        y1 * 2.0,
    ))
}
