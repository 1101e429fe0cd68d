//! perfwatt command line: a thin layer over the library. Each subcommand is one job:
//! its flags become the library's config (`cli`), the library runs it, and this file
//! shows progress and prints the result.

mod cli;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use clap::Parser;
use cli::{Cli, Cmd, SimArgs, SimFormat, TableFormat, TogglesArgs};
use perfwatt::Result;

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Toggles(a) => toggles(&a),
        Cmd::Sim(a) => sim(&a),
        Cmd::Infer(a) => match &a.devices {
            Some(list) => {
                infer_devices(&a.config(), &perfwatt::model::parse_devices(list)?, &a.out)
            }
            None => infer(&a.config(), a.capture.as_deref(), &a.out),
        },
        Cmd::Sweep(a) if a.slurm => sweep_slurm(&a),
        Cmd::Sweep(a) => sweep(&a.spec, a.out, a.report, a.devices.as_deref()),
        Cmd::Collect { run_dir, report } => collect(&run_dir, report),
        Cmd::SweepTask { run_dir, key } => {
            let stop = interrupt_flag();
            perfwatt::sweep::run_point(&run_dir, &key, &|| stop.load(Ordering::Relaxed)).map(|_| ())
        }
        Cmd::SweepPoint {
            config,
            out,
            capture,
        } => perfwatt::sweep::run_replicate(&config, &out, capture.as_deref()),
        Cmd::Report { run_dir } => {
            println!("{}", perfwatt::report::write_report(&run_dir)?.display());
            Ok(())
        }
        Cmd::Demo { out } => sweep(
            &perfwatt::asset_path("experiments/cpu-demo.toml"),
            Some(out),
            true,
            None,
        ),
        Cmd::Cells { liberty, map } => cells(&liberty, map.as_deref()),
        Cmd::Roofline(a) => roofline(&a.config()?, &a.out_dir()),
        Cmd::GemmEnergy(a) => match &a.devices {
            Some(list) => gemm_energy_devices(
                &a.config()?,
                &perfwatt::model::parse_devices(list)?,
                &a.out_dir(),
            ),
            None => gemm_energy(&a.config()?, &a.out_dir()),
        },
    }
}

fn toggles(a: &TogglesArgs) -> Result<()> {
    let report = a.count()?;
    if let Some(out) = &a.saif {
        perfwatt::error::write_atomic(out, perfwatt::vcd::saif::to_saif(&report).as_bytes())?;
    }
    let text = match a.format {
        TableFormat::Table => report.to_table(a.top),
        TableFormat::Json => serde_json::to_string_pretty(&report).expect("serializable") + "\n",
        TableFormat::Csv => report.to_csv(),
    };
    print!("{text}");
    Ok(())
}

fn sim(a: &SimArgs) -> Result<()> {
    let stream = a.stream()?;
    if let Some(path) = &a.export {
        return export_stream(&stream, path, a.export_design(), a.lanes);
    }
    let counting = a.counting();
    let gate = a.gate_options()?;
    let n = stream.pairs.len() as u64;
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for d in a.designs() {
        // Under `--design all`, a design that cannot take this stream is skipped, saying why.
        if let Err(why) = d.params_for(&stream, a.lanes) {
            if a.skip_unfit() {
                eprintln!("perfwatt: skipped {why}");
                continue;
            }
            return Err(why);
        }
        let bar = progress_bar(n, &format!("sim {}", d.name()));
        let r = perfwatt::sim::simulate_threads(
            d,
            a.lanes,
            &stream,
            &counting,
            a.threads(),
            &mut |done| bar.set_position(done),
        );
        bar.finish_and_clear();
        // One design's failure does not stop the others; the run still fails at the end.
        match r {
            Ok(r) => results.push(r),
            Err(e) => failed.push(e.to_string()),
        }
        if let Some(opts) = &gate {
            let bar = progress_bar(n, &format!("gate {} (first run synthesizes)", d.name()));
            let r = perfwatt::sim::simulate_gate(d, a.lanes, &stream, opts, &mut |done| {
                bar.set_position(done)
            });
            bar.finish_and_clear();
            match r {
                Ok(r) => results.push(r),
                Err(e) => failed.push(e.to_string()),
            }
        }
    }
    let report = perfwatt::sim::SimReport::new(&stream, results);
    match a.format {
        SimFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serializable")
        ),
        SimFormat::Table => print!("{}", report.to_table()),
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(perfwatt::Error::Sim(failed.join("; ")))
    }
}

