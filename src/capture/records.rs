//! What a run reports: `InferReport` (percentiles, rates, energy, raw times) and how it is
//! written (JSON beside a power-series CSV).
//!
//! In: the measured runs. Out: the report's types, request-level percentile pooling (one
//! sample per request of a batch; TPOT per decode step), the files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{AbUnit, InferConfig};
use crate::energy::{EnergyWindow, PowerSample};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::stats::{percentile, Estimate, Percentiles};

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
    /// RAPL package energy over the run (null where the host does not let it be read).
    #[serde(default)]
    pub cpu_j: Option<f64>,
    /// When the run started, seconds on the clock of the power series (`t_s` of
    /// NAME.power.csv; on the CPU a clock of its own started with the run's meter).
    #[serde(default)]
    pub start_s: f64,
}

/// The trace-event timeline of an infer run: its measured runs, each with its prefill and
/// every decode step as spans (times on the power series' clock), and the GPU's counter
/// tracks where NVML sampled.
pub fn timeline(r: &InferReport, samples: &[PowerSample]) -> Vec<crate::timeline::Process> {
    use crate::timeline::{Process, Span};
    let span = |name: String, a: f64, b: f64| Span {
        name,
        start_s: a,
        end_s: b,
        args: serde_json::json!({}),
    };
    let mut spans = Vec::new();
    for (i, run) in r.runs.iter().enumerate() {
        let a = run.start_s;
        let mut s = span(format!("run {i}"), a, a + run.latency_s);
        s.args = serde_json::json!({"energy_j": run.energy_j, "cpu_j": run.cpu_j});
        spans.push(s);
        spans.push(span("prefill".into(), a, a + run.ttft_s));
        let mut t = a + run.ttft_s;
        for (j, d) in run.step_latencies_s.iter().enumerate() {
            spans.push(span(format!("decode step {}", j + 1), t, t + d));
            t += d;
        }
    }
    let mut out = vec![Process {
        name: format!("perfwatt infer: {} batch {}", r.device, r.batch),
        spans,
        counters: Vec::new(),
    }];
    if !samples.is_empty() {
        let e0 = samples.iter().find_map(|s| s.energy_mj).map(|e| e as f64);
        out.push(Process {
            name: r.energy.gpu.clone().unwrap_or_else(|| "GPU".into()),
            spans: Vec::new(),
            counters: crate::timeline::gpu_counters(samples, e0),
        });
    }
    out
}

/// CPU energy through RAPL (`energy::rapl`) over the measured runs: the CPUs' package
/// domains, DRAM not included; null with the reason where the host does not expose RAPL or
/// only root may read it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CpuEnergy {
    pub joules: Option<Estimate>,
    pub j_per_token: Option<Estimate>,
    pub reason: Option<String>,
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
    /// CPU threads of the kernels (the thread pool's real size; `--threads`).
    pub threads: usize,
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
    pub cpu_energy: CpuEnergy,
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
    pub(super) fn of(unit: AbUnit, xs: &[(f64, bool)]) -> Option<SamplerAb> {
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
    use super::super::bench::RunTimes;
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
                cpu_j: None,
                t0_s: 0.0,
                t1_s: 0.0,
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
