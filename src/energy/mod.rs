//! GPU energy and power through NVML (a leaf used by `capture`).
//!
//! In: nothing but the driver's libnvidia-ml (loaded at run time, so the binary runs
//! without it). Out: the total-energy counter (mJ, monotonic) for energy over a window,
//! and a background `PowerSampler` (power, energy counter, utilisation, SM clock, memory)
//! at a set rate with phase markers, so energy splits into idle / prefill / decode.
//! No NVML or no GPU: `GpuMeter::open` says why, and callers report energy as null.
//! CPU energy (RAPL through powercap sysfs) is `rapl`.

pub mod rapl;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nvml_wrapper::enum_wrappers::device::Clock;
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::Nvml;

use crate::stats::{percentile, Estimate};

/// NVML's instantaneous power field (NVML_FI_DEV_POWER_INSTANT, mW). On Ampere (except
/// GA100) and newer, `nvmlDeviceGetPowerUsage` is an average over about one second.
const FI_POWER_INSTANT: u32 = 186;

/// Run phase, recorded with each sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Idle = 0,
    Warmup = 1,
    Prefill = 2,
    Decode = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Warmup,
            2 => Phase::Prefill,
            3 => Phase::Decode,
            _ => Phase::Idle,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Warmup => "warmup",
            Phase::Prefill => "prefill",
            Phase::Decode => "decode",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PowerSample {
    /// Seconds since the sampler started.
    pub t_s: f64,
    pub phase: Phase,
    /// `nvmlDeviceGetPowerUsage`: averaged by the driver (about 1 s on recent GPUs).
    pub power_w: Option<f64>,
    /// NVML_FI_DEV_POWER_INSTANT where the GPU has it.
    pub power_instant_w: Option<f64>,
    pub energy_mj: Option<u64>,
    pub gpu_util_pct: Option<u32>,
    pub sm_clock_mhz: Option<u32>,
    pub mem_used_mb: Option<f64>,
}

impl PowerSample {
    /// The instantaneous reading when `instant` (and the GPU has it), else the averaged one.
    pub fn reading_w(&self, instant: bool) -> Option<f64> {
        if instant {
            self.power_instant_w
        } else {
            self.power_w
        }
    }
}

pub struct GpuMeter {
    nvml: Arc<Nvml>,
    /// NVML's index of the GPU (PCI order, every GPU), not CUDA's ordinal.
    index: u32,
    pub name: String,
    /// NVML's UUID (GPU-...): which physical GPU, whatever either numbering says.
    pub uuid: Option<String>,
    pub power_limit_w: Option<f64>,
}

impl GpuMeter {
    /// Open NVML's GPU `index`. The error says why energy cannot be measured (one line).
    pub fn open(index: u32) -> Result<Self, String> {
        Self::open_by(&format!("GPU {index}"), |nvml| nvml.device_by_index(index))
    }

    /// Every GPU NVML sees, in its (PCI) order; the error says why there are none.
    pub fn every_gpu() -> Result<Vec<Self>, String> {
        let n = Nvml::init()
            .and_then(|nvml| nvml.device_count())
            .map_err(|e| format!("NVML unavailable ({e}); energy fields are null"))?;
        if n == 0 {
            return Err("NVML sees no GPU; energy fields are null".into());
        }
        (0..n).map(Self::open).collect()
    }

    /// NVML's index of this GPU.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The meter of the GPU that CUDA calls `ordinal`, found by its UUID: CUDA numbers
    /// the GPUs CUDA_VISIBLE_DEVICES leaves, fastest first; NVML numbers all of them in
    /// PCI order, so the same number can be another GPU's energy counter.
    pub fn for_cuda(ordinal: usize) -> Result<Self, String> {
        #[cfg(feature = "cuda")]
        {
            let uuid = cuda_uuid(ordinal)?;
            Self::open_by(&format!("CUDA GPU {ordinal} ({uuid})"), |nvml| {
                nvml.device_by_uuid(uuid.as_str())
            })
        }
        #[cfg(not(feature = "cuda"))]
        {
            Self::open(ordinal as u32)
        }
    }

    fn open_by(
        what: &str,
        find: impl FnOnce(&Nvml) -> Result<nvml_wrapper::Device<'_>, nvml_wrapper::error::NvmlError>,
    ) -> Result<Self, String> {
        let nvml =
            Nvml::init().map_err(|e| format!("NVML unavailable ({e}); energy fields are null"))?;
        let dev =
            find(&nvml).map_err(|e| format!("no {what} via NVML ({e}); energy fields are null"))?;
        dev.total_energy_consumption()
            .map_err(|e| format!("GPU has no energy counter ({e}); energy fields are null"))?;
        let index = dev
            .index()
            .map_err(|e| format!("NVML cannot index {what} ({e}); energy fields are null"))?;
        let name = dev.name().unwrap_or_else(|_| "unknown GPU".into());
        let uuid = dev.uuid().ok();
        let power_limit_w = dev.enforced_power_limit().ok().map(|mw| mw as f64 / 1000.0);
        Ok(GpuMeter {
            nvml: Arc::new(nvml),
            index,
            name,
            uuid,
            power_limit_w,
        })
    }

