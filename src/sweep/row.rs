//! One row per finished point: its replicates' measurements pooled (percentiles over every
//! request or token of every run; means with 95% t-intervals) beside the simulation of its
//! operands; the rows as CSV; what each device did.
//!
//! In: `Replicate`s (each replicate's `replicate.json`) and the point's `SimReport`. Out:
//! `Row` (flat: one CSV row, read by pandas as is), `DeviceUse`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::queue::finished_replicate;
use super::SweepSpec;
use crate::capture::{request_percentiles, RunRecord};
use crate::capture::{InferConfig, InferReport};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::sim::DesignResult;
use crate::sim::SimReport;
use crate::stats::{percentile, Estimate};

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
    /// CPU threads the kernels ran on.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Mean energy of a run's prefill and of its decode steps, where the counter resolves
    /// them (`EnergySummary::prefill_j`).
    #[serde(default)]
    pub prefill_j: Option<f64>,
    #[serde(default)]
    pub decode_j: Option<f64>,
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
            threads: Some(r.threads),
            prefill_j: e.prefill_j.map(|x| x.mean),
            decode_j: e.decode_j.map(|x| x.mean),
        }
    }
}

/// One finished point: flat, so CSV is one row and pandas reads it as is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub key: String,
    /// The model's file name without `.gguf` (empty in rows of sweeps from before the
    /// model axis: the shipped SmolLM2).
    #[serde(default)]
    pub model: String,
    /// CPU threads of the kernels (None in rows from before the knob).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Layers on the GPU under partial offload (None: every layer on `device`).
    #[serde(default)]
    pub gpu_layers: Option<usize>,
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
    /// CPU package energy per output token (RAPL), where the host lets it be read.
    #[serde(default)]
    pub cpu_j_per_token: Option<f64>,
    /// Energy per input token (a prefill's energy over batch x prompt tokens) and per
    /// output token of the decode steps (their energy over batch x (new tokens - 1)), mean
    /// over replicates; null where a prefill spans too few counter updates to split.
    #[serde(default)]
    pub j_per_input_token: Option<f64>,
    #[serde(default)]
    pub j_per_output_token_decode: Option<f64>,
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
    /// The independent units every CI of a mean is over: "replicates" (processes with their
    /// own model load; n = `replicates`), or with one replicate "runs" of that one process
    /// (n = `runs`, not independent: a CI over them is too narrow). Absent in older rows:
    /// runs.
    #[serde(default)]
    pub ci_over: Option<String>,
}

