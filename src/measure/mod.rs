//! `perfwatt measure -- CMD`: the energy of any command, measured like perfwatt measures
//! its own runs.
//!
//! In: a command line and `MeasureConfig` (which GPUs, sampling interval, idle windows).
//! Out: `MeasureReport` (`measure.json`, schema `perfwatt.measure/1`): per GPU the energy
//! counter over the command's lifetime, idle before (and after), above-idle energy, both
//! NVML power fields, SM clock, clock-event reasons, memory and utilisation; per phase the
//! same energy split (`phases`: markers the command prints); CPU energy through RAPL where
//! readable; the command's exit status, which the CLI passes on. `report` writes it with
//! `report.md`, `power.csv`, plots and, when asked, a trace-event timeline.
//!
//! The command runs in its own process group with its output passed through line by line
//! (perfwatt reads it to time the markers) and `PYTHONUNBUFFERED=1` unless set, so Python's
//! markers are not held in a buffer; a first interrupt is forwarded to its group as SIGINT,
//! a second as SIGKILL, and the report is written either way. Without NVML the command is
//! still timed, phase by phase, and every energy field is null with the reason.

pub mod phases;
mod report;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::energy::rapl::{RaplMeter, RaplReport};
use crate::energy::{GpuMeter, IdleEstimate, PowerSample};
use crate::error::{Error, Result};
pub use phases::{Marker, PhaseWindow};
pub use report::write;

/// Which GPUs to measure: NVML's indices, or every GPU it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuChoice {
    All,
    Indices(Vec<u32>),
}