    pub fn energy_mj(&self) -> Option<u64> {
        self.nvml
            .device_by_index(self.index)
            .ok()?
            .total_energy_consumption()
            .ok()
    }

    pub fn memory_used_mb(&self) -> Option<f64> {
        Some(
            self.nvml
                .device_by_index(self.index)
                .ok()?
                .memory_info()
                .ok()?
                .used as f64
                / 1e6,
        )
    }

    /// Power now (the driver-averaged field), W.
    pub fn power_w(&self) -> Option<f64> {
        let d = self.nvml.device_by_index(self.index).ok()?;
        d.power_usage().ok().map(|mw| mw as f64 / 1000.0)
    }

    /// The SM clock now, MHz.
    pub fn sm_clock_mhz(&self) -> Option<u32> {
        self.nvml
            .device_by_index(self.index)
            .ok()?
            .clock_info(Clock::SM)
            .ok()
    }

    /// Why the clocks are held down now (NVML's clock-event reasons, e.g. SW_POWER_CAP),
    /// without the idle reason.
    pub fn clock_events(&self) -> Vec<String> {
        let Some(r) = self
            .nvml
            .device_by_index(self.index)
            .ok()
            .and_then(|d| d.current_throttle_reasons().ok())
        else {
            return Vec::new();
        };
        r.iter_names()
            .map(|(name, _)| name.to_string())
            .filter(|n| n != "GPU_IDLE" && n != "NONE")
            .collect()
    }

    /// Mean power over `d` from the energy counter (the card's idle draw when nothing runs).
    pub fn idle_power_w(&self, d: Duration) -> Option<f64> {
        let e0 = self.energy_mj()?;
        let t0 = Instant::now();
        std::thread::sleep(d);
        let e1 = self.energy_mj()?;
        Some((e1 - e0) as f64 / 1000.0 / t0.elapsed().as_secs_f64())
    }

    /// Does the GPU answer NVML's instantaneous power field?
    pub fn has_instant_power(&self) -> bool {
        self.nvml
            .device_by_index(self.index)
            .ok()
            .and_then(|d| instant_power_w(&d))
            .is_some()
    }

    /// Idle power from `windows` counter windows of `seconds` each (nothing may run).
    pub fn idle_windows_w(&self, windows: usize, seconds: f64) -> Vec<f64> {
        (0..windows)
            .filter_map(|_| self.idle_power_w(Duration::from_secs_f64(seconds)))
            .collect()
    }

    /// How often the energy counter changes: read it in a tight loop for `d`.
    pub fn counter_period_s(&self, d: Duration) -> Option<f64> {
        let t0 = Instant::now();
        let mut readings = Vec::new();
        while t0.elapsed() < d {
            readings.push((t0.elapsed().as_secs_f64(), self.energy_mj()?));
        }
        counter_period_s(&readings)
    }

    pub fn start_sampler(&self, hz: f64) -> PowerSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicU8::new(Phase::Idle as u8));
        let (nvml, index) = (self.nvml.clone(), self.index);
        let (s2, p2, paused2) = (stop.clone(), phase.clone(), paused.clone());
        let period = Duration::from_secs_f64(1.0 / hz.max(0.1));
        let start = Instant::now();
        let handle = std::thread::spawn(move || {
            let mut out = Vec::new();
            let Ok(dev) = nvml.device_by_index(index) else {
                return out;
            };
            let mut next = Instant::now();
            while !s2.load(Ordering::Relaxed) {
                // Paused: keep the clock, skip the NVML queries (what an A/B of the
                // sampler's cost compares against).
                if !paused2.load(Ordering::Relaxed) {
                    out.push(PowerSample {
                        t_s: start.elapsed().as_secs_f64(),
                        phase: Phase::from_u8(p2.load(Ordering::Relaxed)),
                        power_w: dev.power_usage().ok().map(|mw| mw as f64 / 1000.0),
                        power_instant_w: instant_power_w(&dev),
                        energy_mj: dev.total_energy_consumption().ok(),
                        gpu_util_pct: dev.utilization_rates().ok().map(|u| u.gpu),
                        sm_clock_mhz: dev.clock_info(Clock::SM).ok(),
                        mem_used_mb: dev.memory_info().ok().map(|m| m.used as f64 / 1e6),
                    });
                }
                next += period;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            out
        });
        PowerSampler {
            stop,
            paused,
            phase,
            handle: Some(handle),
            hz,
            start,
        }
    }
}

