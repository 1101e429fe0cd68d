//! Capture: runs the model like a benchmark and records what its matmuls see.
//!
//! In: an `InferConfig` (device, precision, batch, prompt length, new tokens, repeats...).
//! Out: `InferReport` (latency p50/p95/p99, TTFT, TPOT, tokens/s, NVML energy with idle
//! subtraction, EDP, FLOPs), the power time series, and optionally an `.ops` operand
//! stream of chosen projections' (x_i, w_ji) pairs in the order one MAC computing
//! y_j = sum_i x_i w_ji consumes them.
//!
//! Statistics, and their units: a 95% CI of a mean is a Student-t interval over
//! independent measured runs (n = runs; a batch's sequences finish together and are not
//! independent), never over the sequences of a batch; percentiles pool the per-request
//! (latency, TTFT) or per-token (TPOT) samples of every run and say their n. Idle power
//! is the median of counter windows before and after the runs; energy above idle is
//! total energy minus idle power x time, never clamped. The raw per-run and per-step
//! times are in the report.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::energy::{EnergyWindow, GpuMeter, Phase, PowerSample};
use crate::error::{write_atomic, Error, Result};
use crate::model::{self, argmax, LinearTap, Llama, Opt, Opts, Precision, StaticStep, Tokenizer};
use crate::stats::{percentile, Estimate};

mod devices;
mod operands;
pub use devices::{
    device_report_path, run_infer_devices, write_devices_report, DevicesProgress, DevicesRun,
    HostSummary, Rendezvous,
};
pub use operands::OperandCapture;

use crate::model::llama::me;

/// What to capture. Layers and projections name the matmuls; each captured activation
/// vector meets `rows` evenly spaced weight rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CaptureSpec {
    pub layers: Vec<usize>,
    pub projs: Vec<String>,
    /// 8: the quantized kernel's own integers (int8 for formats without one); 16: int16
    /// with one scale per tensor.
    pub width: u8,
    pub max_pairs: usize,
    pub rows: usize,
    /// Seed of the reservoir sampling of activation vectors.
    pub seed: u64,
}

impl Default for CaptureSpec {
    fn default() -> Self {
        CaptureSpec {
            layers: vec![0, 15, 29],
            projs: ["q", "k", "v", "o", "gate", "up", "down"]
                .map(String::from)
                .to_vec(),
            width: 8,
            max_pairs: 500_000,
            rows: 4,
            seed: 1,
        }
    }
}

/// One `perfwatt infer` run. Serialized into the report and used by sweep points.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct InferConfig {
    pub model: PathBuf,
    pub prompts: PathBuf,
    pub device: String,
    pub precision: Precision,
    pub batch: usize,
    /// Prompt length in tokens (chat template included): short=40, medium=96, long=192, or N.
    pub prompt_len: String,
    pub max_new_tokens: usize,
    pub warmup: usize,
    pub repeats: usize,
    pub kv_cache: bool,
    /// Optimizations of the forward pass that are on (`model::Opt`): all by default.
    #[serde(default)]
    pub opts: Opts,
    /// Activation sparsity: zero |x| < tau at every projection's input (0 = off).
    pub sparsity_tau: f32,
    pub sample_hz: f64,
    /// Measure the sampler's own cost: measured runs (`runs`) or the decode steps of each
    /// measured run (`steps`) alternate sampler on / paused in ABBA order (drift cancels)
    /// and the report gains a paired comparison.
    pub sampler_ab: AbUnit,
    /// Grid carbon intensity for gCO2eq, g per kWh.
    pub grid_g_per_kwh: f64,
    /// Idle power: `idle_windows` counter windows of `idle_seconds` before the runs and
    /// as many after them (GPU only).
    pub idle_seconds: f64,
    pub idle_windows: usize,
    pub capture: Option<CaptureSpec>,
}

impl Default for InferConfig {
    fn default() -> Self {
        InferConfig {
            model: model::default_model_path(),
            prompts: crate::asset_path("experiments/prompts.jsonl"),
            device: "cpu".into(),
            precision: Precision::Q4_1,
            batch: 1,
            prompt_len: "short".into(),
            max_new_tokens: 16,
            warmup: 1,
            repeats: 3,
            kv_cache: true,
            opts: Opts::all(),
            sparsity_tau: 0.0,
            sample_hz: 50.0,
            sampler_ab: AbUnit::Off,
            grid_g_per_kwh: 400.0,
            idle_seconds: 5.0,
            idle_windows: 2,
            capture: None,
        }
    }
}

/// What the NVML sampler A/B alternates over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AbUnit {
    #[default]
    Off,
    Runs,
    Steps,
}

pub fn prompt_tokens(len: &str) -> Result<usize> {
    match len {
        "short" => Ok(40),
        "medium" => Ok(96),
        "long" => Ok(192),
        n => n.parse().ok().filter(|&n| n >= 8).ok_or_else(|| {
            Error::Config(format!(
                "prompt length '{n}': short, medium, long or a number >= 8"
            ))
        }),
    }
}

/// The chat template's head, which every prompt starts with.
const CHAT_HEAD: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n";

