//! A measured command's files: `measure.json`, `power.csv` (one row per GPU sample, the
//! command's clock), `report.md` with a power-over-time plot per GPU (phases shaded), and
//! the trace-event timeline when asked.
//!
//! In: a `Measurement`. Out: the files, written atomically; their paths.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{GpuUse, MeasureReport, Measurement, MIN_UPDATES};
use crate::energy::PowerSample;
use crate::error::Result;
use crate::files::write_atomic;
use crate::render::plot::{both, power_over_time, render};
use crate::render::section::{image_links, table, Align};
use crate::timeline::{Process, Span};

/// Write every file of `m` into `dir` (and the timeline to `trace`); returns their paths,
/// report.md first.
pub fn write(m: &Measurement, dir: &Path, trace: Option<&Path>) -> Result<Vec<PathBuf>> {
    let r = &m.report;
    let json = dir.join("measure.json");
    write_atomic(
        &json,
        (serde_json::to_string_pretty(r).expect("serializable") + "\n").as_bytes(),
    )?;
    let mut files = vec![dir.join("report.md"), json];
    if !m.samples.is_empty() {
        let csv = dir.join("power.csv");
        write_atomic(&csv, power_csv(m).as_bytes())?;
        files.push(csv);
    }
    let plots = plots(m, &dir.join("plots"))?;
    write_atomic(&files[0], markdown(r, &plots).as_bytes())?;
    files.extend(plots);
    if let Some(t) = trace {
        crate::timeline::write(
            t,
            &timeline(m),
            serde_json::json!({"schema": r.schema, "command": r.command,
                "started_unix_s": r.started_unix_s}),
        )?;
        files.push(t.to_path_buf());
    }
    Ok(files)
}

/// Long format, one row per (GPU, sample): what pandas and spreadsheets read. Energy is the
/// counter since the spawn; an empty cell is a field the GPU did not answer.
fn power_csv(m: &Measurement) -> String {
    let mut out = String::from(
        "gpu,t_s,power_w,power_instant_w,energy_j,gpu_util_pct,sm_clock_mhz,mem_used_mb\n",
    );
    let cell = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x}"));
    for (gpu, samples) in &m.samples {
        let e0 = counter_at_spawn(samples);
        for s in samples {
            let _ = writeln!(
                out,
                "{gpu},{:.6},{},{},{},{},{},{}",
                s.t_s,
                cell(s.power_w),
                cell(s.power_instant_w),
                cell(s.energy_mj.zip(e0).map(|(e, a)| (e as f64 - a) / 1000.0)),
                cell(s.gpu_util_pct.map(f64::from)),
                cell(s.sm_clock_mhz.map(f64::from)),
                cell(s.mem_used_mb),
            );
        }
    }
    out
}

/// The counter (mJ) interpolated at the spawn, t = 0.
fn counter_at_spawn(samples: &[PowerSample]) -> Option<f64> {
    let c: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| Some((s.t_s, s.energy_mj? as f64)))
        .collect();
    crate::energy::interpolate(&c, 0.0).or_else(|| c.first().map(|p| p.1))
}

fn spans(r: &MeasureReport) -> Vec<(String, f64, f64)> {
    r.phases
        .iter()
        .map(|p| (p.window.name.clone(), p.window.start_s, p.window.end_s))
        .collect()
}

fn plots(m: &Measurement, dir: &Path) -> Result<Vec<PathBuf>> {
    let spans = spans(&m.report);
    let mut out = Vec::new();
    for ((gpu, samples), g) in m.samples.iter().zip(&m.report.gpus) {
        let inside: Vec<&PowerSample> = samples
            .iter()
            .filter(|s| s.t_s >= 0.0 && s.t_s <= m.report.duration_s)
            .collect();
        if inside.is_empty() {
            continue;
        }
        let t: Vec<f64> = inside.iter().map(|s| s.t_s).collect();
        let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
        let w: Vec<f64> = inside.iter().map(|s| nan(s.power_w)).collect();
        let inst: Vec<f64> = inside.iter().map(|s| nan(s.power_instant_w)).collect();
        let title = format!("GPU {gpu} ({}): power while the command ran", g.name);
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
        out.push(render(
            dir,
            &format!("power-gpu{gpu}"),
            (1000, 420),
            both!(|root| { power_over_time(&root, &title, &t, &w, &inst, &spans) }),
        )?);
    }
    Ok(out)
}