/// Background sampling thread; `finish` stops it and returns the series.
pub struct PowerSampler {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    phase: Arc<AtomicU8>,
    handle: Option<std::thread::JoinHandle<Vec<PowerSample>>>,
    pub hz: f64,
    start: Instant,
}

impl PowerSampler {
    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Relaxed);
    }

    /// Seconds since the sampler started: the time base of its samples.
    pub fn now_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Pause or resume sampling (the thread stays, sleeping through its periods).
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// Stop and return (samples, achieved rate in Hz). The rate is 1 / the median interval
    /// between consecutive samples, so pauses do not dilute it.
    pub fn finish(mut self) -> (Vec<PowerSample>, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self
            .handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let gaps: Vec<f64> = samples.windows(2).map(|w| w[1].t_s - w[0].t_s).collect();
        let rate = crate::stats::percentile(&gaps, 50.0)
            .filter(|&g| g > 0.0)
            .map_or(0.0, |g| 1.0 / g);
        (samples, rate)
    }
}

impl Drop for PowerSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// CUDA's UUID of GPU `ordinal` in NVML's spelling (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx).
#[cfg(feature = "cuda")]
fn cuda_uuid(ordinal: usize) -> Result<String, String> {
    let ctx = cudarc::driver::CudaContext::new(ordinal)
        .map_err(|e| format!("no CUDA GPU {ordinal} ({e:?}); energy fields are null"))?;
    let u = ctx
        .uuid()
        .map_err(|e| format!("CUDA GPU {ordinal} has no UUID ({e:?}); energy fields are null"))?;
    let h: Vec<String> = u
        .bytes
        .iter()
        .map(|b| format!("{:02x}", *b as u8))
        .collect();
    Ok(format!(
        "GPU-{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    ))
}

/// An energy measurement between two counter readings.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct EnergyWindow {
    pub joules: f64,
    pub seconds: f64,
}

impl EnergyWindow {
    pub fn between(start_mj: Option<u64>, end_mj: Option<u64>, seconds: f64) -> Option<Self> {
        Some(EnergyWindow {
            joules: (end_mj?.checked_sub(start_mj?)?) as f64 / 1000.0,
            seconds,
        })
    }
    pub fn avg_w(&self) -> f64 {
        if self.seconds > 0.0 {
            self.joules / self.seconds
        } else {
            0.0
        }
    }
    /// Energy above the idle draw over the same time; negative when the window drew less
    /// than idle (never clamped: clamping windows one by one biases sums upward).
    pub fn above_idle(&self, idle_w: f64) -> f64 {
        self.joules - idle_w * self.seconds
    }
}

fn instant_power_w(dev: &nvml_wrapper::Device<'_>) -> Option<f64> {
    let v = dev.field_values_for(&[FieldId(FI_POWER_INSTANT)]).ok()?;
    let mw = match v.into_iter().next()?.ok()?.value.ok()? {
        SampleValue::F64(x) => x,
        SampleValue::U32(x) => x as f64,
        SampleValue::U64(x) => x as f64,
        SampleValue::I64(x) => x as f64,
    };
    Some(mw / 1000.0)
}

/// The idle draw of a measurement: counter windows before and after it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
pub struct IdleEstimate {
    /// Median of every window, before and after: the one definition of idle power.
    pub median_w: f64,
    /// Mean of the windows with its 95% t-interval (unit: window, n = windows).
    pub mean_w: Estimate,
    pub before_w: Vec<f64>,
    pub after_w: Vec<f64>,
    /// median(after) - median(before): how far idle drifted across the measurement.
    pub drift_w: Option<f64>,
    pub window_s: f64,
}

impl IdleEstimate {
    pub fn of(before_w: Vec<f64>, after_w: Vec<f64>, window_s: f64) -> Option<Self> {
        let all: Vec<f64> = before_w.iter().chain(&after_w).copied().collect();
        let med = |v: &[f64]| percentile(v, 50.0);
        Some(IdleEstimate {
            median_w: med(&all)?,
            mean_w: Estimate::of(&all)?,
            drift_w: med(&after_w).zip(med(&before_w)).map(|(a, b)| a - b),
            before_w,
            after_w,
            window_s,
        })
    }
}

/// The median interval between changes of a counter read as (seconds, value) pairs.
pub fn counter_period_s(readings: &[(f64, u64)]) -> Option<f64> {
    let changes: Vec<f64> = readings
        .windows(2)
        .filter(|w| w[1].1 != w[0].1)
        .map(|w| w[1].0)
        .collect();
    let gaps: Vec<f64> = changes.windows(2).map(|w| w[1] - w[0]).collect();
    percentile(&gaps, 50.0)
}

/// The value of a (seconds, value) series at `t`, linear between its neighbours; None
/// outside the series (it is not extrapolated).
pub fn interpolate(series: &[(f64, f64)], t: f64) -> Option<f64> {
    let i = series.partition_point(|p| p.0 <= t);
    if i == 0 {
        return None;
    }
    let a = series[i - 1];
    let Some(&b) = series.get(i) else {
        return (a.0 == t).then_some(a.1);
    };
    Some(a.1 + (b.1 - a.1) * (t - a.0) / (b.0 - a.0))
}

/// Energy of [t0, t1] by the trapezoid rule over a power series of (seconds, W), linearly
/// interpolated at the window's edges; None unless the series covers the window.
pub fn trapezoid_j(series: &[(f64, f64)], t0: f64, t1: f64) -> Option<f64> {
    let mut pts = vec![(t0, interpolate(series, t0)?)];
    pts.extend(series.iter().copied().filter(|p| p.0 > t0 && p.0 < t1));
    pts.push((t1, interpolate(series, t1)?));
    Some(
        pts.windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
            .sum(),
    )
}

/// How far a window's power-series integral may stray from its counter energy before the
/// window is flagged.
pub const CHECK_TOLERANCE_PCT: f64 = 5.0;

/// One measured window: the energy counter against the integral of the power series.
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq)]
pub struct WindowCheck {
    pub counter_j: f64,
    /// Trapezoid integral of the series the report uses (instantaneous where available).
    pub integral_j: Option<f64>,
    /// The same of the driver-averaged series.
    pub integral_avg_j: Option<f64>,
    /// (integral - counter) / counter.
    pub diff_pct: Option<f64>,
    /// |diff| > CHECK_TOLERANCE_PCT.
    pub flagged: bool,
}