impl std::str::FromStr for GpuChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "all" {
            return Ok(GpuChoice::All);
        }
        s.split(',')
            .map(|x| {
                x.trim().parse::<u32>().map_err(|_| {
                    Error::Config(format!(
                        "--devices {s:?}: `{x}` is not a GPU index (NVML's: 0,1,...) or `all`"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(GpuChoice::Indices)
    }
}

#[derive(Debug, Clone)]
pub struct MeasureConfig {
    /// The command and its arguments.
    pub command: Vec<String>,
    pub gpus: GpuChoice,
    /// Power sampling interval (ms).
    pub interval_ms: f64,
    /// Idle measured before the command (s, split into windows of at most 1 s).
    pub idle_s: f64,
    /// Idle measured after it (s); 0 for none.
    pub idle_after_s: f64,
    /// The powercap tree RAPL is read from (`/sys/class/powercap`).
    pub powercap_root: PathBuf,
}

/// How the command ended, and the code perfwatt exits with (the shell's convention:
/// 128 + the signal for a command a signal ended).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExitReport {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub exit_code: i32,
    /// Interrupts perfwatt received and forwarded (1: SIGINT, 2: then SIGKILL).
    pub interrupts: usize,
}

/// One GPU over the command's lifetime.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct GpuUse {
    pub index: u32,
    pub name: String,
    pub uuid: Option<String>,
    /// Energy counter difference from spawn to exit (J).
    pub energy_j: Option<f64>,
    pub avg_w: Option<f64>,
    pub idle: Option<IdleEstimate>,
    /// energy_j - idle median x duration; negative when the command drew less than idle.
    pub above_idle_j: Option<f64>,
    /// How often the energy counter moved, from the samples (resolution: the interval).
    pub counter_period_s: Option<f64>,
    /// Driver-averaged power field (nvmlDeviceGetPowerUsage, about 1 s average).
    pub power_avg_field_mean_w: Option<f64>,
    pub power_avg_field_max_w: Option<f64>,
    /// NVML_FI_DEV_POWER_INSTANT, where the GPU has it.
    pub power_instant_mean_w: Option<f64>,
    pub power_instant_max_w: Option<f64>,
    pub sm_clock_median_mhz: Option<f64>,
    pub sm_clock_min_mhz: Option<f64>,
    pub util_mean_pct: Option<f64>,
    pub mem_used_max_mb: Option<f64>,
    /// Clock-event reason -> polls (every 100 ms) that saw it, of `clock_polls`.
    pub clock_events: BTreeMap<String, usize>,
    pub clock_polls: usize,
    pub samples: usize,
    pub sample_hz: f64,
}

/// One phase's energy on one GPU.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PhaseEnergy {
    pub gpu: u32,
    /// The counter interpolated between samples at the phase's edges.
    pub energy_j: Option<f64>,
    pub above_idle_j: Option<f64>,
    pub avg_w: Option<f64>,
    /// Counter updates the phase spans (duration / period).
    pub counter_updates: Option<f64>,
    /// At least `MIN_UPDATES` counter updates: shorter phases are not resolved by the
    /// counter, and their energy is an interpolation, flagged so.
    pub resolved: bool,
}

/// Counter updates a phase must span for its energy to count as measured.
pub const MIN_UPDATES: f64 = 5.0;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PhaseReport {
    #[serde(flatten)]
    pub window: PhaseWindow,
    pub duration_s: f64,
    pub energy: Vec<PhaseEnergy>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MeasureReport {
    pub schema: String,
    pub command: Vec<String>,
    /// Unix time of the spawn (s).
    pub started_unix_s: f64,
    pub duration_s: f64,
    pub exit: ExitReport,
    pub interval_ms: f64,
    pub gpus: Vec<GpuUse>,
    /// Why there is no GPU energy (no NVML, no GPU), or null.
    pub energy_reason: Option<String>,
    pub phases: Vec<PhaseReport>,
    /// Markers that made no sense, and marker channels that could not be opened.
    pub marker_problems: Vec<String>,
    pub cpu: RaplReport,
}

/// What the run left for the report: the report and every GPU's samples, their times
/// shifted to the command's clock (0 = spawn).
pub struct Measurement {
    pub report: MeasureReport,
    pub samples: Vec<(u32, Vec<PowerSample>)>,
}

/// Run `cfg.command` and measure it. `interrupts` says how many times the user asked to
/// stop (the CLI's Ctrl-C count): the first is forwarded as SIGINT, the second as SIGKILL.
pub fn run(cfg: &MeasureConfig, interrupts: &dyn Fn() -> usize) -> Result<Measurement> {
    if cfg.command.is_empty() {
        return Err(Error::Config(
            "measure needs a command: perfwatt measure [OPTIONS] -- CMD ARGS...".into(),
        ));
    }
    let (meters, energy_reason) = open_gpus(&cfg.gpus)?;
    let before = idle_windows(&meters, cfg.idle_s);
    let mut rapl = RaplMeter::open(&cfg.powercap_root);
    let hz = 1000.0 / cfg.interval_ms.max(1.0);
    let samplers: Vec<_> = meters.iter().map(|g| g.start_sampler(hz)).collect();
    let child = run_child(cfg, &meters, rapl.as_mut().ok(), interrupts)?;
    let offsets: Vec<f64> = samplers.iter().map(|s| s.now_s() - child.ran_s).collect();
    let finished: Vec<_> = samplers.into_iter().map(|s| s.finish()).collect();
    let after = idle_windows(&meters, cfg.idle_after_s);
    let mut samples = Vec::new();
    let mut gpus = Vec::new();
    for (k, (g, (mut s, sample_hz))) in meters.iter().zip(finished).enumerate() {
        for x in &mut s {
            x.t_s -= offsets[k];
        }
        let idle = IdleEstimate::of(
            before[k].clone(),
            after[k].clone(),
            idle_window_s(cfg.idle_s.max(cfg.idle_after_s)),
        );
        gpus.push(gpu_use(g, &child, k, idle, &s, sample_hz));
        samples.push((g.index(), s));
    }
    let (windows, mut marker_problems) = phases::windows(&child.markers, child.ran_s);
    marker_problems.splice(0..0, child.problems.iter().cloned());
    let counters: Vec<Vec<(f64, f64)>> = samples
        .iter()
        .zip(&child.energy_mj)
        .map(|((_, s), ends)| counter_series(s, *ends, child.ran_s))
        .collect();
    let phases = windows
        .into_iter()
        .map(|w| phase_report(w, &gpus, &counters))
        .collect();
    let report = MeasureReport {
        schema: "perfwatt.measure/1".into(),
        command: cfg.command.clone(),
        started_unix_s: child.started_unix_s,
        duration_s: child.ran_s,
        exit: child.exit.clone(),
        interval_ms: cfg.interval_ms,
        gpus,
        energy_reason,
        phases,
        marker_problems,
        cpu: match rapl {
            Ok(mut m) => m.report(),
            Err(reason) => RaplReport::unavailable(reason),
        },
    };
    Ok(Measurement { report, samples })
}

/// The meters of `choice`; none, with the reason, without NVML. A GPU index that does not
/// exist is an error (the user named it), not a silent omission.
pub(crate) fn open_gpus(choice: &GpuChoice) -> Result<(Vec<GpuMeter>, Option<String>)> {
    match choice {
        GpuChoice::All => Ok(match GpuMeter::every_gpu() {
            Ok(m) => (m, None),
            Err(reason) => (Vec::new(), Some(reason)),
        }),
        GpuChoice::Indices(ix) => {
            let opened: Vec<_> = ix.iter().map(|&i| GpuMeter::open(i)).collect();
            match opened.iter().find_map(|m| m.as_ref().err()) {
                Some(e) if e.starts_with("NVML unavailable") => Ok((Vec::new(), Some(e.clone()))),
                Some(e) => Err(Error::Config(format!("--devices: {e}"))),
                None => Ok((
                    opened.into_iter().map(|m| m.expect("checked")).collect(),
                    None,
                )),
            }
        }
    }
}

fn idle_window_s(total_s: f64) -> f64 {
    total_s / (total_s.ceil().max(1.0))
}

/// Idle windows of every GPU at once (so N GPUs cost one idle period, not N): `total_s`
/// split into windows of at most 1 s; per GPU, the mean power of each window (W).
pub(crate) fn idle_windows(meters: &[GpuMeter], total_s: f64) -> Vec<Vec<f64>> {
    let mut out = vec![Vec::new(); meters.len()];
    if meters.is_empty() || total_s <= 0.0 {
        return out;
    }
    let w = idle_window_s(total_s);
    for _ in 0..(total_s / w).round() as usize {
        let e0: Vec<_> = meters.iter().map(|g| g.energy_mj()).collect();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(w));
        let dt = t0.elapsed().as_secs_f64();
        for (k, g) in meters.iter().enumerate() {
            if let (Some(a), Some(b)) = (e0[k], g.energy_mj()) {
                out[k].push(b.saturating_sub(a) as f64 / 1000.0 / dt);
            }
        }
    }
    out
}

/// What running the command gave: its clock, markers, status, and per GPU the counter at
/// both ends and the clock-event reasons seen.
struct ChildRun {
    started_unix_s: f64,
    ran_s: f64,
    exit: ExitReport,
    markers: Vec<(f64, Marker)>,
    problems: Vec<String>,
    energy_mj: Vec<(Option<u64>, Option<u64>)>,
    clock_events: Vec<BTreeMap<String, usize>>,
    clock_polls: usize,
}

/// Spawn the command, pass its output through while timing its markers, poll clock
/// reasons and RAPL every 100 ms, forward interrupts, and wait for it.
fn run_child(
    cfg: &MeasureConfig,
    meters: &[GpuMeter],
    rapl: Option<&mut RaplMeter>,
    interrupts: &dyn Fn() -> usize,
) -> Result<ChildRun> {
    let mut problems = Vec::new();
    let fifo = fifo::PhaseFifo::create();
    let mut cmd = Command::new(&cfg.command[0]);
    cmd.args(&cfg.command[1..])
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    match &fifo {
        Ok(f) => {
            cmd.env("PERFWATT_PHASE_FIFO", f.path());
        }
        Err(e) => problems.push(format!(
            "no marker FIFO ({e}); markers on stdout/stderr only"
        )),
    }
    if std::env::var_os("PYTHONUNBUFFERED").is_none() {
        cmd.env("PYTHONUNBUFFERED", "1");
    }
    let e0: Vec<_> = meters.iter().map(|g| g.energy_mj()).collect();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Config(format!("cannot run `{}`: {e}", cfg.command.join(" "))))?;
    let (tx, rx) = mpsc::channel::<(f64, Vec<u8>)>();
    let readers = [
        pass_through(
            child.stdout.take().map(|p| Box::new(p) as _),
            false,
            tx.clone(),
            t0,
        ),
        pass_through(
            child.stderr.take().map(|p| Box::new(p) as _),
            true,
            tx.clone(),
            t0,
        ),
    ];
    let listener = fifo.as_ref().ok().map(|f| f.listen(tx, t0));
    let waited = wait(&mut child, meters, rapl, interrupts)?;
    let ran_s = t0.elapsed().as_secs_f64();
    let e1: Vec<_> = meters.iter().map(|g| g.energy_mj()).collect();
    // Output still in flight reaches the terminal; a grandchild that keeps the pipes open
    // does not hold the report up for more than a second.
    let deadline = Instant::now() + Duration::from_secs(1);
    for r in readers.into_iter().flatten() {
        while !r.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    if let (Some(l), Ok(f)) = (listener, &fifo) {
        f.stop();
        let _ = l.join();
    }
    let mut markers = Vec::new();
    for (t, line) in rx.try_iter() {
        match phases::parse_marker(&line) {
            Some(Ok(m)) => markers.push((t, m)),
            Some(Err(e)) => problems.push(format!("at {t:.3} s: {e}")),
            None => {}
        }
    }
    markers.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (code, signal) = (waited.status.code(), waited.status.signal());
    Ok(ChildRun {
        started_unix_s,
        ran_s,
        exit: ExitReport {
            code,
            signal,
            exit_code: code.unwrap_or_else(|| 128 + signal.unwrap_or(0)),
            interrupts: waited.forwarded,
        },
        markers,
        problems,
        energy_mj: e0.into_iter().zip(e1).collect(),
        clock_events: waited.clock_events,
        clock_polls: waited.clock_polls,
    })
}

/// How the wait for the command went.
struct Waited {
    status: std::process::ExitStatus,
    clock_events: Vec<BTreeMap<String, usize>>,
    clock_polls: usize,
    forwarded: usize,
}

/// Wait for the command: forward interrupts to its process group, poll the GPUs'
/// clock-event reasons and RAPL every 100 ms.
fn wait(
    child: &mut std::process::Child,
    meters: &[GpuMeter],
    mut rapl: Option<&mut RaplMeter>,
    interrupts: &dyn Fn() -> usize,
) -> Result<Waited> {
    let mut clock_events = vec![BTreeMap::new(); meters.len()];
    let (mut clock_polls, mut forwarded) = (0, 0);
    let mut last_poll = Instant::now() - Duration::from_secs(1);
    let status = loop {
        if let Some(s) = child
            .try_wait()
            .map_err(|e| Error::Config(format!("waiting for the command: {e}")))?
        {
            break s;
        }
        let asked = interrupts();
        if asked > forwarded {
            let sig = if asked == 1 {
                libc::SIGINT
            } else {
                libc::SIGKILL
            };
            // SAFETY: kill(2) on the child's own process group (its pid, process_group(0)).
            unsafe { libc::kill(-(child.id() as i32), sig) };
            forwarded = asked;
        }
        if last_poll.elapsed() >= Duration::from_millis(100) {
            last_poll = Instant::now();
            clock_polls += 1;
            for (k, g) in meters.iter().enumerate() {
                for r in g.clock_events() {
                    *clock_events[k].entry(r).or_insert(0) += 1;
                }
            }
            if let Some(r) = rapl.as_deref_mut() {
                r.poll();
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Ok(Waited {
        status,
        clock_events,
        clock_polls,
        forwarded,
    })
}

/// Copy `pipe` line by line to perfwatt's stdout (or stderr), sending each marker line
/// with the time it was read (seconds since `t0`).
fn pass_through(
    pipe: Option<Box<dyn std::io::Read + Send>>,
    to_stderr: bool,
    tx: mpsc::Sender<(f64, Vec<u8>)>,
    t0: Instant,
) -> Option<std::thread::JoinHandle<()>> {
    let pipe = pipe?;
    Some(std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let t = t0.elapsed().as_secs_f64();
            // A closed terminal must not stop the command's measurement: errors ignored.
            if to_stderr {
                let _ = std::io::stderr().lock().write_all(&line);
            } else {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&line).and_then(|_| out.flush());
            }
            if memchr::memmem::find(&line, phases::MARKER.as_bytes()).is_some() {
                let _ = tx.send((t, line.clone()));
            }
        }
    }))
}

