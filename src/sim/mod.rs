//! Replays an operand stream into the Verilator-built datapaths and counts switching.
//!
//! In: an `OperandStream`, a design (serial MACs: baseline / isolated / signmag; W-lane
//! dot-product units: dot / dot-isolated) and how to count. Out: `DesignResult`: cycles,
//! the accumulator read back (checked against the exact dot product), per-signal toggles,
//! cycles/s.
//!
//! Schedule: 2 reset cycles, then one operand pair per clock cycle for a serial MAC, or one
//! K-slice of LANES pairs per cycle for a dot unit (lane j of slice c takes pair c*LANES+j
//! of the stream, so each lane sees every LANES-th element of a dot product), clear_i
//! with the first pair or slice of each dot product, then drain cycles (the pipeline
//! depth). Each cycle is two evaluations: inputs change with clk low (time 2k), rising
//! edge (time 2k+1). Toggles are counted at those points, either from the VCD Verilator
//! dumps (through `vcd`) or, without any file, by snapshotting the sampled signals after
//! each evaluation (`Counting::Fast`). Both see the same values at the same times, so they
//! agree exactly (tested).
//!
//! Files, in data-flow order: `design` (the catalogue's designs: which parameters take a
//! stream, operand encoding, the reference accumulator), `schedule` (stream -> cycle
//! records), `ffi` (the Verilator models build.rs linked), `run` (cycle records -> counts,
//! threaded, and the gate-level runs), `table` (`SimReport` and its text tables); `tile`
//! replays whole GEMM output blocks into the tile-level MMA unit (its own schedule).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

mod design;
mod ffi;
pub mod fp;
pub mod gate;
mod run;
mod schedule;
mod table;
pub mod tile;

/// The design catalogue (sim/designs.rs), shared with build.rs.
pub mod catalogue {
    include!("../../sim/designs.rs");
}
pub use catalogue::{
    Params, ACC_W, BF16_DOT_EXTRA, BF16_LANES, LANES, TILE_COLS, TILE_DEPTH, TILE_ROWS, WIDTHS,
};
pub use design::{Design, DEFAULT_LANES};
pub use run::{
    simulate, simulate_gate, simulate_lanes, simulate_plan, simulate_threads, SimEvent, SimPlan,
    SimRun,
};
pub use schedule::{export_stream, stimulus_hex};
pub use table::SimReport;

/// How toggles are counted.
#[derive(Debug, Clone)]
pub enum Counting {
    /// Sample the model's signals after every evaluation; no file.
    Fast,
    /// Dump a VCD into this folder and count it with the nom parser.
    Vcd(PathBuf),
    /// Both; the result carries the VCD counts and the run fails if they differ.
    Both(PathBuf),
    /// Simulate only (speed measurement).
    None,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SignalCount {
    pub path: String,
    pub width: u32,
    pub toggles: u64,
    pub group: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct DesignResult {
    pub design: &'static str,
    /// Operand width of a serial MAC; the activation width of a dot unit.
    pub width: u32,
    /// 1 for a serial MAC.
    pub lanes: u32,
    /// "i8 x i8", "i8 x u4": the operand formats the model was built for.
    pub format: String,
    pub acc_width: u32,
    /// MAC operations (operand pairs).
    pub pairs: u64,
    pub cycles: u64,
    /// Accumulator after the last operand, signed, ACC_W bits.
    pub acc_final: i64,
    /// The same computed in Rust from the stream; the run fails if they differ.
    pub acc_expected: i64,
    pub total_toggles: u64,
    /// Toggles without the clock and the operand ports (identical in every design).
    pub datapath_toggles: u64,
    /// Datapath toggles per MAC operation (per pair, whatever the lanes).
    pub toggles_per_pair: f64,
    pub groups: BTreeMap<&'static str, u64>,
    pub signals: Vec<SignalCount>,
    pub counting: &'static str,
    /// "rtl" (the RTL's registers and named wires) or "gate" (every net of the netlist).
    pub level: &'static str,
    pub cycles_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcd: Option<String>,
    /// Gate level: cells, energy, glitches, every net.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<Box<gate::GateDetail>>,
}

/// Verilator version the models were built with.
pub fn verilator_version() -> &'static str {
    env!("PERFWATT_VERILATOR_VERSION")
}
