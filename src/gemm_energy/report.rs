//! The gemm-energy report: per dtype, the patterns' energy (or time) per GEMM beside their
//! toggles per MAC under each hardware model, how well each model predicts the energy
//! (Pearson, Spearman with bootstrap CIs, leave-one-out error of a linear fit), the models
//! ranked, and the K-permutation experiment. In: a `GemmReport`. Out: report.md, plots
//! (PNG + SVG) under plots/, and the CSV (one row per pattern, pandas-ready).

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::files::write_atomic;
use crate::gemm_energy::calibrate;
use crate::gemm_energy::fit::{self, Candidate, Sample, Selection};
use crate::gemm_energy::hw::HwModel;
use crate::gemm_energy::patterns::Dtype;
use crate::gemm_energy::{GemmReport, PointResult, Regime};
use crate::render::section::{table, Align, Correlation};
use crate::stats::{bootstrap_ci, loo_errors_pct, pearson, percentile, spearman};
use crate::vcd::toggles::csv_field;

/// What the report predicts: energy per GEMM (J) where NVML measured it, else time (ms).
/// In the duty regime, energy above the schedule's floor (idle over the loop's time
/// subtracted): the raw figure carries each pattern's share of the sleeps, which depends
/// on how many of its GEMMs fill a burst.
fn cost(p: &PointResult, regime: Regime) -> (f64, bool) {
    match (p.j_per_gemm, p.j_per_gemm_above_idle, regime) {
        (Some(_), Some(above), Regime::Duty) => (above.mean, true),
        (Some(e), _, _) => (e.mean, true),
        _ => (p.s_per_gemm.mean * 1e3, false),
    }
}

