//! perfwatt command line: a thin layer over the library. Each subcommand is one job.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use perfwatt::Result;

#[derive(Parser)]
#[command(
    name = "perfwatt",
    version,
    about = "Tie LLM inference energy on a GPU to switching activity of MAC units",
    long_about = "perfwatt runs real LLM inference (candle), measures latency and NVML energy, \
captures the operands of its matrix multiplies, replays them into Verilator-simulated MAC \
units, and counts switching activity from VCD files.\n\n\
Pipeline: infer --capture -> traces/*.ops -> sim -> toggles -> sweep/report"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum TableFormat {
    Table,
    Json,
    Csv,
}

#[derive(Subcommand)]
enum Cmd {
    /// Count per-signal toggles (0<->1 changes) in a VCD file from any simulator.
    ///
    /// The first value of a bit is not a toggle; changes into or out of x/z are counted
    /// separately as x_transitions; real vars are tracked but not counted. Memory stays
    /// constant whatever the file size.
    ///
    /// Examples:
    ///   perfwatt toggles sim.vcd
    ///   perfwatt toggles sim.vcd --format csv > toggles.csv
    ///   zcat big.vcd.gz | perfwatt toggles - --scope tb.dut --saif act.saif
    Toggles {
        /// VCD file, or `-` for stdin.
        file: PathBuf,
        /// Output format: a table for people, JSON, or CSV (one row per signal).
        #[arg(long, value_enum, default_value = "table")]
        format: TableFormat,
        /// Also write SAIF 2.0 activity (T0/T1/TX/TC/IG per net bit) to this file.
        #[arg(long, value_name = "OUT.saif")]
        saif: Option<PathBuf>,
        /// Only report signals under this dotted scope path (e.g. `tb.dut`).
        #[arg(long, value_name = "PREFIX")]
        scope: Option<String>,
        /// Rows in the table's most-active list.
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// Threads: a file of 16 MiB or more (without --saif) is counted in pieces of its
        /// body in parallel, joined in order. Default: all cores. 1 = one sequential pass.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Replay an operand stream into Verilator-simulated MAC units and count switching.
    ///
    /// Designs: `baseline` (operands and product latched every cycle), `isolated`
    /// (operand isolation: multiplier inputs held on zero operands, accumulator enabled
    /// only for non-zero products) and `signmag` (the baseline with sign-magnitude operands). One pair per clock; the accumulator is checked against
    /// the exact dot product. Without --vcd, toggles are counted inside the harness.
    ///
    /// Examples:
    ///   perfwatt sim --operands traces/sample_q_proj.ops
    ///   perfwatt sim --operands pairs.csv --width 16 --design isolated --format json
    ///   perfwatt sim --synthetic activation-like --pairs 100000 --vcd out/
    Sim {
        /// Operand stream: .ops (binary, from `infer --capture`) or .csv with header `a,b`.
        #[arg(long, value_name = "FILE", required_unless_present = "synthetic")]
        operands: Option<PathBuf>,
        /// Use a generated stream instead of a file.
        #[arg(long, value_enum, conflicts_with = "operands")]
        synthetic: Option<perfwatt::trace::synth::Kind>,
        /// Pairs in a --synthetic stream.
        #[arg(long, default_value_t = 100_000)]
        pairs: usize,
        /// Operand width in bits for CSV and synthetic streams (.ops files carry their own).
        #[arg(long, default_value_t = 8, value_parser = parse_width)]
        width: u8,
        #[arg(long, value_enum, default_value = "all")]
        design: DesignChoice,
        /// Dump VCD files into this folder and count toggles from them (slower, inspectable).
        #[arg(long, value_name = "DIR")]
        vcd: Option<PathBuf>,
        /// Count both ways (VCD and in-harness) and fail unless they agree exactly.
        #[arg(long, requires = "vcd")]
        cross_check: bool,
        /// Simulate without counting toggles (raw simulation speed).
        #[arg(long, conflicts_with_all = ["vcd", "cross_check"])]
        no_count: bool,
        /// Write the stream as CSV (a,b) or as iverilog stimulus (hex words, see tests/rtl/mac_tb.v) and exit.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: SimFormat,
    },
    /// Run LLM inference (candle) like a benchmark, measure latency and energy, and
    /// optionally capture matmul operands for `sim`.
    ///
    /// Metrics: latency p50/p95/p99 (pooled over repeats), TTFT, TPOT, tokens/s, and on a
    /// GPU the NVML energy counter (prefill/decode split, idle-subtracted), power samples,
    /// J/token, tokens/J, EDP, FLOP/J, gCO2eq; each with a 95% CI over --repeats. On the
    /// CPU energy fields are null. Writes OUT.json and OUT.power.csv.
    ///
    /// Examples:
    ///   perfwatt infer --out results/base.json
    ///   perfwatt infer --dtype f16 --batch 4 --prompt-len medium --max-new-tokens 32
    ///   perfwatt infer --capture traces/q4_1.ops --capture-layers 0,15 --capture-projs q,down
    ///   perfwatt infer --device cuda --repeats 10 --out results/gpu.json
    Infer {
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
        device: String,
        /// Weight format: q4_1 as shipped, re-quantized q8_0/q4_0/q4k, or dense f32/f16/bf16.
        #[arg(long, value_enum, default_value = "q4_1")]
        dtype: perfwatt::model::Precision,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Prompt tokens incl. chat template: short (40), medium (96), long (192), or a number.
        #[arg(long, default_value = "short")]
        prompt_len: String,
        #[arg(long, default_value_t = 16)]
        max_new_tokens: usize,
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Recompute the whole sequence every step instead of using a KV cache.
        #[arg(long)]
        no_kv_cache: bool,
        /// Activation sparsity: zero |x| < TAU at every projection input.
        #[arg(long, default_value_t = 0.0, value_name = "TAU")]
        sparsity: f32,
        /// Write captured operands (.ops) here.
        #[arg(long, value_name = "FILE.ops")]
        capture: Option<PathBuf>,
        /// Layers to capture, comma-separated.
        #[arg(long, default_value = "0,15,29", value_delimiter = ',')]
        capture_layers: Vec<usize>,
        /// Projections to capture: q,k,v,o,gate,up,down.
        #[arg(long, default_value = "q,k,v,o,gate,up,down", value_delimiter = ',')]
        capture_projs: Vec<String>,
        #[arg(long, default_value_t = 500_000)]
        capture_max_pairs: usize,
        /// Weight rows each captured activation vector meets.
        #[arg(long, default_value_t = 4)]
        capture_rows: usize,
        /// Captured operand width: 8 or 16 bits.
        #[arg(long, default_value_t = 8, value_parser = parse_width)]
        capture_width: u8,
        /// NVML sampling rate.
        #[arg(long, default_value_t = 50.0)]
        sample_hz: f64,
        /// Measure the NVML sampler's own cost: measured runs (`runs`) or the decode steps
        /// within each measured run (`steps`) alternate sampler on and paused (ABBA), and
        /// the report gains `sampler_ab` (paired overhead, 95% CI). GPU only.
        #[arg(long, value_enum, value_name = "UNIT", num_args = 0..=1, default_missing_value = "runs", default_value = "off")]
        sampler_ab: perfwatt::capture::AbUnit,
        /// Grid carbon intensity for gCO2eq (g/kWh).
        #[arg(long, default_value_t = 400.0)]
        grid_intensity: f64,
        /// GGUF model (default: models/SmolLM2-135M-Instruct.Q4_1.gguf or $PERFWATT_MODEL).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Prompt set, JSON lines with a "text" field.
        #[arg(long)]
        prompts: Option<PathBuf>,
        #[arg(long, default_value = "infer.json")]
        out: PathBuf,
    },
    /// Run a sweep of software optimizations: every point runs `infer` with capture, then
    /// `sim` on the baseline and isolated MACs. Results go to DIR/results.{jsonl,csv},
    /// written atomically after each point; rerunning resumes where it stopped.
    ///
    /// Example: perfwatt sweep experiments/cpu-demo.toml && perfwatt report experiments/runs/cpu-demo
    Sweep {
        /// Sweep spec (TOML): name, [base] infer settings, [capture], [axes] lists.
        spec: PathBuf,
        /// Run folder (default: experiments/runs/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write the report when done.
        #[arg(long)]
        report: bool,
    },
    /// Write report.md and plots (PNG + SVG) for a sweep's run folder.
    Report { run_dir: PathBuf },
    /// The main job on shipped defaults: the CPU demo sweep (experiments/cpu-demo.toml)
    /// with the shipped model, then its report. Prints the report's path.
    Demo {
        #[arg(long, default_value = "experiments/runs/cpu-demo")]
        out: PathBuf,
    },
    /// Measure the device's roofline and place LLM kernels on it, with energy per kernel.
    ///
    /// Peaks: the best FLOP/s of square matrix products in f32, f16 and bf16, and the
    /// bandwidth of a device-to-device copy (bytes read + written); ridge = peak / bandwidth.
    /// Kernels at the shipped model's shapes (SmolLM2-135M) and a 7B model's (full preset):
    /// linear layers at several (M, K, N), attention softmax(QK^T)V (prefill and one decode
    /// step), RMSNorm, SiLU, RoPE, embedding lookup, Q4_1 quantized matmul. Latency: warmup,
    /// then up to --repeats launches timed with CUDA events (GPU) or the wall clock (CPU):
    /// median/p5/p95/min/max. Energy (GPU): the NVML energy counter over back-to-back
    /// launches lasting --energy-seconds, raw and above the idle draw; null on the CPU.
    /// Writes DIR/roofline.json and roofline.csv (after every kernel) and roofline.png/.svg.
    ///
    /// Example: perfwatt roofline --device cuda --out experiments/results/h100/roofline
    Roofline {
        /// cpu, or cuda (a build with --features cuda and an NVIDIA GPU).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Kernel dtype: f32, f16, bf16 (default: bf16 on cuda, f32 on cpu).
        #[arg(long)]
        dtype: Option<String>,
        /// Small shapes and few repeats (seconds on a CPU; what CI runs).
        #[arg(long)]
        quick: bool,
        /// Timed launches per kernel (at most; at least 5 past --seconds-per-kernel).
        #[arg(long)]
        repeats: Option<usize>,
        /// Stop timing a kernel after this long, once it has 5 launches (default 1 s; 0.2 with --quick).
        #[arg(long)]
        seconds_per_kernel: Option<f64>,
        /// GPU only: back-to-back launches per kernel for its energy last at least this long.
        #[arg(long, default_value_t = 1.0)]
        energy_seconds: f64,
        /// Output folder (default experiments/runs/roofline-DEVICE).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DesignChoice {
    Baseline,
    Isolated,
    Signmag,
    All,
}

#[derive(Clone, Copy, ValueEnum)]
enum SimFormat {
    Table,
    Json,
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Toggles {
            file,
            format,
            saif,
            scope,
            top,
            threads,
        } => {
            let mut report = match threads {
                Some(t) => {
                    perfwatt::vcd::count_toggles_path_threads(&file, saif.is_some(), t.max(1))?
                }
                None => perfwatt::vcd::count_toggles_path_with(&file, saif.is_some())?,
            };
            if let Some(p) = scope {
                report.retain_scope(&p);
            }
            if let Some(out) = saif {
                perfwatt::error::write_atomic(
                    &out,
                    perfwatt::vcd::saif::to_saif(&report).as_bytes(),
                )?;
            }
            let text = match format {
                TableFormat::Table => report.to_table(top),
                TableFormat::Json => {
                    serde_json::to_string_pretty(&report).expect("serializable") + "\n"
                }
                TableFormat::Csv => report.to_csv(),
            };
            print!("{text}");
        }
        Cmd::Sim {
            operands,
            synthetic,
            pairs,
            width,
            design,
            vcd,
            cross_check,
            no_count,
            export,
            format,
        } => {
            use perfwatt::sim::{simulate, Counting, Design};
            let stream = match (operands, synthetic) {
                (Some(p), _) => perfwatt::trace::OperandStream::read(&p, width)?,
                (None, Some(kind)) => perfwatt::trace::synth::stream(kind, pairs, width, 1),
                (None, None) => unreachable!("clap requires one"),
            };
            let designs: Vec<Design> = match design {
                DesignChoice::Baseline => vec![Design::Baseline],
                DesignChoice::Isolated => vec![Design::Isolated],
                DesignChoice::Signmag => vec![Design::Signmag],
                DesignChoice::All => Design::ALL.to_vec(),
            };
            let export_design = if matches!(design, DesignChoice::Signmag) {
                Design::Signmag
            } else {
                Design::Baseline
            };
            if let Some(path) = export {
                let bytes = if path.extension().is_some_and(|e| e == "csv") {
                    let mut v = Vec::new();
                    stream
                        .write_csv(&mut v)
                        .map_err(|e| perfwatt::Error::io(&path, e))?;
                    v
                } else {
                    perfwatt::sim::stimulus_hex(&stream, export_design)?.into_bytes()
                };
                return perfwatt::error::write_atomic(&path, &bytes);
            }
            let counting = match (vcd, cross_check, no_count) {
                (Some(d), true, _) => Counting::Both(d),
                (Some(d), false, _) => Counting::Vcd(d),
                (None, _, true) => Counting::None,
                (None, _, false) => Counting::Fast,
            };
            let n = stream.pairs.len() as u64;
            let mut results = Vec::new();
            for d in designs {
                let bar = progress_bar(n, &format!("sim {}", d.name()));
                results.push(simulate(d, &stream, &counting, &mut |done| {
                    bar.set_position(done)
                })?);
                bar.finish_and_clear();
            }
            let report = perfwatt::sim::SimReport::new(&stream, results);
            match format {
                SimFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serializable")
                ),
                SimFormat::Table => print!("{}", report.to_table()),
            }
        }
        Cmd::Sweep { spec, out, report } => sweep(&spec, out, report)?,
        Cmd::Roofline {
            device,
            dtype,
            quick,
            repeats,
            seconds_per_kernel,
            energy_seconds,
            out,
        } => {
            use perfwatt::roofline::{Preset, RooflineConfig};
            let mut cfg =
                RooflineConfig::new(&device, if quick { Preset::Quick } else { Preset::Full });
            if let Some(d) = dtype {
                perfwatt::roofline::parse_dtype(&d)?;
                cfg.dtype = d;
            }
            cfg.repeats = repeats.unwrap_or(cfg.repeats);
            cfg.seconds_per_kernel = seconds_per_kernel.unwrap_or(cfg.seconds_per_kernel);
            cfg.energy_seconds = energy_seconds;
            let out =
                out.unwrap_or_else(|| PathBuf::from(format!("experiments/runs/roofline-{device}")));
            let bar = progress_bar(0, "roofline");
            let stop = interrupt_flag();
            let report = perfwatt::roofline::run_roofline(
                &cfg,
                &out,
                perfwatt::roofline::Hooks {
                    on_kernel: &mut |i, n, name| {
                        bar.set_length(n as u64);
                        bar.set_position(i as u64);
                        bar.set_message(name.to_string());
                    },
                    interrupted: &|| stop.load(std::sync::atomic::Ordering::Relaxed),
                },
            )?;
            bar.finish_and_clear();
            print!("{}", perfwatt::roofline::to_table(&report));
            println!(
                "wrote {0}/roofline.json, roofline.csv, roofline.png, roofline.svg",
                out.display()
            );
        }
        Cmd::Report { run_dir } => {
            println!("{}", perfwatt::report::write_report(&run_dir)?.display())
        }
        Cmd::Demo { out } => {
            let spec = perfwatt::asset_path("experiments/cpu-demo.toml");
            sweep(&spec, Some(out), true)?;
        }
        Cmd::Infer {
            device,
            dtype,
            batch,
            prompt_len,
            max_new_tokens,
            warmup,
            repeats,
            no_kv_cache,
            sparsity,
            capture,
            capture_layers,
            capture_projs,
            capture_max_pairs,
            capture_rows,
            capture_width,
            sample_hz,
            sampler_ab,
            grid_intensity,
            model,
            prompts,
            out,
        } => {
            let mut cfg = perfwatt::capture::InferConfig {
                device,
                precision: dtype,
                batch,
                prompt_len,
                max_new_tokens,
                warmup,
                repeats,
                kv_cache: !no_kv_cache,
                sparsity_tau: sparsity,
                sample_hz,
                sampler_ab,
                grid_g_per_kwh: grid_intensity,
                ..Default::default()
            };
            if let Some(m) = model {
                cfg.model = m;
            }
            if let Some(p) = prompts {
                cfg.prompts = p;
            }
            if capture.is_some() {
                cfg.capture = Some(perfwatt::capture::CaptureSpec {
                    layers: capture_layers,
                    projs: capture_projs,
                    width: capture_width,
                    max_pairs: capture_max_pairs,
                    rows: capture_rows,
                });
            }
            let bar = progress_bar((warmup + repeats) as u64, "infer runs");
            let stop = interrupt_flag();
            let (report, samples) = perfwatt::capture::run_infer(
                &cfg,
                capture.as_deref(),
                perfwatt::capture::Progress {
                    on_step: &mut |done, _| bar.set_position(done as u64),
                    interrupted: &|| stop.load(std::sync::atomic::Ordering::Relaxed),
                },
            )?;
            bar.finish_and_clear();
            let power = perfwatt::capture::write_report(&report, &samples, &out)?;
            print!("{}", infer_summary(&report));
            println!("wrote {} and {}", out.display(), power.display());
            if let Some(c) = &report.capture {
                println!(
                    "captured {} operand pairs into {}",
                    c["pairs"],
                    c["file"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

fn sweep(spec_path: &std::path::Path, out: Option<PathBuf>, report: bool) -> Result<()> {
    let spec = perfwatt::sweep::SweepSpec::read(spec_path)?;
    let text = std::fs::read_to_string(spec_path).map_err(|e| perfwatt::Error::io(spec_path, e))?;
    let dir = out.unwrap_or_else(|| perfwatt::sweep::default_run_dir(&spec));
    let total = spec.points().len() as u64;
    let bar = progress_bar(total, "sweep points");
    let stop = interrupt_flag();
    let rows = perfwatt::sweep::run_sweep(
        &spec,
        &text,
        &dir,
        perfwatt::sweep::SweepHooks {
            on_point: &mut |done, _, key| {
                bar.set_position(done as u64);
                if let Some(k) = key {
                    bar.set_message(k.to_string());
                }
            },
            interrupted: &|| stop.load(std::sync::atomic::Ordering::Relaxed),
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
         energy: {} | J/token {} | avg W {}{}\n\
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

fn parse_width(s: &str) -> std::result::Result<u8, String> {
    match s {
        "8" => Ok(8),
        "16" => Ok(16),
        _ => Err("operand width must be 8 or 16".into()),
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
