//! Sweeps: the cartesian product of software optimizations, each point run end to end.
//!
//! In: a TOML spec (`experiments/*.toml`: `[base]` infer settings, `[capture]`, `[axes]`).
//! Out: a run folder with `results.jsonl` and `results.csv` (one row per finished point,
//! rewritten atomically after each point), and per point its infer JSON, power series,
//! operand stream and sim JSON under `points/<key>/`. A rerun skips finished points, so a
//! crash or kill loses at most the point in progress.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::capture::{run_infer, write_report, CaptureSpec, InferConfig, InferReport, Progress};
use crate::error::{write_atomic, Error, IoContext, Result};
use crate::model::Precision;
use crate::sim::{simulate, Counting, Design, SimReport};
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
                                        let mut cfg = b.clone();
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
        out
    }
}

pub struct Point {
    pub cfg: InferConfig,
}

impl Point {
    /// A file-name-safe key naming the point's settings.
    pub fn key(&self) -> String {
        let c = &self.cfg;
        let w = c.capture.as_ref().map(|s| s.width).unwrap_or(8);
        format!(
            "{}-{}-b{}-p{}-t{}-kv{}-tau{}-w{w}",
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
}

impl Row {
    /// The row of a point: its inference report and the simulation of its operands (the
    /// stream's format decides the designs: integer MACs and dot units, or bf16 ones).
    fn new(key: String, r: &InferReport, sim: &SimReport) -> Result<Self> {
        let e = &r.energy;
        let design = |name: &str| sim.designs.iter().find(|d| d.design == name);
        let b = design("baseline").or(design("bf16")).ok_or_else(|| {
            Error::Sim(format!(
                "{key}: no serial MAC takes a {} stream (integer MACs, bf16 MAC)",
                sim.format
            ))
        })?;
        let (i, sm) = (design("isolated"), design("signmag"));
        let g = |d: &crate::sim::DesignResult, k: &str| d.groups.get(k).copied().unwrap_or(0);
        let gi = |k: &str| i.map(|d| g(d, k));
        let mean = |o: Option<crate::stats::Estimate>| o.map(|e| e.mean);
        let vs_base = |d: &crate::sim::DesignResult| {
            (b.datapath_toggles > 0).then(|| {
                100.0 * (d.datapath_toggles as f64 - b.datapath_toggles as f64)
                    / b.datapath_toggles as f64
            })
        };
        Ok(Row {
            key,
            device: r.config.device.clone(),
            gpu: e.gpu.clone(),
            precision: r.config.precision.name().into(),
            batch: r.batch,
            prompt_tokens: r.prompt_tokens,
            new_tokens: r.new_tokens,
            kv_cache: r.config.kv_cache,
            sparsity_tau: r.config.sparsity_tau,
            width: sim.width,
            latency_p50_s: r.latency_s.p50,
            latency_p95_s: r.latency_s.p95,
            latency_p99_s: r.latency_s.p99,
            latency_mean_s: r.latency_s.mean.mean,
            latency_ci95_low_s: r.latency_s.mean.ci95_low,
            latency_ci95_high_s: r.latency_s.mean.ci95_high,
            ttft_p50_s: r.ttft_s.p50,
            tpot_p50_s: r.tpot_s.p50,
            tokens_per_s_output: r.tokens_per_s_output.mean,
            tokens_per_s_decode: r.tokens_per_s_decode.mean,
            energy_j: mean(e.joules),
            energy_ci95_low_j: e.joules.map(|e| e.ci95_low),
            energy_ci95_high_j: e.joules.map(|e| e.ci95_high),
            energy_above_idle_j: mean(e.joules_above_idle),
            j_per_token: mean(e.j_per_token),
            j_per_token_ci95_low: e.j_per_token.map(|e| e.ci95_low),
            j_per_token_ci95_high: e.j_per_token.map(|e| e.ci95_high),
            j_per_token_above_idle: mean(e.j_per_token_above_idle),
            tokens_per_j: mean(e.tokens_per_j),
            avg_w: mean(e.avg_w),
            peak_w: e.peak_w,
            idle_w: e.idle_w,
            edp_js: mean(e.edp_js),
            flops_per_run: r.flops_per_run,
            repeats: r.config.repeats,
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
            generated: r.generated.first().cloned().unwrap_or_default(),
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

pub struct SweepHooks<'a> {
    /// (points done incl. skipped, total, key of the point starting or None at the end)
    pub on_point: &'a mut dyn FnMut(usize, usize, Option<&str>),
    pub interrupted: &'a dyn Fn() -> bool,
}

/// Run (or resume) a sweep into `dir`. Returns all rows, finished earlier or now.
pub fn run_sweep(
    spec: &SweepSpec,
    spec_text: &str,
    dir: &Path,
    hooks: SweepHooks<'_>,
) -> Result<Vec<Row>> {
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
    let mut rows = read_rows(dir)?;
    let total = points.len();
    let done: BTreeMap<String, ()> = rows.iter().map(|r| (r.key.clone(), ())).collect();
    for (n, p) in points.iter().enumerate() {
        let key = p.key();
        if done.contains_key(&key) {
            (hooks.on_point)(n + 1, total, None);
            continue;
        }
        if (hooks.interrupted)() {
            return Err(Error::Interrupted);
        }
        (hooks.on_point)(n, total, Some(&key));
        let pdir = dir.join("points").join(&key);
        std::fs::create_dir_all(&pdir).at(&pdir)?;
        let ops = pdir.join("operands.ops");
        let (report, samples) = run_infer(
            &p.cfg,
            Some(&ops),
            Progress {
                on_step: &mut |_, _| {},
                interrupted: hooks.interrupted,
            },
        )?;
        write_report(&report, &samples, &pdir.join("infer.json"))?;
        let stream = OperandStream::read(&ops, 8)?;
        // Every design that can take the stream's format (integer MACs and dot units, or
        // the bf16 MAC and fused dot unit).
        let mut results = Vec::new();
        for d in Design::ALL
            .into_iter()
            .filter(|d| d.params_for(&stream, crate::sim::DEFAULT_LANES).is_ok())
        {
            results.push(simulate(d, &stream, &Counting::Fast, &mut |_| {})?);
        }
        let sim = SimReport::new(&stream, results);
        write_atomic(
            &pdir.join("sim.json"),
            serde_json::to_string_pretty(&sim).expect("sim").as_bytes(),
        )?;
        rows.push(Row::new(key, &report, &sim)?);
        write_rows(dir, &rows)?;
        (hooks.on_point)(n + 1, total, None);
    }
    Ok(rows)
}

/// Default run folder of a spec: experiments/runs/<name>.
pub fn default_run_dir(spec: &SweepSpec) -> PathBuf {
    Path::new("experiments/runs").join(&spec.name)
}
