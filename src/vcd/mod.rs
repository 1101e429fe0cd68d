//! VCD in, switching activity out.
//!
//! `parse` streams any simulator's VCD through nom parsers over a chunk buffer (constant
//! memory); `toggles` counts per-bit 0<->1 toggles and x/z transitions; `saif` writes the
//! activity as SAIF 2.0 for EDA power tools.

pub mod parse;
pub mod saif;
pub mod toggles;

pub use parse::{parse_vcd, Header, Value, Var, VarKind, VcdVisitor};
pub use toggles::{
    count_toggles, count_toggles_path, count_toggles_path_threads, count_toggles_path_with,
    count_toggles_segmented, count_toggles_with, BitActivity, SignalToggles, ToggleReport,
};