/// The command as a shell would take it back: words with blanks or quotes single-quoted.
fn shell_line(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn f(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.digits$}"))
}

fn markdown(r: &MeasureReport, plots: &[PathBuf]) -> String {
    [
        header(r),
        gpus_section(r),
        phases_section(r),
        cpu_section(r),
        image_links(plots),
        notes(r),
    ]
    .concat()
}

fn header(r: &MeasureReport) -> String {
    let how = match (r.exit.code, r.exit.signal) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!(
            "was ended by signal {s} (perfwatt exits {})",
            r.exit.exit_code
        ),
        _ => "ended".into(),
    };
    let stopped = match r.exit.interrupts {
        0 => String::new(),
        1 => " after perfwatt forwarded an interrupt (SIGINT)".into(),
        _ => " after perfwatt forwarded an interrupt, then SIGKILL".into(),
    };
    format!(
        "# perfwatt measure\n\n```sh\n{}\n```\n\nThe command ran {:.3} s and {how}{stopped}. Power sampled every {} ms. Data: `measure.json`{}.\n\n",
        shell_line(&r.command),
        r.duration_s,
        r.interval_ms,
        if r.gpus.is_empty() { "" } else { ", `power.csv`" }
    )
}

fn gpus_section(r: &MeasureReport) -> String {
    let mut md = String::from("## GPU energy over the command's lifetime\n\n");
    if let Some(why) = &r.energy_reason {
        let _ = writeln!(md, "No GPU energy: {why}.\n");
        return md;
    }
    let rows: Vec<Vec<String>> = r.gpus.iter().map(gpu_row).collect();
    md += &table(
        &[
            ("GPU", Align::Left),
            ("energy (J)", Align::Right),
            ("avg power (W)", Align::Right),
            ("idle (W)", Align::Right),
            ("above idle (J)", Align::Right),
            ("power, averaged field mean / max (W)", Align::Right),
            ("power, instantaneous mean / max (W)", Align::Right),
            ("SM clock median / min (MHz)", Align::Right),
            ("util (%)", Align::Right),
            ("memory max (MB)", Align::Right),
            ("clock events (polls)", Align::Left),
        ],
        rows,
    );
    md + "\n"
}

fn gpu_row(g: &GpuUse) -> Vec<String> {
    let pair = |a: Option<f64>, b: Option<f64>, d: usize| format!("{} / {}", f(a, d), f(b, d));
    let events = if g.clock_events.is_empty() {
        "none".to_string()
    } else {
        g.clock_events
            .iter()
            .map(|(k, n)| format!("{k} {n}/{}", g.clock_polls))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        format!("{} {}", g.index, g.name),
        f(g.energy_j, 3),
        f(g.avg_w, 1),
        f(g.idle.as_ref().map(|i| i.median_w), 1),
        f(g.above_idle_j, 3),
        pair(g.power_avg_field_mean_w, g.power_avg_field_max_w, 1),
        pair(g.power_instant_mean_w, g.power_instant_max_w, 1),
        pair(g.sm_clock_median_mhz, g.sm_clock_min_mhz, 0),
        f(g.util_mean_pct, 0),
        f(g.mem_used_max_mb, 0),
        events,
    ]
}