/// `perfwatt cells`: a Liberty file's numbers as a cell table.
fn cells(liberty: &Path, map: Option<&str>) -> Result<()> {
    use perfwatt::sim::gate::{CellKind, CellTable};
    let mut names = CellTable::shipped().cell_names()?;
    for pair in map.unwrap_or("").split(',').filter(|p| !p.is_empty()) {
        let (k, cell) = pair
            .split_once('=')
            .ok_or_else(|| perfwatt::Error::Config(format!("--map: {pair} is not KIND=CELL")))?;
        let kind = CellKind::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(k))
            .ok_or_else(|| perfwatt::Error::Config(format!("--map: no generic cell {k}")))?;
        names.insert(kind, cell.to_string());
    }
    let table = CellTable::from_liberty(liberty, &names)?;
    print!("{}", table.to_toml());
    Ok(())
}

/// `sim --export`: the stream as CSV (by extension) or as iverilog stimulus for `design`
/// (a dot unit with `lanes` lanes).
fn export_stream(
    stream: &perfwatt::trace::OperandStream,
    path: &Path,
    design: perfwatt::sim::Design,
    lanes: u32,
) -> Result<()> {
    let bytes = if path.extension().is_some_and(|e| e == "csv") {
        let mut v = Vec::new();
        stream
            .write_csv(&mut v)
            .map_err(|e| perfwatt::Error::io(path, e))?;
        v
    } else {
        perfwatt::sim::stimulus_hex(stream, design, lanes)?.into_bytes()
    };
    perfwatt::error::write_atomic(path, &bytes)
}

