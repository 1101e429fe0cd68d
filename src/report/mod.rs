//! The correlation report of a sweep (the last stage of the pipeline).
//!
//! In: a run folder (`results.jsonl`, per point `infer.power.csv`). Out: `report.md` and
//! plots as PNG and SVG under `plots/`: toggles baseline vs isolated per configuration and
//! per signal group; latency vs energy with the Pareto frontier; J/token (or, without
//! energy, tokens/s) with CIs; the energy-or-latency metric against toggles per MAC with a
//! fit, Pearson r and Spearman rho (bootstrap 95% CIs); power time series per point.
//! Every sentence of findings is generated from the numbers it states. `write_report` is
//! the list of its sections; `section` holds the builders other reports share.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::files::write_atomic;
use crate::model::Opts;
use crate::render::plot::{
    bars, both, power_over_time, render, scatter, BLUE, GREEN, ORANGE, PURPLE, RED,
};
use crate::render::section::{table, Align, Correlation};
use crate::stats::pearson;
use crate::sweep::{read_rows, Row};

/// Build report.md and plots for a run folder. Returns the report path.
pub fn write_report(dir: &Path) -> Result<PathBuf> {
    let sweep = Sweep::load(dir)?;
    let sections = [
        sweep.header(),
        sweep.devices()?,
        sweep.configurations(),
        sweep.switching()?,
        sweep.gate_level(),
        sweep.signal_groups()?,
        sweep.latency_and_energy()?,
        sweep.energy_delay(),
        sweep.optimizations(),
        sweep.sparsity_cost(),
        sweep.correlation()?,
        sweep.power_series()?,
    ];
    let out = dir.join("report.md");
    write_atomic(&out, sections.concat().as_bytes())?;
    Ok(out)
}

/// A run folder's rows, split into usable and degenerate, with what every section needs.
struct Sweep<'a> {
    dir: &'a Path,
    plots: PathBuf,
    rows: Vec<Row>,
    broken: Vec<Row>,
    /// Compact configuration labels, for tables.
    labels: Vec<String>,
    /// Configuration numbers, for plots (long labels do not fit under bars; the tables
    /// map numbers to settings).
    nums: Vec<String>,
    has_energy: bool,
}

fn fmt_ci(lo: f64, hi: f64) -> String {
    format!("[{lo:.3}, {hi:.3}]")
}

/// The latency CI with its n and unit: over replicates (independent processes), or with
/// one replicate over its runs, which are not independent units (said so); none for fewer
/// than 3 units.
fn ci_over_runs(r: &Row) -> String {
    let (n, unit) = match r.ci_over.as_deref() {
        Some("replicates") => (r.replicates.unwrap_or(1), "replicates"),
        _ => (r.runs.unwrap_or(r.repeats), "runs of one process"),
    };
    if n < 3 {
        format!("n = {n} {unit}: too few for a CI")
    } else {
        format!(
            "{} n={n} {unit}",
            fmt_ci(r.latency_ci95_low_s, r.latency_ci95_high_s)
        )
    }
}

fn na(o: Option<f64>, p: usize) -> String {
    o.map(|v| format!("{v:.p$}"))
        .unwrap_or_else(|| "n/a".into())
}

/// Min and max of a series.
fn range(v: impl IntoIterator<Item = f64>) -> (f64, f64) {
    v.into_iter()
        .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)))
}

const BAR_HEIGHT: u32 = 480;

impl<'a> Sweep<'a> {
    fn load(dir: &'a Path) -> Result<Self> {
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
        Ok(Sweep {
            dir,
            plots,
            labels: rows.iter().map(label).collect(),
            nums: (1..=rows.len()).map(|i| i.to_string()).collect(),
            has_energy: rows.iter().all(|r| r.j_per_token.is_some()),
            rows,
            broken,
        })
    }