/// Chat-formatted prompts of exactly `len` tokens: prompts whose user text is long enough
/// are cut to fit (the template's head and tail kept), taken in file order, repeated to
/// fill the batch. Equal lengths make batches exact (no padding).
pub fn build_batch(
    tok: &Tokenizer,
    prompts: &Path,
    batch: usize,
    len: usize,
) -> Result<Vec<Vec<u32>>> {
    let text = std::fs::read_to_string(prompts).map_err(|e| Error::io(prompts, e))?;
    let head = tok.encode(CHAT_HEAD)?;
    let tail = tok.encode("<|im_end|>\n<|im_start|>assistant\n")?;
    let need = len
        .checked_sub(head.len() + tail.len())
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            Error::Config(format!(
                "prompt length {len} is shorter than the chat template ({} tokens)",
                head.len() + tail.len() + 1
            ))
        })?;
    let mut fits = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::Parse {
            file: prompts.display().to_string(),
            line: i as u64 + 1,
            offset: 0,
            msg: e.to_string(),
        })?;
        let t = v
            .get("text")
            .and_then(|t| t.as_str())
            .ok_or_else(|| Error::Parse {
                file: prompts.display().to_string(),
                line: i as u64 + 1,
                offset: 0,
                msg: "no \"text\" field".into(),
            })?;
        let user = tok.encode(t)?;
        if user.len() >= need {
            fits.push([head.as_slice(), &user[..need], tail.as_slice()].concat());
        }
    }
    if fits.is_empty() {
        return Err(Error::Config(format!(
            "no prompt in {} is long enough for {len} tokens",
            prompts.display()
        )));
    }
    Ok((0..batch).map(|i| fits[i % fits.len()].clone()).collect())
}

// ------------------------------------------------------------------ the benchmark run

/// Percentiles of pooled samples (their count in `samples`: with few, p99 is about the
/// maximum) and the mean over runs with its 95% CI (`mean.n` = runs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    #[serde(default)]
    pub samples: usize,
    pub mean: Estimate,
}

impl Percentiles {
    /// `pooled`: every request's (or token's) sample; `per_run`: one value per run.
    pub fn of(pooled: &[f64], per_run: &[f64]) -> Option<Self> {
        Some(Percentiles {
            p50: percentile(pooled, 50.0)?,
            p95: percentile(pooled, 95.0)?,
            p99: percentile(pooled, 99.0)?,
            samples: pooled.len(),
            mean: Estimate::of(per_run)?,
        })
    }
}

/// Latency, TTFT and TPOT of measured runs (of one device or of several): percentiles pool
/// one sample per request (every request of a batch ends with its batch) and, for TPOT,
/// every decode step; means and their CIs count runs. `new_tokens` per sequence.
pub fn request_percentiles(
    runs: &[RunRecord],
    batch: usize,
    new_tokens: usize,
) -> Result<[Percentiles; 3]> {
    let per_run = |f: &dyn Fn(&RunRecord) -> f64| runs.iter().map(f).collect::<Vec<_>>();
    let per_request = |f: &dyn Fn(&RunRecord) -> f64| {
        let pooled: Vec<f64> = runs
            .iter()
            .flat_map(|r| std::iter::repeat_n(f(r), batch))
            .collect();
        Percentiles::of(&pooled, &per_run(f)).ok_or_else(|| Error::Model("no runs".into()))
    };
    let tpot_run = |r: &RunRecord| {
        if new_tokens > 1 {
            (r.latency_s - r.ttft_s) / (new_tokens - 1) as f64
        } else {
            0.0
        }
    };
    let steps: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.step_latencies_s.iter().copied())
        .collect();
    let tpot_s = if steps.is_empty() {
        per_request(&tpot_run)?
    } else {
        Percentiles::of(&steps, &per_run(&tpot_run))
            .ok_or_else(|| Error::Model("no decode steps".into()))?
    };
    Ok([
        per_request(&|r| r.latency_s)?,
        per_request(&|r| r.ttft_s)?,
        tpot_s,
    ])
}

/// One measured run as measured: what percentiles pool and CIs count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub latency_s: f64,
    pub ttft_s: f64,
    /// Each decode step (one new token for every sequence of the batch).
    pub step_latencies_s: Vec<f64>,
    /// NVML counter over the run (null without NVML).
    pub energy_j: Option<f64>,
    /// energy_j - idle power x latency_s, unclamped.
    pub energy_above_idle_j: Option<f64>,
}

