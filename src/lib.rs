//! perfwatt: ties what LLM inference does on a GPU to what a MAC unit's gates do.
//!
//! Data flow: `capture` (runs `model`, measures with `energy`) -> `trace` (operand streams)
//! -> `sim` (Verilator MAC units) -> `vcd` (toggle counting) -> `report`.

pub mod capture;
pub mod energy;
pub mod error;
pub mod model;
pub mod report;
pub mod sim;
pub mod stats;
pub mod sweep;
pub mod trace;
pub mod vcd;

pub use error::{Error, Result};