/// The GPU's figures over the command: counter energy at both ends, power statistics of
/// the samples inside [0, duration].
fn gpu_use(
    g: &GpuMeter,
    child: &ChildRun,
    k: usize,
    idle: Option<IdleEstimate>,
    samples: &[PowerSample],
    sample_hz: f64,
) -> GpuUse {
    let (e0, e1) = child.energy_mj[k];
    let window = crate::energy::EnergyWindow::between(e0, e1, child.ran_s);
    let inside: Vec<&PowerSample> = samples
        .iter()
        .filter(|s| s.t_s >= 0.0 && s.t_s <= child.ran_s)
        .collect();
    let col = |f: &dyn Fn(&PowerSample) -> Option<f64>| -> Vec<f64> {
        inside.iter().filter_map(|s| f(s)).collect()
    };
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let max = |v: &[f64]| v.iter().copied().reduce(f64::max);
    let avg_field = col(&|s| s.power_w);
    let instant = col(&|s| s.power_instant_w);
    let clock = col(&|s| s.sm_clock_mhz.map(f64::from));
    let readings: Vec<(f64, u64)> = samples
        .iter()
        .filter_map(|s| Some((s.t_s, s.energy_mj?)))
        .collect();
    GpuUse {
        index: g.index(),
        name: g.name.clone(),
        uuid: g.uuid.clone(),
        energy_j: window.map(|w| w.joules),
        avg_w: window.map(|w| w.avg_w()),
        above_idle_j: window
            .zip(idle.as_ref())
            .map(|(w, i)| w.above_idle(i.median_w)),
        idle,
        counter_period_s: crate::energy::counter_period_s(&readings),
        power_avg_field_mean_w: mean(&avg_field),
        power_avg_field_max_w: max(&avg_field),
        power_instant_mean_w: mean(&instant),
        power_instant_max_w: max(&instant),
        sm_clock_median_mhz: crate::stats::percentile(&clock, 50.0),
        sm_clock_min_mhz: clock.iter().copied().reduce(f64::min),
        util_mean_pct: mean(&col(&|s| s.gpu_util_pct.map(f64::from))),
        mem_used_max_mb: max(&col(&|s| s.mem_used_mb)),
        clock_events: child.clock_events[k].clone(),
        clock_polls: child.clock_polls,
        samples: inside.len(),
        sample_hz,
    }
}