/// Energy figures; every field null when NVML is unavailable (`reason` says why).
#[derive(Debug, Clone, Serialize, Default)]
pub struct EnergyReport {
    pub available: bool,
    pub reason: Option<String>,
    pub gpu: Option<String>,
    /// NVML's UUID of the GPU measured (which physical GPU, whatever the numbering).
    pub gpu_uuid: Option<String>,
    /// Runs on several devices at once (`infer --devices`): this GPU's counter over the
    /// wall-clock window all devices share (first measured run of any to last of all).
    pub shared_window: Option<EnergyWindow>,
    /// Median of the idle windows (`idle`): the idle power every above-idle figure uses.
    pub idle_w: Option<f64>,
    pub idle: Option<crate::energy::IdleEstimate>,
    /// Seconds between updates of the energy counter (measured in a tight loop).
    pub counter_period_s: Option<f64>,
    /// "per run", or "block of N back-to-back runs" when runs last under 5 counter periods
    /// (energy per run is then the block's over N, without a CI).
    pub energy_basis: Option<String>,
    pub joules: Option<Estimate>,
    pub joules_above_idle: Option<Estimate>,
    /// Prefill / decode split: only when every prefill spans >= 10 counter periods
    /// (`split_note` says why not).
    pub prefill_j: Option<Estimate>,
    pub decode_j: Option<Estimate>,
    pub split_note: Option<String>,
    pub avg_w: Option<Estimate>,
    pub peak_w: Option<f64>,
    pub j_per_token: Option<Estimate>,
    pub j_per_token_above_idle: Option<Estimate>,
    pub tokens_per_j: Option<Estimate>,
    /// Energy-delay product per run, J*s.
    pub edp_js: Option<Estimate>,
    pub gco2eq: Option<Estimate>,
    pub flop_per_j: Option<f64>,
    pub gpu_util_pct: Option<f64>,
    /// The field the power series and peak_w use: "instant" (NVML_FI_DEV_POWER_INSTANT)
    /// or "average" (nvmlDeviceGetPowerUsage, ~1 s average on recent GPUs).
    pub power_field: Option<String>,
    /// Per measured run: counter energy against the power series' trapezoid integral.
    pub power_check: Vec<crate::energy::WindowCheck>,
    /// Runs whose two energies differ by more than 5%.
    pub power_check_flagged: usize,
    pub power_check_median_diff_pct: Option<f64>,
    pub sample_hz_target: f64,
    pub sample_hz_achieved: Option<f64>,
    pub samples: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct InferReport {
    pub schema: &'static str,
    pub config: InferConfig,
    pub model: serde_json::Value,
    pub device: String,
    pub prompt_tokens: usize,
    pub batch: usize,
    pub new_tokens: usize,
    pub load_s: f64,
    /// Percentiles per request, pooled over runs (every request of a batch ends with the
    /// batch); mean over runs.
    pub latency_s: Percentiles,
    pub ttft_s: Percentiles,
    pub tpot_s: Percentiles,
    pub tokens_per_s_input: Estimate,
    pub tokens_per_s_output: Estimate,
    pub tokens_per_s_decode: Estimate,
    pub tokens_per_s_total: Estimate,
    /// Latency of each measured run, in order.
    pub run_latencies_s: Vec<f64>,
    /// Every measured run's raw times (and energy), in order.
    pub runs: Vec<RunRecord>,
    /// With `sampler_ab`: the sampler's cost, from pairs of adjacent runs or decode steps.
    pub sampler_ab: Option<SamplerAb>,
    pub flops_per_run: f64,
    pub peak_mem_mb: Option<f64>,
    pub energy: EnergyReport,
    pub generated: Vec<String>,
    pub tokens: Vec<Vec<u32>>,
    /// The exact prompt token ids (for baselines on other stacks).
    pub prompt_ids: Vec<Vec<u32>>,
    pub capture: Option<serde_json::Value>,
}

/// NVML sampler cost measured inside one process: adjacent measured runs, or adjacent decode
/// steps of one run, (2i, 2i+1) form a pair, one with the sampler on and one paused (ABBA
/// order). overhead_pct is the mean
/// paired difference (on - paused) over the paused arm's mean latency, CI from the paired
/// differences. (Not the mean of per-pair ratios: with noisy runs E[on/off] > E[on]/E[off],
/// a bias of about the runs' squared coefficient of variation.)
#[derive(Debug, Clone, Serialize)]
pub struct SamplerAb {
    /// What alternated: whole measured runs, or the decode steps within each run (latency
    /// then means one step's: forward + argmax).
    pub unit: AbUnit,
    pub pairs: usize,
    pub latency_on_s: Estimate,
    pub latency_paused_s: Estimate,
    pub overhead_pct: Estimate,
    /// Median over pairs of (on / paused - 1) * 100 and its bootstrap 95% CI: robust to
    /// the rare pair that straddles a step in the machine's speed.
    pub overhead_pct_median: f64,
    pub overhead_pct_median_ci95: Option<(f64, f64)>,
    /// Sampler on (true) or paused (false) in each measured run, in order (runs only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sampler_on: Vec<bool>,
}

impl SamplerAb {
    /// From (latency, sampler on) in order; items (2i, 2i+1) pair up.
    fn of(unit: AbUnit, xs: &[(f64, bool)]) -> Option<SamplerAb> {
        let arm = |on: bool| {
            xs.iter()
                .filter(|x| x.1 == on)
                .map(|x| x.0)
                .collect::<Vec<_>>()
        };
        let pairs: Vec<(f64, f64)> = xs
            .chunks_exact(2)
            .filter(|p| p[0].1 != p[1].1)
            .map(|p| {
                if p[0].1 {
                    (p[0].0, p[1].0)
                } else {
                    (p[1].0, p[0].0)
                }
            })
            .collect();
        let paused_mean = pairs.iter().map(|p| p.1).sum::<f64>() / pairs.len().max(1) as f64;
        let diffs: Vec<f64> = pairs
            .iter()
            .map(|(on, off)| (on - off) / paused_mean * 100.0)
            .collect();
        let ratios: Vec<f64> = pairs
            .iter()
            .map(|(on, off)| (on / off - 1.0) * 100.0)
            .collect();
        Some(SamplerAb {
            unit,
            pairs: pairs.len(),
            latency_on_s: Estimate::of(&arm(true))?,
            latency_paused_s: Estimate::of(&arm(false))?,
            overhead_pct: Estimate::of(&diffs)?,
            overhead_pct_median: percentile(&ratios, 50.0)?,
            overhead_pct_median_ci95: crate::stats::bootstrap_ci(
                &ratios,
                &ratios,
                |x, _| percentile(x, 50.0),
                2000,
            ),
            sampler_on: if unit == AbUnit::Runs {
                xs.iter().map(|x| x.1).collect()
            } else {
                Vec::new()
            },
        })
    }
}

/// One repeat's raw measurements.
struct RunTimes {
    total: f64,
    ttft: f64,
    steps: Vec<f64>,
    sampler_on: bool,
    e_prefill: Option<EnergyWindow>,
    e_decode: Option<EnergyWindow>,
    /// Start and end on the power sampler's clock.
    t0_s: Option<f64>,
    t1_s: Option<f64>,
}

impl RunTimes {
    fn joules(&self) -> Option<f64> {
        Some(self.e_prefill?.joules + self.e_decode?.joules)
    }
}

/// FLOPs of one run: 2 per multiply-add in the projections, plus attention's QK^T and AV.
fn flops(m: &Llama, batch: usize, l: usize, t: usize, kv: bool) -> f64 {
    let c = &m.config;
    let lin = 2.0 * m.linear_params() as f64;
    let attn = |q: usize, k: usize| 4.0 * (q * k * c.head_dim * c.n_head * c.n_layer) as f64;
    let mut f = lin * l as f64 + attn(l, l);
    for step in 1..t {
        let ctx = l + step;
        f += if kv {
            lin + attn(1, ctx)
        } else {
            lin * ctx as f64 + attn(ctx, ctx)
        };
    }
    f * batch as f64
}

pub struct Progress<'a> {
    pub on_step: &'a mut dyn FnMut(usize, usize),
    pub interrupted: &'a dyn Fn() -> bool,
    /// Runs on several devices at once: called where the measured runs start and where
    /// they end, and returns when every device got there, so that each GPU's counter is
    /// read over one wall-clock window shared by all (`EnergyReport::shared_window`).
    pub sync: Option<&'a dyn Fn()>,
}