fn infer(cfg: &perfwatt::capture::InferConfig, capture: Option<&Path>, out: &Path) -> Result<()> {
    let bar = progress_bar((cfg.warmup + cfg.repeats) as u64, "infer runs");
    let stop = interrupt_flag();
    let (report, samples) = perfwatt::capture::run_infer(
        cfg,
        capture,
        perfwatt::capture::Progress {
            on_step: &mut |done, _| bar.set_position(done as u64),
            interrupted: &|| stop.load(Ordering::Relaxed),
            sync: None,
        },
    )?;
    bar.finish_and_clear();
    let power = perfwatt::capture::write_report(&report, &samples, out)?;
    print!("{}", infer_summary(&report));
    println!("wrote {} and {}", out.display(), power.display());
    if let Some(c) = &report.capture {
        println!(
            "captured {} operand pairs into {}",
            c["pairs"],
            c["file"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `infer --devices`: every device at once, one progress bar each.
fn infer_devices(
    cfg: &perfwatt::capture::InferConfig,
    devices: &[String],
    out: &Path,
) -> Result<()> {
    let bars = indicatif::MultiProgress::new();
    let runs = (cfg.warmup + cfg.repeats) as u64;
    let per_device: Vec<_> = devices
        .iter()
        .map(|d| bars.add(progress_bar(runs, &format!("{d} runs"))))
        .collect();
    let stop = interrupt_flag();
    let run = perfwatt::capture::run_infer_devices(
        cfg,
        devices,
        perfwatt::capture::DevicesProgress {
            on_step: &|i, done, _| per_device[i].set_position(done as u64),
            interrupted: &|| stop.load(Ordering::Relaxed),
        },
    )?;
    per_device.iter().for_each(|b| b.finish_and_clear());
    let files = perfwatt::capture::write_devices_report(&run, out)?;
    for (d, (r, _)) in devices.iter().zip(&run.reports) {
        println!("--- {d}");
        print!("{}", infer_summary(r));
    }
    print!("{}", host_summary(&run.host));
    println!(
        "wrote {}",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn host_summary(h: &perfwatt::capture::HostSummary) -> String {
    let e = &h.energy;
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or_else(|| "n/a".into(), f);
    let gpus: Vec<String> = e
        .per_gpu
        .iter()
        .map(|g| format!("{} {}", g.device, opt(g.joules, &|j| format!("{j:.1} J"))))
        .collect();
    format!(
        "--- host: {} devices, one window of {:.2} s\n\
         latency p50 {:.3} s  p99 {:.3} s | TTFT p50 {:.3} s | TPOT p50 {:.4} s  p99 {:.4} s (pooled: {} steps)\n\
         tokens/s output {:.1} ({} tokens) | same tokens on every device: {}\n\
         energy {} ({}) | one window over all GPUs {} (sum {}) | J/token {} above idle {} | avg W {}\n{}",
        h.devices.len(),
        h.window_s,
        h.latency_s.p50,
        h.latency_s.p99,
        h.ttft_s.p50,
        h.tpot_s.p50,
        h.tpot_s.p99,
        h.tpot_s.samples,
        h.tokens_per_s_output,
        h.output_tokens,
        h.same_tokens,
        opt(e.joules, &|j| format!("{j:.1} J")),
        gpus.join(" + "),
        opt(e.one_window_joules, &|j| format!("{j:.1} J")),
        opt(e.sum_vs_one_window_pct, &|p| format!("{p:+.2}%")),
        opt(e.j_per_token, &|j| format!("{j:.4}")),
        opt(e.j_per_token_above_idle, &|j| format!("{j:.4}")),
        opt(e.avg_w, &|w| format!("{w:.1}")),
        e.reason.as_ref().map_or_else(String::new, |r| format!("energy n/a: {r}\n")),
    )
}

fn roofline(cfg: &perfwatt::roofline::RooflineConfig, out: &Path) -> Result<()> {
    let bar = progress_bar(0, "roofline");
    let stop = interrupt_flag();
    let report = perfwatt::roofline::run_roofline(
        cfg,
        out,
        perfwatt::roofline::Hooks {
            on_kernel: &mut item_progress(&bar),
            interrupted: &|| stop.load(Ordering::Relaxed),
        },
    )?;
    bar.finish_and_clear();
    print!("{}", perfwatt::roofline::to_table(&report));
    println!(
        "wrote {0}/roofline.json, roofline.csv, roofline.png, roofline.svg",
        out.display()
    );
    Ok(())
}

fn gemm_energy(cfg: &perfwatt::gemm_energy::GemmConfig, out: &Path) -> Result<()> {
    let bar = progress_bar(0, "gemm-energy");
    let stop = interrupt_flag();
    let report = perfwatt::gemm_energy::run_gemm_energy(
        cfg,
        out,
        perfwatt::gemm_energy::Hooks {
            on_point: &mut item_progress(&bar),
            interrupted: &|| stop.load(Ordering::Relaxed),
        },
    )?;
    bar.finish_and_clear();
    println!(
        "{} patterns on {}; wrote {}/report.md, results.csv, results.json",
        report.points.len(),
        report.device,
        out.display()
    );
    Ok(())
}

/// `gemm-energy --devices`: every GPU at once, one progress bar each.
fn gemm_energy_devices(
    cfg: &perfwatt::gemm_energy::GemmConfig,
    devices: &[String],
    out: &Path,
) -> Result<()> {
    let bars = indicatif::MultiProgress::new();
    let per_device: Vec<_> = devices
        .iter()
        .map(|d| bars.add(progress_bar(0, d)))
        .collect();
    let stop = interrupt_flag();
    let cmp = perfwatt::gemm_energy::devices::run_gemm_energy_devices(
        cfg,
        devices,
        out,
        perfwatt::gemm_energy::devices::DevicesHooks {
            on_point: &|i, k, n, what| {
                let bar = &per_device[i];
                bar.set_length(n as u64);
                bar.set_position(k as u64);
                bar.set_message(format!("{}: {what}", devices[i]));
            },
            interrupted: &|| stop.load(Ordering::Relaxed),
        },
    )?;
    per_device.iter().for_each(|b| b.finish_and_clear());
    for d in &cmp.devices {
        println!(
            "{} ({}): median J/GEMM ratio to {} {}, Spearman {:?}",
            d.device,
            d.gpu,
            devices[0],
            d.median_ratio_to_first
                .map_or_else(|| "n/a".into(), |r| format!("{r:.4}")),
            d.spearman_to_first
        );
    }
    println!(
        "{} patterns on {} devices; wrote {}/devices.md, devices.csv, devices.json and a run folder per device",
        cmp.patterns.len(),
        devices.len(),
        out.display()
    );
    Ok(())
}

fn sweep(
    spec_path: &Path,
    out: Option<std::path::PathBuf>,
    report: bool,
    devices: Option<&str>,
) -> Result<()> {
    let spec = perfwatt::sweep::SweepSpec::read(spec_path)?;
    let text = std::fs::read_to_string(spec_path).map_err(|e| perfwatt::Error::io(spec_path, e))?;
    let dir = out.unwrap_or_else(|| perfwatt::sweep::default_run_dir(&spec));
    let devices = match devices {
        Some(list) => {
            if let Some(p) = spec.points().iter().find(|p| p.cfg.device == "cpu") {
                return Err(perfwatt::Error::Config(format!(
                    "--devices runs GPU points, one per GPU; point {} is on the cpu (make the spec's device axis [\"cuda\"])",
                    p.key()
                )));
            }
            perfwatt::model::parse_devices(list)?
        }
        None => Vec::new(),
    };
    let total = (spec.points().len() * spec.replicates.max(1)) as u64;
    let bar = progress_bar(total, "sweep runs");
    let stop = interrupt_flag();
    let rows = perfwatt::sweep::run_sweep(
        &spec,
        &text,
        &dir,
        &devices,
        perfwatt::sweep::SweepHooks {
            on_point: &mut |done, _, key| {
                bar.set_position(done as u64);
                if let Some(k) = key {
                    bar.set_message(k.to_string());
                }
            },
            interrupted: &|| stop.load(Ordering::Relaxed),
        },
    )?;
    bar.finish_and_clear();
    println!("{} points in {}/results.csv", rows.len(), dir.display());
    if report {
        println!(
            "report: {}",
            perfwatt::report::write_report(&dir)?.display()
        );
    }
    Ok(())
}

/// `sweep --slurm`: write and submit the job array of the points without a row.
fn sweep_slurm(a: &cli::SweepArgs) -> Result<()> {
    let spec = perfwatt::sweep::SweepSpec::read(&a.spec)?;
    let text = std::fs::read_to_string(&a.spec).map_err(|e| perfwatt::Error::io(&a.spec, e))?;
    let dir = a
        .out
        .clone()
        .unwrap_or_else(|| perfwatt::sweep::default_run_dir(&spec));
    let exe = std::env::current_exe().map_err(|e| perfwatt::Error::io("perfwatt", e))?;
    let s = perfwatt::slurm::submit(&spec, &text, &dir, &exe, &a.slurm_options())?;
    match (&s.script, &s.job_id) {
        (None, _) => println!(
            "every point of {} has its row: nothing to submit",
            dir.display()
        ),
        (Some(script), None) => println!(
            "{} points: {} written, not submitted (--dry-run); submit it with sbatch {}",
            s.keys.len(),
            script.display(),
            script.display()
        ),
        (Some(script), Some(id)) => println!(
            "submitted job {id} ({}): {} array tasks, one per point ({})
watch: squeue -n {}
then:  perfwatt collect {} --report   (rerun this command to resubmit what is missing)",
            s.job_name,
            s.keys.len(),
            script.display(),
            s.job_name,
            dir.display()
        ),
    }
    Ok(())
}

/// `perfwatt collect`: merge the finished points; fail if some are missing.
fn collect(dir: &Path, report: bool) -> Result<()> {
    let (rows, missing) = perfwatt::sweep::collect(dir)?;
    println!("{} points in {}/results.csv", rows.len(), dir.display());
    if report && !rows.is_empty() {
        println!("report: {}", perfwatt::report::write_report(dir)?.display());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(perfwatt::Error::Config(format!(
            "{} point(s) still missing: {} (rerun `perfwatt sweep SPEC --slurm` to submit them)",
            missing.len(),
            missing.join(", ")
        )))
    }
}

fn infer_summary(r: &perfwatt::capture::InferReport) -> String {
    let e = &r.energy;
    let f = |o: Option<perfwatt::stats::Estimate>, unit: &str| {
        o.map(|e| {
            format!(
                "{:.4} {unit} [{:.4}, {:.4}]",
                e.mean, e.ci95_low, e.ci95_high
            )
        })
        .unwrap_or_else(|| "n/a".into())
    };
    format!(
        "device {} | {} | batch {} | prompt {} tok | {} new tok\n\
         latency p50 {:.3} s  p95 {:.3} s  p99 {:.3} s | TTFT p50 {:.3} s | TPOT p50 {:.4} s\n\
         tokens/s: output {:.1}  decode {:.1}  input {:.1}\n\
         energy: {} | J/token {} | avg W {}{}\n{}\
         sample: {:?}\n",
        r.device,
        r.config.precision.name(),
        r.batch,
        r.prompt_tokens,
        r.new_tokens,
        r.latency_s.p50,
        r.latency_s.p95,
        r.latency_s.p99,
        r.ttft_s.p50,
        r.tpot_s.p50,
        r.tokens_per_s_output.mean,
        r.tokens_per_s_decode.mean,
        r.tokens_per_s_input.mean,
        f(e.joules, "J"),
        f(e.j_per_token, "J"),
        f(e.avg_w, "W"),
        e.reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        energy_notes(e),
        r.generated.first().map(|s| s.as_str()).unwrap_or(""),
    ) + &r
        .sampler_ab
        .as_ref()
        .map(|a| {
            format!(
                "NVML sampler overhead over {} {} pairs: mean {:+.2}% [{:+.2}, {:+.2}], median {:+.2}% {}\n",
                a.pairs,
                if a.unit == perfwatt::capture::AbUnit::Steps { "decode-step" } else { "run" },
                a.overhead_pct.mean,
                a.overhead_pct.ci95_low,
                a.overhead_pct.ci95_high,
                a.overhead_pct_median,
                a.overhead_pct_median_ci95
                    .map(|(l, h)| format!("[{l:+.2}, {h:+.2}]"))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_default()
}

/// Idle, above-idle energy, the counter's period and the power-series check: one line each
/// when measured (95% CIs are over runs, n = runs).
fn energy_notes(e: &perfwatt::capture::EnergyReport) -> String {
    let mut out = String::new();
    if let (Some(i), Some(a)) = (&e.idle, e.joules_above_idle) {
        out.push_str(&format!(
            "above idle: {:.3} J [{:.3}, {:.3}] per run (n = {} runs, {}) | idle {:.1} W: median of {} x {:.0} s windows before and after, drift {:+.1} W\n",
            a.mean, a.ci95_low, a.ci95_high, a.n,
            e.energy_basis.as_deref().unwrap_or("per run"),
            i.median_w, i.before_w.len() + i.after_w.len(), i.window_s, i.drift_w.unwrap_or(f64::NAN),
        ));
    }
    if let Some(p) = e.counter_period_s {
        out.push_str(&format!(
            "energy counter updates every {:.1} ms | power series ({} field) vs counter per run: median {:+.1}%, {} of {} runs differ by more than 5%\n",
            p * 1e3,
            e.power_field.as_deref().unwrap_or("?"),
            e.power_check_median_diff_pct.unwrap_or(f64::NAN),
            e.power_check_flagged,
            e.power_check.len(),
        ));
    }
    out
}

/// Set on Ctrl-C; long jobs check it between steps and stop cleanly (what is finished is
/// already written). A second Ctrl-C exits at once.
fn interrupt_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static FLAG: std::sync::OnceLock<std::sync::Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let f = std::sync::Arc::new(AtomicBool::new(false));
        let g = f.clone();
        let _ = ctrlc::set_handler(move || {
            if g.swap(true, Ordering::Relaxed) {
                std::process::exit(130);
            }
            eprintln!(
                "\nperfwatt: interrupted, finishing the current step (Ctrl-C again to quit now)"
            );
        });
        f
    })
    .clone()
}

/// Feeds `bar` from a job that reports (items done, items in all, current item).
fn item_progress(bar: &indicatif::ProgressBar) -> impl FnMut(usize, usize, &str) + '_ {
    move |i, n, name| {
        bar.set_length(n as u64);
        bar.set_position(i as u64);
        bar.set_message(name.to_string());
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
fn progress_bar(len: u64, msg: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>14} [{bar:30}] {pos}/{len} (elapsed {elapsed}, eta {eta})",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    bar.set_message(msg.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    bar
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("perfwatt: error: {e}");
            ExitCode::FAILURE
        }
    }
}
