//! The correlation report of a sweep.
//!
//! In: a run folder (`results.jsonl`, per point `infer.power.csv`). Out: `report.md` and
//! plots as PNG and SVG under `plots/`: toggles baseline vs isolated per configuration and
//! per signal group; latency vs energy with the Pareto frontier; J/token (or, without
//! energy, tokens/s) with CIs; the energy-or-latency metric against toggles per MAC with a
//! fit, Pearson r and Spearman rho (bootstrap 95% CIs); power time series per point.
//! Every sentence of findings is generated from the numbers it states.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{write_atomic, Error, IoContext, Result};
use crate::stats::{bootstrap_ci, linear_fit, pearson, spearman};
use crate::sweep::{read_rows, Row};

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

pub(crate) fn pe<E: std::fmt::Display>(e: E) -> Error {
    Error::Config(format!("plot: {e}"))
}

pub(crate) fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Plotters draws through generic backends; this macro instantiates one drawing body for
/// the PNG and the SVG backend (closures cannot be generic over the backend type).
macro_rules! both {
    (|$root:ident| $body:block) => {
        $crate::report::Both(
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

pub(crate) struct Both<A, B>(pub A, pub B);

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

/// Short label of a row's configuration (what differs is what matters; keep it compact).
fn label(r: &Row) -> String {
    let mut s = format!(
        "{} b{} p{} t{}",
        r.precision, r.batch, r.prompt_tokens, r.new_tokens
    );
    if !r.kv_cache {
        s.push_str(" nokv");
    }
    if r.sparsity_tau > 0.0 {
        s.push_str(&format!(" tau{}", r.sparsity_tau));
    }
    if r.width != 8 {
        s.push_str(&format!(" w{}", r.width));
    }
    s
}

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);

/// Grouped bars: for each category, one bar per series.
fn bars<DB: DrawingBackend>(
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
        .flat_map(|s| s.2.iter())
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
            .draw_series(vals.iter().enumerate().map(|(i, &v)| {
                let x0 = i as f64 - 0.4 + si as f64 * w;
                Rectangle::new([(x0, 0.0), (x0 + w * 0.9, v)], c.filled())
            }))
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

/// Scatter with optional fit line and optional frontier polyline.
fn scatter<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    xl: &str,
    yl: &str,
    pts: &[(f64, f64)],
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
        .label("configurations")
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
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(pe)?;
    Ok(())
}

/// Output made only of special tokens (`<|endoftext|>`...) or nothing: a broken configuration.
pub fn degenerate(r: &Row) -> bool {
    let mut t = r.generated.trim();
    while let Some(rest) = t
        .strip_prefix("<|")
        .and_then(|s| s.split_once("|>"))
        .map(|(_, rest)| rest.trim_start())
    {
        t = rest;
    }
    t.is_empty()
}

/// Points not dominated in (x, y), both lower-is-better, sorted by x.
pub fn pareto(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = pts
        .iter()
        .copied()
        .filter(|p| {
            !pts.iter()
                .any(|q| q.0 <= p.0 && q.1 <= p.1 && (q.0 < p.0 || q.1 < p.1))
        })
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v.dedup();
    v
}

struct Series {
    t: Vec<f64>,
    w: Vec<f64>,
    phase: Vec<String>,
}

fn read_power(path: &Path) -> Option<Series> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut s = Series {
        t: vec![],
        w: vec![],
        phase: vec![],
    };
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if let (Some(t), Some(p), Some(w)) = (
            f.first().and_then(|v| v.parse().ok()),
            f.get(1),
            f.get(2).and_then(|v| v.parse().ok()),
        ) {
            s.t.push(t);
            s.phase.push(p.to_string());
            s.w.push(w);
        }
    }
    (!s.t.is_empty()).then_some(s)
}