/// Run the benchmark: load, open the meter, warm up and measure, summarize. `capture_out`:
/// where to write the `.ops` stream when capturing.
pub fn run_infer(
    cfg: &InferConfig,
    capture_out: Option<&Path>,
    progress: Progress<'_>,
) -> Result<(InferReport, Vec<PowerSample>)> {
    if cfg.batch == 0 || cfg.max_new_tokens == 0 || cfg.repeats == 0 {
        return Err(Error::Config(
            "batch, max_new_tokens and repeats must be at least 1".into(),
        ));
    }
    let mut bench = Bench::load(cfg)?;
    let capture = match &cfg.capture {
        Some(spec) if capture_out.is_some() => {
            let skip = bench.tok.encode(CHAT_HEAD)?.len();
            Some(OperandCapture::new(spec.clone(), skip)?)
        }
        _ => None,
    };
    if cfg.sampler_ab != AbUnit::Off && (cfg.repeats < 2 || bench.t < 3) {
        return Err(Error::Config(
            "--sampler-ab needs at least 2 repeats and 3 new tokens".into(),
        ));
    }
    let mut meter = Meter::open(&bench.device, cfg);
    let measured = bench.measure(&meter, progress)?;
    let idle = meter.idle(cfg);
    // The capture has a run of its own, after the measured ones: what it costs is in no
    // measurement, and it must produce the same tokens.
    let capture = match capture {
        Some(mut c) => {
            let static_steps = bench.static_step.is_some();
            let r = bench.run_once(&meter, false, Some(&mut c))?;
            let tokens: Vec<Vec<u32>> = r.seqs.iter().map(|s| s[bench.l..].to_vec()).collect();
            // Taps need the plain decode step. It spans the same positions as the static
            // steps of `--opt graphs` (`Llama::decode_span`), so the tokens should agree; if
            // they do not, the operands are the capture run's own, which is said rather
            // than refused.
            if tokens != measured.generated {
                if !static_steps {
                    return Err(Error::Model(
                        "the capture run generated other tokens than the measured runs".into(),
                    ));
                }
                eprintln!("perfwatt: note: the capture run (plain decode steps, which operand capture needs) generated other tokens than the measured runs (static steps, --opt graphs); the captured operands are the capture run's");
            }
            Some(c)
        }
        None => None,
    };
    let (samples, achieved) = meter
        .sampler
        .take()
        .map(|s| s.finish())
        .map(|(s, r)| (s, Some(r)))
        .unwrap_or((Vec::new(), None));
    let energy = bench.energy_report(&meter, idle, &measured, &samples, achieved);
    let capture_info = match (capture, capture_out) {
        (Some(c), Some(path)) => Some(bench.write_capture(c, path)?),
        _ => None,
    };
    let report = bench.summarize(&meter.gpu, measured, energy, &samples, capture_info)?;
    Ok((report, samples))
}

/// The loaded model and the batch it will run, with the run's fixed sizes.
struct Bench<'a> {
    cfg: &'a InferConfig,
    device: candle_core::Device,
    m: Llama,
    tok: Tokenizer,
    load_s: f64,
    batch_ids: Vec<Vec<u32>>,
    /// Prompt tokens and new tokens per sequence.
    l: usize,
    t: usize,
    /// `Opt::Graphs`: the static decode step, kept across runs (its CUDA graph with it).
    static_step: Option<StaticStep>,
}

/// NVML on a GPU run (all fields empty on the CPU, with the reason): the meter, the idle
/// draw measured before any work, and the power sampler.
struct Meter {
    gpu: Option<GpuMeter>,
    reason: Option<String>,
    idle_before: Vec<f64>,
    counter_period_s: Option<f64>,
    instant: bool,
    sampler: Option<crate::energy::PowerSampler>,
}

impl Meter {
    fn open(device: &candle_core::Device, cfg: &InferConfig) -> Meter {
        let gpu = if device.is_cuda() {
            GpuMeter::for_cuda(model::cuda_ordinal(&cfg.device).ok().flatten().unwrap_or(0))
        } else {
            Err("device is the CPU: NVML measures GPUs only; energy fields are null".to_string())
        };
        let (gpu, reason) = match gpu {
            Ok(g) => (Some(g), None),
            Err(r) => (None, Some(r)),
        };
        let idle_before = gpu.as_ref().map_or(Vec::new(), |g| {
            g.idle_windows_w(cfg.idle_windows, cfg.idle_seconds)
        });
        let counter_period_s = gpu
            .as_ref()
            .and_then(|g| g.counter_period_s(Duration::from_secs(1)));
        let instant = gpu.as_ref().is_some_and(|g| g.has_instant_power());
        let sampler = gpu.as_ref().map(|g| g.start_sampler(cfg.sample_hz));
        Meter {
            gpu,
            reason,
            idle_before,
            counter_period_s,
            instant,
            sampler,
        }
    }

