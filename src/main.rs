//! perfwatt command line: a thin layer over the library. Each subcommand is one job:
//! its flags become the library's config (`cli`), the library runs it, and this file
//! shows progress and prints the result.

mod cli;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use clap::Parser;
use cli::{Cli, Cmd, SimArgs, SimFormat, TableFormat, TogglesArgs};
use perfwatt::device::DeviceSpec;
use perfwatt::sim::SimEvent;
use perfwatt::Result;

fn run(cli: Cli) -> Result<ExitCode> {
    let done = match cli.cmd {
        Cmd::Measure(a) => return measure(&a),
        Cmd::Load(a) => return load(&a),
        Cmd::Toggles(a) => toggles(&a),
        Cmd::Sim(a) => sim(&a),
        Cmd::Infer(a) => match &a.devices {
            Some(list) => {
                infer_devices(&a.config(), &perfwatt::device::parse_devices(list)?, &a.out)
            }
            None => infer(
                &a.config(),
                a.capture.as_deref(),
                &a.out,
                a.trace.as_deref(),
            ),
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
        Cmd::Report { run_dir, rescore } => {
            if rescore {
                let rows = perfwatt::sweep::rescore(&run_dir)?;
                println!(
                    "rescored {} rows in {}/results.csv",
                    rows.len(),
                    run_dir.display()
                );
            }
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
        Cmd::Serve(a) => perfwatt::serve::run(&a.config(), &mut |addr| {
            eprintln!("perfwatt serve: listening on http://{addr} (OpenAI API at /v1; Ctrl-C drains and stops)");
        }),
        Cmd::GemmEnergy(a) => gemm_energy_cmd(&a),
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// `perfwatt gemm-energy` and its actions (predict, report).
fn gemm_energy_cmd(a: &cli::GemmEnergyArgs) -> Result<()> {
    match &a.action {
        Some(cli::GemmAction::Predict(p)) => return gemm_predict(p),
        Some(cli::GemmAction::Report {
            dir,
            check_calibration,
        }) => {
            let r = perfwatt::gemm_energy::rerender(dir, check_calibration.as_deref())?;
            println!(
                "{} patterns; rewrote {}/report.md",
                r.points.len(),
                dir.display()
            );
            return Ok(());
        }
        None => {}
    }
    // --regime both: one complete run per regime, each in its own folder.
    let regimes = a.regimes()?;
    for &regime in &regimes {
        let cfg = perfwatt::gemm_energy::GemmConfig {
            regime,
            ..a.config()?
        };
        let out = match regimes.len() {
            1 => a.out_dir(),
            _ => a.out_dir().join(regime.to_string()),
        };
        match &a.devices {
            Some(list) => gemm_energy_devices(&cfg, &perfwatt::device::parse_devices(list)?, &out)?,
            None => gemm_energy(&cfg, &out, a.calibrate)?,
        }
    }
    Ok(())
}

fn toggles(a: &TogglesArgs) -> Result<()> {
    let report = a.count()?;
    if let Some(out) = &a.saif {
        perfwatt::files::write_atomic(out, perfwatt::vcd::saif::to_saif(&report).as_bytes())?;
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
        return perfwatt::sim::export_stream(&stream, path, a.export_design(), a.lanes);
    }
    let gate = a.gate_options()?;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let run = perfwatt::sim::simulate_plan(&a.plan(gate.as_ref()), &stream, &mut |ev| match ev {
        SimEvent::Skipped(why) => eprintln!("perfwatt: skipped {why}"),
        SimEvent::Started(what, n) => bar = Some(progress_bar(n, what)),
        SimEvent::Done(k) => bar.iter().for_each(|b| b.set_position(k)),
        SimEvent::Finished => bar.take().iter().for_each(|b| b.finish_and_clear()),
    })?;
    match a.format {
        SimFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&run.report).expect("serializable")
        ),
        SimFormat::Table => print!("{}", run.report.to_table()),
    }
    if run.failed.is_empty() {
        Ok(())
    } else {
        Err(perfwatt::Error::Sim(run.failed.join("; ")))
    }
}

/// `perfwatt cells`: a Liberty file's numbers as a cell table.
fn cells(liberty: &Path, map: Option<&str>) -> Result<()> {
    use perfwatt::sim::gate::CellTable;
    let names = CellTable::shipped().cell_names_mapped(map.unwrap_or(""))?;
    print!("{}", CellTable::from_liberty(liberty, &names)?.to_toml());
    Ok(())
}

fn infer(
    cfg: &perfwatt::capture::InferConfig,
    capture: Option<&Path>,
    out: &Path,
    trace: Option<&Path>,
) -> Result<()> {
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
    if let Some(t) = trace {
        let meta = serde_json::json!({"schema": report.schema, "device": report.device});
        perfwatt::timeline::write(t, &perfwatt::capture::timeline(&report, &samples), meta)?;
        println!("wrote the timeline {}", t.display());
    }
    print!("{}", report.to_text());
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
    devices: &[DeviceSpec],
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
        print!("{}", r.to_text());
    }
    print!("{}", run.host.to_text());
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

/// `gemm-energy predict`: a calibration applied to the user's operands.
fn gemm_predict(p: &cli::PredictArgs) -> Result<()> {
    use perfwatt::gemm_energy::{calibrate, npy, patterns};
    let cals = calibrate::read(&p.calibration)?;
    let cal = match p.dtype {
        Some(d) => calibrate::for_dtype(&cals, d)?,
        None => cals.first().ok_or_else(|| {
            perfwatt::Error::Config(format!("{}: no calibration in it", p.calibration.display()))
        })?,
    };
    let (a, b) = (
        npy::Array::read(&p.operands[0])?,
        npy::Array::read(&p.operands[1])?,
    );
    let ops = patterns::user_operands(cal.dtype, &a, &b)?;
    let pred = calibrate::predict(cal, &ops)?;
    if p.json {
        println!("{}", serde_json::to_string_pretty(&pred).expect("json"));
    } else {
        println!(
            "{} {} GEMM on {} ({}): predicted {:.4} {} [95% prediction interval {:.4}, {:.4}], from {} ({})",
            pred.dtype.name(),
            format!("{}x{}x{}", ops.shape.m, ops.shape.k, ops.shape.n),
            pred.device,
            pred.regime,
            pred.predicted,
            pred.unit,
            pred.low,
            pred.high,
            pred.hw_model,
            pred.features
                .iter()
                .map(|(f, v)| format!("{f} = {v:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn gemm_energy(cfg: &perfwatt::gemm_energy::GemmConfig, out: &Path, calibrate: bool) -> Result<()> {
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
    if calibrate {
        let cals = perfwatt::gemm_energy::calibrate::calibrate(&report);
        let path = out.join("calibration.json");
        perfwatt::gemm_energy::calibrate::write(&cals, &path)?;
        println!("calibration of {} dtype(s): {}", cals.len(), path.display());
    }
    Ok(())
}

/// `gemm-energy --devices`: every GPU at once, one progress bar each.
fn gemm_energy_devices(
    cfg: &perfwatt::gemm_energy::GemmConfig,
    devices: &[DeviceSpec],
    out: &Path,
) -> Result<()> {
    let bars = indicatif::MultiProgress::new();
    let per_device: Vec<_> = devices
        .iter()
        .map(|d| bars.add(progress_bar(0, &d.to_string())))
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
    print!("{}", cmp.to_text(out));
    Ok(())
}

fn sweep(
    spec_path: &Path,
    out: Option<std::path::PathBuf>,
    report: bool,
    devices: Option<&str>,
) -> Result<()> {
    let spec = perfwatt::sweep::SweepSpec::read(spec_path)?;
    let dir = out.unwrap_or_else(|| perfwatt::sweep::default_run_dir(&spec));
    let devices = match devices {
        Some(list) => {
            if let Some(p) = spec.points().iter().find(|p| p.cfg.device.is_cpu()) {
                return Err(perfwatt::Error::Config(format!(
                    "--devices runs GPU points, one per GPU; point {} is on the cpu (make the spec's device axis [\"cuda\"])",
                    p.key()
                )));
            }
            perfwatt::device::parse_devices(list)?
        }
        None => Vec::new(),
    };
    let total = (spec.points().len() * spec.replicates.max(1)) as u64;
    let bar = progress_bar(total, "sweep runs");
    let stop = interrupt_flag();
    let rows = perfwatt::sweep::run_sweep(
        &spec,
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
    let dir = a
        .out
        .clone()
        .unwrap_or_else(|| perfwatt::sweep::default_run_dir(&spec));
    let exe = std::env::current_exe().map_err(|e| perfwatt::Error::io("perfwatt", e))?;
    let s = perfwatt::slurm::submit(&spec, &dir, &exe, &a.slurm_options())?;
    println!("{}", s.to_text(&dir));
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

/// `perfwatt measure`: the command's exit code is perfwatt's, and an interrupt goes to the
/// command (counted here, forwarded by the library) while the report is still written.
fn measure(a: &cli::MeasureArgs) -> Result<ExitCode> {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    let cfg = a.config()?;
    let out = a.out_dir();
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let _ = ctrlc::set_handler(move || {
        count.fetch_add(1, Ordering::Relaxed);
    });
    let m = perfwatt::measure::run(&cfg, &|| asked.load(Ordering::Relaxed))?;
    let files = perfwatt::measure::write(&m, &out, a.trace.as_deref())?;
    let r = &m.report;
    let energy: Vec<String> = r
        .gpus
        .iter()
        .map(|g| match (g.energy_j, g.above_idle_j) {
            (Some(e), Some(a)) => format!("GPU {}: {e:.2} J ({a:.2} J above idle)", g.index),
            (Some(e), None) => format!("GPU {}: {e:.2} J", g.index),
            _ => format!("GPU {}: energy n/a", g.index),
        })
        .collect();
    eprintln!(
        "perfwatt measure: {:.2} s, exit {}; {}; {} phase(s); wrote {}",
        r.duration_s,
        r.exit.exit_code,
        if energy.is_empty() {
            r.energy_reason.clone().unwrap_or_default()
        } else {
            energy.join(", ")
        },
        r.phases.len(),
        files[0].display()
    );
    Ok(ExitCode::from(r.exit.exit_code.clamp(0, 255) as u8))
}

/// `perfwatt load`: the report is written whatever happened, and the exit code says
/// whether every measured request completed.
fn load(a: &cli::LoadArgs) -> Result<ExitCode> {
    let cfg = a.config()?;
    let out = a.out_dir();
    let stop = interrupt_flag();
    let bar = progress_bar(0, "load");
    let run = perfwatt::load::run(&cfg, &mut item_progress(&bar), &|| {
        stop.load(Ordering::Relaxed)
    })?;
    bar.finish_and_clear();
    let files = perfwatt::load::write(&run, &cfg, &out)?;
    if let Some(t) = &a.trace {
        let meta = serde_json::json!({"url": cfg.url, "model": run.model});
        perfwatt::timeline::write(t, &perfwatt::load::timeline(&run), meta)?;
    }
    let failed: usize = run.rows.iter().map(|r| r.failed).sum();
    let requests: usize = run.rows.iter().map(|r| r.requests).sum();
    for r in &run.rows {
        let ms = |v: Option<f64>| v.map_or("n/a".into(), |x| format!("{:.0} ms", x * 1e3));
        eprintln!(
            "load {:>5} round {}: {}/{} completed, {:.2} req/s, TTFT p50 {} p99 {}, E2E p50 {}{}",
            r.load,
            r.replicate + 1,
            r.completed,
            r.requests,
            r.achieved_rps.unwrap_or(f64::NAN),
            ms(r.ttft.p50),
            ms(r.ttft.p99),
            ms(r.e2e.p50),
            r.j_per_request
                .map_or(String::new(), |j| format!(", {j:.2} J/request"))
        );
    }
    eprintln!("wrote {}", files[0].display());
    if failed > 0 {
        let kinds: std::collections::BTreeMap<&str, usize> = run
            .requests
            .iter()
            .filter(|q| !q.warmup && !q.ok())
            .fold(Default::default(), |mut m, q| {
                *m.entry(q.error.as_deref().unwrap_or("")).or_insert(0) += 1;
                m
            });
        eprintln!("perfwatt load: {failed} of {requests} measured requests failed: {kinds:?}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    run(Cli::parse()).unwrap_or_else(|e| {
        eprintln!("perfwatt: error: {e}");
        ExitCode::FAILURE
    })
}