/// The name and axis label of what the report predicts.
fn cost_name(energy: bool, regime: Regime) -> (&'static str, &'static str) {
    match (energy, regime) {
        (true, Regime::Duty) => (
            "J/GEMM above floor",
            "energy per GEMM above the schedule's floor (J)",
        ),
        (true, _) => ("J/GEMM", "energy per GEMM (J)"),
        _ => ("ms/GEMM", "time per GEMM (ms)"),
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
pub fn fits(points: &[&PointResult], regime: Regime) -> Vec<ModelFit> {
    let models: Vec<String> = points
        .first()
        .map(|p| p.info.toggles.keys().cloned().collect())
        .unwrap_or_default();
    let y: Vec<f64> = points.iter().map(|p| cost(p, regime).0).collect();
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
        md.push_str(&predictions(dtype, &points, &plots, r.config.regime)?);
        md.push_str(&selection_section(dtype, &points, r));
        if let Some(path) = &r.config.check_calibration {
            md.push_str(&calibration_check(path, dtype, &points, r)?);
        }
    }
    md.push_str(&permutations(r));
    write_atomic(&dir.join("report.md"), md.as_bytes())
}

fn header(r: &GemmReport) -> String {
    let c = &r.config;
    let dtypes = c.dtypes.iter().map(|d| d.name()).collect::<Vec<_>>();
    let (how, flag) = match c.regime {
        Regime::BackToBack => ("back-to-back GEMMs".to_string(), String::new()),
        Regime::Duty => (
            format!("bursts of about {} ms of GEMMs, each followed by {} ms asleep (the duty regime: energy per GEMM includes the sleeps' share; above idle subtracts that schedule's floor, the same schedule with no GEMM)", c.duty_burst_ms, c.duty_sleep_ms),
            format!(" --regime duty --duty-burst-ms {} --duty-sleep-ms {}", c.duty_burst_ms, c.duty_sleep_ms),
        ),
    };
    let mut md = format!(
        "# perfwatt gemm-energy: {}\n\nGEMM C = A B^T with A {} x {} (activations) and B {} x {} (weights), {} on {}; per pattern {} rounds of {} s of {how} after {} s of warm-up, rounds in alternating order. Hardware models replay {} sampled dot products (full K) of each pattern, and the tile unit {} sampled 16 x 8 output blocks (full K) per order. Data: `results.csv`, `results.json`, raw rounds `points.jsonl`. Reproduce: `perfwatt gemm-energy --device {} --dtype {} --shape {},{},{} --seconds {} --rounds {}{flag}`.\n\n",
        r.device,
        c.shape.m, c.shape.k, c.shape.n, c.shape.k,
        dtypes.join(" and "),
        r.device, c.rounds, c.seconds, c.warmup_seconds, c.sample_dots, c.sample_blocks,
        c.device, dtypes.join(","), c.shape.m, c.shape.k, c.shape.n, c.seconds, c.rounds,
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
        .map(|p| cost(p, Regime::BackToBack))
        .fold((f64::MAX, f64::MIN), |(a, b), (v, _)| (a.min(v), b.max(v)));
    let (lo_p, hi_p) = (
        points
            .iter()
            .find(|p| cost(p, Regime::BackToBack).0 == lo)
            .map(|p| p.info.pattern.as_str())
            .unwrap_or(""),
        points
            .iter()
            .find(|p| cost(p, Regime::BackToBack).0 == hi)
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
            .filter(|p| capped(p, Some(limit)))
            .map(|p| p.info.pattern.as_str())
            .collect();
        if r.config.regime == Regime::Duty {
            md.push_str(&duty_check(points, &capped));
        }
        if !capped.is_empty() {
            let _ = writeln!(md, "\nAt the power cap ({limit:.0} W, or a power clock event) for {} of {} patterns ({}): there the card holds its watts and lowers its clock, so energy per GEMM rises through time, not power.", capped.len(), points.len(), capped.join(", "));
        }
    }
    md
}

/// Did the duty regime keep the card off its cap: clock events and the SM clock's range.
fn duty_check(points: &[&PointResult], capped: &[&str]) -> String {
    let clocks: Vec<f64> = points.iter().filter_map(|p| p.sm_mhz_median).collect();
    let (lo, hi) = clocks
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &c| (a.min(c), b.max(c)));
    let range = if clocks.is_empty() {
        "no SM clock readings".to_string()
    } else {
        format!("median SM clock per pattern {lo:.0}-{hi:.0} MHz")
    };
    if capped.is_empty() {
        format!("\nDuty regime check: no pattern reached the power cap or had a power clock event; {range}.\n")
    } else {
        format!("\n**Duty regime check failed** for {} of {} patterns (power cap or power clock event: {}); {range}. Lengthen --duty-sleep-ms or shorten --duty-burst-ms.\n", capped.len(), points.len(), capped.join(", "))
    }
}

/// At the power cap: mean power within 3% of the limit, or a power clock event.
fn capped(p: &PointResult, limit: Option<f64>) -> bool {
    limit.is_some_and(|l| p.avg_w.is_some_and(|w| w.mean >= 0.97 * l))
        || p.throttle.iter().any(|t| t.contains("POWER"))
}

/// The patterns as the fits see them: cost, every model's value, every tile order's
/// signal groups (`<model> | <group>`), the power regime.
pub fn samples(points: &[&PointResult], limit: Option<f64>, regime: Regime) -> Vec<Sample> {
    points
        .iter()
        .map(|p| {
            let mut features = p.info.toggles.clone();
            for (model, groups) in &p.info.groups {
                for (g, v) in groups {
                    features.insert(group_feature(model, g), *v);
                }
            }
            Sample {
                y: cost(p, regime).0,
                features,
                capped: capped(p, limit),
            }
        })
        .collect()
}

fn group_feature(model: &str, group: &str) -> String {
    format!("{model} | {group}")
}

/// The candidates of this run's `dtype`, split into the RTL family and the declared
/// baselines; a candidate whose feature some pattern lacks (rows of an older run) is left
/// out.
pub fn candidates(
    r: &GemmReport,
    dtype: Dtype,
    samples: &[Sample],
) -> (Vec<Candidate>, Vec<Candidate>) {
    let c = &r.config;
    let has = |f: &str| samples.iter().all(|s| s.features.contains_key(f));
    let (mut family, mut baselines) = (Vec::new(), vec![Candidate::TwoGroup]);
    for m in HwModel::for_dtype(dtype, c.lanes, c.gate_level, &c.tile_orders) {
        let name = m.name();
        if !has(&name) {
            continue;
        }
        if m.is_baseline() {
            baselines.push(Candidate::Line(name));
            continue;
        }
        if let HwModel::Tile(_) = m {
            let mut groups: Vec<String> = samples
                .iter()
                .flat_map(|s| s.features.keys())
                .filter(|f| f.starts_with(&format!("{name} | ")))
                .cloned()
                .collect();
            groups.sort();
            groups.dedup();
            if !groups.is_empty() && groups.iter().all(|g| has(g)) {
                family.push(Candidate::Groups {
                    name: name.clone(),
                    features: groups,
                });
            }
        }
        family.push(Candidate::Line(name));
    }
    (family, baselines)
}

/// The honest estimate: the RTL family's candidate chosen inside each leave-one-out fold,
/// against every baseline declared before fitting, and what the most chosen model says.
fn selection_section(dtype: Dtype, points: &[&PointResult], r: &GemmReport) -> String {
    let s = samples(points, r.power_limit_w, r.config.regime);
    let (family, baselines) = candidates(r, dtype, &s);
    let mut md = format!(
        "### {}: nested selection, against declared baselines

",
        dtype.name()
    );
    let Some(sel) = fit::select(&s, &family, &baselines) else {
        md.push_str(
            "Too few patterns (or no RTL model) for a nested estimate.

",
        );
        return md;
    };
    let _ = writeln!(md, "Each pattern is predicted by the RTL-family model (one of {} candidates: every RTL design's toggles per MAC on a line, and each tile order's signal groups with non-negative weights) that the *other* patterns choose by their own leave-one-out error, so selecting among many models cannot flatter the estimate. The baselines were named before any fit: {}. Differences are mean absolute errors, nested estimate minus baseline, in percentage points, with a paired bootstrap 95% CI over patterns.
", family.len(), baselines.iter().map(|b| b.name()).collect::<Vec<_>>().join("; "));
    let columns = [
        ("estimate", Align::Left),
        ("Spearman rho", Align::Right),
        ("LOO error, median", Align::Right),
        ("max", Align::Right),
        ("nested minus this, pp (95% CI)", Align::Left),
        ("verdict", Align::Left),
    ];
    let mut rows = vec![vec![
        "**nested selection, RTL family**".into(),
        opt(sel.nested.spearman, 3),
        opt(sel.nested.median_pct, 2) + "%",
        opt(sel.nested.max_pct, 2) + "%",
        String::new(),
        String::new(),
    ]];
    for v in &sel.versus {
        rows.push(vec![
            format!("baseline: {}", v.baseline.name),
            opt(v.baseline.spearman, 3),
            opt(v.baseline.median_pct, 2) + "%",
            opt(v.baseline.max_pct, 2) + "%",
            v.diff_pp
                .map(|(d, lo, hi)| format!("{d:+.2} [{lo:+.2}, {hi:+.2}]"))
                .unwrap_or_else(|| "n/a".into()),
            verdict(v.diff_pp),
        ]);
    }
    md.push_str(&table(&columns, rows.into_iter()));
    md.push('\n');
    md.push_str(&chosen_text(&sel, &family, &s, points.len()));
    md
}

/// This run's patterns predicted by an earlier run's calibration.
fn calibration_check(
    path: &Path,
    dtype: Dtype,
    points: &[&PointResult],
    r: &GemmReport,
) -> Result<String> {
    let cals = calibrate::read(path)?;
    let cal = calibrate::for_dtype(&cals, dtype)?;
    let s = samples(points, r.power_limit_w, r.config.regime);
    let mut md = format!("### {}: predicted by the calibration {}\n\nThe calibration (fitted on {} patterns of {}, {} regime: {}) predicts each pattern of this run from its own toggles; patterns it was fitted on are marked.\n\n", dtype.name(), path.display(), cal.fitted_on.len(), cal.device, cal.regime, cal.candidate);
    let (mut errs, mut fresh, mut inside) = (Vec::new(), Vec::new(), 0usize);
    let rows: Vec<Vec<String>> = points
        .iter()
        .zip(&s)
        .filter_map(|(p, x)| {
            let pred = calibrate::predict_from(cal, &x.features).ok()?;
            let e = (pred.predicted / x.y - 1.0) * 100.0;
            let seen = cal.fitted_on.contains(&p.info.pattern);
            errs.push(e.abs());
            if !seen {
                fresh.push(e.abs());
            }
            inside += usize::from(pred.low <= x.y && x.y <= pred.high);
            Some(vec![
                p.info.pattern.clone() + if seen { " (fitted on)" } else { "" },
                format!("{:.4}", x.y),
                format!("{:.4}", pred.predicted),
                format!("[{:.4}, {:.4}]", pred.low, pred.high),
                format!("{e:+.2}%"),
            ])
        })
        .collect();
    let columns = [
        ("pattern", Align::Left),
        ("measured", Align::Right),
        ("predicted", Align::Right),
        ("95% prediction interval", Align::Left),
        ("error", Align::Right),
    ];
    md.push_str(&table(&columns, rows.into_iter()));
    let _ = writeln!(md, "\nMedian absolute error {}% over {} patterns ({}% over the {} it was not fitted on; max {}%); {inside} of {} measurements inside their interval.\n", opt(percentile(&errs, 50.0), 2), errs.len(), opt(percentile(&fresh, 50.0), 2), fresh.len(), opt(fresh.iter().copied().reduce(f64::max), 2), errs.len());
    Ok(md)
}

/// Whether the nested RTL estimate beats a baseline, from the CI of the difference.
fn verdict(d: Option<(f64, f64, f64)>) -> String {
    match d {
        Some((_, _, hi)) if hi < 0.0 => "RTL model better".into(),
        Some((_, lo, _)) if lo > 0.0 => "baseline better".into(),
        Some((_, lo, hi)) => format!(
            "not distinguishable (a difference under {:.2} pp is not detectable here)",
            lo.abs().max(hi.abs())
        ),
        None => "n/a".into(),
    }
}

/// Which candidates the folds chose, and the most chosen one fitted to every pattern: for
/// signal groups, the weights (which groups explain the energy).
fn chosen_text(sel: &Selection, family: &[Candidate], s: &[Sample], n: usize) -> String {
    let mut chosen: Vec<(&String, &usize)> = sel.chosen.iter().collect();
    chosen.sort_by(|a, b| b.1.cmp(a.1));
    let mut md = format!(
        "Chosen in the {n} folds: {}.
",
        chosen
            .iter()
            .map(|(c, k)| format!("{c} ({k})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let Some(top) = chosen
        .first()
        .and_then(|(name, _)| family.iter().find(|c| c.name() == **name))
    else {
        return md
            + "
";
    };
    if let Candidate::Groups { name, features } = top {
        let all: Vec<&Sample> = s.iter().collect();
        if let Some((floor, w)) = fit::nnls_fit(&all, features) {
            let terms: Vec<String> = features
                .iter()
                .zip(&w)
                .map(|(f, w)| {
                    let g = f.rsplit(" | ").next().unwrap_or(f);
                    format!("{w:.3e} x {g}")
                })
                .collect();
            let zero: Vec<&str> = features
                .iter()
                .zip(&w)
                .filter(|(_, w)| **w == 0.0)
                .map(|(f, _)| f.rsplit(" | ").next().unwrap_or(f))
                .collect();
            let _ = writeln!(md, "
Fitted to all {n} patterns, {name} gives cost = {floor:.4} + {} (toggles per MAC of each signal group; weights held non-negative). {}", terms.join(" + "), if zero.is_empty() { "Every group carries weight.".to_string() } else { format!("Weight 0, so explaining nothing the other groups do not: {}.", zero.join(", ")) });
        }
    }
    md + "
"
}

/// Scatter, fit and statistics per hardware model, and the models ranked.
fn predictions(
    dtype: Dtype,
    points: &[&PointResult],
    plots: &Path,
    regime: Regime,
) -> Result<String> {
    let energy = points.iter().all(|p| p.j_per_gemm.is_some());
    let (y_name, y_label) = cost_name(energy, regime);
    let y: Vec<f64> = points.iter().map(|p| cost(p, regime).0).collect();
    let ranked = fits(points, regime);
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
        ("min. detectable (80% power)", Align::Right),
        ("verdict", Align::Left),
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
                .map(|e| {
                    format!(
                        "{:+.2}% [{:+.2}, {:+.2}] (n = {})",
                        e.mean, e.ci95_low, e.ci95_high, e.n
                    )
                })
                .unwrap_or_else(|| "n/a (no energy counter)".into()),
            p.measured_pct
                .and_then(|e| e.min_detectable())
                .map(|m| format!("{m:.2}%"))
                .unwrap_or_else(|| "n/a".into()),
            match p.measured_pct {
                Some(e) if e.ci95_low > 0.0 || e.ci95_high < 0.0 => "changed".into(),
                Some(e) if e.n >= 2 => format!(
                    "not detectable: a change under {:.1}% would pass unseen",
                    e.min_detectable().unwrap_or(f64::NAN)
                ),
                _ => "n/a".into(),
            },
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
