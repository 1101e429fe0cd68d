//! Sweeps: the cartesian product of software optimizations, each point run end to end.
//!
//! In: a TOML spec (`experiments/*.toml`: `[base]` infer settings, `[capture]`, `[axes]`).
//! Out: a run folder with `results.jsonl` and `results.csv` (one row per finished point,
//! rewritten atomically after each point), and per point its infer JSON, power series,
//! operand stream and sim JSON under `points/<key>/`. A rerun skips finished points, so a
//! crash or kill loses at most the point in progress.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::capture::{run_infer, write_report, CaptureSpec, InferConfig, InferReport, Progress};
use crate::error::{write_atomic, Error, IoContext, Result};
use crate::model::{Opts, Precision};
use crate::sim::{simulate, simulate_gate, Counting, Design, SimReport};
use crate::stats::{Estimate, Rng};
use crate::trace::OperandStream;

/// Values to sweep; an empty list keeps `[base]`'s value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Axes {
    pub device: Vec<String>,
    pub precision: Vec<Precision>,
    pub batch: Vec<usize>,
    pub prompt_len: Vec<String>,
    pub max_new_tokens: Vec<usize>,
    pub sparsity_tau: Vec<f32>,
    pub kv_cache: Vec<bool>,
    /// Optimization sets (`perfwatt infer --opt`): "all", "none", "all,-tiles", ...
    pub opts: Vec<Opts>,
    /// Captured operand width (MAC operand width): 8 or 16.
    pub width: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub base: InferConfig,
    #[serde(default)]
    pub capture: CaptureSpec,
    #[serde(default)]
    pub axes: Axes,
    /// Times every point runs, each in a process of its own. Points run in randomized
    /// blocks: every point once in a seeded random order, then again in another, so drift
    /// (idle power, clocks, temperature) does not line up with an axis.
    #[serde(default = "one")]
    pub replicates: usize,
    #[serde(default)]
    pub order_seed: u64,
    /// Also replay each point's operands into the gate-level netlists of its serial MACs
    /// (yosys, cached) and price them with the shipped cell table: `gate_*` columns.
    #[serde(default)]
    pub gate_level: bool,
}

fn one() -> usize {
    1
}

/// What a sweep row needs of one replicate's `InferReport` (written beside it as
/// `replicate.json`, so a resumed sweep can aggregate replicates run by another process).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replicate {
    pub config: InferConfig,
    pub gpu: Option<String>,
    pub batch: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub runs: Vec<crate::capture::RunRecord>,
    /// (J, s) per run as the report measured it: each run, or the block's share when runs
    /// were too short for the counter (then one entry).
    pub energy_per_run: Vec<(f64, f64)>,
    pub energy_basis: Option<String>,
    pub idle_w: Option<f64>,
    pub idle_drift_w: Option<f64>,
    pub peak_w: Option<f64>,
    pub power_field: Option<String>,
    pub power_check_flagged: usize,
    pub power_check_diffs_pct: Vec<f64>,
    pub flops_per_run: f64,
    pub generated: String,
}

impl Replicate {
    pub fn of(r: &InferReport) -> Self {
        let e = &r.energy;
        let per_run: Vec<(f64, f64)> = r
            .runs
            .iter()
            .filter_map(|x| Some((x.energy_j?, x.latency_s)))
            .collect();
        let block = e
            .energy_basis
            .as_deref()
            .is_some_and(|b| b.starts_with("block"));
        let energy_per_run = match (block, e.joules) {
            (true, Some(j)) => vec![(j.mean, r.latency_s.mean.mean)],
            _ => per_run,
        };
        Replicate {
            config: r.config.clone(),
            gpu: e.gpu.clone(),
            batch: r.batch,
            prompt_tokens: r.prompt_tokens,
            new_tokens: r.new_tokens,
            runs: r.runs.clone(),
            energy_per_run,
            energy_basis: e.energy_basis.clone(),
            idle_w: e.idle_w,
            idle_drift_w: e.idle.as_ref().and_then(|i| i.drift_w),
            peak_w: e.peak_w,
            power_field: e.power_field.clone(),
            power_check_flagged: e.power_check_flagged,
            power_check_diffs_pct: e.power_check.iter().filter_map(|c| c.diff_pct).collect(),
            flops_per_run: r.flops_per_run,
            generated: r.generated.first().cloned().unwrap_or_default(),
        }
    }
}

