//! Roofline: a device's measured peaks and where LLM kernels sit under them.
//!
//! In: a device (cpu, or cuda with the `cuda` feature) and a size preset. Out: a
//! `RooflineReport`: peak FLOP/s per dtype (the best of square matrix products), peak
//! bandwidth (a device-to-device copy, bytes read plus written), ridge points, and per
//! kernel (linear layers, attention, RMSNorm, SiLU, RoPE, embedding, quantized matmul at
//! the shipped model's shapes and a 7B model's) the latency over N repeats (CUDA events on
//! the GPU, the wall clock on the CPU), FLOPs, bytes, arithmetic intensity, achieved FLOP/s
//! and bytes/s, the fraction of the roof reached, and NVML energy per launch over many
//! back-to-back launches. Written as JSON + CSV (after every kernel, atomically) and a plot.
//!
//! FLOPs count 2 per multiply-add plus the elementwise operations named on each kernel;
//! bytes count what candle's (unfused) implementation reads and writes, inputs once, except
//! for quantized matmuls, whose bytes are the packed weights plus activations (what a fused
//! kernel must move; candle's CUDA kernels quantize activations to q8_1 on the way).
//! Roofs: a kernel's compute roof is the matmul peak of its dtype; quantized matmuls (int8
//! dot products on the GPU, no peak of their own here) use the highest measured peak.
//! GPU latency by events includes candle's host-side launch work whenever the GPU waits
//! for it, as a candle user sees it: small kernels show that floor (7-20 us on an H100).
//!
//! Files: `kernels` (what is measured and its cost model), this file (the run: timing,
//! energy per launch, peaks), `report` (CSV, table, plot).

mod kernels;
mod report;

use kernels::kernels;
use report::write_results;
pub use report::{plot, to_csv, to_table};

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use crate::device::DeviceSpec;
use crate::energy::GpuMeter;
use crate::error::{Error, Result};
use crate::model::llama::me;
use crate::stats::percentile;

/// Sizes of the kernels to time: `Quick` for tests and CI, `Full` for a real measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Quick,
    Full,
}

#[derive(Debug, Clone, Serialize)]
pub struct RooflineConfig {
    pub device: DeviceSpec,
    pub preset: Preset,
    /// Kernel dtype (peaks are measured for f32, f16 and bf16 regardless).
    pub dtype: String,
    pub warmup: usize,
    pub repeats: usize,
    /// Stop repeating a kernel after this long (at least 5 repeats).
    pub seconds_per_kernel: f64,
    /// Back-to-back launches for the energy of one kernel last at least this long.
    pub energy_seconds: f64,
}

impl RooflineConfig {
    /// Defaults for a device: bf16 kernels and big shapes on the GPU, f32 on the CPU.
    pub fn new(device: DeviceSpec, preset: Preset) -> Self {
        let gpu = !device.is_cpu();
        RooflineConfig {
            device,
            preset,
            dtype: if gpu { "bf16" } else { "f32" }.into(),
            warmup: if gpu { 5 } else { 2 },
            repeats: match preset {
                Preset::Quick => 10,
                Preset::Full => 50,
            },
            seconds_per_kernel: match preset {
                Preset::Quick => 0.2,
                Preset::Full => 1.0,
            },
            energy_seconds: 1.0,
        }
    }
}

/// Latency over repeats, seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub median_s: f64,
    pub p5_s: f64,
    pub p95_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    pub repeats: usize,
}

impl Timing {
    fn of(xs: &[f64]) -> Option<Timing> {
        Some(Timing {
            median_s: percentile(xs, 50.0)?,
            p5_s: percentile(xs, 5.0)?,
            p95_s: percentile(xs, 95.0)?,
            min_s: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max_s: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            repeats: xs.len(),
        })
    }
}

