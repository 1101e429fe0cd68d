//! NVML around the runs: the meter opened before any work (idle windows, the counter's
//! update period, the power sampler), and the energy figures of the measured runs.
//!
//! In: the device and `InferConfig`'s energy settings; the measured runs and the power
//! samples. Out: `EnergyReport`, every figure a mean with its 95% CI over runs (or over
//! the back-to-back block when runs are shorter than 5 counter updates), null with the
//! reason without NVML.

use std::time::Duration;

use super::bench::{Bench, Measured, RunTimes};
use super::{EnergyReport, InferConfig};
use crate::energy::{GpuMeter, Phase, PowerSample};
use crate::stats::{percentile, Estimate};

/// NVML on a GPU run (all fields empty on the CPU, with the reason): the meter, the idle
/// draw measured before any work, and the power sampler.
pub(super) struct Meter {
    pub(super) gpu: Option<GpuMeter>,
    pub(super) reason: Option<String>,
    pub(super) idle_before: Vec<f64>,
    pub(super) counter_period_s: Option<f64>,
    pub(super) instant: bool,
    pub(super) sampler: Option<crate::energy::PowerSampler>,
    /// RAPL, polled at run boundaries (a RefCell: the meter is shared read-only).
    pub(super) rapl: Result<std::cell::RefCell<crate::energy::rapl::RaplMeter>, String>,
    /// The clock of runs without a sampler.
    opened: std::time::Instant,
}

impl Meter {
    pub(super) fn open(device: &candle_core::Device, cfg: &InferConfig) -> Meter {
        let gpu = if let (true, Some(ordinal)) = (device.is_cuda(), cfg.device.ordinal()) {
            GpuMeter::for_cuda(ordinal)
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
        let rapl = crate::energy::rapl::RaplMeter::open(&crate::energy::rapl::powercap_root())
            .map(std::cell::RefCell::new);
        Meter {
            gpu,
            reason,
            idle_before,
            counter_period_s,
            instant,
            sampler,
            rapl,
            opened: std::time::Instant::now(),
        }
    }

    /// The idle windows after the runs, and the estimate from both sides.
    pub(super) fn idle(&self, cfg: &InferConfig) -> Option<crate::energy::IdleEstimate> {
        let g = self.gpu.as_ref()?;
        let after = g.idle_windows_w(cfg.idle_windows, cfg.idle_seconds);
        crate::energy::IdleEstimate::of(self.idle_before.clone(), after, cfg.idle_seconds)
    }

    /// Seconds on the power sampler's clock, or without one on the meter's own.
    pub(super) fn now_s(&self) -> f64 {
        self.sampler
            .as_ref()
            .map_or_else(|| self.opened.elapsed().as_secs_f64(), |s| s.now_s())
    }

    pub(super) fn energy_mj(&self) -> Option<u64> {
        self.gpu.as_ref().and_then(|g| g.energy_mj())
    }

    /// RAPL package energy counted since the meter opened (J).
    pub(super) fn cpu_j(&self) -> Option<f64> {
        self.rapl.as_ref().ok()?.borrow_mut().report().cpu_j
    }

    /// CPU energy of the measured runs, mean with its 95% CI over runs.
    pub(super) fn cpu_energy(
        &self,
        runs: &[RunTimes],
        out_tokens: f64,
    ) -> super::records::CpuEnergy {
        let joules = Estimate::over(runs, |r| r.cpu_j);
        super::records::CpuEnergy {
            joules,
            j_per_token: Estimate::over(runs, |r| Some(r.cpu_j? / out_tokens)),
            reason: match &self.rapl {
                Err(why) => Some(why.clone()),
                Ok(_) if joules.is_none() => {
                    Some("RAPL counters could not be read during the runs".into())
                }
                Ok(_) => None,
            },
        }
    }

    pub(super) fn set_phase(&self, p: Phase) {
        if let Some(s) = &self.sampler {
            s.set_phase(p)
        }
    }

    pub(super) fn set_paused(&self, paused: bool) {
        if let Some(s) = &self.sampler {
            s.set_paused(paused)
        }
    }
}

impl Bench<'_> {
    /// Energy figures over the measured runs, each a mean with its 95% CI over runs.
    pub(super) fn energy_report(
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
        let (short, per_run) = energy_per_run(period, measured);
        let n = runs.len();
        let est = |f: &dyn Fn(f64, f64) -> Option<f64>| Estimate::over(&per_run, |&(j, t)| f(j, t));
        let out_tokens = self.out_tokens();
        let above = |j: f64, t: f64| Some(j - idle_w? * t);
        // The prefill/decode split only where a prefill spans many counter ticks.
        let split = !short && period.is_some_and(|p| runs.iter().all(|r| r.ttft >= 10.0 * p));
        let split_est =
            |f: &dyn Fn(&RunTimes) -> Option<f64>| split.then(|| Estimate::over(runs, f)).flatten();
        let power_check = power_checks(runs, samples, meter.instant);
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
}

/// (J, s) per measured run, and whether runs are short: under 5 counter periods one run's
/// energy is mostly quantization, so the energy per run is the back-to-back block's over
/// the number of runs (then one entry).
fn energy_per_run(period: Option<f64>, measured: &Measured) -> (bool, Vec<(f64, f64)>) {
    let runs = &measured.runs;
    let latencies: Vec<f64> = runs.iter().map(|r| r.total).collect();
    let short = period
        .zip(percentile(&latencies, 50.0))
        .is_some_and(|(p, l)| l < 5.0 * p);
    let n = runs.len() as f64;
    let per_run = match measured.block.filter(|_| short) {
        Some(b) => vec![(b.joules / n, b.seconds / n)],
        None => runs
            .iter()
            .filter_map(|r| Some((r.joules()?, r.total)))
            .collect(),
    };
    (short, per_run)
}

/// Per measured run: its counter energy against the power series' trapezoid integral.
fn power_checks(
    runs: &[RunTimes],
    samples: &[PowerSample],
    instant: bool,
) -> Vec<crate::energy::WindowCheck> {
    let (used, avg) = power_series(samples, instant);
    runs.iter()
        .filter_map(|r| {
            Some(crate::energy::WindowCheck::of(
                r.joules()?,
                &used,
                &avg,
                r.t0_s,
                r.t1_s,
            ))
        })
        .collect()
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