fn power_plot<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    s: &Series,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let t1 = s.t.last().copied().unwrap_or(1.0);
    let wmax = s.w.iter().fold(0f64, |m, &v| m.max(v)) * 1.1;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t1, 0f64..wmax.max(1.0))
        .map_err(pe)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("GPU power (W)")
        .draw()
        .map_err(pe)?;
    // Shade prefill and decode spans.
    for (phase, color, name) in [
        ("prefill", ORANGE.mix(0.25), "prefill"),
        ("decode", GREEN.mix(0.2), "decode"),
    ] {
        let mut spans = Vec::new();
        let mut start = None;
        for i in 0..s.t.len() {
            let on = s.phase[i] == phase;
            match (on, start) {
                (true, None) => start = Some(s.t[i]),
                (false, Some(a)) => {
                    spans.push((a, s.t[i]));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(a) = start {
            spans.push((a, t1));
        }
        chart
            .draw_series(
                spans
                    .iter()
                    .map(|&(a, b)| Rectangle::new([(a, 0.0), (b, wmax)], color.filled())),
            )
            .map_err(pe)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .draw_series(LineSeries::new(
            s.t.iter().copied().zip(s.w.iter().copied()),
            BLUE.stroke_width(2),
        ))
        .map_err(pe)?
        .label("power")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], BLUE.stroke_width(2)));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(pe)?;
    Ok(())
}

fn fmt_ci(lo: f64, hi: f64) -> String {
    format!("[{lo:.3}, {hi:.3}]")
}

