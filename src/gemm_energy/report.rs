//! The gemm-energy report: per dtype, the patterns' energy (or time) per GEMM beside their
//! toggles per MAC under each hardware model, how well each model predicts the energy
//! (Pearson, Spearman with bootstrap CIs, leave-one-out error of a linear fit), the models
//! ranked, and the K-permutation experiment. In: a `GemmReport`. Out: report.md, plots
//! (PNG + SVG) under plots/, and the CSV (one row per pattern, pandas-ready).

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::files::write_atomic;
use crate::gemm_energy::patterns::Dtype;
use crate::gemm_energy::{GemmReport, PointResult};
use crate::render::section::{table, Align, Correlation};
use crate::stats::{bootstrap_ci, loo_errors_pct, pearson, percentile, spearman};
use crate::vcd::toggles::csv_field;

/// What the report predicts: energy per GEMM (J) where NVML measured it, else time (ms).
fn cost(p: &PointResult) -> (f64, bool) {
    match p.j_per_gemm {
        Some(e) => (e.mean, true),
        None => (p.s_per_gemm.mean * 1e3, false),
    }
}

/// How well one hardware model's toggles predict the cost across one dtype's patterns.
#[derive(Debug, Clone)]
pub struct ModelFit {
    pub model: String,
    pub n: usize,
    pub pearson: Option<f64>,
    pub spearman: Option<f64>,
    pub spearman_ci: Option<(f64, f64)>,
    pub loo_median_pct: Option<f64>,
    pub loo_max_pct: Option<f64>,
}