/// NVML energy of back-to-back launches of one kernel.
#[derive(Debug, Clone, Serialize)]
pub struct KernelEnergy {
    pub launches: usize,
    pub seconds: f64,
    pub j_per_launch: f64,
    /// Above the card's idle draw over the same time.
    pub j_per_launch_above_idle: Option<f64>,
    pub avg_w: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelResult {
    pub name: String,
    /// peak-matmul, peak-copy, linear, attention, attention-decode, rmsnorm, silu, rope,
    /// embedding, qmatmul.
    pub category: String,
    pub model: String,
    pub shape: String,
    pub dtype: String,
    pub flops: f64,
    pub bytes: f64,
    pub intensity: f64,
    pub timing: Option<Timing>,
    pub flop_per_s: Option<f64>,
    pub bytes_per_s: Option<f64>,
    /// min(peak FLOP/s of the roof dtype, intensity x peak bandwidth).
    pub roof_flop_per_s: Option<f64>,
    /// Whose compute peak the roof is (the kernel's dtype; the highest peak for quantized).
    pub roof_dtype: Option<String>,
    pub roof_fraction: Option<f64>,
    /// "memory" left of the ridge point, "compute" right of it.
    pub bound: Option<&'static str>,
    pub energy: Option<KernelEnergy>,
    /// Why this kernel has no timing (e.g. a dtype the backend does not support).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Peak {
    pub dtype: String,
    pub flop_per_s: f64,
    /// Matrix size n of the n x n x n product that reached it.
    pub at_n: usize,
    /// FLOP per byte where the compute roof meets the bandwidth roof.
    pub ridge_flop_per_byte: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RooflineReport {
    pub schema: &'static str,
    pub config: RooflineConfig,
    pub device_name: String,
    pub peaks: Vec<Peak>,
    pub bandwidth_bytes_per_s: Option<f64>,
    pub idle_w: Option<f64>,
    pub energy_reason: Option<String>,
    pub kernels: Vec<KernelResult>,
}

/// Times one launch: CUDA events on the device's stream, or the wall clock on the CPU.
enum Timer {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(std::sync::Arc<cudarc::driver::CudaStream>),
}

impl Timer {
    fn for_device(device: &Device) -> Timer {
        match device {
            #[cfg(feature = "cuda")]
            Device::Cuda(d) => Timer::Cuda(d.cuda_stream()),
            _ => Timer::Cpu,
        }
    }

    fn once(&self, f: &dyn Fn() -> candle_core::Result<Tensor>) -> Result<f64> {
        match self {
            Timer::Cpu => {
                let t = Instant::now();
                let out = f().map_err(me)?;
                let s = t.elapsed().as_secs_f64();
                drop(out);
                Ok(s)
            }
            #[cfg(feature = "cuda")]
            Timer::Cuda(stream) => {
                let ev = || {
                    stream
                        .record_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
                        .map_err(|e| Error::Model(format!("cuda event: {e}")))
                };
                let start = ev()?;
                let out = f().map_err(me)?;
                let end = ev()?;
                let ms = start
                    .elapsed_ms(&end)
                    .map_err(|e| Error::Model(format!("cuda event: {e}")))?;
                drop(out);
                Ok(ms as f64 / 1e3)
            }
        }
    }
}

pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        o => Err(Error::Config(format!("dtype '{o}': f32, f16 or bf16"))),
    }
}

/// Progress and interruption hooks of a run.
pub struct Hooks<'a> {
    pub on_kernel: &'a mut dyn FnMut(usize, usize, &str),
    pub interrupted: &'a dyn Fn() -> bool,
}