    /// The idle windows after the runs, and the estimate from both sides.
    fn idle(&self, cfg: &InferConfig) -> Option<crate::energy::IdleEstimate> {
        let g = self.gpu.as_ref()?;
        let after = g.idle_windows_w(cfg.idle_windows, cfg.idle_seconds);
        crate::energy::IdleEstimate::of(self.idle_before.clone(), after, cfg.idle_seconds)
    }

    fn now_s(&self) -> Option<f64> {
        self.sampler.as_ref().map(|s| s.now_s())
    }

    fn energy_mj(&self) -> Option<u64> {
        self.gpu.as_ref().and_then(|g| g.energy_mj())
    }

    fn set_phase(&self, p: Phase) {
        if let Some(s) = &self.sampler {
            s.set_phase(p)
        }
    }

    fn set_paused(&self, paused: bool) {
        if let Some(s) = &self.sampler {
            s.set_paused(paused)
        }
    }
}

/// What the measured runs produced.
struct Measured {
    runs: Vec<RunTimes>,
    /// The counter over all measured runs back to back (first start to last end).
    block: Option<EnergyWindow>,
    /// With `Progress::sync`: the counter over the window every device shares.
    shared: Option<EnergyWindow>,
    /// Per-step sampler A/B: (step latency, sampler on) of measured runs.
    ab_steps: Vec<(f64, bool)>,
    /// New tokens of the last measured run, per sequence.
    generated: Vec<Vec<u32>>,
}

/// One run's output: its times, its sequences (prompt + new tokens) and, under per-step
/// A/B, its (step latency, sampler on) pairs.
struct RunOutput {
    times: RunTimes,
    seqs: Vec<Vec<u32>>,
    ab_steps: Vec<(f64, bool)>,
}

impl<'a> Bench<'a> {
    fn load(cfg: &'a InferConfig) -> Result<Self> {
        let device = model::device(&cfg.device)?;
        let t0 = Instant::now();
        let (mut m, tok) = model::load(&cfg.model, cfg.precision, cfg.opts, &device)?;
        let load_s = t0.elapsed().as_secs_f64();
        m.tau = cfg.sparsity_tau;
        let l = prompt_tokens(&cfg.prompt_len)?;
        let batch_ids = build_batch(&tok, &cfg.prompts, cfg.batch, l)?;
        Ok(Bench {
            cfg,
            device,
            m,
            tok,
            load_s,
            batch_ids,
            l,
            t: cfg.max_new_tokens,
            static_step: None,
        })
    }

    /// Warm-up runs, then measured runs.
    fn measure(&mut self, meter: &Meter, progress: Progress<'_>) -> Result<Measured> {
        let cfg = self.cfg;
        // ABBA: measured runs 0 and 3 of every 4 sample, 1 and 2 run with the sampler paused.
        let ab_runs = cfg.sampler_ab == AbUnit::Runs;
        let sampler_on =
            |run: usize| !ab_runs || run < cfg.warmup || matches!((run - cfg.warmup) % 4, 0 | 3);
        let total_runs = cfg.warmup + cfg.repeats;
        let mut out = Measured {
            runs: Vec::new(),
            block: None,
            shared: None,
            ab_steps: Vec::new(),
            generated: Vec::new(),
        };
        let (mut block_e0, mut block_t0) = (None, Instant::now());
        let mut shared_e0 = (None, Instant::now());
        let synced = |meter: &Meter| {
            progress.sync.map(|sync| {
                sync();
                (meter.energy_mj(), Instant::now())
            })
        };
        for run in 0..total_runs {
            if (progress.interrupted)() {
                return Err(Error::Interrupted);
            }
            let measured = run >= cfg.warmup;
            if run == cfg.warmup {
                shared_e0 = synced(meter).unwrap_or(shared_e0);
                (block_e0, block_t0) = (meter.energy_mj(), Instant::now());
            }
            // Before the run it applies to (until 2026-11-23 this was set after the run, so
            // each run sampled as the one before it was meant to: whole-run A/B arms were
            // mislabelled; per-step A/B was not affected).
            meter.set_paused(!sampler_on(run));
            let mut r = self.run_once(meter, measured, None)?;
            r.times.sampler_on = meter.sampler.is_some() && sampler_on(run);
            // An even count per run, so A/B pairs never straddle two runs.
            r.ab_steps.truncate(r.ab_steps.len() / 2 * 2);
            out.ab_steps.extend(r.ab_steps);
            meter.set_phase(Phase::Idle);
            if measured {
                out.runs.push(r.times);
                out.generated = r.seqs.iter().map(|s| s[self.l..].to_vec()).collect();
            }
            (progress.on_step)(run + 1, total_runs);
        }
        out.block = EnergyWindow::between(
            block_e0,
            meter.energy_mj(),
            block_t0.elapsed().as_secs_f64(),
        );
        if let Some((e1, t1)) = synced(meter) {
            let seconds = t1.duration_since(shared_e0.1).as_secs_f64();
            out.shared = EnergyWindow::between(shared_e0.0, e1, seconds);
        }
        Ok(out)
    }

