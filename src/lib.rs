//! perfwatt: ties what LLM inference does on a GPU to what a MAC unit's gates do.
//!
//! The pipeline, one module per stage, each with a header saying what goes in and out:
//!
//! ```text
//! capture (infer) -> trace (.ops streams) -> sim (Verilator MACs) -> vcd (toggles) -> report
//! ```
//!
//! Layers, each importing only from the layers below it (no cycles, nothing reaches up):
//! - leaves: `error`, `files` (atomic writes, JSON Lines), `choice` (enums named by a
//!   word), `stats`, `render` (PNG+SVG plots, shared markdown sections), `device` (cpu /
//!   cuda:N, parsed once; the per-device fan-out), `energy` (NVML; `energy::rapl` for CPUs), `model` (candle);
//! - formats the stages exchange, each read and written by one module: `trace` (operand
//!   streams: capture writes them, sim reads them) and `vcd` (any simulator's VCD -> toggles;
//!   sim counts its own dumps with it);
//! - stages: `capture` (model + energy -> measurements and `.ops`), `sim` (streams ->
//!   toggles, through the design catalogue `sim::catalogue`);
//! - drivers over the stages: `sweep` (capture and sim per point; `sweep::slurm`), `report`
//!   (a sweep's run folder -> report.md), `roofline` (model kernels -> roofline),
//!   `gemm_energy` (operand patterns -> J/GEMM and the hardware models that predict it),
//!   `measure` (any command -> its energy, phase by phase, through `energy`), `load` (an
//!   OpenAI-compatible server under offered load -> latency and energy per request),
//!   `serve` (the model behind an OpenAI-compatible server, continuous batching);
//! - `timeline`: trace-event JSON (Perfetto) of counters and spans, a leaf the drivers use.
//!
//! The command line (clap) lives in the binary only: library enums parse from and print as
//! their names (`FromStr`/`Display`), and `src/cli.rs` maps flags onto them.

pub mod capture;
pub mod choice;
pub mod device;
pub mod energy;
pub mod error;
pub mod files;
pub mod gemm_energy;
pub mod load;
pub mod measure;
pub mod model;
mod render;
pub mod report;
pub mod roofline;
pub mod serve;
pub mod sim;
pub mod stats;
pub mod sweep;
/// `sweep --slurm`, where it was before the sweep became a folder.
pub use sweep::slurm;
pub mod timeline;
pub mod trace;
pub mod vcd;

pub use error::{Error, Result};

/// A shipped file (model cache, prompts, experiment specs) by its path relative to the
/// repository root: from the current directory when it is there (a checkout moved to
/// another machine), else from the crate root this binary was built in.
pub fn asset_path(rel: &str) -> std::path::PathBuf {
    let here = std::path::Path::new(rel);
    if here.exists() {
        return here.to_path_buf();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}