impl WindowCheck {
    pub fn of(counter_j: f64, used: &[(f64, f64)], avg: &[(f64, f64)], t0: f64, t1: f64) -> Self {
        let integral_j = trapezoid_j(used, t0, t1);
        let diff_pct = integral_j
            .filter(|_| counter_j > 0.0)
            .map(|i| 100.0 * (i - counter_j) / counter_j);
        WindowCheck {
            counter_j,
            integral_j,
            integral_avg_j: trapezoid_j(avg, t0, t1),
            diff_pct,
            flagged: diff_pct.is_some_and(|d| d.abs() > CHECK_TOLERANCE_PCT),
        }
    }
}

/// Peak resident memory of this process in MB (Linux VmHWM), for CPU runs.
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trapezoid_interpolates_the_edges() {
        // 100 W flat, then a ramp to 300 W.
        let s = [(0.0, 100.0), (1.0, 100.0), (2.0, 300.0)];
        assert_eq!(trapezoid_j(&s, 0.0, 1.0), Some(100.0));
        assert_eq!(trapezoid_j(&s, 0.5, 1.5), Some(50.0 + 0.5 * 150.0));
        assert_eq!(trapezoid_j(&s, 0.0, 2.0), Some(300.0));
        assert_eq!(trapezoid_j(&s, -0.1, 1.0), None);
        assert_eq!(trapezoid_j(&s, 1.0, 2.1), None);
    }

    #[test]
    fn integral_against_counter_flags_past_five_percent() {
        let s: Vec<(f64, f64)> = (0..=100).map(|i| (i as f64 / 100.0, 200.0)).collect();
        let ok = WindowCheck::of(196.0, &s, &s, 0.0, 1.0);
        assert!(!ok.flagged && (ok.diff_pct.unwrap() - 2.0408).abs() < 1e-3);
        let bad = WindowCheck::of(180.0, &s, &s, 0.0, 1.0);
        assert!(bad.flagged && bad.diff_pct.unwrap() > 11.0);
        // A series that does not cover the window cannot be checked, and is not flagged.
        let short = WindowCheck::of(180.0, &s, &s, 0.0, 1.5);
        assert_eq!((short.integral_j, short.flagged), (None, false));
    }

    #[test]
    fn idle_is_the_median_of_all_windows_with_drift() {
        let i = IdleEstimate::of(vec![120.0, 122.0], vec![126.0, 200.0], 5.0).unwrap();
        assert_eq!(i.median_w, 124.0);
        assert_eq!(i.mean_w.n, 4);
        assert_eq!(i.drift_w, Some(163.0 - 121.0));
        assert!(IdleEstimate::of(vec![], vec![], 5.0).is_none());
    }

    #[test]
    fn counter_period_is_the_median_gap_between_changes() {
        let r: Vec<(f64, u64)> = (0..1000)
            .map(|i| (i as f64 * 0.001, (i / 100) as u64))
            .collect();
        assert!((counter_period_s(&r).unwrap() - 0.1).abs() < 1e-9);
    }

    #[test]
    fn above_idle_is_not_clamped() {
        let w = EnergyWindow {
            joules: 50.0,
            seconds: 1.0,
        };
        assert_eq!(w.above_idle(60.0), -10.0);
    }
}