/// Measure everything and write `roofline.json` and `roofline.csv` into `out` after every
/// kernel (a crash or Ctrl-C keeps what was measured), then the plot.
pub fn run_roofline(cfg: &RooflineConfig, out: &Path, hooks: Hooks<'_>) -> Result<RooflineReport> {
    let Hooks {
        on_kernel,
        interrupted,
    } = hooks;
    let dev = cfg.device.candle()?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let (meter, energy_reason) = match cfg.device.ordinal() {
        None => (
            None,
            Some("device is the CPU: NVML measures GPUs only; energy fields are null".to_string()),
        ),
        Some(ordinal) => match GpuMeter::for_cuda(ordinal) {
            Ok(m) => (Some(m), None),
            Err(r) => (None, Some(r)),
        },
    };
    let idle_w = meter
        .as_ref()
        .and_then(|m| m.idle_power_w(Duration::from_secs(1)));
    let ks = kernels(cfg, &dev)?;
    let timer = Timer::for_device(&dev);
    let mut report = RooflineReport {
        schema: "perfwatt.roofline/1",
        config: cfg.clone(),
        device_name: meter
            .as_ref()
            .map_or_else(|| cfg.device.to_string(), |m| m.name.clone()),
        peaks: Vec::new(),
        bandwidth_bytes_per_s: None,
        idle_w,
        energy_reason,
        kernels: Vec::new(),
    };
    let mut roof_dtypes = Vec::new();
    for (i, k) in ks.iter().enumerate() {
        if interrupted() {
            return Err(Error::Interrupted);
        }
        on_kernel(i, ks.len(), &k.name);
        let (timing, error) = match measure(cfg, &timer, &dev, &*k.run) {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let energy = match (&meter, &timing) {
            (Some(m), Some(_)) => launch_energy(m, &dev, idle_w, cfg.energy_seconds, &*k.run).ok(),
            _ => None,
        };
        let per_s = |x: f64| timing.as_ref().map(|t| x / t.median_s);
        report.kernels.push(KernelResult {
            name: k.name.clone(),
            category: k.category.into(),
            model: k.model.into(),
            shape: k.shape.clone(),
            dtype: k.dtype.clone(),
            flops: k.flops,
            bytes: k.bytes,
            intensity: if k.bytes > 0.0 {
                k.flops / k.bytes
            } else {
                0.0
            },
            flop_per_s: per_s(k.flops),
            bytes_per_s: per_s(k.bytes),
            timing,
            roof_flop_per_s: None,
            roof_dtype: None,
            roof_fraction: None,
            bound: None,
            energy,
            error,
        });
        roof_dtypes.push(k.roof_dtype);
        update_peaks(&mut report, &roof_dtypes);
        write_results(&report, out)?;
    }
    on_kernel(ks.len(), ks.len(), "plot");
    plot(&report, out)?;
    Ok(report)
}

fn measure(
    cfg: &RooflineConfig,
    timer: &Timer,
    dev: &Device,
    f: &dyn Fn() -> candle_core::Result<Tensor>,
) -> Result<Timing> {
    for _ in 0..cfg.warmup.max(1) {
        f().map_err(me)?;
    }
    dev.synchronize().map_err(me)?;
    let budget = Duration::from_secs_f64(cfg.seconds_per_kernel);
    let start = Instant::now();
    let mut xs = Vec::with_capacity(cfg.repeats);
    while xs.len() < cfg.repeats.max(1) && (xs.len() < 5 || start.elapsed() < budget) {
        xs.push(timer.once(f)?);
    }
    Timing::of(&xs).ok_or_else(|| Error::Model("no timings".into()))
}

/// Energy counter over back-to-back launches lasting at least `seconds` (20 at least).
fn launch_energy(
    m: &GpuMeter,
    dev: &Device,
    idle_w: Option<f64>,
    seconds: f64,
    f: &dyn Fn() -> candle_core::Result<Tensor>,
) -> Result<KernelEnergy> {
    dev.synchronize().map_err(me)?;
    let e0 = m
        .energy_mj()
        .ok_or_else(|| Error::Model("energy counter".into()))?;
    let t0 = Instant::now();
    let mut launches = 0;
    while launches < 20 || t0.elapsed().as_secs_f64() < seconds {
        f().map_err(me)?;
        launches += 1;
    }
    dev.synchronize().map_err(me)?;
    let secs = t0.elapsed().as_secs_f64();
    let e1 = m
        .energy_mj()
        .ok_or_else(|| Error::Model("energy counter".into()))?;
    let j = e1.saturating_sub(e0) as f64 / 1000.0;
    Ok(KernelEnergy {
        launches,
        seconds: secs,
        j_per_launch: j / launches as f64,
        j_per_launch_above_idle: idle_w.map(|w| (j - w * secs).max(0.0) / launches as f64),
        avg_w: j / secs,
    })
}

/// Peaks from the rows measured so far, then every row's roof and bound.
fn update_peaks(r: &mut RooflineReport, roof_dtypes: &[Option<DType>]) {
    r.bandwidth_bytes_per_s = r
        .kernels
        .iter()
        .filter(|k| k.category == "peak-copy")
        .filter_map(|k| k.bytes_per_s)
        .reduce(f64::max);
    let bw = r.bandwidth_bytes_per_s;
    r.peaks = [DType::F32, DType::F16, DType::BF16]
        .iter()
        .filter_map(|dt| {
            let best = r
                .kernels
                .iter()
                .filter(|k| k.category == "peak-matmul" && k.dtype == dt.as_str())
                .filter_map(|k| Some((k.flop_per_s?, k.shape.split('x').next()?.parse().ok()?)))
                .reduce(|a, b| if b.0 > a.0 { b } else { a })?;
            Some(Peak {
                dtype: dt.as_str().into(),
                flop_per_s: best.0,
                at_n: best.1,
                ridge_flop_per_byte: bw.map(|bw| best.0 / bw),
            })
        })
        .collect();
    let peaks = r.peaks.clone();
    let highest = peaks
        .iter()
        .reduce(|a, b| if b.flop_per_s > a.flop_per_s { b } else { a });
    for (k, dt) in r.kernels.iter_mut().zip(roof_dtypes) {
        let peak = match dt {
            Some(dt) => peaks.iter().find(|p| p.dtype == dt.as_str()),
            None => highest,
        };
        k.roof_dtype = peak.map(|p| p.dtype.clone());
        let (Some(p), Some(bw), Some(achieved)) = (peak, bw, k.flop_per_s) else {
            continue;
        };
        let roof = p.flop_per_s.min(k.intensity * bw);
        k.roof_flop_per_s = Some(roof);
        k.roof_fraction = (roof > 0.0).then(|| achieved / roof);
        k.bound = p.ridge_flop_per_byte.map(|ridge| {
            if k.intensity < ridge {
                "memory"
            } else {
                "compute"
            }
        });
    }
}