fn phases_section(r: &MeasureReport) -> String {
    let mut md = String::from("## Phases\n\n");
    if r.phases.is_empty() {
        md += "The command printed no `PERFWATT_PHASE` markers (`perfwatt measure --help` shows how).\n\n";
        return md;
    }
    let rows: Vec<Vec<String>> = r
        .phases
        .iter()
        .map(|p| {
            let mut row = vec![
                p.window.name.clone(),
                format!("{:.3}", p.window.start_s),
                format!(
                    "{:.3}{}",
                    p.duration_s,
                    if p.window.closed_by_exit {
                        " (open at exit)"
                    } else {
                        ""
                    }
                ),
            ];
            for e in &p.energy {
                let flag = if e.resolved { "" } else { " (unresolved)" };
                row.push(format!("{}{flag}", f(e.energy_j, 3)));
                row.push(f(e.above_idle_j, 3));
            }
            row
        })
        .collect();
    let mut cols = vec![
        ("phase".to_string(), Align::Left),
        ("start (s)".to_string(), Align::Right),
        ("duration (s)".to_string(), Align::Right),
    ];
    for g in &r.gpus {
        cols.push((format!("GPU {} energy (J)", g.index), Align::Right));
        cols.push((format!("GPU {} above idle (J)", g.index), Align::Right));
    }
    let cols: Vec<(&str, Align)> = cols.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    md += &table(&cols, rows);
    if r.phases.iter().flat_map(|p| &p.energy).any(|e| !e.resolved) {
        let _ = writeln!(
            md,
            "\n(unresolved): the phase spans fewer than {MIN_UPDATES} updates of the GPU's energy counter (or the update period is unknown), so its energy is an interpolation between counter steps, not a measurement; lengthen or repeat it."
        );
    }
    md + "\n"
}

fn cpu_section(r: &MeasureReport) -> String {
    let c = &r.cpu;
    match &c.reason {
        Some(why) => format!("## CPU energy (RAPL)\n\nNot measured: {why}.\n\n"),
        None => {
            let mut md = format!(
                "## CPU energy (RAPL)\n\nPackages {} J, DRAM {} J over the command.\n\n",
                f(c.cpu_j, 3),
                f(c.dram_j, 3)
            );
            for d in &c.domains {
                let _ = writeln!(
                    md,
                    "- `{}` {}: {:.3} J ({} wraps)",
                    d.zone, d.name, d.joules, d.wraps
                );
            }
            md + "\n"
        }
    }
}

fn notes(r: &MeasureReport) -> String {
    let mut md = String::from("## How this was measured\n\n");
    md += "- Energy is the GPU's total-energy counter (NVML, mJ) read at the spawn and at the exit; idle is the median of counter windows before (and after) the command, and above-idle energy subtracts it over the command's duration.\n";
    md += "- Phases are timed when perfwatt reads their marker line from the command's stdout/stderr or from `$PERFWATT_PHASE_FIFO`: a program that buffers its output shifts them (Python runs with PYTHONUNBUFFERED=1; flush elsewhere). A phase's energy is the counter interpolated between samples at its edges.\n";
    for g in &r.gpus {
        let _ = writeln!(
            md,
            "- GPU {}: the energy counter moved every {} s (median, from the samples: resolution {} ms); {} samples at {:.1} Hz.",
            g.index,
            f(g.counter_period_s, 3),
            r.interval_ms,
            g.samples,
            g.sample_hz
        );
    }
    for p in &r.marker_problems {
        let _ = writeln!(md, "- Marker problem: {p}");
    }
    md
}

/// The command's process (the run and its phases as spans) and one process per GPU with
/// its counter tracks.
fn timeline(m: &Measurement) -> Vec<Process> {
    let r = &m.report;
    let mut cmd = Process {
        name: format!("command: {}", shell_line(&r.command)),
        ..Default::default()
    };
    cmd.spans.push(Span {
        name: "command".into(),
        start_s: 0.0,
        end_s: r.duration_s,
        args: serde_json::json!({"exit_code": r.exit.exit_code}),
    });
    for p in &r.phases {
        cmd.spans.push(Span {
            name: p.window.name.clone(),
            start_s: p.window.start_s,
            end_s: p.window.end_s,
            args: serde_json::json!({"energy": p.energy}),
        });
    }
    let mut out = vec![cmd];
    for ((gpu, samples), g) in m.samples.iter().zip(&r.gpus) {
        out.push(Process {
            name: format!("GPU {gpu} ({})", g.name),
            spans: Vec::new(),
            counters: crate::timeline::gpu_counters(samples, counter_at_spawn(samples)),
        });
    }
    out
}