    /// One run: prefill, then `t - 1` greedy decode steps, timed and metered per phase.
    fn run_once(
        &mut self,
        meter: &Meter,
        measured: bool,
        mut tap: Option<&mut OperandCapture>,
    ) -> Result<RunOutput> {
        let (cfg, l, device) = (self.cfg, self.l, &self.device);
        let m = &mut self.m;
        let prompt = Tensor::new(self.batch_ids.clone(), device).map_err(me)?;
        let mut seqs = self.batch_ids.clone();
        // On CUDA every decode step attends over all the run's positions, masked, so that
        // plain and static steps (and every set of knobs) multiply the same shapes.
        m.decode_span = device.is_cuda().then_some(l + self.t);
        // Static steps where graphs apply: CUDA, no activations read out (no tap), a KV
        // cache to scatter into.
        let graphs = m.opts.has(Opt::Graphs) && device.is_cuda();
        let mut static_step = match graphs && cfg.kv_cache && tap.is_none() {
            true => {
                if m.reserve_kv(cfg.batch, l + self.t)? {
                    self.static_step = None;
                }
                Some(match self.static_step.take() {
                    Some(st) => st,
                    None => StaticStep::new(m, cfg.batch, l + self.t)?,
                })
            }
            false => {
                m.clear_kv_cache();
                None
            }
        };
        meter.set_phase(if measured {
            Phase::Prefill
        } else {
            Phase::Warmup
        });
        let e0 = meter.energy_mj();
        let t0_s = meter.now_s();
        let start = Instant::now();
        let logits = m.forward(
            &prompt,
            0,
            tap.as_deref_mut().map(|c| c as &mut dyn LinearTap),
        )?;
        let mut next = argmax(&logits)?;
        let ttft = start.elapsed().as_secs_f64();
        let e1 = meter.energy_mj();
        if measured {
            meter.set_phase(Phase::Decode);
        }
        for (s, &n) in seqs.iter_mut().zip(&next) {
            s.push(n);
        }
        let mut ab_steps: Vec<(f64, bool)> = Vec::new();
        let mut steps = Vec::with_capacity(self.t);
        let step_ab = measured && cfg.sampler_ab == AbUnit::Steps && meter.sampler.is_some();
        for step in 1..self.t {
            // ABBA over this run's decode steps.
            let step_on = matches!((step - 1) % 4, 0 | 3);
            if step_ab {
                meter.set_paused(!step_on);
            }
            let step_start = Instant::now();
            let tap = tap.as_deref_mut().map(|c| c as &mut dyn LinearTap);
            next = match static_step.as_mut() {
                Some(st) => {
                    if step == 1 {
                        st.start(&next, l)?;
                    }
                    st.step(m)?
                }
                None if cfg.kv_cache => {
                    let x = Tensor::new(next.as_slice(), device)
                        .map_err(me)?
                        .unsqueeze(1)
                        .map_err(me)?;
                    argmax(&m.forward(&x, l + step - 1, tap)?)?
                }
                None => {
                    m.clear_kv_cache();
                    let all = Tensor::new(seqs.clone(), device).map_err(me)?;
                    argmax(&m.forward(&all, 0, tap)?)?
                }
            };
            let step_s = step_start.elapsed().as_secs_f64();
            steps.push(step_s);
            if step_ab {
                ab_steps.push((step_s, step_on));
            }
            for (s, &n) in seqs.iter_mut().zip(&next) {
                s.push(n);
            }
        }
        let total = start.elapsed().as_secs_f64();
        self.static_step = static_step;
        if step_ab {
            meter.set_paused(false);
        }
        let e2 = meter.energy_mj();
        let t1_s = meter.now_s();
        Ok(RunOutput {
            times: RunTimes {
                total,
                ttft,
                steps,
                sampler_on: false,
                e_prefill: EnergyWindow::between(e0, e1, ttft),
                e_decode: EnergyWindow::between(e1, e2, total - ttft),
                t0_s,
                t1_s,
            },
            seqs,
            ab_steps,
        })
    }

    fn out_tokens(&self) -> f64 {
        (self.cfg.batch * self.t) as f64
    }

    fn flops_per_run(&self) -> f64 {
        flops(&self.m, self.cfg.batch, self.l, self.t, self.cfg.kv_cache)
    }