    /// Title, devices, repeats, and warnings about excluded rows or missing energy.
    fn header(&self) -> String {
        let rows = &self.rows;
        let mut devices: Vec<String> = rows
            .iter()
            .map(|r| r.gpu.clone().unwrap_or_else(|| r.device.clone()))
            .collect();
        devices.dedup();
        let mut md = format!(
            "# perfwatt report: {}\n\n",
            self.dir
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let _ = writeln!(
            md,
            "{} configurations on {}; {} measured runs each{}. Regenerate with `perfwatt report RUN_DIR` (this folder). Data: `results.csv` / `results.jsonl`.\n",
            rows.len(),
            devices.join(", "),
            rows[0].runs.unwrap_or(rows[0].repeats),
            match rows[0].replicates {
                Some(n) if n > 1 => format!(
                    " ({n} replicates of {} runs, in randomized blocks)",
                    rows[0].repeats
                ),
                _ => String::new(),
            },
        );
        let units = match rows[0].ci_over.as_deref() {
            Some("replicates") => format!(
                "Every 95% CI of a mean is over the {} replicates (processes with their own model load): each replicate's runs are averaged first.",
                rows[0].replicates.unwrap_or(1)
            ),
            _ => "> **CIs over runs of one process**: with one replicate per configuration, the 95% CIs of means are over the runs of a single process, which are not independent units (they share a model load, a warm cache, the machine's state): read them as too narrow. Set `replicates = 5` or more in the spec for CIs over independent units.".into(),
        };
        let _ = writeln!(md, "{units}\n");
        let broken = &self.broken;
        if !broken.is_empty() {
            let _ = writeln!(md, "> **Excluded: {} configuration(s) with degenerate output** (the model emitted only special tokens, e.g. `{}`), so their speed and energy are not comparable: {}. Their rows stay in results.csv.\n",
                broken.len(),
                broken[0].generated.chars().take(26).collect::<String>(),
                broken.iter().map(|r| format!("`{}`", r.key)).collect::<Vec<_>>().join(", "));
        }
        if !self.has_energy {
            let _ = writeln!(md, "> **No energy data**: these runs were on a device without NVML (the CPU). Energy columns are empty; where a plot would use J/token it uses seconds per output token instead, and says so.\n");
        }
        md
    }

    /// Replicates on several devices (`sweep --devices`): what each device ran, and the
    /// host's total. Empty for a sweep on one device.
    fn devices(&self) -> Result<String> {
        use Align::{Left as L, Right as R};
        let uses = crate::sweep::device_use(self.dir)?;
        if uses.len() < 2 {
            return Ok(String::new());
        }
        let j = |e: Option<f64>| e.map_or_else(|| "n/a".into(), |e| format!("{e:.1}"));
        let w = |u: &crate::sweep::DeviceUse| {
            u.energy_j
                .filter(|_| u.run_seconds > 0.0)
                .map_or_else(|| "n/a".into(), |e| format!("{:.1}", e / u.run_seconds))
        };
        let host = crate::sweep::DeviceUse {
            device: "host (sum)".into(),
            gpu: None,
            replicates: uses.iter().map(|u| u.replicates).sum(),
            runs: uses.iter().map(|u| u.runs).sum(),
            run_seconds: uses.iter().map(|u| u.run_seconds).sum(),
            energy_j: uses.iter().map(|u| u.energy_j).sum(),
        };
        let rows = uses.iter().chain([&host]).map(|u| {
            vec![
                u.device.clone(),
                u.gpu.clone().unwrap_or_default(),
                u.replicates.to_string(),
                u.runs.to_string(),
                format!("{:.1}", u.run_seconds),
                j(u.energy_j),
                w(u),
            ]
        });
        Ok(format!(
            "## Devices\n\nOne worker per device took the next replicate in the run order (`sweep --devices`), so a configuration's replicates may have run on different GPUs: its CI includes the GPU-to-GPU spread. Energy: each GPU's counter over its own measured runs, summed.\n\n{}\n",
            table(
                &[
                    ("device", L),
                    ("GPU", L),
                    ("replicates", R),
                    ("measured runs", R),
                    ("run s", R),
                    ("energy J", R),
                    ("avg W", R),
                ],
                rows,
            )
        ))
    }

    /// One line per configuration: speed, energy, operands, toggles.
    fn configurations(&self) -> String {
        use Align::{Left as L, Right as R};
        let columns = [
            ("#", L),
            ("configuration", L),
            ("operands", L),
            ("latency p50 (s)", R),
            ("95% CI of mean latency (t)", L),
            ("tok/s out", R),
            ("J/token", R),
            ("J/token above idle", R),
            ("EDP (J*s)", R),
            ("zero operands", R),
            ("toggles/MAC base", R),
            ("toggles/MAC isolated", R),
            ("saving", R),
        ];
        let rows = self
            .rows
            .iter()
            .zip(&self.labels)
            .enumerate()
            .map(|(i, (r, c))| {
                vec![
                    (i + 1).to_string(),
                    c.clone(),
                    r.format
                        .clone()
                        .unwrap_or_else(|| format!("i{w} x i{w}", w = r.width)),
                    format!("{:.3}", r.latency_p50_s),
                    ci_over_runs(r),
                    format!("{:.1}", r.tokens_per_s_output),
                    na(r.j_per_token, 4),
                    na(r.j_per_token_above_idle, 4),
                    na(r.edp_js, 3),
                    format!("{:.1}%", 100.0 * r.zero_fraction),
                    format!("{:.2}", r.baseline_toggles_per_mac),
                    na(r.isolated_toggles_per_mac, 2),
                    r.toggle_saving_pct
                        .map_or("n/a".into(), |p| format!("{p:.1}%")),
                ]
            });
        format!("## Configurations\n\n{}", table(&columns, rows))
    }

    /// Gate level beside RTL (sweeps with `gate_level = true`): every net of the serial
    /// MACs' netlists, isolation's saving at both levels, and the energy estimate.
    fn gate_level(&self) -> String {
        use Align::{Left as L, Right as R};
        if self
            .rows
            .iter()
            .all(|r| r.gate_baseline_toggles_per_mac.is_none())
        {
            return String::new();
        }
        let columns = [
            ("#", L),
            ("configuration", L),
            ("MAC", L),
            ("RTL toggles/MAC", R),
            ("gate toggles/MAC", R),
            ("gate / RTL", R),
            ("isolation saving, RTL", R),
            ("isolation saving, gate", R),
            ("fJ/MAC", R),
            ("fJ/MAC isolated", R),
            ("energy saving", R),
        ];
        let pct = |o: Option<f64>| o.map_or("n/a".into(), |p| format!("{p:.1}%"));
        let rows = self
            .rows
            .iter()
            .zip(&self.labels)
            .enumerate()
            .filter(|(_, (r, _))| r.gate_baseline_toggles_per_mac.is_some())
            .map(|(i, (r, c))| {
                let gate = r.gate_baseline_toggles_per_mac.unwrap_or(f64::NAN);
                vec![
                    (i + 1).to_string(),
                    c.clone(),
                    r.mac.clone().unwrap_or_else(|| "baseline".into()),
                    format!("{:.2}", r.baseline_toggles_per_mac),
                    format!("{gate:.2}"),
                    format!("{:.2}", gate / r.baseline_toggles_per_mac),
                    pct(r.toggle_saving_pct),
                    pct(r.gate_toggle_saving_pct),
                    na(r.gate_baseline_fj_per_mac, 0),
                    na(r.gate_isolated_fj_per_mac, 0),
                    pct(r.gate_energy_saving_pct),
                ]
            });
        format!(
            "\n## Gate level\n\nThe serial MACs synthesized by yosys to generic gates and simulated on the same operands, every net counted (`perfwatt sim --level gate` shows one point's cells, nets and glitches). RTL toggles count registers and named wires only; the gate level sees the multiplier array and adder chains, and the isolation logic's own switching. Energy: each net's toggles priced with the shipped OSU 0.18 um cell table (internal energy of the driving cell plus CV^2/2 of the pins it drives; clock included, glitches not: zero-delay simulation), an estimate for comparing designs, not a sign-off number.\n\n{}",
            table(&columns, rows)
        )
    }

    /// Toggles per MAC of each design per configuration, the isolation saving against the
    /// zero-operand fraction, and the operand-encoding comparison.
    fn switching(&self) -> Result<String> {
        let rows = &self.rows;
        // A design a configuration's format has no model of is left out of its group of
        // bars (NaN), e.g. the isolated MACs for bf16 streams.
        let nan = |f: fn(&Row) -> Option<f64>| -> Option<Vec<f64>> {
            let v: Vec<f64> = rows.iter().map(|r| f(r).unwrap_or(f64::NAN)).collect();
            v.iter().any(|x| x.is_finite()).then_some(v)
        };
        let mut series = vec![(
            "serial MAC (bf16 MAC for bf16)",
            BLUE,
            rows.iter().map(|r| r.baseline_toggles_per_mac).collect(),
        )];
        let isolated = nan(|r| r.isolated_toggles_per_mac);
        if let Some(v) = &isolated {
            series.push(("operand-isolated", ORANGE, v.clone()));
        }
        let signmag = nan(|r| r.signmag_toggles_per_mac);
        if let Some(v) = &signmag {
            series.push(("sign-magnitude", GREEN, v.clone()));
        }
        let dot = nan(|r| r.dot_toggles_per_mac);
        let dot_iso = nan(|r| r.dot_isolated_toggles_per_mac);
        if let Some(d) = &dot {
            series.push(("dot unit x16 (fused bf16 for bf16)", RED, d.clone()));
        }
        if let Some(i) = &dot_iso {
            series.push(("dot unit x16, isolated", PURPLE, i.clone()));
        }
        render(
            &self.plots,
            "toggles_per_config",
            (1000, BAR_HEIGHT),
            both!(|root| {
                bars(
                    &root,
                    "MAC datapath toggles per operation (configuration #)",
                    "toggles / MAC op",
                    &self.nums,
                    &series,
                    None,
                )
            }),
        )?;
        let mut md = String::from(
            "\n## Switching activity\n\n![toggles per configuration](plots/toggles_per_config.png)\n\n",
        );
        md.push_str(&switching_words(
            rows,
            signmag.is_some(),
            dot.as_deref(),
            dot_iso.as_deref(),
        ));
        Ok(md)
    }

    /// Toggles per MAC by signal group, baseline vs isolated, averaged over configurations.
    fn signal_groups(&self) -> Result<String> {
        let rows = &self.rows;
        let groups = ["multiplier inputs", "product", "accumulator", "control"];
        // Like with like: the configurations that have both serial MACs (integer operands).
        let paired: Vec<&Row> = rows
            .iter()
            .filter(|r| r.isolated_toggles.is_some())
            .collect();
        if paired.is_empty() {
            return Ok(String::new());
        }
        let per = |f: fn(&Row) -> Option<u64>| {
            paired
                .iter()
                .map(|r| f(r).unwrap_or(0) as f64 / r.pairs.max(1) as f64)
                .sum::<f64>()
                / paired.len() as f64
        };
        let gb = vec![
            per(|r| Some(r.baseline_mult_inputs)),
            per(|r| Some(r.baseline_product)),
            per(|r| Some(r.baseline_accumulator)),
            per(|r| Some(r.baseline_control)),
        ];
        let gi = vec![
            per(|r| r.isolated_mult_inputs),
            per(|r| r.isolated_product),
            per(|r| r.isolated_accumulator),
            per(|r| r.isolated_control),
        ];
        let gcats: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
        render(
            &self.plots,
            "toggles_per_group",
            (900, BAR_HEIGHT),
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
        let columns = [
            ("signal group", Align::Left),
            ("baseline toggles/MAC", Align::Right),
            ("isolated toggles/MAC", Align::Right),
            ("change", Align::Right),
        ];
        let lines = (0..groups.len()).map(|i| {
            let change = if gb[i] > 0.0 {
                format!("{:+.1}%", 100.0 * (gi[i] - gb[i]) / gb[i])
            } else {
                "n/a".into()
            };
            vec![
                groups[i].to_string(),
                format!("{:.3}", gb[i]),
                format!("{:.3}", gi[i]),
                change,
            ]
        });
        Ok(format!(
            "\n\n![toggles per group](plots/toggles_per_group.png)\n\n{}\nThe isolated design's extra control toggles are its zero-detect flags (nz, nz_q, nz2_q): the price of the gating.\n",
            table(&columns, lines)
        ))
    }

    /// Latency vs energy per query with its Pareto frontier and J/token with CIs; without
    /// energy, throughput.
    fn latency_and_energy(&self) -> Result<String> {
        let rows = &self.rows;
        let mut md = String::from("\n## Latency and energy\n\n");
        if !self.has_energy {
            let tps: Vec<f64> = rows.iter().map(|r| r.tokens_per_s_output).collect();
            render(
                &self.plots,
                "throughput",
                (1000, BAR_HEIGHT),
                both!(|root| {
                    bars(
                        &root,
                        "Output tokens/s, CPU, no energy counter (configuration #)",
                        "tokens / s",
                        &self.nums,
                        &[("tokens/s", BLUE, tps.clone())],
                        None,
                    )
                }),
            )?;
            md.push_str("No latency-vs-energy plot or J/token chart: no energy was measured. Throughput instead:\n\n![throughput](plots/throughput.png)\n\n");
            return Ok(md);
        }
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (r.latency_p50_s, r.energy_j.unwrap_or(0.0) / r.batch as f64))
            .collect();
        let front = pareto(&pts);
        render(
            &self.plots,
            "latency_vs_energy",
            (900, 600),
            both!(|root| {
                scatter(
                    &root,
                    "Latency vs energy per query",
                    "latency p50 (s)",
                    "energy per query (J)",
                    &pts,
                    "configurations",
                    None,
                    Some(&front),
                )
            }),
        )?;
        md.push_str("![latency vs energy](plots/latency_vs_energy.png)\n\nPareto-optimal configurations (no other is both faster and cheaper per query):\n\n");
        for p in &front {
            if let Some(i) = pts.iter().position(|q| q == p) {
                let _ = writeln!(
                    md,
                    "- {}: {:.3} s, {:.3} J per query",
                    self.labels[i], p.0, p.1
                );
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
            &self.plots,
            "j_per_token",
            (1000, BAR_HEIGHT),
            both!(|root| {
                bars(
                    &root,
                    "GPU energy per output token, 95% CI (configuration #)",
                    "J / token",
                    &self.nums,
                    &[("J/token", BLUE, jpt.clone())],
                    Some(&errs),
                )
            }),
        )?;
        md.push_str("\n![J per token](plots/j_per_token.png)\n\n");
        Ok(md)
    }

    /// Energy per run, latency, EDP and power per configuration.
    fn energy_delay(&self) -> String {
        let columns = [
            ("configuration", Align::Left),
            ("energy/run (J)", Align::Right),
            ("latency mean (s)", Align::Right),
            ("EDP (J*s)", Align::Right),
            ("avg W", Align::Right),
            ("peak W", Align::Right),
            ("idle W", Align::Right),
            ("idle drift W", Align::Right),
            ("series vs counter", Align::Right),
        ];
        let lines = self.rows.iter().zip(&self.labels).map(|(r, c)| {
            vec![
                c.clone(),
                na(r.energy_j, 3),
                format!("{:.3}", r.latency_mean_s),
                na(r.edp_js, 3),
                na(r.avg_w, 1),
                na(r.peak_w, 1),
                na(r.idle_w, 1),
                r.idle_drift_w.map_or("n/a".into(), |d| format!("{d:+.1}")),
                r.power_check_median_diff_pct.map_or("n/a".into(), |d| {
                    format!("{d:+.1}% ({} flagged)", r.power_check_flagged.unwrap_or(0))
                }),
            ]
        });
        let field = self.rows.iter().find_map(|r| r.power_field.clone());
        let peak = match field.as_deref() {
            Some("instant") => "peak W is the highest sample of NVML's instantaneous power field (NVML_FI_DEV_POWER_INSTANT)",
            _ => "peak W is the highest NVML power sample, a reading the driver itself averages (about 1 s on recent GPUs), so it can sit below avg W on short runs",
        };
        let basis = self
            .rows
            .iter()
            .filter_map(|r| r.energy_basis.as_deref())
            .find(|b| b.starts_with("block"))
            .map_or(String::new(), |b| format!(" Where runs last under 5 updates of the energy counter, energy per run is measured over a {b}."));
        let negative = self
            .rows
            .iter()
            .filter(|r| r.energy_above_idle_j.is_some_and(|a| a < 0.0))
            .count();
        format!("\n### Energy-delay product\n\navg W is energy (NVML counter) over time; {peak}. idle W is the median of the idle windows (counter energy over several seconds with nothing running) before and after each replicate of a point; drift is after minus before. Energy above idle is total energy minus idle power x time, never clamped ({negative} configurations read below idle).{basis} \"series vs counter\" is the median over runs of (trapezoid integral of the power series - counter energy) / counter energy; runs past 5% are flagged.\n\n{}", table(&columns, lines))
    }

    /// The row with `r`'s settings but this sparsity and optimization set.
    fn twin(&self, r: &Row, tau: f32, opts: Option<&str>) -> Option<&Row> {
        let same = |t: &Row| {
            (
                &t.device,
                &t.precision,
                t.batch,
                t.prompt_tokens,
                t.new_tokens,
                t.kv_cache,
                t.width,
            ) == (
                &r.device,
                &r.precision,
                r.batch,
                r.prompt_tokens,
                r.new_tokens,
                r.kv_cache,
                r.width,
            )
        };
        self.rows
            .iter()
            .find(|t| t.sparsity_tau == tau && t.opts.as_deref() == opts && same(t))
    }

    /// What each optimization set does against all of them on (`--opt`, a sweep's
    /// `[axes] opts`): latency with its CI over runs, decode speed, J/token with its CI and
    /// above idle, EDP, and the ratios to the twin configuration with every optimization.
    fn optimizations(&self) -> String {
        let all = Opts::all().to_string();
        let rows: Vec<(&Row, &Row)> = self
            .rows
            .iter()
            .filter(|r| r.opts.as_deref().is_some_and(|o| o != all))
            .filter_map(|r| Some((r, self.twin(r, r.sparsity_tau, Some(&all))?)))
            .collect();
        if rows.is_empty() {
            return String::new();
        }
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b != 0.0 => format!("x{:.2}", a / b),
            _ => "n/a".into(),
        };
        let lines = rows.iter().map(|(r, t)| {
            let j = match (
                r.j_per_token,
                r.j_per_token_ci95_low,
                r.j_per_token_ci95_high,
            ) {
                (Some(j), Some(lo), Some(hi)) => format!("{j:.4} {}", fmt_ci(lo, hi)),
                (j, ..) => na(j, 4),
            };
            vec![
                label(r),
                format!("{:.4} {}", r.latency_mean_s, ci_over_runs(r)),
                format!("{:.1}", r.tokens_per_s_decode),
                j,
                na(r.j_per_token_above_idle, 4),
                na(r.edp_js, 3),
                ratio(Some(r.latency_mean_s), Some(t.latency_mean_s)),
                ratio(r.j_per_token_above_idle, t.j_per_token_above_idle),
                ratio(r.edp_js, t.edp_js),
                if r.generated == t.generated {
                    "same".into()
                } else {
                    "**other**".into()
                },
            ]
        });
        let columns = [
            ("configuration", Align::Left),
            ("latency s [95% CI]", Align::Right),
            ("decode tok/s", Align::Right),
            ("J/token [95% CI]", Align::Right),
            ("J/token above idle", Align::Right),
            ("EDP J*s", Align::Right),
            ("latency vs all", Align::Right),
            ("J/token above idle vs all", Align::Right),
            ("EDP vs all", Align::Right),
            ("greedy text vs all", Align::Left),
        ];
        format!("\n### Optimizations\n\nEach configuration with some optimizations off (`opt=`) against its twin with all of them on ({all}). Ratios above 1 are what the missing optimizations cost. The last column compares the generated text: the knobs change no arithmetic result (tests/opts.rs), except that on CUDA the static step of `graphs` attends over the reserved cache, where cuBLAS may sum in another order at batch > 1. Energy is n/a on the CPU.\n\n{}", table(&columns, lines))
    }

    /// What activation sparsity costs: it is applied by masking kernels before every
    /// projection (the matmuls stay dense), so a tau > 0 row's latency and energy against
    /// its tau = 0 twin are the masking's price, while its toggles see the sparser operands.
    fn sparsity_cost(&self) -> String {
        let pairs: Vec<(&Row, &Row)> = self
            .rows
            .iter()
            .filter(|r| r.sparsity_tau > 0.0)
            .filter_map(|r| Some((r, self.twin(r, 0.0, r.opts.as_deref())?)))
            .collect();
        if pairs.is_empty() {
            return String::new();
        }
        let ratio = |f: fn(&Row) -> Option<f64>| {
            let v: Vec<f64> = pairs
                .iter()
                .filter_map(|(r, t)| Some(f(r)? / f(t)?))
                .filter(|x| x.is_finite())
                .collect();
            (!v.is_empty()).then(|| range(v))
        };
        let mut md = String::from("\n### What activation sparsity costs\n\nSparsity (tau) zeroes small activations with separate masking kernels before every projection (about 4 launches each); the matrix multiplies stay dense. So against its tau = 0 twin a sparse configuration's");
        if let Some((lo, hi)) = ratio(|r| Some(r.latency_mean_s)) {
            let _ = write!(md, " latency is x{lo:.2}-{hi:.2}");
        }
        if let Some((lo, hi)) = ratio(|r| r.j_per_token) {
            let _ = write!(md, ", its J/token x{lo:.2}-{hi:.2}");
        }
        if let Some((lo, hi)) = ratio(|r| Some(r.baseline_toggles_per_mac)) {
            let _ = write!(md, ", and its MAC toggles x{lo:.2}-{hi:.2}");
        }
        let _ = writeln!(md, " ({} pairs). The latency and energy are the masking's price, the toggles the RTL's view of the sparser operands: a correlation across tau between the two is not a causal link.", pairs.len());
        md
    }

    /// J/token (or, without energy, seconds per token) against baseline toggles per MAC.
    fn correlation(&self) -> Result<String> {
        let rows = &self.rows;
        let x: Vec<f64> = rows.iter().map(|r| r.baseline_toggles_per_mac).collect();
        let (y, ylabel, what): (Vec<f64>, &str, &str) = if self.has_energy {
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
        let c = Correlation {
            x: &x,
            y: &y,
            x_name: "baseline toggles per MAC",
            x_unit: "toggles/MAC",
            y_name: what,
            items: "configurations",
        };
        c.plot(
            &self.plots,
            "correlation",
            "Software cost vs MAC switching",
            "baseline MAC toggles per operation",
            ylabel,
        )?;
        let mut md = format!(
            "\n## Does switching activity move with {what}?\n\n![correlation](plots/correlation.png)\n\n"
        );
        match correlation_words(rows, &c) {
            Some(t) => {
                md.push_str(&t);
                let _ = writeln!(md, "\nA caution on reading this: configurations change {what} mainly through arithmetic format and work per token (precision, batch, cache), while toggles per MAC change through the operand values (zeros, magnitudes). A correlation across a sweep says they move together under these optimizations, not that one causes the other.");
                let _ = writeln!(md, "\nWhere operand data does move GPU energy, in GEMMs that keep the GPU busy, `perfwatt gemm-energy` measures it and ranks hardware models by how well their toggles predict it: see its H100 report, `experiments/results/h100-2026-11-23/gemm-energy/report.md` in the perfwatt repository.");
            }
            None => md.push_str(
                "Correlation undefined: fewer than 2 configurations, or one variable did not vary.\n",
            ),
        }
        Ok(md)
    }

    /// NVML power samples of each point with prefill and decode shaded (GPU runs only).
    fn power_series(&self) -> Result<String> {
        let mut md = String::from("\n## Power time series\n\n");
        let mut any = false;
        for r in &self.rows {
            // The point's run, or its first replicate's.
            let pdir = self.dir.join("points").join(&r.key);
            let Some(s) = read_power(&pdir.join("infer.power.csv"))
                .or_else(|| read_power(&pdir.join("rep0").join("infer.power.csv")))
            else {
                continue;
            };
            let name = format!("power_{}", r.key);
            let title = format!("{} ({})", label(r), r.gpu.clone().unwrap_or_default());
            render(
                &self.plots,
                &name,
                (1000, 420),
                both!(|root| {
                    power_over_time(&root, &title, &s.t, &s.w, &s.instant, &s.spans())
                }),
            )?;
            let _ = writeln!(md, "![power {}](plots/{name}.png)\n", r.key);
            any = true;
        }
        if !any {
            md.push_str("None: NVML power samples exist only for GPU runs.\n");
        }
        Ok(md)
    }
}

/// Short label of a row's configuration (what differs is what matters; keep it compact).
fn label(r: &Row) -> String {
    let mut s = format!(
        "{} b{} p{} t{}",
        r.precision, r.batch, r.prompt_tokens, r.new_tokens
    );
    // The model where it is not the shipped one (rows from before the model axis have none).
    let shipped = crate::model::model_label(std::path::Path::new(crate::model::DEFAULT_MODEL));
    if !r.model.is_empty() && r.model != shipped {
        s = format!(
            "{} {s}",
            r.model.split('-').take(2).collect::<Vec<_>>().join("-")
        );
    }
    // Threads where the sweep set them (its key names them, `Point::key`).
    if let Some(t) = r.threads.filter(|_| r.key.contains("-th")) {
        s.push_str(&format!(" th{t}"));
    }
    if let Some(l) = r.gpu_layers {
        s.push_str(&format!(" gpu-layers={l}"));
    }
    if !r.kv_cache {
        s.push_str(" nokv");
    }
    if r.sparsity_tau > 0.0 {
        s.push_str(&format!(" tau{}", r.sparsity_tau));
    }
    if let Some(o) = r.opts.as_deref().filter(|&o| o != Opts::all().to_string()) {
        s.push_str(&format!(" opt={o}"));
    }
    // A 16-bit integer capture; 16-bit floats are named by the operands column.
    let float = r.format.as_deref().is_some_and(|f| f.contains('f'));
    if r.width != 8 && !float {
        s.push_str(&format!(" w{}", r.width));
    }
    s
}

/// Output made only of special tokens (SmolLM's `<|endoftext|>`, Gemma's `<eos>`,
/// `<pad>`...) or nothing: a broken configuration.
pub fn degenerate(r: &Row) -> bool {
    let mut t = r.generated.trim();
    fn special(s: &str) -> Option<&str> {
        let (name, rest) = s.strip_prefix('<')?.split_once('>')?;
        let name = name
            .strip_prefix('|')
            .and_then(|n| n.strip_suffix('|'))
            .unwrap_or(name);
        let word = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        word.then_some(rest)
    }
    while let Some(rest) = special(t) {
        t = rest.trim_start();
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
    /// The driver-averaged power (nvmlDeviceGetPowerUsage).
    w: Vec<f64>,
    /// NVML_FI_DEV_POWER_INSTANT, where the CSV has it (NaN for a missing sample).
    instant: Vec<f64>,
    phase: Vec<String>,
}

impl Series {
    /// The prefill and decode spans of the phase column, each from its first sample to the
    /// next phase's.
    fn spans(&self) -> Vec<(String, f64, f64)> {
        let mut spans: Vec<(String, f64, f64)> = Vec::new();
        let t_end = self.t.last().copied().unwrap_or(0.0);
        for (i, p) in self.phase.iter().enumerate() {
            let same = i > 0 && self.phase[i - 1] == *p;
            if same {
                continue;
            }
            if let Some(last) = spans.last_mut().filter(|s| s.2.is_nan()) {
                last.2 = self.t[i];
            }
            if p == "prefill" || p == "decode" {
                spans.push((p.clone(), self.t[i], f64::NAN));
            }
        }
        if let Some(last) = spans.last_mut().filter(|s| s.2.is_nan()) {
            last.2 = t_end;
        }
        spans
    }
}

fn read_power(path: &Path) -> Option<Series> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (ct, cp, cw, ci) = (
        col("t_s")?,
        col("phase")?,
        col("power_w")?,
        col("power_instant_w"),
    );
    let mut s = Series {
        t: vec![],
        w: vec![],
        instant: vec![],
        phase: vec![],
    };
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let num = |c: usize| f.get(c).and_then(|v| v.parse::<f64>().ok());
        if let (Some(t), Some(p), Some(w)) = (num(ct), f.get(cp), num(cw)) {
            s.t.push(t);
            s.phase.push(p.to_string());
            s.w.push(w);
            s.instant.push(ci.and_then(num).unwrap_or(f64::NAN));
        }
    }
    (!s.t.is_empty()).then_some(s)
}

/// The axes that move energy per token far more than operands do: configurations that
/// differ in any of them are not compared for a correlation with switching.
fn stratum(r: &Row) -> String {
    format!(
        "batch {}, {}, {}",
        r.batch,
        r.gpu.as_deref().unwrap_or(&r.device),
        r.precision
    )
}

/// The correlation in words: over every configuration when they share one stratum
/// (`stratum`), else within each stratum of two or more configurations, never pooled
/// across strata (a pooled r would mostly compare batch with batch, device with device).
/// None when undefined.
fn correlation_words(rows: &[Row], all: &Correlation<'_>) -> Option<String> {
    let mut strata: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let s = stratum(r);
        match strata.iter_mut().find(|(k, _)| *k == s) {
            Some((_, v)) => v.push(i),
            None => strata.push((s, vec![i])),
        }
    }
    if strata.len() < 2 {
        return all.text();
    }
    let mut md = format!(
        "The {} configurations fall into {} strata (batch x device x precision), which move {} through work per token, not through the operands: a correlation pooled across them would compare strata, so it is not reported. Within-stratum correlations:\n\n",
        rows.len(),
        strata.len(),
        all.y_name
    );
    for (name, idx) in &strata {
        let x: Vec<f64> = idx.iter().map(|&i| all.x[i]).collect();
        let y: Vec<f64> = idx.iter().map(|&i| all.y[i]).collect();
        let text = match idx.len() {
            1 => "one configuration: no correlation.\n".to_string(),
            _ => Correlation {
                x: &x,
                y: &y,
                ..*all
            }
            .text()
            .unwrap_or_else(|| "undefined (a variable did not vary).\n".into()),
        };
        let _ = write!(
            md,
            "- within-stratum ({name}, {} configurations): {text}",
            idx.len()
        );
    }
    Some(md)
}

