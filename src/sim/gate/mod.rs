//! Gate-level switching: a design of rtl/ synthesized by yosys to generic gates, the netlist
//! simulated with Verilator on the same cycle records as the RTL, every net counted.
//!
//! In: a design and its model parameters, the RTL schedule's cycle records, a cell energy
//! table. Out: per-net toggles (grouped by the RTL signal each net is or feeds), per-cell-
//! kind totals, an energy estimate (`cells`), and optionally the glitches a unit-delay
//! simulation of the first cycles adds (`glitch`, iverilog).
//!
//! The netlist and its Verilator program are build products, cached per (design,
//! parameters, RTL text, yosys and Verilator versions) under `cache_dir()`: the first run of
//! a design synthesizes and compiles (seconds to a minute), later runs only simulate.

pub mod cells;
pub mod glitch;
pub mod liberty;
pub mod model;
pub mod netlist;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
pub use cells::CellTable;
pub use netlist::{CellKind, Driver, Netlist};

/// Where synthesized netlists and their simulators are kept: $PERFWATT_CACHE, else
/// $XDG_CACHE_HOME/perfwatt, else ~/.cache/perfwatt, else the system temp folder.
pub fn cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("PERFWATT_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("perfwatt")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("perfwatt")))
        .unwrap_or_else(|| std::env::temp_dir().join("perfwatt-cache"))
        .join("gate")
}

/// How a gate-level run counts and prices.
#[derive(Debug, Clone)]
pub struct GateOptions {
    pub cells: CellTable,
    /// Cycles of the stream's start simulated with unit delays for glitches (0: none).
    pub glitch_cycles: usize,
    pub cache: PathBuf,
}

impl Default for GateOptions {
    fn default() -> Self {
        GateOptions {
            cells: CellTable::shipped(),
            glitch_cycles: 0,
            cache: cache_dir(),
        }
    }
}

/// A synthesized design ready to simulate.
pub struct Prepared {
    pub netlist: Netlist,
    pub model: model::GateModel,
    pub dir: PathBuf,
    pub yosys: String,
    /// The synthesis script as run (file names shortened).
    pub script: String,
}

