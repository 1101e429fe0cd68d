//! GPU energy and power through NVML (a leaf used by `capture`).
//!
//! In: nothing but the driver's libnvidia-ml (loaded at run time, so the binary runs
//! without it). Out: the total-energy counter (mJ, monotonic) for energy over a window,
//! and a background `PowerSampler` (power, energy counter, utilisation, SM clock, memory)
//! at a set rate with phase markers, so energy splits into idle / prefill / decode.
//! No NVML or no GPU: `GpuMeter::open` says why, and callers report energy as null.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nvml_wrapper::enum_wrappers::device::Clock;
use nvml_wrapper::Nvml;

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
    pub power_w: Option<f64>,
    pub energy_mj: Option<u64>,
    pub gpu_util_pct: Option<u32>,
    pub sm_clock_mhz: Option<u32>,
    pub mem_used_mb: Option<f64>,
}

pub struct GpuMeter {
    nvml: Arc<Nvml>,
    index: u32,
    pub name: String,
    pub power_limit_w: Option<f64>,
}

impl GpuMeter {
    /// Open GPU `index`. The error says why energy cannot be measured (one line).
    pub fn open(index: u32) -> Result<Self, String> {
        let nvml =
            Nvml::init().map_err(|e| format!("NVML unavailable ({e}); energy fields are null"))?;
        let dev = nvml
            .device_by_index(index)
            .map_err(|e| format!("no GPU {index} via NVML ({e}); energy fields are null"))?;
        dev.total_energy_consumption()
            .map_err(|e| format!("GPU has no energy counter ({e}); energy fields are null"))?;
        let name = dev.name().unwrap_or_else(|_| "unknown GPU".into());
        let power_limit_w = dev.enforced_power_limit().ok().map(|mw| mw as f64 / 1000.0);
        Ok(GpuMeter {
            nvml: Arc::new(nvml),
            index,
            name,
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
}

impl PowerSampler {
    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Relaxed);
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
    /// Energy above the idle draw over the same time.
    pub fn above_idle(&self, idle_w: f64) -> f64 {
        (self.joules - idle_w * self.seconds).max(0.0)
    }
}

/// Peak resident memory of this process in MB (Linux VmHWM), for CPU runs.
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
