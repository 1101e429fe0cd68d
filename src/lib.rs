//! perfwatt: ties what LLM inference does on a GPU to what a MAC unit's gates do.
//!
//! Data flow: `capture` (runs `model`, measures with `energy`) -> `trace` (operand streams)
//! -> `sim` (Verilator MAC units) -> `vcd` (toggle counting) -> `report`.

pub mod capture;
pub mod energy;
pub mod error;
pub mod model;
pub mod report;
pub mod roofline;
pub mod sim;
pub mod stats;
pub mod sweep;
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
