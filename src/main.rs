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
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Toggles { file, format, saif, scope, top } => {
            let mut report = perfwatt::vcd::count_toggles_path(&file)?;
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
    }
    Ok(())
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
