//! One inference benchmark on several devices at once (`perfwatt infer --devices 0,1`).
//!
//! In: an `InferConfig` and devices (`cuda:0`, `cuda:1`, ...). Each device runs the
//! whole benchmark in its own thread with its own model, meter and NVML sampler; the
//! measured runs of all devices start and end together (a rendezvous), so every GPU's
//! energy counter is read over one shared wall-clock window. Out: every device's own
//! `InferReport`, and a `HostSummary`: latency percentiles of the pooled samples of all
//! devices (never an average of per-device percentiles), tokens/s of the host, and the
//! energy of the host as the sum of the GPUs' counters over the shared window, checked
//! against a second reader that reads every counter at the window's edges.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use serde::Serialize;

use super::{request_percentiles, run_infer, InferConfig, InferReport, Percentiles, Progress};
use crate::device::{self, DeviceSpec};
use crate::energy::{EnergyWindow, GpuMeter, PowerSample};
use crate::error::{Error, Result};
use crate::files::write_atomic;

/// A barrier that survives a party leaving: a device whose run fails (or is interrupted)
/// leaves, and the others go on instead of waiting for it forever.
pub struct Rendezvous {
    parties: usize,
    /// (generation, arrived in this generation, left for good)
    state: Mutex<(u64, usize, usize)>,
    turn: Condvar,
}

impl Rendezvous {
    pub fn new(parties: usize) -> Self {
        Rendezvous {
            parties,
            state: Mutex::new((0, 0, 0)),
            turn: Condvar::new(),
        }
    }

    /// Wait until every party still present has arrived.
    pub fn wait(&self) {
        let mut s = self.state.lock().expect("rendezvous");
        s.1 += 1;
        let generation = s.0;
        if s.1 + s.2 >= self.parties {
            self.release(&mut s);
            return;
        }
        while s.0 == generation {
            s = self.turn.wait(s).expect("rendezvous");
        }
    }

    /// Leave for good (a party that will not arrive again).
    pub fn leave(&self) {
        let mut s = self.state.lock().expect("rendezvous");
        s.2 += 1;
        if s.1 > 0 && s.1 + s.2 >= self.parties {
            self.release(&mut s);
        }
    }

    fn release(&self, s: &mut (u64, usize, usize)) {
        s.0 += 1;
        s.1 = 0;
        self.turn.notify_all();
    }
}

/// Leaves the rendezvous when dropped: however a device's thread ends.
struct Member<'a>(&'a Rendezvous);

impl Drop for Member<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// What the host did over the shared window, all devices together.
#[derive(Debug, Clone, Serialize)]
pub struct HostSummary {
    pub devices: Vec<DeviceSpec>,
    /// Output tokens of every measured run of every device.
    pub output_tokens: usize,
    /// The shared window (host clock): first measured run of any device to the last of all.
    pub window_s: f64,
    /// output_tokens / window_s: what the host delivers.
    pub tokens_per_s_output: f64,
    /// Pooled over every request (TPOT: every decode step) of every device.
    pub latency_s: Percentiles,
    pub ttft_s: Percentiles,
    pub tpot_s: Percentiles,
    /// Every device generated the same tokens (same weights, same greedy decoding).
    pub same_tokens: bool,
    pub energy: HostEnergy,
}

/// One GPU's counter over the shared window.
#[derive(Debug, Clone, Serialize)]
pub struct GpuWindow {
    pub device: DeviceSpec,
    pub gpu: Option<String>,
    pub uuid: Option<String>,
    /// As its own thread read it, right after the window opened and closed.
    pub joules: Option<f64>,
    pub idle_w: Option<f64>,
    pub joules_above_idle: Option<f64>,
}

/// Host energy: the GPUs' energies summed over the same wall-clock window.
#[derive(Debug, Clone, Serialize)]
pub struct HostEnergy {
    pub available: bool,
    pub reason: Option<String>,
    pub per_gpu: Vec<GpuWindow>,
    /// Sum of the per-GPU readings.
    pub joules: Option<f64>,
    pub joules_above_idle: Option<f64>,
    /// One reader (this thread, its own NVML handles) reading every GPU's counter at the
    /// window's edges; should equal `joules` up to one counter step per GPU and edge.
    pub one_window_joules: Option<f64>,
    /// (joules - one_window_joules) / one_window_joules, %.
    pub sum_vs_one_window_pct: Option<f64>,
    pub avg_w: Option<f64>,
    pub j_per_token: Option<f64>,
    pub j_per_token_above_idle: Option<f64>,
    /// Host energy x window: J*s.
    pub edp_js: Option<f64>,
}

pub struct DevicesRun {
    pub reports: Vec<(InferReport, Vec<PowerSample>)>,
    pub host: HostSummary,
}

pub struct DevicesProgress<'a> {
    /// (device index, runs done, runs in all)
    pub on_step: &'a (dyn Fn(usize, usize, usize) + Sync),
    pub interrupted: &'a (dyn Fn() -> bool + Sync),
}