/// Synthesize and build `module` with Verilog parameters `params` (or find them cached),
/// for cycle records of `nw` words per operand port. `name` names the cache entry.
pub fn prepare(
    module: &str,
    params: &[String],
    nw: usize,
    name: &str,
    cache: &Path,
) -> Result<Prepared> {
    let yosys = netlist::yosys_version()?;
    let verilator = Command::new("verilator")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .map_err(|e| Error::Sim(format!("cannot run verilator: {e} (run `make deps`)")))?;
    let mut h = crc32fast::Hasher::new();
    for part in [
        yosys.as_str(),
        verilator.as_str(),
        netlist::YOSYS_SCRIPT,
        module,
        &params.join(" "),
    ] {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    for (_, text) in netlist::RTL_SOURCES {
        h.update(text.as_bytes());
    }
    h.update(model::MAIN_CPP.as_bytes());
    h.update(model::SHIM_H.as_bytes());
    let dir = cache.join(format!("{name}-{:08x}", h.finalize()));
    let json = |d: &Path| d.join("netlist.json");
    // One build at a time in a process (threads asking for the same model wait for it);
    // across processes, each builds aside and renames into place, so none sees half a
    // build.
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !json(&dir).exists() {
        eprintln!(
            "perfwatt: synthesizing {name} with yosys and building its netlist with Verilator \
             into {} (once; a serial MAC takes seconds, a 16-lane dot unit minutes, a 64-lane one \
             far longer)",
            dir.display()
        );
        let tmp = cache.join(format!(".{name}-tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let script = netlist::synthesize(module, params, &tmp.join("synth"), &json(&tmp))?;
        let path = tmp.join("yosys.ys");
        std::fs::write(&path, script).at(&path)?;
        let nl = read_netlist(&json(&tmp), module)?;
        model::build(&nl, nw, &tmp)?;
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
            if !json(&dir).exists() {
                return Err(Error::Sim(format!(
                    "cannot move {} to {}",
                    tmp.display(),
                    dir.display()
                )));
            }
        }
    }
    let nl = read_netlist(&json(&dir), module)?;
    let model = model::build(&nl, nw, &dir)?;
    let script = dir.join("yosys.ys");
    let script = std::fs::read_to_string(&script).at(&script)?;
    Ok(Prepared {
        netlist: nl,
        model,
        dir,
        yosys,
        script,
    })
}

fn read_netlist(path: &Path, module: &str) -> Result<Netlist> {
    let text = std::fs::read_to_string(path).at(path)?;
    Netlist::parse(&text, module, &path.display().to_string())
}

/// What a gate-level run adds to a design's result.
#[derive(Debug, Clone, Serialize)]
pub struct GateDetail {
    pub yosys: String,
    pub synthesis: String,
    pub netlist_dir: String,
    pub nets: usize,
    pub cells: Vec<CellRow>,
    /// Energy estimate over the whole stream, pJ, and its source.
    pub energy_pj: f64,
    pub energy_fj_per_pair: f64,
    pub energy_source: String,
    pub energy_by_group: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub glitch: Option<GlitchSummary>,
    /// Every net: name or the signal it feeds, driver, toggles, energy.
    pub net_rows: Vec<NetRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CellRow {
    pub kind: &'static str,
    pub library_cell: String,
    pub count: usize,
    /// Toggles of the outputs of the cells of this kind.
    pub output_toggles: u64,
    /// Energy of those toggles (output, wires they drive, pins), pJ.
    pub energy_pj: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetRow {
    pub net: usize,
    pub name: String,
    pub signal: String,
    pub driver: String,
    pub toggles: u64,
    pub energy_pj: f64,
}

/// A unit-delay sample's glitches.
#[derive(Debug, Clone, Serialize)]
pub struct GlitchSummary {
    pub cycles: usize,
    /// Time units per half cycle (longest gate path + 4).
    pub half_cycle_units: u64,
    pub functional: u64,
    pub transitions: u64,
    pub glitches: u64,
    /// Glitch transitions per functional toggle.
    pub glitch_ratio: f64,
    pub energy_functional_pj: f64,
    pub energy_with_glitches_pj: f64,
    /// Glitches per functional toggle by signal group.
    pub ratio_by_group: BTreeMap<String, f64>,
    /// iverilog's functional toggles equal the zero-delay Verilator model's, per net.
    pub functional_matches_zero_delay: bool,
}

/// The driver of a net, for tables.
pub fn driver_name(nl: &Netlist, net: usize) -> String {
    match nl.nets[net].driver {
        Driver::Port { port, .. } => format!("port {}", nl.ports[port].name),
        Driver::Cell(c) => nl.cells[c].kind.name().to_string(),
        Driver::None => "none".into(),
    }
}

/// A run's toggles priced: per cell kind, per net, per signal group, in all (pJ).
pub struct Priced {
    pub cells: Vec<CellRow>,
    pub nets: Vec<NetRow>,
    pub by_group: BTreeMap<String, f64>,
    pub total_pj: f64,
}

/// Per-kind and per-net rows and the energy totals for `toggles` (per net), each net's
/// toggle costing `e` (pJ, `CellTable::net_energies` of `table`).
pub fn price(
    nl: &Netlist,
    table: &CellTable,
    e: &[f64],
    toggles: &[u64],
    group_of: &dyn Fn(usize) -> String,
) -> Priced {
    let mut cells: BTreeMap<CellKind, CellRow> = BTreeMap::new();
    for (kind, n) in nl.cell_counts() {
        cells.insert(
            kind,
            CellRow {
                kind: kind.name(),
                // A table of numbers alone names no library cell.
                library_cell: table
                    .cells
                    .get(kind.name())
                    .and_then(|c| c.library_cell.clone())
                    .unwrap_or_default(),
                count: n,
                output_toggles: 0,
                energy_pj: 0.0,
            },
        );
    }
    let mut groups = BTreeMap::new();
    let mut rows = Vec::with_capacity(nl.nets.len());
    let mut total = 0.0;
    for (id, net) in nl.nets.iter().enumerate() {
        let pj = toggles[id] as f64 * e[id];
        total += pj;
        *groups.entry(group_of(id)).or_insert(0.0) += pj;
        if let Driver::Cell(c) = net.driver {
            let row = cells.get_mut(&nl.cells[c].kind).expect("counted");
            row.output_toggles += toggles[id];
            row.energy_pj += pj;
        }
        rows.push(NetRow {
            net: id,
            name: net.name.clone().unwrap_or_default(),
            signal: net.signal.clone(),
            driver: driver_name(nl, id),
            toggles: toggles[id],
            energy_pj: pj,
        });
    }
    Priced {
        cells: cells.into_values().collect(),
        nets: rows,
        by_group: groups,
        total_pj: total,
    }
}
