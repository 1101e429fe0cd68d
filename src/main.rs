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
    },
    /// Replay an operand stream into Verilator-simulated MAC units and count switching.
    ///
    /// Designs: `baseline` (operands and product latched every cycle) and `isolated`
    /// (operand isolation: multiplier inputs held on zero operands, accumulator enabled
    /// only for non-zero products). One pair per clock; the accumulator is checked against
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
        #[arg(long, value_enum, default_value = "table")]
        format: SimFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DesignChoice {
    Baseline,
    Isolated,
    All,
}

#[derive(Clone, Copy, ValueEnum)]
enum SimFormat {
    Table,
    Json,
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Toggles { file, format, saif, scope, top } => {
            let mut report = perfwatt::vcd::count_toggles_path_with(&file, saif.is_some())?;
            if let Some(p) = scope {
                report.retain_scope(&p);
            }
            if let Some(out) = saif {
                perfwatt::error::write_atomic(&out, perfwatt::vcd::saif::to_saif(&report).as_bytes())?;
            }
            let text = match format {
                TableFormat::Table => report.to_table(top),
                TableFormat::Json => serde_json::to_string_pretty(&report).expect("serializable") + "\n",
                TableFormat::Csv => report.to_csv(),
            };
            print!("{text}");
        }
        Cmd::Sim { operands, synthetic, pairs, width, design, vcd, cross_check, format } => {
            use perfwatt::sim::{simulate, Counting, Design};
            let stream = match (operands, synthetic) {
                (Some(p), _) => perfwatt::trace::OperandStream::read(&p, width)?,
                (None, Some(kind)) => perfwatt::trace::synth::stream(kind, pairs, width, 1),
                (None, None) => unreachable!("clap requires one"),
            };
            let designs: Vec<Design> = match design {
                DesignChoice::Baseline => vec![Design::Baseline],
                DesignChoice::Isolated => vec![Design::Isolated],
                DesignChoice::All => Design::ALL.to_vec(),
            };
            let counting = match (vcd, cross_check) {
                (Some(d), true) => Counting::Both(d),
                (Some(d), false) => Counting::Vcd(d),
                (None, _) => Counting::Fast,
            };
            let n = stream.pairs.len() as u64;
            let mut results = Vec::new();
            for d in designs {
                let bar = progress_bar(n, &format!("sim {}", d.name()));
                results.push(simulate(d, &stream, &counting, &mut |done| bar.set_position(done))?);
                bar.finish_and_clear();
            }
            let report = perfwatt::sim::SimReport::new(&stream, results);
            match format {
                SimFormat::Json => println!("{}", serde_json::to_string_pretty(&report).expect("serializable")),
                SimFormat::Table => print!("{}", report.to_table()),
            }
        }
    }
    Ok(())
}

fn parse_width(s: &str) -> std::result::Result<u8, String> {
    match s {
        "8" => Ok(8),
        "16" => Ok(16),
        _ => Err("operand width must be 8 or 16".into()),
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
fn progress_bar(len: u64, msg: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>14} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_message(msg.to_string());
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