/// Every model's fit for the points of `dtype`, best first (lowest leave-one-out median
/// error, then highest Spearman).
pub fn fits(points: &[&PointResult]) -> Vec<ModelFit> {
    let models: Vec<String> = points
        .first()
        .map(|p| p.info.toggles.keys().cloned().collect())
        .unwrap_or_default();
    let y: Vec<f64> = points.iter().map(|p| cost(p).0).collect();
    let mut v: Vec<ModelFit> = models
        .into_iter()
        .map(|m| {
            let x: Vec<f64> = points.iter().map(|p| p.info.toggles[&m]).collect();
            let loo = loo_errors_pct(&x, &y);
            ModelFit {
                n: x.len(),
                pearson: pearson(&x, &y),
                spearman: spearman(&x, &y),
                spearman_ci: bootstrap_ci(&x, &y, spearman, 2000),
                loo_median_pct: percentile(&loo, 50.0),
                loo_max_pct: loo.iter().copied().reduce(f64::max),
                model: m,
            }
        })
        .collect();
    v.sort_by(|a, b| {
        let key = |f: &ModelFit| {
            (
                f.loo_median_pct.unwrap_or(f64::INFINITY),
                -f.spearman.unwrap_or(-1.0),
            )
        };
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    v
}

fn opt(v: Option<f64>, p: usize) -> String {
    v.map(|v| format!("{v:.p$}"))
        .unwrap_or_else(|| "n/a".into())
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

pub fn write_report(r: &GemmReport, dir: &Path) -> Result<()> {
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).at(&plots)?;
    let mut md = header(r);
    for &dtype in &r.config.dtypes {
        let points: Vec<&PointResult> = r.points.iter().filter(|p| p.info.dtype == dtype).collect();
        if points.is_empty() {
            continue;
        }
        md.push_str(&patterns_table(dtype, &points, r));
        md.push_str(&predictions(dtype, &points, &plots)?);
    }
    md.push_str(&permutations(r));
    write_atomic(&dir.join("report.md"), md.as_bytes())
}

fn header(r: &GemmReport) -> String {
    let c = &r.config;
    let mut md = format!(
        "# perfwatt gemm-energy: {}\n\nGEMM C = A B^T with A {} x {} (activations) and B {} x {} (weights), {} on {}; per pattern {} rounds of {} s of back-to-back GEMMs after {} s of warm-up, rounds in alternating order. Hardware models replay {} sampled dot products (full K) of each pattern. Data: `results.csv`, `results.json`, raw rounds `points.jsonl`. Reproduce: `perfwatt gemm-energy --device {} --dtype {} --shape {},{},{} --seconds {} --rounds {}`.\n\n",
        r.device,
        c.shape.m, c.shape.k, c.shape.n, c.shape.k,
        c.dtypes.iter().map(|d| d.name()).collect::<Vec<_>>().join(" and "),
        r.device, c.rounds, c.seconds, c.warmup_seconds, c.sample_dots,
        c.device, c.dtypes.iter().map(|d| d.name()).collect::<Vec<_>>().join(","), c.shape.m, c.shape.k, c.shape.n, c.seconds, c.rounds,
    );
    match (r.idle_w_before, r.idle_w_after) {
        (Some(a), Some(b)) => {
            let _ = writeln!(md, "Idle draw: {a:.1} W before, {b:.1} W after (energy above idle subtracts their mean over each loop's time). Power limit: {}.\n", opt(r.power_limit_w, 0) + " W");
        }
        _ => md.push_str("> **No energy data**: this device has no NVML energy counter (the CPU). The tables give time per GEMM instead, and the predictions below predict time, which on a CPU hardly depends on the data: the hardware-model columns are the part of this report that carries over.\n\n"),
    }
    md
}

/// One dtype's patterns: the table, then how far the cost spreads and which patterns ran
/// at the power cap.
fn patterns_table(dtype: Dtype, points: &[&PointResult], r: &GemmReport) -> String {
    format!(
        "## {}\n\n{}\n{}\n",
        dtype.name(),
        patterns_grid(points),
        spread_notes(points, r)
    )
}

/// Cost, power, clocks and toggles per hardware model, one row per pattern.
fn patterns_grid(points: &[&PointResult]) -> String {
    let energy = points.iter().all(|p| p.j_per_gemm.is_some());
    let models: Vec<String> = points[0].info.toggles.keys().cloned().collect();
    let mut cols: Vec<(String, Align)> = vec![
        ("pattern".into(), Align::Left),
        ("family".into(), Align::Left),
        ("zeros A / B".into(), Align::Right),
    ];
    if energy {
        for c in [
            "J/GEMM",
            "95% CI",
            "above idle",
            "pJ/MAC",
            "avg W",
            "TOPS",
            "SM MHz",
            "clock events",
        ] {
            cols.push((
                c.into(),
                if c == "95% CI" || c == "clock events" {
                    Align::Left
                } else {
                    Align::Right
                },
            ));
        }
    } else {
        cols.push(("ms/GEMM".into(), Align::Right));
        cols.push(("95% CI".into(), Align::Left));
    }
    cols.extend(
        models
            .iter()
            .map(|m| (format!("tgl/MAC {m}"), Align::Right)),
    );
    let columns: Vec<(&str, Align)> = cols.iter().map(|(c, a)| (c.as_str(), *a)).collect();
    let rows = points.iter().map(|p| {
        let mut v = vec![
            p.info.pattern.clone(),
            format!("{:?}", p.info.family).to_lowercase(),
            format!(
                "{:.0}% / {:.0}%",
                100.0 * p.info.zero_a,
                100.0 * p.info.zero_b
            ),
        ];
        match p.j_per_gemm {
            Some(j) => v.extend([
                format!("{:.4}", j.mean),
                format!("[{:.4}, {:.4}]", j.ci95_low, j.ci95_high),
                opt(p.j_per_gemm_above_idle.map(|e| e.mean), 4),
                opt(p.pj_per_mac, 3),
                opt(p.avg_w.map(|e| e.mean), 0),
                format!("{:.0}", p.tops.mean),
                opt(p.sm_mhz_median, 0),
                p.throttle.join(" "),
            ]),
            None => v.extend([
                format!("{:.3}", p.s_per_gemm.mean * 1e3),
                format!(
                    "[{:.3}, {:.3}]",
                    p.s_per_gemm.ci95_low * 1e3,
                    p.s_per_gemm.ci95_high * 1e3
                ),
            ]),
        }
        v.extend(models.iter().map(|m| format!("{:.2}", p.info.toggles[m])));
        v
    });
    table(&columns, rows)
}

/// The cost's spread across the patterns, and the patterns at the power cap.
fn spread_notes(points: &[&PointResult], r: &GemmReport) -> String {
    let energy = points.iter().all(|p| p.j_per_gemm.is_some());
    let mut md = String::new();
    let (lo, hi) = points
        .iter()
        .map(|p| cost(p))
        .fold((f64::MAX, f64::MIN), |(a, b), (v, _)| (a.min(v), b.max(v)));
    let (lo_p, hi_p) = (
        points
            .iter()
            .find(|p| cost(p).0 == lo)
            .map(|p| p.info.pattern.as_str())
            .unwrap_or(""),
        points
            .iter()
            .find(|p| cost(p).0 == hi)
            .map(|p| p.info.pattern.as_str())
            .unwrap_or(""),
    );
    let what = if energy {
        "Energy per GEMM"
    } else {
        "Time per GEMM"
    };
    let _ = writeln!(md, "{what} spans {:+.0}% across these {} patterns at one shape: from {lo_p} (lowest) to {hi_p} (highest).", (hi / lo - 1.0) * 100.0, points.len());
    if let Some(limit) = r.power_limit_w {
        let capped: Vec<&str> = points
            .iter()
            .filter(|p| {
                p.avg_w.is_some_and(|w| w.mean >= 0.97 * limit)
                    || p.throttle.iter().any(|t| t.contains("POWER"))
            })
            .map(|p| p.info.pattern.as_str())
            .collect();
        if !capped.is_empty() {
            let _ = writeln!(md, "\nAt the power cap ({limit:.0} W, or a power clock event) for {} of {} patterns ({}): there the card holds its watts and lowers its clock, so energy per GEMM rises through time, not power.", capped.len(), points.len(), capped.join(", "));
        }
    }
    md
}

/// Scatter, fit and statistics per hardware model, and the models ranked.
fn predictions(dtype: Dtype, points: &[&PointResult], plots: &Path) -> Result<String> {
    let energy = points.iter().all(|p| p.j_per_gemm.is_some());
    let (y_name, y_label) = if energy {
        ("J/GEMM", "energy per GEMM (J)")
    } else {
        ("ms/GEMM", "time per GEMM (ms)")
    };
    let y: Vec<f64> = points.iter().map(|p| cost(p).0).collect();
    let ranked = fits(points);
    let mut md = format!(
        "### {}: which hardware model predicts {y_name}?\n\n",
        dtype.name()
    );
    let columns = [
        ("rank", Align::Right),
        ("hardware model", Align::Left),
        ("Pearson r", Align::Right),
        ("Spearman rho", Align::Right),
        ("rho 95% bootstrap CI", Align::Left),
        ("leave-one-out error, median", Align::Right),
        ("max", Align::Right),
    ];
    let rows = ranked.iter().enumerate().map(|(i, f)| {
        vec![
            (i + 1).to_string(),
            f.model.clone(),
            opt(f.pearson, 3),
            opt(f.spearman, 3),
            f.spearman_ci
                .map(|(a, b)| format!("[{a:.2}, {b:.2}]"))
                .unwrap_or_else(|| "n/a".into()),
            opt(f.loo_median_pct, 1) + "%",
            opt(f.loo_max_pct, 1) + "%",
        ]
    });
    md.push_str(&table(&columns, rows));
    let _ = writeln!(md, "\nRanked by the median leave-one-out error of a linear fit (each pattern predicted from a line through the other {}), then by Spearman rho. n = {} patterns.\n", points.len().saturating_sub(1), points.len());
    for f in &ranked {
        let x: Vec<f64> = points.iter().map(|p| p.info.toggles[&f.model]).collect();
        let c = Correlation {
            x: &x,
            y: &y,
            x_name: &format!("{} toggles per MAC", f.model),
            x_unit: "toggles/MAC",
            y_name,
            items: "patterns",
        };
        let name = format!("{}_{}", dtype.name(), slug(&f.model));
        c.plot(
            plots,
            &name,
            &format!("{} GEMM: {y_name} vs {}", dtype.name(), f.model),
            &format!("{} toggles per MAC", f.model),
            y_label,
        )?;
        let _ = writeln!(md, "#### {}\n\n![{}](plots/{name}.png)\n", f.model, f.model);
        md.push_str(
            &c.text()
                .unwrap_or_else(|| "Correlation undefined (a variable did not vary).\n".into()),
        );
        md.push('\n');
    }
    Ok(md)
}

fn permutations(r: &GemmReport) -> String {
    if r.permutations.is_empty() {
        return String::new();
    }
    let mut md = String::from("## K permutation: the same GEMM, K reordered to switch less\n\n");
    let columns = [
        ("dtype", Align::Left),
        ("pattern", Align::Left),
        ("output identical", Align::Left),
        ("predicted change, toggles/MAC", Align::Left),
        ("measured change, J/GEMM (95% CI over rounds)", Align::Left),
    ];
    let rows = r.permutations.iter().map(|p| {
        vec![
            p.dtype.name().into(),
            p.pattern.clone(),
            if p.identical {
                "yes, bit for bit".into()
            } else {
                "NO".into()
            },
            p.predicted_pct
                .iter()
                .map(|(m, v)| format!("{m} {v:+.1}%"))
                .collect::<Vec<_>>()
                .join("; "),
            p.measured_pct
                .map(|e| format!("{:+.2}% [{:+.2}, {:+.2}]", e.mean, e.ci95_low, e.ci95_high))
                .unwrap_or_else(|| "n/a (no energy counter)".into()),
        ]
    });
    md.push_str(&table(&columns, rows));
    let _ = writeln!(md, "\nThe order is chosen greedily for a {}-lane unit: each position takes the unused K column whose bits (over 64 sampled rows of A and of B) differ least from the column that lane saw last. Integer addition commutes, so an int8 GEMM with int32 accumulation gives the same output: checked element for element on the device.", r.permutations[0].lanes);
    md
}

/// One row per pattern: settings, measurements and toggles per model.
pub fn to_csv(r: &GemmReport) -> String {
    let models: Vec<String> = {
        let mut m: Vec<String> = r
            .points
            .iter()
            .flat_map(|p| p.info.toggles.keys().cloned())
            .collect();
        m.sort();
        m.dedup();
        m
    };
    let mut out = String::from("dtype,pattern,family,zero_a,zero_b,rounds,j_per_gemm,j_per_gemm_ci95_low,j_per_gemm_ci95_high,j_per_gemm_above_idle,pj_per_mac,avg_w,s_per_gemm,tops,sm_mhz_median,clock_events");
    for m in &models {
        out.push_str(&format!(",{}", csv_field(&format!("toggles_per_mac {m}"))));
    }
    out.push('\n');
    let o = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_default();
    for p in &r.points {
        let _ = write!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            p.info.dtype.name(),
            csv_field(&p.info.pattern),
            format!("{:?}", p.info.family).to_lowercase(),
            p.info.zero_a,
            p.info.zero_b,
            p.rounds,
            o(p.j_per_gemm.map(|e| e.mean)),
            o(p.j_per_gemm.map(|e| e.ci95_low)),
            o(p.j_per_gemm.map(|e| e.ci95_high)),
            o(p.j_per_gemm_above_idle.map(|e| e.mean)),
            o(p.pj_per_mac),
            o(p.avg_w.map(|e| e.mean)),
            p.s_per_gemm.mean,
            p.tops.mean,
            o(p.sm_mhz_median),
            csv_field(&p.throttle.join(" ")),
        );
        for m in &models {
            out.push_str(&format!(",{}", o(p.info.toggles.get(m).copied())));
        }
        out.push('\n');
    }
    out
}
