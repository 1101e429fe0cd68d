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
//!
//! Files: `config` (what to run, the prompts), `bench` (the loaded model and its runs),
//! `meter` (NVML around the runs, the energy figures), `records` (the report and how it
//! is written), `summary` (the report as text), `devices` (several GPUs at once),
//! `operands` (the `.ops` capture).

use std::path::Path;

use crate::energy::PowerSample;
use crate::error::{Error, Result};

mod bench;
mod config;
mod devices;
mod meter;
mod operands;
mod records;
mod summary;

pub use crate::stats::Percentiles;
use bench::Bench;
pub use config::{build_batch, prompt_tokens, AbUnit, CaptureSpec, InferConfig};
pub use devices::{
    device_report_path, run_infer_devices, write_devices_report, DevicesProgress, DevicesRun,
    HostSummary, Rendezvous,
};
use meter::Meter;
pub use operands::OperandCapture;
pub use records::{
    power_csv, request_percentiles, timeline, write_report, CpuEnergy, EnergyReport, InferReport,
    RunRecord, SamplerAb,
};
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
            let skip = bench.tok.encode(&bench.tok.chat.prompt_head())?.len();
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
    let cpu_energy = meter.cpu_energy(&measured.runs, (cfg.batch * bench.t) as f64);
    let capture_info = match (capture, capture_out) {
        (Some(c), Some(path)) => Some(bench.write_capture(c, path)?),
        _ => None,
    };
    let report = bench.summarize(
        &meter.gpu,
        measured,
        (energy, cpu_energy),
        &samples,
        capture_info,
    )?;
    Ok((report, samples))
}