/// A GPU's energy counter (J) against the command's clock: the sampler's readings and the
/// two exact ones at spawn and exit, so a phase that ends with the command has both edges.
fn counter_series(
    samples: &[PowerSample],
    (at_spawn, at_exit): (Option<u64>, Option<u64>),
    ran_s: f64,
) -> Vec<(f64, f64)> {
    let mut c: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|x| Some((x.t_s, x.energy_mj? as f64 / 1000.0)))
        .chain(at_spawn.map(|e| (0.0, e as f64 / 1000.0)))
        .chain(at_exit.map(|e| (ran_s, e as f64 / 1000.0)))
        .collect();
    c.sort_by(|a, b| a.0.total_cmp(&b.0));
    c
}

/// A phase's energy on every GPU: its counter series (J) interpolated at the phase's edges.
fn phase_report(w: PhaseWindow, gpus: &[GpuUse], counters: &[Vec<(f64, f64)>]) -> PhaseReport {
    let duration_s = w.duration_s();
    let energy = gpus
        .iter()
        .zip(counters)
        .map(|(g, counter)| {
            let at = |t: f64| crate::energy::interpolate(counter, t);
            let energy_j = at(w.end_s).zip(at(w.start_s)).map(|(b, a)| b - a);
            let counter_updates = g.counter_period_s.map(|p| duration_s / p);
            PhaseEnergy {
                gpu: g.index,
                energy_j,
                above_idle_j: energy_j
                    .zip(g.idle.as_ref())
                    .map(|(e, i)| e - i.median_w * duration_s),
                avg_w: energy_j
                    .filter(|_| duration_s > 0.0)
                    .map(|e| e / duration_s),
                counter_updates,
                resolved: counter_updates.is_some_and(|u| u >= MIN_UPDATES),
            }
        })
        .collect();
    PhaseReport {
        window: w,
        duration_s,
        energy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter that steps 10 J every 100 ms (1 J per 10 ms sample when averaged), sampled
    /// every 10 ms until 5 ms before the exit at 1.0 s.
    fn stepping() -> Vec<PowerSample> {
        (-5..100)
            .map(|i| PowerSample {
                t_s: i as f64 * 0.01 - 0.005,
                phase: crate::energy::Phase::Idle,
                power_w: None,
                power_instant_w: None,
                energy_mj: Some(1_000_000 + 10_000 * ((i + 5) / 10) as u64),
                gpu_util_pct: None,
                sm_clock_mhz: None,
                mem_used_mb: None,
            })
            .collect()
    }

    #[test]
    fn phases_take_the_counter_at_their_edges_and_short_ones_are_flagged() {
        let s = stepping();
        let counter = counter_series(&s, (Some(1_000_000), Some(1_100_000)), 1.0);
        let gpu = GpuUse {
            counter_period_s: Some(0.1),
            idle: IdleEstimate::of(vec![50.0], vec![], 1.0),
            ..Default::default()
        };
        let w = |a: f64, b: f64| PhaseWindow {
            name: "p".into(),
            start_s: a,
            end_s: b,
            closed_by_exit: b == 1.0,
        };
        // Ends with the command, after the last sample: the exact exit reading closes it.
        let p = phase_report(
            w(0.5, 1.0),
            std::slice::from_ref(&gpu),
            std::slice::from_ref(&counter),
        );
        let e = &p.energy[0];
        assert!(
            e.resolved && (e.energy_j.unwrap() - 50.0).abs() < 1.5,
            "{e:?}"
        );
        assert!((e.above_idle_j.unwrap() - (e.energy_j.unwrap() - 25.0)).abs() < 1e-9);
        // 0.2 s is 2 counter updates: reported, flagged.
        let p = phase_report(w(0.3, 0.5), &[gpu], &[counter]);
        let e = &p.energy[0];
        assert!(
            !e.resolved && (e.counter_updates.unwrap() - 2.0).abs() < 1e-9,
            "{e:?}"
        );
        assert!((e.energy_j.unwrap() - 20.0).abs() < 1.5, "{e:?}");
    }
}

/// The FIFO a command may write markers to (`$PERFWATT_PHASE_FIFO`) when its stdout is
/// not line-oriented or not its own.
mod fifo {
    use std::ffi::CString;
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Instant;

    pub struct PhaseFifo {
        path: PathBuf,
        stop: Arc<AtomicBool>,
    }

    impl PhaseFifo {
        /// A new FIFO in the temp folder (removed on drop).
        pub fn create() -> Result<Self, String> {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "perfwatt-{}-{}.phase",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
            // SAFETY: a NUL-terminated path; mkfifo(3) only creates a file.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                return Err(format!(
                    "{}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                ));
            }
            Ok(PhaseFifo {
                path,
                stop: Arc::new(AtomicBool::new(false)),
            })
        }

        pub fn path(&self) -> &Path {
            &self.path
        }

        /// Read lines from the FIFO until `stop`, sending each with its time since `t0`.
        /// Opened read-write, so the open never blocks and writers may come and go; polled
        /// every 50 ms so `stop` is seen.
        pub fn listen(
            &self,
            tx: mpsc::Sender<(f64, Vec<u8>)>,
            t0: Instant,
        ) -> std::thread::JoinHandle<()> {
            let (path, stop) = (self.path.clone(), self.stop.clone());
            std::thread::spawn(move || {
                use std::os::fd::AsRawFd;
                let Ok(mut f) = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&path)
                else {
                    return;
                };
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let mut pfd = libc::pollfd {
                        fd: f.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd for the duration of the call.
                    if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
                        continue;
                    }
                    let Ok(n) = f.read(&mut buf) else { continue };
                    let t = t0.elapsed().as_secs_f64();
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(i) = memchr::memchr(b'\n', &pending) {
                        let line: Vec<u8> = pending.drain(..=i).collect();
                        let _ = tx.send((t, line));
                    }
                }
            })
        }

        pub fn stop(&self) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    impl Drop for PhaseFifo {
        fn drop(&mut self) {
            self.stop();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