    /// Energy figures over the measured runs, each a mean with its 95% CI over runs.
    fn energy_report(
        &self,
        meter: &Meter,
        idle: Option<crate::energy::IdleEstimate>,
        measured: &Measured,
        samples: &[PowerSample],
        achieved: Option<f64>,
    ) -> EnergyReport {
        let cfg = self.cfg;
        let Some(gpu) = &meter.gpu else {
            return EnergyReport {
                available: false,
                reason: meter.reason.clone(),
                sample_hz_target: cfg.sample_hz,
                ..Default::default()
            };
        };
        let runs = &measured.runs;
        let idle_w = idle.as_ref().map(|i| i.median_w);
        let period = meter.counter_period_s;
        // Runs under 5 counter periods: one run's energy is mostly quantization, so the
        // energy per run is the back-to-back block's over the number of runs.
        let latencies: Vec<f64> = runs.iter().map(|r| r.total).collect();
        let short = period
            .zip(percentile(&latencies, 50.0))
            .is_some_and(|(p, l)| l < 5.0 * p);
        let n = runs.len();
        let per_run: Vec<(f64, f64)> = match measured.block.filter(|_| short) {
            Some(b) => vec![(b.joules / n as f64, b.seconds / n as f64)],
            None => runs
                .iter()
                .filter_map(|r| Some((r.joules()?, r.total)))
                .collect(),
        };
        let est = |f: &dyn Fn(f64, f64) -> Option<f64>| {
            Estimate::of(
                &per_run
                    .iter()
                    .filter_map(|&(j, t)| f(j, t))
                    .collect::<Vec<_>>(),
            )
        };
        let out_tokens = self.out_tokens();
        let above = |j: f64, t: f64| Some(j - idle_w? * t);
        // The prefill/decode split only where a prefill spans many counter ticks.
        let split = !short && period.is_some_and(|p| runs.iter().all(|r| r.ttft >= 10.0 * p));
        let split_est = |f: &dyn Fn(&RunTimes) -> Option<f64>| {
            split
                .then(|| Estimate::of(&runs.iter().filter_map(f).collect::<Vec<_>>()))
                .flatten()
        };
        let (used, avg) = power_series(samples, meter.instant);
        let power_check: Vec<crate::energy::WindowCheck> = runs
            .iter()
            .filter_map(|r| {
                Some(crate::energy::WindowCheck::of(
                    r.joules()?,
                    &used,
                    &avg,
                    r.t0_s?,
                    r.t1_s?,
                ))
            })
            .collect();
        let diffs: Vec<f64> = power_check.iter().filter_map(|c| c.diff_pct).collect();
        let in_run = |s: &&PowerSample| matches!(s.phase, Phase::Prefill | Phase::Decode);
        let util: Vec<f64> = samples
            .iter()
            .filter(in_run)
            .filter_map(|s| s.gpu_util_pct.map(|u| u as f64))
            .collect();
        let joules = est(&|j, _| Some(j));
        EnergyReport {
            available: true,
            reason: meter.reason.clone(),
            gpu: Some(gpu.name.clone()),
            gpu_uuid: gpu.uuid.clone(),
            shared_window: measured.shared,
            idle_w,
            idle,
            counter_period_s: period,
            energy_basis: Some(if short {
                format!("block of {n} back-to-back runs (runs under 5 counter periods)")
            } else {
                "per run".into()
            }),
            joules,
            joules_above_idle: est(&above),
            prefill_j: split_est(&|r| Some(r.e_prefill?.joules)),
            decode_j: split_est(&|r| Some(r.e_decode?.joules)),
            split_note: (!split).then(|| {
                "no prefill/decode split: a prefill spans fewer than 10 energy-counter updates"
                    .into()
            }),
            avg_w: est(&|j, t| Some(j / t)),
            peak_w: samples
                .iter()
                .filter(in_run)
                .filter_map(|s| s.reading_w(meter.instant))
                .reduce(f64::max),
            j_per_token: est(&|j, _| Some(j / out_tokens)),
            j_per_token_above_idle: est(&|j, t| Some(above(j, t)? / out_tokens)),
            tokens_per_j: est(&|j, _| Some(out_tokens / j)),
            edp_js: est(&|j, t| Some(j * t)),
            gco2eq: est(&|j, _| Some(j / 3.6e6 * cfg.grid_g_per_kwh)),
            flop_per_j: joules
                .map(|e| e.mean)
                .filter(|&j| j > 0.0)
                .map(|j| self.flops_per_run() / j),
            gpu_util_pct: (!util.is_empty()).then(|| util.iter().sum::<f64>() / util.len() as f64),
            power_field: Some(if meter.instant { "instant" } else { "average" }.into()),
            power_check_flagged: power_check.iter().filter(|c| c.flagged).count(),
            power_check_median_diff_pct: percentile(&diffs, 50.0),
            power_check,
            sample_hz_target: cfg.sample_hz,
            sample_hz_achieved: achieved,
            samples: samples.len(),
        }
    }

    /// Write the captured operands with their provenance; returns the report's summary.
    fn write_capture(&self, c: OperandCapture, path: &Path) -> Result<serde_json::Value> {
        let cfg = self.cfg;
        let provenance = serde_json::json!({
            "source": format!("perfwatt infer: {} {} on {}", cfg.model.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(), cfg.precision.name(), cfg.device),
            "precision": cfg.precision.name(), "sparsity_tau": cfg.sparsity_tau, "batch": cfg.batch,
            "prompt_tokens": self.l, "kv_cache": cfg.kv_cache,
        });
        let stream = c.into_stream(cfg.precision.name(), provenance)?;
        stream.write_ops(path)?;
        Ok(
            serde_json::json!({"file": path.display().to_string(), "pairs": stream.pairs.len(), "width": stream.width, "format": stream.format_name(), "zero_fraction": stream.zero_fraction()}),
        )
    }

    /// The report: latency percentiles pooled per request, rates and energy per run.
    fn summarize(
        self,
        gpu: &Option<GpuMeter>,
        measured: Measured,
        energy: EnergyReport,
        samples: &[PowerSample],
        capture: Option<serde_json::Value>,
    ) -> Result<InferReport> {
        let (cfg, l, t) = (self.cfg, self.l, self.t);
        let runs = &measured.runs;
        let b = cfg.batch as f64;
        let out_tokens = self.out_tokens();
        let rate = |f: &dyn Fn(&RunTimes) -> f64, what: &str| {
            Estimate::of(&runs.iter().map(f).collect::<Vec<_>>())
                .ok_or_else(|| Error::Model(format!("no valid {what} measurements")))
        };
        // Peak device memory: the highest reading during the run, not the one at its end.
        let peak_mem_mb = if self.device.is_cuda() {
            samples
                .iter()
                .filter_map(|s| s.mem_used_mb)
                .chain(gpu.as_ref().and_then(|g| g.memory_used_mb()))
                .reduce(f64::max)
        } else {
            crate::energy::peak_rss_mb()
        };
        let idle_w = energy.idle_w;
        let records: Vec<RunRecord> = runs
            .iter()
            .map(|r| RunRecord {
                latency_s: r.total,
                ttft_s: r.ttft,
                step_latencies_s: r.steps.clone(),
                energy_j: r.joules(),
                energy_above_idle_j: r.joules().zip(idle_w).map(|(j, i)| j - i * r.total),
            })
            .collect();
        let [latency_s, ttft_s, tpot_s] = request_percentiles(&records, cfg.batch, t)?;
        Ok(InferReport {
            schema: "perfwatt.infer/1",
            config: cfg.clone(),
            model: serde_json::json!({"file": cfg.model.display().to_string(), "config": self.m.config, "precision": cfg.precision.name(), "linear_params": self.m.linear_params()}),
            device: gpu
                .as_ref()
                .map_or_else(|| cfg.device.clone(), |g| g.name.clone()),
            prompt_tokens: l,
            batch: cfg.batch,
            new_tokens: t,
            load_s: self.load_s,
            latency_s,
            ttft_s,
            tpot_s,
            tokens_per_s_input: rate(&|r| b * l as f64 / r.ttft, "input tokens/s")?,
            tokens_per_s_output: rate(&|r| out_tokens / r.total, "output tokens/s")?,
            tokens_per_s_decode: rate(
                &|r| b * (t as f64 - 1.0).max(1.0) / (r.total - r.ttft).max(1e-9),
                "decode tokens/s",
            )?,
            tokens_per_s_total: rate(&|r| b * (l + t) as f64 / r.total, "total tokens/s")?,
            run_latencies_s: runs.iter().map(|r| r.total).collect(),
            runs: records,
            sampler_ab: match cfg.sampler_ab {
                AbUnit::Off => None,
                AbUnit::Runs => SamplerAb::of(
                    AbUnit::Runs,
                    &runs
                        .iter()
                        .map(|r| (r.total, r.sampler_on))
                        .collect::<Vec<_>>(),
                ),
                AbUnit::Steps => SamplerAb::of(AbUnit::Steps, &measured.ab_steps),
            },
            flops_per_run: self.flops_per_run(),
            peak_mem_mb,
            energy,
            generated: measured
                .generated
                .iter()
                .map(|g| self.tok.decode(g))
                .collect(),
            tokens: measured.generated,
            prompt_ids: self.batch_ids,
            capture,
        })
    }
}