/// Run `cfg` on every device of `devices` at once; see the module header.
pub fn run_infer_devices(
    cfg: &InferConfig,
    devices: &[DeviceSpec],
    progress: DevicesProgress<'_>,
) -> Result<DevicesRun> {
    device::require_several(devices)?;
    if cfg.capture.is_some() {
        return Err(Error::Config(
            "--capture records one device's operands: use --device, not --devices".into(),
        ));
    }
    // The second reader's meters, opened before any work (None on the CPU, or without NVML).
    let meters: Vec<Option<GpuMeter>> = devices
        .iter()
        .map(|d| GpuMeter::for_cuda(d.ordinal()?).ok())
        .collect();
    let read_all = || -> Option<u64> { meters.iter().map(|m| m.as_ref()?.energy_mj()).sum() };
    let rendezvous = Rendezvous::new(devices.len() + 1);
    let run_one = |i: usize, device: DeviceSpec| {
        let _member = Member(&rendezvous);
        let cfg = InferConfig {
            device,
            ..cfg.clone()
        };
        run_infer(
            &cfg,
            None,
            Progress {
                on_step: &mut |done, all| (progress.on_step)(i, done, all),
                interrupted: progress.interrupted,
                sync: Some(&|| rendezvous.wait()),
            },
        )
    };
    // This thread reads every counter at the shared window's edges.
    let (results, one_window) = device::on_each(devices, run_one, || {
        let _member = Member(&rendezvous);
        rendezvous.wait();
        let (e0, t0) = (read_all(), Instant::now());
        rendezvous.wait();
        let (e1, t1) = (read_all(), Instant::now());
        let seconds = t1.duration_since(t0).as_secs_f64();
        (
            seconds,
            EnergyWindow::between(e0, e1, seconds).map(|w| w.joules),
        )
    });
    let reports = device::every_device(devices, results)?;
    let host = summarize(devices, &reports, one_window.0, one_window.1)?;
    Ok(DevicesRun { reports, host })
}

/// Where device `i` of `devices` keeps its own report beside the host's `out`: infer.json
/// -> infer.cuda1.json (its power series in infer.cuda1.power.csv).
pub fn device_report_path(out: &Path, devices: &[DeviceSpec], i: usize) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "infer".into(), |s| s.to_string_lossy().into_owned());
    let name = device::device_file_name(devices, i);
    out.with_file_name(format!("{stem}.{name}.json"))
}

/// Write every device's report (and power series) and the host's, which names them.
/// Returns the files written, the host's first.
pub fn write_devices_report(run: &DevicesRun, out: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![out.to_path_buf()];
    let mut entries = Vec::new();
    let devices = &run.host.devices;
    for (i, (device, (report, samples))) in devices.iter().zip(&run.reports).enumerate() {
        let path = device_report_path(out, devices, i);
        let power = super::write_report(report, samples, &path)?;
        let name = |p: &Path| p.file_name().map(|f| f.to_string_lossy().into_owned());
        entries.push(serde_json::json!({
            "device": device, "gpu": report.energy.gpu, "uuid": report.energy.gpu_uuid,
            "report": name(&path), "power": name(&power),
        }));
        files.extend([path, power]);
    }
    let host = serde_json::json!({
        "schema": "perfwatt.infer-devices/1",
        "config": run.reports[0].0.config,
        "host": run.host,
        "devices": entries,
    });
    write_atomic(
        out,
        (serde_json::to_string_pretty(&host).expect("serializable") + "\n").as_bytes(),
    )?;
    Ok(files)
}

/// The host's figures from every device's report.
fn summarize(
    devices: &[DeviceSpec],
    reports: &[(InferReport, Vec<PowerSample>)],
    window_s: f64,
    one_window_joules: Option<f64>,
) -> Result<HostSummary> {
    let first = &reports[0].0;
    let runs: Vec<_> = reports
        .iter()
        .flat_map(|(r, _)| r.runs.iter().cloned())
        .collect();
    let [latency_s, ttft_s, tpot_s] = request_percentiles(&runs, first.batch, first.new_tokens)?;
    let output_tokens = runs.len() * first.batch * first.new_tokens;
    let per_gpu: Vec<GpuWindow> = devices
        .iter()
        .zip(reports)
        .map(|(d, (r, _))| {
            let e = &r.energy;
            let joules = e.shared_window.map(|w| w.joules);
            GpuWindow {
                device: *d,
                gpu: e.gpu.clone(),
                uuid: e.gpu_uuid.clone(),
                joules,
                idle_w: e.idle_w,
                joules_above_idle: e.shared_window.zip(e.idle_w).map(|(w, i)| w.above_idle(i)),
            }
        })
        .collect();
    let sum = |f: &dyn Fn(&GpuWindow) -> Option<f64>| per_gpu.iter().map(f).sum::<Option<f64>>();
    let joules = sum(&|g| g.joules);
    let joules_above_idle = sum(&|g| g.joules_above_idle);
    let per_token = |j: Option<f64>| j.map(|j| j / output_tokens as f64);
    let energy = HostEnergy {
        available: joules.is_some(),
        reason: reports
            .iter()
            .find_map(|(r, _)| r.energy.reason.clone())
            .filter(|_| joules.is_none()),
        joules,
        joules_above_idle,
        one_window_joules,
        sum_vs_one_window_pct: joules
            .zip(one_window_joules)
            .filter(|&(_, o)| o > 0.0)
            .map(|(j, o)| (j - o) / o * 100.0),
        avg_w: joules.map(|j| j / window_s),
        j_per_token: per_token(joules),
        j_per_token_above_idle: per_token(joules_above_idle),
        edp_js: joules.map(|j| j * window_s),
        per_gpu,
    };
    Ok(HostSummary {
        devices: devices.to_vec(),
        output_tokens,
        window_s,
        tokens_per_s_output: output_tokens as f64 / window_s,
        latency_s,
        ttft_s,
        tpot_s,
        same_tokens: reports.iter().all(|(r, _)| r.tokens == first.tokens),
        energy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn rendezvous_releases_when_a_party_leaves_instead_of_arriving() {
        let r = Rendezvous::new(3);
        let passed = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    r.wait();
                    passed.fetch_add(1, Ordering::SeqCst);
                    r.wait();
                    passed.fetch_add(1, Ordering::SeqCst);
                });
            }
            // The third party fails before its first arrival.
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert_eq!(passed.load(Ordering::SeqCst), 0, "nobody passes early");
            r.leave();
        });
        assert_eq!(passed.load(Ordering::SeqCst), 4);
    }
}