/// Build report.md and plots for a run folder. Returns the report path.
pub fn write_report(dir: &Path) -> Result<PathBuf> {
    register_font();
    let all = read_rows(dir)?;
    if all.is_empty() {
        return Err(Error::Config(format!(
            "{}: no results.jsonl rows (run `perfwatt sweep` first)",
            dir.display()
        )));
    }
    // A configuration whose model output is only special tokens is broken, not slow or
    // fast: keep it out of every comparison and say so.
    let (rows, broken): (Vec<Row>, Vec<Row>) = all.into_iter().partition(|r| !degenerate(r));
    if rows.is_empty() {
        return Err(Error::Config(format!(
            "{}: every configuration produced degenerate output",
            dir.display()
        )));
    }
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).at(&plots)?;
    let cats: Vec<String> = rows.iter().map(label).collect();
    // Plots name configurations by number (long labels do not fit under bars); the
    // tables below map numbers to settings.
    let nums: Vec<String> = (1..=rows.len()).map(|i| i.to_string()).collect();
    let has_energy = rows.iter().all(|r| r.j_per_token.is_some());
    let mut md = String::new();
    let devices: Vec<String> = {
        let mut d: Vec<String> = rows
            .iter()
            .map(|r| r.gpu.clone().unwrap_or_else(|| r.device.clone()))
            .collect();
        d.dedup();
        d
    };
    let _ = writeln!(
        md,
        "# perfwatt report: {}\n",
        dir.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "{} configurations on {}; {} repeats each. Regenerate with `perfwatt report RUN_DIR` (this folder). Data: `results.csv` / `results.jsonl`.\n",
        rows.len(),
        devices.join(", "),
        rows[0].repeats,
    );
    if !broken.is_empty() {
        let _ = writeln!(md, "> **Excluded: {} configuration(s) with degenerate output** (the model emitted only special tokens, e.g. `{}`), so their speed and energy are not comparable: {}. Their rows stay in results.csv.\n",
            broken.len(),
            broken[0].generated.chars().take(26).collect::<String>(),
            broken.iter().map(|r| format!("`{}`", r.key)).collect::<Vec<_>>().join(", "));
    }
    if !has_energy {
        let _ = writeln!(md, "> **No energy data**: these runs were on a device without NVML (the CPU). Energy columns are empty; where a plot would use J/token it uses seconds per output token instead, and says so.\n");
    }

    // ---- table
    let _ = writeln!(md, "## Configurations\n");
    let _ = writeln!(md, "| # | configuration | latency p50 (s) | 95% CI of mean | tok/s out | J/token | J/token above idle | EDP (J*s) | zero operands | toggles/MAC base | toggles/MAC isolated | saving |");
    let _ = writeln!(
        md,
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let na = |o: Option<f64>, p: usize| {
        o.map(|v| format!("{v:.p$}"))
            .unwrap_or_else(|| "n/a".into())
    };
    for (i, (r, c)) in rows.iter().zip(&cats).enumerate() {
        let _ = writeln!(
            md,
            "| {} | {c} | {:.3} | {} | {:.1} | {} | {} | {} | {:.1}% | {:.2} | {:.2} | {:.1}% |",
            i + 1,
            r.latency_p50_s,
            fmt_ci(r.latency_ci95_low_s, r.latency_ci95_high_s),
            r.tokens_per_s_output,
            na(r.j_per_token, 4),
            na(r.j_per_token_above_idle, 4),
            na(r.edp_js, 3),
            100.0 * r.zero_fraction,
            r.baseline_toggles_per_mac,
            r.isolated_toggles_per_mac,
            r.toggle_saving_pct
        );
    }

    // ---- toggles per config
    let base: Vec<f64> = rows.iter().map(|r| r.baseline_toggles_per_mac).collect();
    let iso: Vec<f64> = rows.iter().map(|r| r.isolated_toggles_per_mac).collect();
    let h = 480;
    let sm: Option<Vec<f64>> = rows.iter().map(|r| r.signmag_toggles_per_mac).collect();
    let mut series = vec![
        ("baseline", BLUE, base.clone()),
        ("operand-isolated", ORANGE, iso.clone()),
    ];
    if let Some(v) = &sm {
        series.push(("sign-magnitude", GREEN, v.clone()));
    }
    render(
        &plots,
        "toggles_per_config",
        (1000, h),
        both!(|root| {
            bars(
                &root,
                "MAC datapath toggles per operation (configuration #)",
                "toggles / MAC op",
                &nums,
                &series,
                None,
            )
        }),
    )?;
    let _ = writeln!(
        md,
        "\n## Switching activity\n\n![toggles per configuration](plots/toggles_per_config.png)\n"
    );
    let savings: Vec<f64> = rows.iter().map(|r| r.toggle_saving_pct).collect();
    let (smin, smax) = savings
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let zf: Vec<f64> = rows.iter().map(|r| r.zero_fraction).collect();
    let _ = write!(
        md,
        "Operand isolation removed {smin:.1}% to {smax:.1}% of the datapath toggles across these configurations, on operand streams where {:.1}% to {:.1}% of pairs had a zero operand.",
        100.0 * zf.iter().cloned().fold(f64::MAX, f64::min),
        100.0 * zf.iter().cloned().fold(f64::MIN, f64::max)
    );
    if let Some(r) = pearson(&zf, &savings) {
        let _ = write!(md, " Across configurations the saving tracks the zero-operand fraction with Pearson r = {r:.3} (n = {}).", rows.len());
    }

    if let Some(v) = &sm {
        let d: Vec<f64> = rows
            .iter()
            .filter_map(|r| r.signmag_vs_baseline_pct)
            .collect();
        let (lo, hi) = d
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let _ = write!(
            md,
            "\n\nOperand encoding: the same baseline MAC fed sign-magnitude operands switched {lo:+.1}% to {hi:+.1}% relative to two's complement (mean {mean:.2} toggles/MAC), with no gating at all."
        );
    }

    // ---- per group
    let groups = ["multiplier inputs", "product", "accumulator", "control"];
    let per = |f: fn(&Row) -> u64| {
        rows.iter()
            .map(|r| f(r) as f64 / r.pairs.max(1) as f64)
            .sum::<f64>()
            / rows.len() as f64
    };
    let gb = vec![
        per(|r| r.baseline_mult_inputs),
        per(|r| r.baseline_product),
        per(|r| r.baseline_accumulator),
        per(|r| r.baseline_control),
    ];
    let gi = vec![
        per(|r| r.isolated_mult_inputs),
        per(|r| r.isolated_product),
        per(|r| r.isolated_accumulator),
        per(|r| r.isolated_control),
    ];
    let gcats: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
    render(
        &plots,
        "toggles_per_group",
        (900, 480),
        both!(|root| {
            bars(
                &root,
                "Toggles per MAC op by signal group (mean over configurations)",
                "toggles / MAC op",
                &gcats,
                &[
                    ("baseline", BLUE, gb.clone()),
                    ("operand-isolated", ORANGE, gi.clone()),
                ],
                None,
            )
        }),
    )?;
    let _ = writeln!(md, "\n\n![toggles per group](plots/toggles_per_group.png)\n\n| signal group | baseline toggles/MAC | isolated toggles/MAC | change |\n|---|---:|---:|---:|");
    for i in 0..groups.len() {
        let ch = if gb[i] > 0.0 {
            format!("{:+.1}%", 100.0 * (gi[i] - gb[i]) / gb[i])
        } else {
            "n/a".into()
        };
        let _ = writeln!(md, "| {} | {:.3} | {:.3} | {ch} |", groups[i], gb[i], gi[i]);
    }
    let _ = writeln!(md, "\nThe isolated design's extra control toggles are its zero-detect flags (nz, nz_q, nz2_q): the price of the gating.");

    // ---- latency vs energy (Pareto) or J/token
    let _ = writeln!(md, "\n## Latency and energy\n");
    if has_energy {
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (r.latency_p50_s, r.energy_j.unwrap_or(0.0) / r.batch as f64))
            .collect();
        let front = pareto(&pts);
        render(
            &plots,
            "latency_vs_energy",
            (900, 600),
            both!(|root| {
                scatter(
                    &root,
                    "Latency vs energy per query",
                    "latency p50 (s)",
                    "energy per query (J)",
                    &pts,
                    None,
                    Some(&front),
                )
            }),
        )?;
        let _ = writeln!(md, "![latency vs energy](plots/latency_vs_energy.png)\n\nPareto-optimal configurations (no other is both faster and cheaper per query):\n");
        for p in &front {
            if let Some(i) = pts.iter().position(|q| q == p) {
                let _ = writeln!(md, "- {}: {:.3} s, {:.3} J per query", cats[i], p.0, p.1);
            }
        }
        let jpt: Vec<f64> = rows.iter().map(|r| r.j_per_token.unwrap_or(0.0)).collect();
        let errs: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| {
                (
                    r.j_per_token_ci95_low.unwrap_or(0.0),
                    r.j_per_token_ci95_high.unwrap_or(0.0),
                )
            })
            .collect();
        render(
            &plots,
            "j_per_token",
            (1000, h),
            both!(|root| {
                bars(
                    &root,
                    "GPU energy per output token, 95% CI (configuration #)",
                    "J / token",
                    &nums,
                    &[("J/token", BLUE, jpt.clone())],
                    Some(&errs),
                )
            }),
        )?;
        let _ = writeln!(md, "\n![J per token](plots/j_per_token.png)\n");
    } else {
        let tps: Vec<f64> = rows.iter().map(|r| r.tokens_per_s_output).collect();
        render(
            &plots,
            "throughput",
            (1000, h),
            both!(|root| {
                bars(
                    &root,
                    "Output tokens/s, CPU, no energy counter (configuration #)",
                    "tokens / s",
                    &nums,
                    &[("tokens/s", BLUE, tps.clone())],
                    None,
                )
            }),
        )?;
        let _ = writeln!(md, "No latency-vs-energy plot or J/token chart: no energy was measured. Throughput instead:\n\n![throughput](plots/throughput.png)\n");
    }
    let _ = writeln!(md, "\n### Energy-delay product\n\navg W is energy (NVML counter) over time; peak W is the highest NVML power sample, a reading the driver itself averages over a short window, so it can sit below avg W on short runs.\n\n| configuration | energy/run (J) | latency mean (s) | EDP (J*s) | avg W | peak W | idle W |\n|---|---:|---:|---:|---:|---:|---:|");
    for (r, c) in rows.iter().zip(&cats) {
        let _ = writeln!(
            md,
            "| {c} | {} | {:.3} | {} | {} | {} | {} |",
            na(r.energy_j, 3),
            r.latency_mean_s,
            na(r.edp_js, 3),
            na(r.avg_w, 1),
            na(r.peak_w, 1),
            na(r.idle_w, 1)
        );
    }

    // ---- correlation
    let x: Vec<f64> = base.clone();
    let (y, ylabel, what): (Vec<f64>, &str, &str) = if has_energy {
        (
            rows.iter().map(|r| r.j_per_token.unwrap_or(0.0)).collect(),
            "GPU J / output token",
            "GPU J/token",
        )
    } else {
        (
            rows.iter()
                .map(|r| 1.0 / r.tokens_per_s_output.max(1e-12))
                .collect(),
            "CPU s / output token (no energy data)",
            "CPU seconds per output token",
        )
    };
    let fit = linear_fit(&x, &y);
    let pts: Vec<(f64, f64)> = x.iter().copied().zip(y.iter().copied()).collect();
    render(
        &plots,
        "correlation",
        (900, 600),
        both!(|root| {
            scatter(
                &root,
                "Software cost vs MAC switching",
                "baseline MAC toggles per operation",
                ylabel,
                &pts,
                fit,
                None,
            )
        }),
    )?;
    let _ = writeln!(
        md,
        "\n## Does switching activity move with {what}?\n\n![correlation](plots/correlation.png)\n"
    );
    let r = pearson(&x, &y);
    let rho = spearman(&x, &y);
    let r_ci = bootstrap_ci(&x, &y, pearson, 2000);
    let rho_ci = bootstrap_ci(&x, &y, spearman, 2000);
    let ci = |c: Option<(f64, f64)>| {
        c.map(|(a, b)| format!("95% bootstrap CI [{a:.2}, {b:.2}]"))
            .unwrap_or_else(|| "CI needs at least 3 configurations".into())
    };
    match (r, rho) {
        (Some(r), Some(rho)) => {
            let strength = |v: f64| match v.abs() {
                a if a >= 0.7 => "strong",
                a if a >= 0.4 => "moderate",
                a if a >= 0.2 => "weak",
                _ => "no meaningful",
            };
            let dir = if r >= 0.0 { "positive" } else { "negative" };
            let _ = write!(md, "Pearson r = {r:.3} ({}), Spearman rho = {rho:.3} ({}), n = {}: a {} {dir} linear association between baseline toggles per MAC and {what}.", ci(r_ci), ci(rho_ci), rows.len(), strength(r));
            if let Some((a, b)) = fit {
                let sign = if b < 0.0 { "-" } else { "+" };
                let _ = writeln!(
                    md,
                    " Fit: {what} = {a:.4} {sign} {:.4} x toggles/MAC.",
                    b.abs()
                );
            }
            let wide = r_ci.is_none_or(|(lo, hi)| lo < 0.0 && hi > 0.0);
            if wide {
                let _ = writeln!(md, "\nThe interval includes zero (or cannot be computed): with this many configurations the data do not establish a correlation either way.");
            }
            let _ = writeln!(md, "\nA caution on reading this: configurations change {what} mainly through arithmetic format and work per token (precision, batch, cache), while toggles per MAC change through the operand values (zeros, magnitudes). A correlation across a sweep says they move together under these optimizations, not that one causes the other.");
        }
        _ => {
            let _ = writeln!(
                md,
                "Correlation undefined: fewer than 2 configurations, or one variable did not vary."
            );
        }
    }

    // ---- power series
    let mut any_power = false;
    for r in &rows {
        let p = dir.join("points").join(&r.key).join("infer.power.csv");
        if let Some(s) = read_power(&p) {
            if !any_power {
                let _ = writeln!(md, "\n## Power time series\n");
                any_power = true;
            }
            let name = format!("power_{}", r.key);
            let title = format!("{} ({})", label(r), r.gpu.clone().unwrap_or_default());
            render(
                &plots,
                &name,
                (1000, 420),
                both!(|root| { power_plot(&root, &title, &s) }),
            )?;
            let _ = writeln!(md, "![power {}](plots/{name}.png)\n", r.key);
        }
    }
    if !any_power {
        let _ = writeln!(
            md,
            "\n## Power time series\n\nNone: NVML power samples exist only for GPU runs."
        );
    }
    let out = dir.join("report.md");
    write_atomic(&out, md.as_bytes())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn degenerate_output() {
        let mut r: super::Row = serde_json::from_str(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/row.json"))
                .unwrap(),
        )
        .unwrap();
        assert!(!super::degenerate(&r));
        r.generated = "<|endoftext|><|endoftext|> <|im_end|>".into();
        assert!(super::degenerate(&r));
        r.generated = "<|im_start|>Paris".into();
        assert!(!super::degenerate(&r));
    }

    #[test]
    fn pareto_front() {
        let f = super::pareto(&[(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (2.0, 3.0)]);
        assert_eq!(f, vec![(1.0, 5.0), (2.0, 3.0), (4.0, 1.0)]);
    }
}