/// The power series (seconds, W) the report uses (the instantaneous field where the GPU
/// has it, else the averaged one) and the averaged one.
type Series = Vec<(f64, f64)>;
fn power_series(samples: &[PowerSample], instant: bool) -> (Series, Series) {
    let of = |f: &dyn Fn(&PowerSample) -> Option<f64>| -> Series {
        samples
            .iter()
            .filter_map(|s| Some((s.t_s, f(s)?)))
            .collect()
    };
    (of(&|s| s.reading_w(instant)), of(&|s| s.power_w))
}

/// The power series as CSV (t_s, phase, power_w, power_instant_w, energy_mj, gpu_util_pct,
/// sm_clock_mhz, mem_used_mb); empty fields where NVML gave nothing.
pub fn power_csv(samples: &[PowerSample]) -> String {
    let opt = |v: Option<String>| v.unwrap_or_default();
    let mut out = String::from(
        "t_s,phase,power_w,power_instant_w,energy_mj,gpu_util_pct,sm_clock_mhz,mem_used_mb\n",
    );
    for s in samples {
        out.push_str(&format!(
            "{:.4},{},{},{},{},{},{},{}\n",
            s.t_s,
            s.phase.name(),
            opt(s.power_w.map(|v| format!("{v:.3}"))),
            opt(s.power_instant_w.map(|v| format!("{v:.3}"))),
            opt(s.energy_mj.map(|v| v.to_string())),
            opt(s.gpu_util_pct.map(|v| v.to_string())),
            opt(s.sm_clock_mhz.map(|v| v.to_string())),
            opt(s.mem_used_mb.map(|v| format!("{v:.1}"))),
        ));
    }
    out
}

/// Write the report (JSON) and, next to it, the power series (`NAME.power.csv`).
pub fn write_report(report: &InferReport, samples: &[PowerSample], out: &Path) -> Result<PathBuf> {
    write_atomic(
        out,
        (serde_json::to_string_pretty(report).expect("serializable") + "\n").as_bytes(),
    )?;
    let power = out.with_extension("power.csv");
    write_atomic(&power, power_csv(samples).as_bytes())?;
    Ok(power)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_ab_pairs_adjacent_runs_in_abba_order() {
        // ABBA: on, off, off, on. Sampler costs 2% on every run, drift +10% on the 2nd pair.
        let on = [true, false, false, true];
        let base = [1.0, 1.0, 1.1, 1.1];
        let runs: Vec<RunTimes> = on
            .iter()
            .zip(base)
            .map(|(&s, b)| RunTimes {
                total: if s { b * 1.02 } else { b },
                ttft: 0.1,
                steps: Vec::new(),
                sampler_on: s,
                e_prefill: None,
                e_decode: None,
                t0_s: None,
                t1_s: None,
            })
            .collect();
        let xs: Vec<(f64, bool)> = runs.iter().map(|r| (r.total, r.sampler_on)).collect();
        let ab = SamplerAb::of(AbUnit::Runs, &xs).unwrap();
        assert_eq!(ab.pairs, 2);
        assert!(
            (ab.overhead_pct.mean - 2.0).abs() < 1e-9,
            "{:?}",
            ab.overhead_pct
        );
        assert_eq!(ab.latency_on_s.n, 2);
        assert_eq!(ab.sampler_on, on);
    }
}

#[cfg(test)]
mod stats_tests {
    use super::*;

    /// A batch of 32 finishing together, 5 runs: percentiles pool the 160 requests, the
    /// mean's CI counts the 5 runs (a CI over 160 "samples" would be ~5.7x too narrow).
    #[test]
    fn batch_32_with_5_repeats_has_n_5() {
        let runs = [0.60, 0.62, 0.58, 0.65, 0.61];
        let pooled: Vec<f64> = runs
            .iter()
            .flat_map(|&r| std::iter::repeat_n(r, 32))
            .collect();
        let p = Percentiles::of(&pooled, &runs).unwrap();
        assert_eq!((p.mean.n, p.samples), (5, 160));
        let naive = Estimate::of(&pooled).unwrap();
        assert!(p.mean.ci95_high - p.mean.ci95_low > 4.0 * (naive.ci95_high - naive.ci95_low));
    }
}