impl SweepSpec {
    pub fn from_toml(text: &str, name: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config(format!("{name}: {}", e.to_string().trim())))
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        let mut s = Self::from_toml(&text, &path.display().to_string())?;
        // Relative model/prompt paths name shipped files (see `asset_path`).
        for p in [&mut s.base.model, &mut s.base.prompts] {
            if p.is_relative() {
                *p = crate::asset_path(&p.to_string_lossy());
            }
        }
        Ok(s)
    }

    /// Every point, in a stable order.
    pub fn points(&self) -> Vec<Point> {
        fn or<T: Clone>(v: &[T], d: T) -> Vec<T> {
            if v.is_empty() {
                vec![d]
            } else {
                v.to_vec()
            }
        }
        let a = &self.axes;
        let b = &self.base;
        let mut out = Vec::new();
        for device in or(&a.device, b.device.clone()) {
            for precision in or(&a.precision, b.precision) {
                for batch in or(&a.batch, b.batch) {
                    for prompt_len in or(&a.prompt_len, b.prompt_len.clone()) {
                        for t in or(&a.max_new_tokens, b.max_new_tokens) {
                            for kv in or(&a.kv_cache, b.kv_cache) {
                                for tau in or(&a.sparsity_tau, b.sparsity_tau) {
                                    for width in or(&a.width, self.capture.width) {
                                        for opts in or(&a.opts, b.opts) {
                                            let mut cfg = b.clone();
                                            cfg.opts = opts;
                                            cfg.device = device.clone();
                                            cfg.precision = precision;
                                            cfg.batch = batch;
                                            cfg.prompt_len = prompt_len.clone();
                                            cfg.max_new_tokens = t;
                                            cfg.kv_cache = kv;
                                            cfg.sparsity_tau = tau;
                                            cfg.capture = Some(CaptureSpec {
                                                width,
                                                ..self.capture.clone()
                                            });
                                            out.push(Point { cfg });
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

pub struct Point {
    pub cfg: InferConfig,
}

impl Point {
    /// A file-name-safe key naming the point's settings (the optimization set only when
    /// it is not all of them, so folders of sweeps from before the knobs keep their keys).
    pub fn key(&self) -> String {
        let c = &self.cfg;
        let w = c.capture.as_ref().map(|s| s.width).unwrap_or(8);
        let opts = if c.opts == Opts::all() {
            String::new()
        } else {
            format!("-o{}", c.opts.to_string().replace(',', "+"))
        };
        format!(
            "{}-{}-b{}-p{}-t{}-kv{}-tau{}-w{w}{opts}",
            c.device,
            c.precision.name(),
            c.batch,
            c.prompt_len,
            c.max_new_tokens,
            c.kv_cache as u8,
            c.sparsity_tau
        )
    }
}

/// One finished point: flat, so CSV is one row and pandas reads it as is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub key: String,
    pub device: String,
    pub gpu: Option<String>,
    pub precision: String,
    pub batch: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub kv_cache: bool,
    /// The optimization set (`--opt`); None in rows of sweeps from before the knobs.
    #[serde(default)]
    pub opts: Option<String>,
    pub sparsity_tau: f32,
    pub width: u8,
    pub latency_p50_s: f64,
    pub latency_p95_s: f64,
    pub latency_p99_s: f64,
    pub latency_mean_s: f64,
    pub latency_ci95_low_s: f64,
    pub latency_ci95_high_s: f64,
    pub ttft_p50_s: f64,
    pub tpot_p50_s: f64,
    pub tokens_per_s_output: f64,
    pub tokens_per_s_decode: f64,
    pub energy_j: Option<f64>,
    pub energy_ci95_low_j: Option<f64>,
    pub energy_ci95_high_j: Option<f64>,
    pub energy_above_idle_j: Option<f64>,
    pub j_per_token: Option<f64>,
    pub j_per_token_ci95_low: Option<f64>,
    pub j_per_token_ci95_high: Option<f64>,
    pub j_per_token_above_idle: Option<f64>,
    pub tokens_per_j: Option<f64>,
    pub avg_w: Option<f64>,
    pub peak_w: Option<f64>,
    pub idle_w: Option<f64>,
    pub edp_js: Option<f64>,
    pub flops_per_run: f64,
    pub repeats: usize,
    pub pairs: u64,
    pub zero_fraction: f64,
    /// The ungated serial MAC of the stream's format (`mac`): the integer baseline MAC,
    /// or the bf16 MAC for a bf16 stream.
    pub baseline_toggles: u64,
    /// The operand-isolated serial MAC; integer streams only (there is no gated bf16 MAC).
    pub isolated_toggles: Option<u64>,
    pub toggle_saving_pct: Option<f64>,
    pub baseline_toggles_per_mac: f64,
    pub isolated_toggles_per_mac: Option<f64>,
    pub baseline_mult_inputs: u64,
    pub isolated_mult_inputs: Option<u64>,
    pub baseline_product: u64,
    pub isolated_product: Option<u64>,
    pub baseline_accumulator: u64,
    pub isolated_accumulator: Option<u64>,
    pub baseline_control: u64,
    pub isolated_control: Option<u64>,
    pub sim_cycles_per_s: f64,
    pub generated: String,
    /// The baseline MAC with sign-magnitude operands (operand-encoding comparison); absent
    /// in runs made before that design existed.
    #[serde(default)]
    pub signmag_toggles: Option<u64>,
    #[serde(default)]
    pub signmag_toggles_per_mac: Option<f64>,
    #[serde(default)]
    pub signmag_mult_inputs: Option<u64>,
    #[serde(default)]
    pub signmag_vs_baseline_pct: Option<f64>,
    /// The operand formats captured ("i8 x u4" for q4_1...); absent in older runs.
    #[serde(default)]
    pub format: Option<String>,
    /// The 16-lane dot-product unit of the stream's format: the integer dot unit, or the
    /// fused bf16 one (absent in older runs and for 16-bit integer streams).
    #[serde(default)]
    pub dot_toggles_per_mac: Option<f64>,
    /// The integer dot unit with per-lane isolation.
    #[serde(default)]
    pub dot_isolated_toggles_per_mac: Option<f64>,
    /// The serial MAC design behind `baseline_*` ("baseline" or "bf16"); absent in runs
    /// made before bf16 streams, where it is "baseline".
    #[serde(default)]
    pub mac: Option<String>,
    /// Replicates of the point and measured runs over all of them: the n of every CI of a
    /// mean (absent in older runs: n = repeats).
    #[serde(default)]
    pub replicates: Option<usize>,
    #[serde(default)]
    pub runs: Option<usize>,
    /// Mean over replicates of idle(after) - idle(before), W.
    #[serde(default)]
    pub idle_drift_w: Option<f64>,
    /// "per run" or "block of N back-to-back runs".
    #[serde(default)]
    pub energy_basis: Option<String>,
    /// "instant" or "average": the power field behind peak_w.
    #[serde(default)]
    pub power_field: Option<String>,
    /// Runs whose counter energy and power-series integral differ by more than 5%.
    #[serde(default)]
    pub power_check_flagged: Option<usize>,
    #[serde(default)]
    pub power_check_median_diff_pct: Option<f64>,
    /// Gate level (`gate_level = true`): datapath toggles per MAC of the serial MAC's and
    /// the isolated MAC's yosys netlists (every net), isolation's saving there, and the
    /// energy estimate per MAC from the cell table (fJ), with its saving.
    #[serde(default)]
    pub gate_baseline_toggles_per_mac: Option<f64>,
    #[serde(default)]
    pub gate_isolated_toggles_per_mac: Option<f64>,
    #[serde(default)]
    pub gate_toggle_saving_pct: Option<f64>,
    #[serde(default)]
    pub gate_baseline_fj_per_mac: Option<f64>,
    #[serde(default)]
    pub gate_isolated_fj_per_mac: Option<f64>,
    #[serde(default)]
    pub gate_energy_saving_pct: Option<f64>,
}

/// The serial MAC a stream's format is replayed into: the bf16 MAC for bf16 streams.
fn b_name(sim: &SimReport) -> &'static str {
    if sim.format.starts_with("bf16") {
        "bf16"
    } else {
        "baseline"
    }
}

impl Row {
    /// The row of a point: its replicates' measurements, pooled (percentiles over every
    /// request or token of every run; means with 95% t-intervals over every run), and the
    /// simulation of its operands (the stream's format decides the designs).
    fn new(key: String, reps: &[Replicate], sim: &SimReport) -> Result<Self> {
        let r0 = reps
            .first()
            .ok_or_else(|| Error::Config(format!("{key}: no replicate")))?;
        let at = |level: &str, name: &str| {
            sim.designs
                .iter()
                .find(|d| d.level == level && d.design == name)
        };
        let design = |name: &str| at("rtl", name);
        // Gate level: the same serial MAC's netlist, and the isolated one's.
        let (gate_b, gate_i) = (at("gate", b_name(sim)), at("gate", "isolated"));
        let gate_pj = |d: &crate::sim::DesignResult| d.gate.as_ref().map(|g| g.energy_fj_per_pair);
        let saving = |b: f64, x: f64| (b > 0.0).then(|| 100.0 * (b - x) / b);
        let b = design("baseline").or(design("bf16")).ok_or_else(|| {
            Error::Sim(format!(
                "{key}: no serial MAC takes a {} stream (integer MACs, bf16 MAC)",
                sim.format
            ))
        })?;
        let (i, sm) = (design("isolated"), design("signmag"));
        let g = |d: &crate::sim::DesignResult, k: &str| d.groups.get(k).copied().unwrap_or(0);
        let gi = |k: &str| i.map(|d| g(d, k));
        let vs_base = |d: &crate::sim::DesignResult| {
            (b.datapath_toggles > 0).then(|| {
                100.0 * (d.datapath_toggles as f64 - b.datapath_toggles as f64)
                    / b.datapath_toggles as f64
            })
        };
        let runs: Vec<&crate::capture::RunRecord> = reps.iter().flat_map(|r| &r.runs).collect();
        let per_run = |f: &dyn Fn(&crate::capture::RunRecord) -> f64| {
            runs.iter().map(|r| f(r)).collect::<Vec<f64>>()
        };
        let pooled_requests = |f: &dyn Fn(&crate::capture::RunRecord) -> f64| {
            runs.iter()
                .flat_map(|r| std::iter::repeat_n(f(r), r0.batch))
                .collect::<Vec<f64>>()
        };
        let steps: Vec<f64> = runs
            .iter()
            .flat_map(|r| r.step_latencies_s.iter().copied())
            .collect();
        let pct = |v: &[f64], p| crate::stats::percentile(v, p).unwrap_or(f64::NAN);
        let lat = Estimate::of(&per_run(&|r| r.latency_s)).unwrap_or_default();
        let lat_pooled = pooled_requests(&|r| r.latency_s);
        let out_tokens = (r0.batch * r0.new_tokens) as f64;
        let t = r0.new_tokens as f64;
        let mean_of = |v: Vec<f64>| Estimate::of(&v).map(|e| e.mean);
        // Energy: (J, s) per run over all replicates, above idle with each replicate's idle.
        let energy: Vec<(f64, f64, Option<f64>)> = reps
            .iter()
            .flat_map(|r| r.energy_per_run.iter().map(move |&(j, s)| (j, s, r.idle_w)))
            .collect();
        let est = |f: &dyn Fn(f64, f64, Option<f64>) -> Option<f64>| {
            Estimate::of(
                &energy
                    .iter()
                    .filter_map(|&(j, s, i)| f(j, s, i))
                    .collect::<Vec<_>>(),
            )
        };
        let above = |j: f64, s: f64, i: Option<f64>| Some(j - i? * s);
        let mean = |o: Option<Estimate>| o.map(|e| e.mean);
        let joules = est(&|j, _, _| Some(j));
        let jpt = est(&|j, _, _| Some(j / out_tokens));
        let diffs: Vec<f64> = reps
            .iter()
            .flat_map(|r| r.power_check_diffs_pct.iter().copied())
            .collect();
        let cfg = &r0.config;
        // Replicates may have run on several devices (`sweep --devices`): name them all.
        let distinct = |f: &dyn Fn(&Replicate) -> Option<String>| {
            let mut v: Vec<String> = reps.iter().filter_map(f).collect();
            v.sort();
            v.dedup();
            v
        };
        Ok(Row {
            key,
            device: distinct(&|r| Some(r.config.device.clone())).join("+"),
            gpu: Some(distinct(&|r| r.gpu.clone()).join("+")).filter(|g| !g.is_empty()),
            precision: cfg.precision.name().into(),
            batch: r0.batch,
            prompt_tokens: r0.prompt_tokens,
            new_tokens: r0.new_tokens,
            kv_cache: cfg.kv_cache,
            opts: Some(cfg.opts.to_string()),
            sparsity_tau: cfg.sparsity_tau,
            width: sim.width,
            latency_p50_s: pct(&lat_pooled, 50.0),
            latency_p95_s: pct(&lat_pooled, 95.0),
            latency_p99_s: pct(&lat_pooled, 99.0),
            latency_mean_s: lat.mean,
            latency_ci95_low_s: lat.ci95_low,
            latency_ci95_high_s: lat.ci95_high,
            ttft_p50_s: pct(&pooled_requests(&|r| r.ttft_s), 50.0),
            tpot_p50_s: pct(&steps, 50.0),
            tokens_per_s_output: mean_of(per_run(&|r| out_tokens / r.latency_s))
                .unwrap_or(f64::NAN),
            tokens_per_s_decode: mean_of(per_run(&|r| {
                r0.batch as f64 * (t - 1.0).max(1.0) / (r.latency_s - r.ttft_s).max(1e-9)
            }))
            .unwrap_or(f64::NAN),
            energy_j: mean(joules),
            energy_ci95_low_j: joules.map(|e| e.ci95_low),
            energy_ci95_high_j: joules.map(|e| e.ci95_high),
            energy_above_idle_j: mean(est(&above)),
            j_per_token: mean(jpt),
            j_per_token_ci95_low: jpt.map(|e| e.ci95_low),
            j_per_token_ci95_high: jpt.map(|e| e.ci95_high),
            j_per_token_above_idle: mean(est(&|j, s, i| Some(above(j, s, i)? / out_tokens))),
            tokens_per_j: mean(est(&|j, _, _| Some(out_tokens / j))),
            avg_w: mean(est(&|j, s, _| Some(j / s))),
            peak_w: reps.iter().filter_map(|r| r.peak_w).reduce(f64::max),
            idle_w: crate::stats::percentile(
                &reps.iter().filter_map(|r| r.idle_w).collect::<Vec<_>>(),
                50.0,
            ),
            edp_js: mean(est(&|j, s, _| Some(j * s))),
            flops_per_run: r0.flops_per_run,
            repeats: cfg.repeats,
            pairs: sim.pairs,
            zero_fraction: sim.zero_fraction,
            baseline_toggles: b.datapath_toggles,
            isolated_toggles: i.map(|d| d.datapath_toggles),
            toggle_saving_pct: i.and_then(vs_base).map(|p| -p),
            baseline_toggles_per_mac: b.toggles_per_pair,
            isolated_toggles_per_mac: i.map(|d| d.toggles_per_pair),
            baseline_mult_inputs: g(b, "multiplier inputs"),
            isolated_mult_inputs: gi("multiplier inputs"),
            baseline_product: g(b, "product"),
            isolated_product: gi("product"),
            baseline_accumulator: g(b, "accumulator"),
            isolated_accumulator: gi("accumulator"),
            baseline_control: g(b, "control"),
            isolated_control: gi("control"),
            sim_cycles_per_s: b.cycles_per_s,
            generated: r0.generated.clone(),
            signmag_toggles: sm.map(|d| d.datapath_toggles),
            signmag_toggles_per_mac: sm.map(|d| d.toggles_per_pair),
            signmag_mult_inputs: sm.map(|d| g(d, "multiplier inputs")),
            signmag_vs_baseline_pct: sm.and_then(vs_base),
            format: Some(sim.format.clone()),
            dot_toggles_per_mac: design("dot")
                .or(design("bf16-dot"))
                .map(|d| d.toggles_per_pair),
            dot_isolated_toggles_per_mac: design("dot-isolated").map(|d| d.toggles_per_pair),
            mac: Some(b.design.to_string()),
            gate_baseline_toggles_per_mac: gate_b.map(|d| d.toggles_per_pair),
            gate_isolated_toggles_per_mac: gate_i.map(|d| d.toggles_per_pair),
            gate_toggle_saving_pct: gate_b
                .zip(gate_i)
                .and_then(|(b, i)| saving(b.datapath_toggles as f64, i.datapath_toggles as f64)),
            gate_baseline_fj_per_mac: gate_b.and_then(gate_pj),
            gate_isolated_fj_per_mac: gate_i.and_then(gate_pj),
            gate_energy_saving_pct: gate_b
                .and_then(gate_pj)
                .zip(gate_i.and_then(gate_pj))
                .and_then(|(b, i)| saving(b, i)),
            replicates: Some(reps.len()),
            runs: Some(runs.len()),
            idle_drift_w: mean_of(reps.iter().filter_map(|r| r.idle_drift_w).collect()),
            energy_basis: r0.energy_basis.clone(),
            power_field: r0.power_field.clone(),
            power_check_flagged: r0
                .gpu
                .as_ref()
                .map(|_| reps.iter().map(|r| r.power_check_flagged).sum()),
            power_check_median_diff_pct: crate::stats::percentile(&diffs, 50.0),
        })
    }
}

pub fn read_rows(dir: &Path) -> Result<Vec<Row>> {
    let p = dir.join("results.jsonl");
    if !p.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&p).at(&p)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Parse {
                file: p.display().to_string(),
                line: i as u64 + 1,
                offset: 0,
                msg: e.to_string(),
            })
        })
        .collect()
}

/// CSV of rows: header from the field names (declaration order: serde_json keeps it with
/// `preserve_order`), RFC 4180 quoting, an empty cell for null.
pub fn rows_csv(rows: &[Row]) -> String {
    let vals: Vec<serde_json::Map<String, serde_json::Value>> = rows
        .iter()
        .filter_map(|r| {
            serde_json::to_value(r)
                .ok()
                .and_then(|v| v.as_object().cloned())
        })
        .collect();
    let Some(first) = vals.first() else {
        return String::new();
    };
    let header: Vec<&String> = first.keys().collect();
    let mut out = header
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
        + "\n";
    for v in &vals {
        let cells: Vec<String> = header
            .iter()
            .map(|k| match v.get(*k) {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(s)) => crate::vcd::toggles::csv_field(s),
                Some(x) => x.to_string(),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

fn write_rows(dir: &Path, rows: &[Row]) -> Result<()> {
    let jsonl: String = rows
        .iter()
        .map(|r| serde_json::to_string(r).expect("row") + "\n")
        .collect();
    write_atomic(&dir.join("results.jsonl"), jsonl.as_bytes())?;
    write_atomic(&dir.join("results.csv"), rows_csv(rows).as_bytes())
}

/// (replicates done incl. skipped, total, what is starting or None at an end)
pub type OnPoint<'a> = &'a mut (dyn FnMut(usize, usize, Option<&str>) + Send);

pub struct SweepHooks<'a> {
    pub on_point: OnPoint<'a>,
    pub interrupted: &'a (dyn Fn() -> bool + Sync),
}

/// Run (or resume) a sweep into `dir`. Returns all rows, finished earlier or now.
/// `devices` empty: one replicate after another, each on its point's device. Otherwise
/// one worker per device (`sweep --devices`), each taking the next replicate in the run
/// order and running it on its device: replicates of a point may land on different GPUs,
/// so the GPU is part of the replicate-to-replicate spread (the row says which ran).
pub fn run_sweep(
    spec: &SweepSpec,
    spec_text: &str,
    dir: &Path,
    devices: &[String],
    hooks: SweepHooks<'_>,
) -> Result<Vec<Row>> {
    let points = prepare_dir(spec, spec_text, dir)?;
    let reps = spec.replicates.max(1);
    let order = run_order(points.len(), reps, spec.order_seed);
    let queue = Queue {
        spec,
        dir,
        points: &points,
        order: &order,
        reps,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        rows: Mutex::new(collect_rows(dir, &points)?),
        finishing: Mutex::new(Vec::new()),
        on_point: Mutex::new(hooks.on_point),
        interrupted: hooks.interrupted,
    };
    let workers: Vec<Option<&str>> = match devices {
        [] => vec![None],
        d => d.iter().map(|d| Some(d.as_str())).collect(),
    };
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter()
            .map(|&device| {
                let queue = &queue;
                s.spawn(move || queue.work(device))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sweep worker"))
            .collect()
    });
    // An interruption first (what the user did), else the first failure.
    let mut errors: Vec<Error> = results.into_iter().filter_map(Result::err).collect();
    if let Some(i) = errors.iter().position(|e| matches!(e, Error::Interrupted)) {
        return Err(errors.swap_remove(i));
    }
    if !errors.is_empty() {
        return Err(errors.swap_remove(0));
    }
    let mut rows = queue.rows.into_inner().expect("rows");
    sort_rows(&mut rows, &points);
    write_rows(dir, &rows)?;
    Ok(rows)
}

/// The replicates of a sweep in run order, shared by its workers.
struct Queue<'a, 'h> {
    spec: &'a SweepSpec,
    dir: &'a Path,
    points: &'a [Point],
    order: &'a [(usize, usize)],
    reps: usize,
    /// Position in `order` of the next replicate to take.
    next: AtomicUsize,
    done: AtomicUsize,
    /// A worker failed: the others take nothing new.
    failed: AtomicBool,
    rows: Mutex<Vec<Row>>,
    /// Points whose row a worker is building (two workers may finish a point's last two
    /// replicates at once: one builds the row).
    finishing: Mutex<Vec<String>>,
    on_point: Mutex<OnPoint<'h>>,
    interrupted: &'h (dyn Fn() -> bool + Sync),
}

impl Queue<'_, '_> {
    /// Take replicates until none is left; `device` overrides the point's.
    fn work(&self, device: Option<&str>) -> Result<()> {
        let r = self.take_all(device);
        if r.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        r
    }

    fn take_all(&self, device: Option<&str>) -> Result<()> {
        let total = self.order.len();
        let progress = |n: usize, what: Option<&str>| {
            (self.on_point.lock().expect("progress"))(n, total, what)
        };
        loop {
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            if n >= total || self.failed.load(Ordering::SeqCst) {
                return Ok(());
            }
            let (i, r) = self.order[n];
            let p = &self.points[i];
            let key = p.key();
            let pdir = self.dir.join("points").join(&key);
            let has_row = self.rows.lock().expect("rows").iter().any(|x| x.key == key);
            if !has_row {
                if (self.interrupted)() {
                    return Err(Error::Interrupted);
                }
                let on = device.map_or_else(String::new, |d| format!(" on {d}"));
                let what = format!("{key} (replicate {} of {}){on}", r + 1, self.reps);
                progress(self.done.load(Ordering::SeqCst), Some(&what));
                run_replicate_once(p, &pdir, r, self.reps, device, self.interrupted)?;
                self.finish_if_complete(&pdir, key)?;
            }
            progress(self.done.fetch_add(1, Ordering::SeqCst) + 1, None);
        }
    }

    /// The point's row, once every replicate is there (also when the last one finished
    /// in an earlier run that was stopped before it wrote the row).
    fn finish_if_complete(&self, pdir: &Path, key: String) -> Result<()> {
        let Some(done) = finished_replicates(pdir, self.reps) else {
            return Ok(());
        };
        {
            let mut f = self.finishing.lock().expect("finishing");
            if f.contains(&key) {
                return Ok(());
            }
            f.push(key.clone());
        }
        let row = finish_point(self.spec, pdir, key, &done)?;
        let mut rows = self.rows.lock().expect("rows");
        rows.push(row);
        write_rows(self.dir, &rows)
    }
}

/// Replicate `r` of point `p`, unless its replicate.json exists (a resumed sweep or a
/// requeued task skips it). The operands are captured once per point, in the first
/// replicate's own run. `device` overrides the point's.
fn run_replicate_once(
    p: &Point,
    pdir: &Path,
    r: usize,
    reps: usize,
    device: Option<&str>,
    interrupted: &dyn Fn() -> bool,
) -> Result<()> {
    let rdir = replicate_dir(pdir, r, reps);
    if rdir.join("replicate.json").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&rdir).at(&rdir)?;
    let cfg = InferConfig {
        device: device.map_or_else(|| p.cfg.device.clone(), str::to_string),
        ..p.cfg.clone()
    };
    spawn_replicate(
        &cfg,
        &rdir,
        (r == 0).then_some(pdir.join("operands.ops").as_path()),
        interrupted,
    )
}

/// Every replicate of a point, when all are there.
fn finished_replicates(pdir: &Path, reps: usize) -> Option<Vec<Replicate>> {
    (0..reps)
        .map(|r| finished_replicate(pdir, r, reps))
        .collect()
}

/// Replicate `r` of a point, when it is there.
fn finished_replicate(pdir: &Path, r: usize, reps: usize) -> Option<Replicate> {
    let t = std::fs::read_to_string(replicate_dir(pdir, r, reps).join("replicate.json"));
    t.ok().and_then(|t| serde_json::from_str(&t).ok())
}

/// Rows in the spec's order, whatever order the points ran in.
fn sort_rows(rows: &mut [Row], points: &[Point]) {
    let keys: Vec<String> = points.iter().map(|p| p.key()).collect();
    rows.sort_by_key(|r| keys.iter().position(|k| *k == r.key));
}

/// Make `dir` a run folder of `spec` (refusing one of another spec) and check the points
/// before anything runs. Returns the points.
pub fn prepare_dir(spec: &SweepSpec, spec_text: &str, dir: &Path) -> Result<Vec<Point>> {
    std::fs::create_dir_all(dir).at(dir)?;
    let spec_copy = dir.join("sweep.toml");
    match std::fs::read_to_string(&spec_copy) {
        Ok(old) if old != spec_text => {
            return Err(Error::Config(format!(
                "{} holds results of a different sweep spec ({}); use another --out folder or delete it",
                dir.display(),
                spec_copy.display()
            )))
        }
        Ok(_) => {}
        Err(_) => write_atomic(&spec_copy, spec_text.as_bytes())?,
    }
    let points = spec.points();
    // f16 is captured as f16, and no datapath here multiplies f16: say so before any run.
    if let Some(p) = points.iter().find(|p| {
        p.cfg.precision == Precision::F16 && p.cfg.capture.as_ref().is_some_and(|c| c.width == 8)
    }) {
        return Err(Error::Config(format!(
            "sweep point {}: f16 operands have no datapath to replay them into (integer MACs and dot units, bf16 MAC and fused dot unit); sweep bf16 instead, or capture f16 as int16 with width = 16",
            p.key()
        )));
    }
    Ok(points)
}

/// A point whose replicates are all done: simulate its operands, build its row and write
/// it as `row.json` beside them (atomically: what a Slurm task leaves for `collect`).
fn finish_point(spec: &SweepSpec, pdir: &Path, key: String, reps: &[Replicate]) -> Result<Row> {
    let sim = simulate_point(&pdir.join("operands.ops"), pdir, spec.gate_level)?;
    let row = Row::new(key, reps, &sim)?;
    write_atomic(
        &pdir.join("row.json"),
        serde_json::to_string_pretty(&row).expect("row").as_bytes(),
    )?;
    Ok(row)
}

/// Every finished row of a run folder: results.jsonl's, and the `row.json` of points
/// finished elsewhere (Slurm tasks) that it does not have yet; only keys of `points`.
fn collect_rows(dir: &Path, points: &[Point]) -> Result<Vec<Row>> {
    let mut rows = read_rows(dir)?;
    for p in points {
        let key = p.key();
        let path = dir.join("points").join(&key).join("row.json");
        if rows.iter().any(|r| r.key == key) || !path.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&path).at(&path)?;
        let row: Row = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        rows.push(row);
    }
    rows.retain(|r| points.iter().any(|p| p.key() == r.key));
    sort_rows(&mut rows, points);
    Ok(rows)
}

/// Merge a run folder's finished rows (results.jsonl and every point's row.json) into
/// results.{jsonl,csv}, in the spec's order. Returns the rows and the keys still missing.
pub fn collect(dir: &Path) -> Result<(Vec<Row>, Vec<String>)> {
    let spec_path = dir.join("sweep.toml");
    let spec = SweepSpec::read(&spec_path)?;
    let points = spec.points();
    let rows = collect_rows(dir, &points)?;
    write_rows(dir, &rows)?;
    let missing = points
        .iter()
        .map(Point::key)
        .filter(|k| !rows.iter().any(|r| r.key == *k))
        .collect();
    Ok((rows, missing))
}

/// One point of a run folder, all its replicates in order (those already finished are
/// skipped: a requeued or resubmitted task resumes), then its row.json: what one Slurm
/// array task runs (`perfwatt sweep-task`).
pub fn run_point(dir: &Path, key: &str, interrupted: &dyn Fn() -> bool) -> Result<Row> {
    let spec = SweepSpec::read(&dir.join("sweep.toml"))?;
    let points = spec.points();
    let p = points.iter().find(|p| p.key() == key).ok_or_else(|| {
        Error::Config(format!(
            "{}: no point {key} in its sweep.toml",
            dir.display()
        ))
    })?;
    let reps = spec.replicates.max(1);
    let pdir = dir.join("points").join(key);
    for r in 0..reps {
        run_replicate_once(p, &pdir, r, reps, None, interrupted)?;
    }
    // Read back strictly: a replicate.json that does not parse is an error here, not a
    // replicate to rerun.
    let mut done = Vec::new();
    for r in 0..reps {
        let path = replicate_dir(&pdir, r, reps).join("replicate.json");
        let text = std::fs::read_to_string(&path).at(&path)?;
        done.push(
            serde_json::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?,
        );
    }
    finish_point(&spec, &pdir, key.to_string(), &done)
}

/// Run one replicate in a child process (`perfwatt sweep-point`), so replicates differ in
/// everything a process carries (allocator, CUDA context, caches), not only the model
/// load. The child's stderr goes to `stderr.txt` beside its results.
fn spawn_replicate(
    cfg: &InferConfig,
    rdir: &Path,
    capture: Option<&Path>,
    interrupted: &dyn Fn() -> bool,
) -> Result<()> {
    let exe = std::env::var_os("PERFWATT_BIN")
        .map(PathBuf::from)
        .map_or_else(std::env::current_exe, Ok)
        .map_err(|e| {
            Error::Config(format!(
                "cannot find the perfwatt binary to run a replicate: {e}"
            ))
        })?;
    let cfg_path = rdir.join("config.json");
    write_atomic(
        &cfg_path,
        serde_json::to_string_pretty(cfg)
            .expect("config")
            .as_bytes(),
    )?;
    let err_path = rdir.join("stderr.txt");
    let err = std::fs::File::create(&err_path).at(&err_path)?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg("sweep-point")
        .arg("--config")
        .arg(&cfg_path)
        .arg("--out")
        .arg(rdir)
        .stdout(std::process::Stdio::null())
        .stderr(err);
    if let Some(c) = capture {
        cmd.arg("--capture").arg(c);
    }
    let status = cmd.status().map_err(|e| Error::io(&exe, e))?;
    if interrupted() {
        return Err(Error::Interrupted);
    }
    if !status.success() {
        let tail = std::fs::read_to_string(&err_path).unwrap_or_default();
        let tail = tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(Error::Config(format!(
            "replicate in {} failed ({status}): {tail} (all of its stderr: {})",
            rdir.display(),
            err_path.display()
        )));
    }
    Ok(())
}

/// What `perfwatt sweep-point` does in the child: run the configuration, write infer.json
/// (with its power series) and replicate.json into `out`.
pub fn run_replicate(cfg_path: &Path, out: &Path, capture: Option<&Path>) -> Result<()> {
    let text = std::fs::read_to_string(cfg_path).at(cfg_path)?;
    let cfg: InferConfig = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: {e}", cfg_path.display())))?;
    let (report, samples) = run_infer(
        &cfg,
        capture,
        Progress {
            on_step: &mut |_, _| {},
            interrupted: &|| false,
            sync: None,
        },
    )?;
    write_report(&report, &samples, &out.join("infer.json"))?;
    write_atomic(
        &out.join("replicate.json"),
        serde_json::to_string(&Replicate::of(&report))
            .expect("replicate")
            .as_bytes(),
    )
}

/// (point, replicate) in randomized blocks: block r runs every point once, in an order
/// drawn from `seed + r`.
pub fn run_order(points: usize, replicates: usize, seed: u64) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(points * replicates);
    for r in 0..replicates {
        let mut idx: Vec<usize> = (0..points).collect();
        let mut rng = Rng::new(seed.wrapping_add(r as u64).wrapping_mul(0x9e37_79b9) ^ 0x5eed);
        for k in (1..idx.len()).rev() {
            idx.swap(k, (rng.next_u64() % (k as u64 + 1)) as usize);
        }
        out.extend(idx.into_iter().map(|i| (i, r)));
    }
    out
}

/// Where replicate `r` of a point keeps its report: the point's folder when it has one.
fn replicate_dir(pdir: &Path, r: usize, replicates: usize) -> PathBuf {
    if replicates == 1 {
        pdir.to_path_buf()
    } else {
        pdir.join(format!("rep{r}"))
    }
}

/// Replay a point's operands into every design that can take their format (integer MACs
/// and dot units, or the bf16 MAC and fused dot unit), and with `gate` the serial MACs'
/// netlists too; writes sim.json.
fn simulate_point(ops: &Path, pdir: &Path, gate: bool) -> Result<SimReport> {
    let stream = OperandStream::read(ops, 8)?;
    let mut results = Vec::new();
    let fits = |d: &Design| d.params_for(&stream, crate::sim::DEFAULT_LANES).is_ok();
    for d in Design::ALL.into_iter().filter(fits) {
        results.push(simulate(d, &stream, &Counting::Fast, &mut |_| {})?);
    }
    if gate {
        let opts = crate::sim::gate::GateOptions::default();
        for d in [Design::Baseline, Design::Isolated, Design::Bf16]
            .into_iter()
            .filter(fits)
        {
            results.push(simulate_gate(d, 1, &stream, &opts, &mut |_| {})?);
        }
    }
    let sim = SimReport::new(&stream, results);
    write_atomic(
        &pdir.join("sim.json"),
        serde_json::to_string_pretty(&sim).expect("sim").as_bytes(),
    )?;
    Ok(sim)
}

/// What one device did in a sweep: its replicates' measured runs, their time and energy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceUse {
    pub device: String,
    pub gpu: Option<String>,
    pub replicates: usize,
    pub runs: usize,
    pub run_seconds: f64,
    /// Sum of the runs' counter energy (null without NVML).
    pub energy_j: Option<f64>,
}

/// Per device, over every finished replicate of a run folder, in device order.
pub fn device_use(dir: &Path) -> Result<Vec<DeviceUse>> {
    let spec = SweepSpec::read(&dir.join("sweep.toml"))?;
    let reps = spec.replicates.max(1);
    let mut out: Vec<DeviceUse> = Vec::new();
    for p in spec.points() {
        let pdir = dir.join("points").join(p.key());
        for r in (0..reps).filter_map(|r| finished_replicate(&pdir, r, reps)) {
            let device = r.config.device.clone();
            let i = match out.iter().position(|u| u.device == device) {
                Some(i) => i,
                None => {
                    out.push(DeviceUse {
                        device,
                        gpu: r.gpu.clone(),
                        energy_j: Some(0.0),
                        ..Default::default()
                    });
                    out.len() - 1
                }
            };
            let u = &mut out[i];
            let n = r.runs.len();
            u.replicates += 1;
            u.runs += n;
            u.run_seconds += r.runs.iter().map(|x| x.latency_s).sum::<f64>();
            // Per run, or the block's share per run (then one entry) times the runs.
            let j: Option<f64> = match r.energy_per_run.as_slice() {
                [] => None,
                [(j, _)] if n > 1 => Some(j * n as f64),
                e => Some(e.iter().map(|x| x.0).sum()),
            };
            u.energy_j = u.energy_j.zip(j).map(|(a, b)| a + b);
        }
    }
    out.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(out)
}

/// Default run folder of a spec: experiments/runs/<name>.
pub fn default_run_dir(spec: &SweepSpec) -> PathBuf {
    Path::new("experiments/runs").join(&spec.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_order_is_a_permutation_per_block_and_differs_between_blocks() {
        let o = run_order(10, 3, 7);
        assert_eq!(o.len(), 30);
        for r in 0..3 {
            let mut b: Vec<usize> = o[r * 10..(r + 1) * 10].iter().map(|x| x.0).collect();
            assert!(o[r * 10..(r + 1) * 10].iter().all(|x| x.1 == r));
            let shuffled = b.clone();
            b.sort();
            assert_eq!(b, (0..10).collect::<Vec<_>>());
            assert_ne!(shuffled, b, "block {r} left in spec order");
        }
        assert_ne!(
            o[..10].iter().map(|x| x.0).collect::<Vec<_>>(),
            o[10..20].iter().map(|x| x.0).collect::<Vec<_>>()
        );
        assert_eq!(run_order(10, 3, 7), o, "seeded");
    }
}