/// Means with 95% CIs over independent units: each replicate's mean over its own runs
/// first, then the t-interval over the replicates; with one replicate, over its runs.
fn over_units(reps: &[Replicate], per_run: impl Fn(&Replicate) -> Vec<f64>) -> Option<Estimate> {
    if reps.len() < 2 {
        return reps.first().and_then(|r| Estimate::of(&per_run(r)));
    }
    let means: Vec<f64> = reps
        .iter()
        .filter_map(|r| Estimate::of(&per_run(r)).map(|e| e.mean))
        .collect();
    (means.len() == reps.len())
        .then(|| Estimate::of(&means))
        .flatten()
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
    /// The row of a point: its configuration, its replicates' measurements pooled
    /// (percentiles over every request or token of every run; means with 95% t-intervals
    /// over every run), and the simulation of its operands (the stream's format decides the
    /// designs).
    pub(super) fn new(key: String, reps: &[Replicate], sim: &SimReport) -> Result<Self> {
        let r0 = reps
            .first()
            .ok_or_else(|| Error::Config(format!("{key}: no replicate")))?;
        let cfg = &r0.config;
        // Replicates may have run on several devices (`sweep --devices`): name them all.
        let distinct = |f: &dyn Fn(&Replicate) -> Option<String>| {
            let mut v: Vec<String> = reps.iter().filter_map(f).collect();
            v.sort();
            v.dedup();
            v
        };
        let mut row = Row {
            key,
            model: crate::model::model_label(&cfg.model),
            threads: reps.iter().filter_map(|r| r.threads).max(),
            gpu_layers: cfg.gpu_layers,
            device: distinct(&|r| Some(r.config.device.to_string())).join("+"),
            gpu: Some(distinct(&|r| r.gpu.clone()).join("+")).filter(|g| !g.is_empty()),
            precision: cfg.precision.name().into(),
            batch: r0.batch,
            prompt_tokens: r0.prompt_tokens,
            new_tokens: r0.new_tokens,
            kv_cache: cfg.kv_cache,
            opts: Some(cfg.opts.to_string()),
            sparsity_tau: cfg.sparsity_tau,
            width: sim.width,
            flops_per_run: r0.flops_per_run,
            repeats: cfg.repeats,
            generated: r0.generated.clone(),
            ..Row::default()
        };
        row.rescore(reps)?;
        row.set_switching(sim)?;
        Ok(row)
    }

    /// The measurement columns again from the same replicates (the switching columns
    /// stay): what `perfwatt report --rescore` does to a finished row.
    pub(super) fn rescore(&mut self, reps: &[Replicate]) -> Result<()> {
        self.replicates = Some(reps.len());
        self.ci_over = Some(
            if reps.len() >= 2 {
                "replicates"
            } else {
                "runs"
            }
            .into(),
        );
        self.set_timing(reps)?;
        self.set_energy(reps);
        Ok(())
    }

    /// Latency percentiles pooled over every request (TPOT: every decode step) of every
    /// run of every replicate; rates as means over runs.
    fn set_timing(&mut self, reps: &[Replicate]) -> Result<()> {
        let runs: Vec<RunRecord> = reps.iter().flat_map(|r| r.runs.iter().cloned()).collect();
        let [latency, ttft, tpot] = request_percentiles(&runs, self.batch, self.new_tokens)?;
        let (b, t) = (self.batch as f64, self.new_tokens as f64);
        let mean_over_runs = |f: &dyn Fn(&RunRecord) -> f64| {
            Estimate::over(&runs, |r| Some(f(r))).map_or(f64::NAN, |e| e.mean)
        };
        self.latency_p50_s = latency.p50;
        self.latency_p95_s = latency.p95;
        self.latency_p99_s = latency.p99;
        let lat = over_units(reps, |r| r.runs.iter().map(|x| x.latency_s).collect())
            .unwrap_or(latency.mean);
        self.latency_mean_s = lat.mean;
        self.latency_ci95_low_s = lat.ci95_low;
        self.latency_ci95_high_s = lat.ci95_high;
        self.ttft_p50_s = ttft.p50;
        self.tpot_p50_s = tpot.p50;
        self.tokens_per_s_output = mean_over_runs(&|r| b * t / r.latency_s);
        self.tokens_per_s_decode =
            mean_over_runs(&|r| b * (t - 1.0).max(1.0) / (r.latency_s - r.ttft_s).max(1e-9));
        self.runs = Some(runs.len());
        Ok(())
    }

    /// Energy: (J, s) per run, above idle with each replicate's idle; means with their CIs
    /// over replicates (`over_units`), and how the energy was measured.
    fn set_energy(&mut self, reps: &[Replicate]) {
        let out_tokens = (self.batch * self.new_tokens) as f64;
        // (J, s) per run of each replicate, above idle with the replicate's own idle.
        let est = |f: &dyn Fn(f64, f64, Option<f64>) -> Option<f64>| {
            over_units(reps, |r| {
                r.energy_per_run
                    .iter()
                    .filter_map(|&(j, s)| f(j, s, r.idle_w))
                    .collect()
            })
        };
        let above = |j: f64, s: f64, i: Option<f64>| Some(j - i? * s);
        let mean = |o: Option<Estimate>| o.map(|e| e.mean);
        let joules = est(&|j, _, _| Some(j));
        let jpt = est(&|j, _, _| Some(j / out_tokens));
        let diffs: Vec<f64> = reps
            .iter()
            .flat_map(|r| r.power_check_diffs_pct.iter().copied())
            .collect();
        self.energy_j = mean(joules);
        self.energy_ci95_low_j = joules.map(|e| e.ci95_low);
        self.energy_ci95_high_j = joules.map(|e| e.ci95_high);
        self.energy_above_idle_j = mean(est(&above));
        self.j_per_token = mean(jpt);
        self.j_per_token_ci95_low = jpt.map(|e| e.ci95_low);
        self.j_per_token_ci95_high = jpt.map(|e| e.ci95_high);
        self.j_per_token_above_idle = mean(est(&|j, s, i| Some(above(j, s, i)? / out_tokens)));
        self.cpu_j_per_token = mean(over_units(reps, |r| {
            r.runs
                .iter()
                .filter_map(|x| Some(x.cpu_j? / out_tokens))
                .collect()
        }));
        let (input, decode) = (
            (self.batch * self.prompt_tokens) as f64,
            (self.batch * self.new_tokens.saturating_sub(1).max(1)) as f64,
        );
        self.j_per_input_token =
            Estimate::over(reps, |r| Some(r.prefill_j? / input)).map(|e| e.mean);
        self.j_per_output_token_decode =
            Estimate::over(reps, |r| Some(r.decode_j? / decode)).map(|e| e.mean);
        self.tokens_per_j = mean(est(&|j, _, _| Some(out_tokens / j)));
        self.avg_w = mean(est(&|j, s, _| Some(j / s)));
        self.peak_w = reps.iter().filter_map(|r| r.peak_w).reduce(f64::max);
        self.idle_w = percentile(
            &reps.iter().filter_map(|r| r.idle_w).collect::<Vec<_>>(),
            50.0,
        );
        self.edp_js = mean(est(&|j, s, _| Some(j * s)));
        self.idle_drift_w = Estimate::over(reps, |r| r.idle_drift_w).map(|e| e.mean);
        let r0 = &reps[0];
        self.energy_basis = r0.energy_basis.clone();
        self.power_field = r0.power_field.clone();
        self.power_check_flagged = r0
            .gpu
            .as_ref()
            .map(|_| reps.iter().map(|r| r.power_check_flagged).sum());
        self.power_check_median_diff_pct = percentile(&diffs, 50.0);
    }

    /// Switching of the point's operands: the serial MAC of the stream's format against its
    /// isolated and sign-magnitude twins, by signal group; the dot units; the netlists.
    fn set_switching(&mut self, sim: &SimReport) -> Result<()> {
        let at = |level: &str, name: &str| {
            sim.designs
                .iter()
                .find(|d| d.level == level && d.design == name)
        };
        let design = |name: &str| at("rtl", name);
        let b = design("baseline").or(design("bf16")).ok_or_else(|| {
            Error::Sim(format!(
                "{}: no serial MAC takes a {} stream (integer MACs, bf16 MAC)",
                self.key, sim.format
            ))
        })?;
        let (i, sm) = (design("isolated"), design("signmag"));
        let g = |d: &DesignResult, k: &str| d.groups.get(k).copied().unwrap_or(0);
        let gi = |k: &str| i.map(|d| g(d, k));
        let vs_base = |d: &DesignResult| {
            (b.datapath_toggles > 0).then(|| {
                100.0 * (d.datapath_toggles as f64 - b.datapath_toggles as f64)
                    / b.datapath_toggles as f64
            })
        };
        self.pairs = sim.pairs;
        self.zero_fraction = sim.zero_fraction;
        self.format = Some(sim.format.clone());
        self.mac = Some(b.design.to_string());
        self.baseline_toggles = b.datapath_toggles;
        self.isolated_toggles = i.map(|d| d.datapath_toggles);
        self.toggle_saving_pct = i.and_then(vs_base).map(|p| -p);
        self.baseline_toggles_per_mac = b.toggles_per_pair;
        self.isolated_toggles_per_mac = i.map(|d| d.toggles_per_pair);
        self.baseline_mult_inputs = g(b, "multiplier inputs");
        self.isolated_mult_inputs = gi("multiplier inputs");
        self.baseline_product = g(b, "product");
        self.isolated_product = gi("product");
        self.baseline_accumulator = g(b, "accumulator");
        self.isolated_accumulator = gi("accumulator");
        self.baseline_control = g(b, "control");
        self.isolated_control = gi("control");
        self.sim_cycles_per_s = b.cycles_per_s;
        self.signmag_toggles = sm.map(|d| d.datapath_toggles);
        self.signmag_toggles_per_mac = sm.map(|d| d.toggles_per_pair);
        self.signmag_mult_inputs = sm.map(|d| g(d, "multiplier inputs"));
        self.signmag_vs_baseline_pct = sm.and_then(vs_base);
        self.dot_toggles_per_mac = design("dot")
            .or(design("bf16-dot"))
            .map(|d| d.toggles_per_pair);
        self.dot_isolated_toggles_per_mac = design("dot-isolated").map(|d| d.toggles_per_pair);
        self.set_gate(at("gate", b_name(sim)), at("gate", "isolated"));
        Ok(())
    }

    /// Gate level: the serial MAC's netlist and the isolated one's.
    fn set_gate(&mut self, b: Option<&DesignResult>, i: Option<&DesignResult>) {
        let fj = |d: &DesignResult| d.gate.as_ref().map(|g| g.energy_fj_per_pair);
        let saving = |b: f64, x: f64| (b > 0.0).then(|| 100.0 * (b - x) / b);
        self.gate_baseline_toggles_per_mac = b.map(|d| d.toggles_per_pair);
        self.gate_isolated_toggles_per_mac = i.map(|d| d.toggles_per_pair);
        self.gate_toggle_saving_pct = b
            .zip(i)
            .and_then(|(b, i)| saving(b.datapath_toggles as f64, i.datapath_toggles as f64));
        self.gate_baseline_fj_per_mac = b.and_then(fj);
        self.gate_isolated_fj_per_mac = i.and_then(fj);
        self.gate_energy_saving_pct = b
            .and_then(fj)
            .zip(i.and_then(fj))
            .and_then(|(b, i)| saving(b, i));
    }
}