/// The switching section in words: isolation's saving against the zero-operand fraction,
/// the sign-magnitude encoding, the dot units.
fn switching_words(
    rows: &[Row],
    signmag: bool,
    dot: Option<&[f64]>,
    dot_iso: Option<&[f64]>,
) -> String {
    let mut md = String::new();
    // Isolation exists for the integer formats only.
    let (zf, savings): (Vec<f64>, Vec<f64>) = rows
        .iter()
        .filter_map(|r| r.toggle_saving_pct.map(|s| (r.zero_fraction, s)))
        .unzip();
    if !savings.is_empty() {
        let (smin, smax) = range(savings.iter().copied());
        let (zmin, zmax) = range(zf.iter().copied());
        let _ = write!(
            md,
            "Operand isolation removed {smin:.1}% to {smax:.1}% of the datapath toggles across the {} configurations with integer operands, on operand streams where {:.1}% to {:.1}% of pairs had a zero operand.",
            savings.len(),
            100.0 * zmin,
            100.0 * zmax
        );
        if let Some(r) = pearson(&zf, &savings) {
            let _ = write!(md, " Across configurations the saving tracks the zero-operand fraction with Pearson r = {r:.3} (n = {}).", savings.len());
        }
    }
    if signmag {
        let pct: Vec<f64> = rows
            .iter()
            .filter_map(|r| r.signmag_vs_baseline_pct)
            .collect();
        let v: Vec<f64> = rows
            .iter()
            .filter_map(|r| r.signmag_toggles_per_mac)
            .collect();
        let (lo, hi) = range(pct.iter().copied());
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let _ = write!(
            md,
            "\n\nOperand encoding: the same baseline MAC fed sign-magnitude operands switched {lo:+.1}% to {hi:+.1}% relative to two's complement (mean {mean:.2} toggles/MAC), with no gating at all."
        );
    }
    if let Some(d) = dot {
        let (dlo, dhi) = range(d.iter().copied().filter(|x| x.is_finite()));
        let _ = write!(
            md,
            "\n\nThe 16-lane dot-product unit of each configuration's format (a K-slice of 16 pairs per cycle, as a tensor core takes them; the fused bf16 unit for bf16 operands) switched {dlo:.2} to {dhi:.2} toggles per MAC"
        );
        if let Some(i) = dot_iso {
            let (slo, shi) = range(
                d.iter()
                    .zip(i)
                    .filter(|(_, i)| i.is_finite())
                    .map(|(d, i)| 100.0 * (d - i) / d.max(1e-12)),
            );
            let _ = write!(md, "; per-lane operand isolation saved {slo:.1}% to {shi:.1}% of that on integer operands");
        }
        md.push('.');
    }
    md
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
        r.generated = "<eos><pad> <end_of_turn>".into();
        assert!(super::degenerate(&r));
        r.generated = "<b>bold</b>".into();
        assert!(!super::degenerate(&r));
    }

    /// Two strata (batch 1 and 16) with opposite slopes inside: the words are within each
    /// stratum, with no strength word for the pooled data; and a toggle axis of two values
    /// is not identifiable.
    #[test]
    fn correlations_stay_within_strata() {
        use super::{correlation_words, Correlation, Row};
        let rows: Vec<Row> = (0..12)
            .map(|i| Row {
                batch: if i < 6 { 1 } else { 16 },
                device: "cuda".into(),
                precision: "q4_1".into(),
                ..Row::default()
            })
            .collect();
        let x: Vec<f64> = (0..12).map(|i| 45.0 + (i % 6) as f64 * 0.1).collect();
        // Batch 1: J/token rises with toggles; batch 16: it falls, and is 10x lower.
        let y: Vec<f64> = (0..12)
            .map(|i| match i < 6 {
                true => 1.0 + 0.1 * (i % 6) as f64,
                false => 0.1 - 0.01 * (i % 6) as f64,
            })
            .collect();
        let c = Correlation {
            x: &x,
            y: &y,
            x_name: "baseline toggles per MAC",
            x_unit: "toggles/MAC",
            y_name: "GPU J/token",
            items: "configurations",
        };
        let md = correlation_words(&rows, &c).unwrap();
        let (pooled, within) = md.split_once("Within-stratum correlations:").unwrap();
        for w in ["strong", "moderate", "weak"] {
            assert!(!pooled.contains(w), "{w}: {pooled}");
        }
        assert!(pooled.contains("not reported"), "{pooled}");
        assert!(
            within.contains("within-stratum (batch 1, cuda, q4_1, 6 configurations)"),
            "{within}"
        );
        assert!(
            within.contains("strong positive") && within.contains("strong negative"),
            "{within}"
        );
        // One stratum, two toggle values: not identifiable.
        let two: Vec<f64> = (0..6).map(|i| 45.0 + (i % 2) as f64).collect();
        let c = Correlation {
            x: &two,
            y: &y[..6],
            ..c
        };
        let md = correlation_words(&rows[..6], &c).unwrap();
        assert!(md.starts_with("Not identifiable from this design"), "{md}");
    }

    #[test]
    fn pareto_front() {
        let f = super::pareto(&[(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (2.0, 3.0)]);
        assert_eq!(f, vec![(1.0, 5.0), (2.0, 3.0), (4.0, 1.0)]);
    }
}