pub fn read_rows(dir: &Path) -> Result<Vec<Row>> {
    crate::files::read_jsonl_if_exists(&dir.join("results.jsonl"))
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

/// results.csv first, then results.jsonl: the JSONL is the record a resumed sweep reads,
/// so once it lists a row the CSV already holds it, whenever the process is killed.
pub(super) fn write_rows(dir: &Path, rows: &[Row]) -> Result<()> {
    let jsonl: String = rows
        .iter()
        .map(|r| serde_json::to_string(r).expect("row") + "\n")
        .collect();
    write_atomic(&dir.join("results.csv"), rows_csv(rows).as_bytes())?;
    write_atomic(&dir.join("results.jsonl"), jsonl.as_bytes())
}

/// (replicates done incl. skipped, total, what is starting or None at an end)
/// What one device did in a sweep: its replicates' measured runs, their time and energy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceUse {
    /// The device's name (`cuda:1`), or the label of a table's total row.
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
            let device = r.config.device.to_string();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A replicate of `runs` runs with these latencies and 2 J per second.
    fn replicate(latencies: &[f64]) -> Replicate {
        Replicate {
            config: InferConfig::default(),
            gpu: None,
            batch: 1,
            prompt_tokens: 40,
            new_tokens: 4,
            runs: latencies
                .iter()
                .map(|&l| RunRecord {
                    latency_s: l,
                    ttft_s: l / 4.0,
                    step_latencies_s: vec![l / 4.0; 3],
                    energy_j: Some(2.0 * l),
                    energy_above_idle_j: None,
                    cpu_j: None,
                    start_s: 0.0,
                })
                .collect(),
            energy_per_run: latencies.iter().map(|&l| (2.0 * l, l)).collect(),
            energy_basis: Some("per run".into()),
            idle_w: Some(1.0),
            idle_drift_w: None,
            peak_w: None,
            power_field: None,
            power_check_flagged: 0,
            power_check_diffs_pct: Vec::new(),
            flops_per_run: 0.0,
            generated: String::new(),
            threads: Some(2),
            // 0.5 J per prefill, 1.5 J for the decode steps.
            prefill_j: Some(0.5),
            decode_j: Some(1.5),
        }
    }

    /// 3 replicates of 5 runs: every CI of a mean is over the 3 replicate means (n = 3),
    /// not over the 15 runs; percentiles still pool every request.
    #[test]
    fn cis_over_3_replicates_of_5_runs_have_n_3() {
        let reps = [
            replicate(&[1.0, 1.01, 0.99, 1.02, 0.98]),
            replicate(&[1.5, 1.51, 1.49, 1.52, 1.48]),
            replicate(&[0.7, 0.71, 0.69, 0.72, 0.68]),
        ];
        let lat = over_units(&reps, |r| r.runs.iter().map(|x| x.latency_s).collect()).unwrap();
        let want = Estimate::of(&[1.0, 1.5, 0.7]).unwrap();
        assert_eq!(lat.n, 3);
        assert!((lat.mean - want.mean).abs() < 1e-12);
        assert!((lat.ci95_low - want.ci95_low).abs() < 1e-9);
        // Over the 15 runs the interval would be several times narrower.
        let runs: Vec<f64> = reps
            .iter()
            .flat_map(|r| r.runs.iter().map(|x| x.latency_s))
            .collect();
        let naive = Estimate::of(&runs).unwrap();
        assert!(naive.ci95_high - naive.ci95_low < 0.5 * (lat.ci95_high - lat.ci95_low));
        let mut row = Row {
            batch: 1,
            new_tokens: 4,
            prompt_tokens: 40,
            ..Row::default()
        };
        row.set_timing(&reps).unwrap();
        row.set_energy(&reps);
        // Prefill 0.5 J over 40 input tokens; decode 1.5 J over 3 output tokens.
        assert!((row.j_per_input_token.unwrap() - 0.5 / 40.0).abs() < 1e-12);
        assert!((row.j_per_output_token_decode.unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(
            (row.runs, row.latency_ci95_low_s),
            (Some(15), want.ci95_low)
        );
        let e = Estimate::of(&[2.0, 3.0, 1.4]).unwrap();
        assert!((row.energy_ci95_low_j.unwrap() - e.ci95_low).abs() < 1e-9);
        // One replicate: the CI is over its runs (`ci_over` = "runs" says so in the row).
        let one = &reps[..1];
        assert_eq!(
            over_units(one, |r| r.energy_per_run.iter().map(|x| x.0).collect())
                .unwrap()
                .n,
            5
        );
    }
}
