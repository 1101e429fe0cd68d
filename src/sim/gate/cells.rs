//! Cell energies in, an energy per net toggle out. A `CellTable` gives, for each generic cell
//! kind yosys maps to, the energy inside the cell per output transition, its input pins'
//! capacitances and (for pins that burn energy when they switch without moving the output,
//! a flip-flop's clock) an input-pin energy. A net's toggle then costs
//!
//!   output_energy(driver) + V^2/2 * sum(input_cap of the pins it drives)
//!                         + sum(input_energy of the pins it drives)
//!
//! Tables come as TOML (caps in pF, energies in pJ; the shipped one is `assets/cells/osu018.toml`)
//! or from a Liberty file: `internal_power` rise/fall tables averaged and read at their first
//! index (the lightest load and fastest input the library characterizes), pin
//! `capacitance`, the library's nominal voltage and units.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::liberty;
use super::netlist::{CellKind, Driver, Netlist};
use crate::error::{Error, IoContext, Result};

/// The shipped table (from the OSU 0.18 um library; its header names the source).
pub const DEFAULT_TABLE: &str = include_str!("../../../assets/cells/osu018.toml");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CellTable {
    /// Where the numbers come from (printed in every output).
    pub source: String,
    /// Supply voltage (V) for the V^2/2 C term.
    pub voltage: f64,
    /// A Liberty file to read the numbers from, for the `library_cell`s named below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liberty: Option<PathBuf>,
    /// Per generic kind: NOT BUF AND NAND OR NOR XOR XNOR MUX DFF.
    pub cells: BTreeMap<String, CellEnergy>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CellEnergy {
    /// The library cell the kind stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library_cell: Option<String>,
    /// pJ per output transition (mean of rise and fall, over the related pins).
    #[serde(default)]
    pub output_energy: f64,
    /// pF per input pin, by the generic pin name (A, B, S; a DFF's C and D).
    #[serde(default)]
    pub input_cap: BTreeMap<String, f64>,
    /// pJ per transition of an input pin, where the library gives one (a DFF's clock).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input_energy: BTreeMap<String, f64>,
}

impl CellTable {
    /// The shipped OSU 0.18 um table.
    pub fn shipped() -> CellTable {
        toml::from_str(DEFAULT_TABLE).expect("the shipped cell table parses (tested)")
    }

    /// A table from a file: TOML (numbers, or `liberty` + `library_cell` names), or a
    /// Liberty file (.lib) read for the shipped table's cell names.
    pub fn load(path: &Path) -> Result<CellTable> {
        if path.extension().is_some_and(|e| e == "lib") {
            let names = Self::shipped();
            return Self::from_liberty(path, &names.cell_names()?);
        }
        let text = std::fs::read_to_string(path).at(path)?;
        let t: CellTable =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let t = match &t.liberty {
            Some(lib) => {
                let lib = path.parent().unwrap_or(Path::new(".")).join(lib);
                Self::from_liberty(&lib, &t.cell_names()?)?
            }
            None => t,
        };
        t.check(&path.display().to_string())?;
        Ok(t)
    }

    /// The library cell named for each generic kind.
    pub fn cell_names(&self) -> Result<BTreeMap<CellKind, String>> {
        CellKind::ALL
            .iter()
            .filter_map(|k| {
                let e = self.cells.get(k.name())?;
                Some(e.library_cell.clone().map(|c| (*k, c)).ok_or_else(|| {
                    Error::Config(format!(
                        "cell table: [cells.{}] has no library_cell",
                        k.name()
                    ))
                }))
            })
            .collect()
    }

    /// `cell_names` with overrides from a `--map` list (`NAND=NAND2_X1,DFF=DFFPOSX1`).
    pub fn cell_names_mapped(&self, map: &str) -> Result<BTreeMap<CellKind, String>> {
        let mut names = self.cell_names()?;
        for pair in map.split(',').filter(|p| !p.is_empty()) {
            let (k, cell) = pair
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("--map: {pair} is not KIND=CELL")))?;
            let kind = CellKind::ALL
                .into_iter()
                .find(|c| c.name().eq_ignore_ascii_case(k))
                .ok_or_else(|| Error::Config(format!("--map: no generic cell {k}")))?;
            names.insert(kind, cell.to_string());
        }
        Ok(names)
    }

    /// Read the numbers for `names` (generic kind -> library cell) from a Liberty file.
    /// Generic pins map to the library cell's input pins in their order, except a flip-
    /// flop's C, which is its `clock : true` pin.
    pub fn from_liberty(path: &Path, names: &BTreeMap<CellKind, String>) -> Result<CellTable> {
        let lib = liberty::Library::read(path)?;
        let mut cells = BTreeMap::new();
        for (kind, cell) in names {
            let c = lib.cell(cell).ok_or_else(|| {
                Error::Config(format!(
                    "{}: no cell {cell} (for {}); name the library's cells in a TOML table \
                     (`liberty = \"...\"` and `library_cell` per kind)",
                    path.display(),
                    kind.name()
                ))
            })?;
            let inputs = c.inputs();
            let clock = inputs.iter().position(|p| p.clock);
            let mut order: Vec<usize> = (0..inputs.len()).filter(|&i| Some(i) != clock).collect();
            if *kind == CellKind::Dff {
                order.insert(
                    0,
                    clock.ok_or_else(|| {
                        Error::Config(format!("{}: {cell} has no clock pin", path.display()))
                    })?,
                );
            }
            let generic = kind.inputs();
            if order.len() < generic.len() {
                return Err(Error::Config(format!(
                    "{}: {cell} has {} inputs, {} needs {}",
                    path.display(),
                    order.len(),
                    kind.name(),
                    generic.len()
                )));
            }
            let mut e = CellEnergy {
                library_cell: Some(cell.clone()),
                output_energy: c.output_energy() * lib.energy_scale,
                ..Default::default()
            };
            for (g, &i) in generic.iter().zip(&order) {
                e.input_cap
                    .insert(g.to_string(), inputs[i].capacitance * lib.cap_scale);
                if let Some(pe) = inputs[i].energy {
                    e.input_energy.insert(g.to_string(), pe * lib.energy_scale);
                }
            }
            cells.insert(kind.name().to_string(), e);
        }
        Ok(CellTable {
            source: format!(
                "{} (library {}): internal_power at each table's first index, pin capacitance, {} V",
                path.display(),
                lib.name,
                lib.voltage
            ),
            voltage: lib.voltage,
            liberty: None,
            cells,
        })
    }

    /// The table as TOML (what `perfwatt cells` prints), with a header on its units.
    pub fn to_toml(&self) -> String {
        format!(
            "# perfwatt cell energy table: per generic gate, pJ per output transition\n\
             # (output_energy), input pin capacitance in pF (input_cap) and pJ per input pin\n\
             # transition where the library has one (input_energy). A net's toggle costs\n\
             # output_energy(driver) + voltage^2/2 * sum(input_cap) + sum(input_energy) of the\n\
             # pins it drives.\n{}",
            toml::to_string(self).expect("serializable")
        )
    }

    fn check(&self, file: &str) -> Result<()> {
        for k in self.cells.keys() {
            if !CellKind::ALL.iter().any(|c| c.name() == k) {
                return Err(Error::Config(format!(
                    "{file}: [cells.{k}] is not a generic cell (NOT BUF AND NAND OR NOR XOR XNOR MUX DFF)"
                )));
            }
        }
        Ok(())
    }

    fn entry(&self, k: CellKind) -> Result<&CellEnergy> {
        self.cells.get(k.name()).ok_or_else(|| {
            Error::Config(format!(
                "cell table ({}) has no [cells.{}]",
                self.source,
                k.name()
            ))
        })
    }

    /// pJ per toggle of each net of `nl`.
    pub fn net_energies(&self, nl: &Netlist) -> Result<Vec<f64>> {
        let fanout = nl.fanout();
        let mut out = Vec::with_capacity(nl.nets.len());
        for (id, net) in nl.nets.iter().enumerate() {
            let mut e = match net.driver {
                Driver::Cell(c) => self.entry(nl.cells[c].kind)?.output_energy,
                _ => 0.0,
            };
            for &(c, pin) in &fanout[id] {
                let kind = nl.cells[c].kind;
                let t = self.entry(kind)?;
                let name = kind.inputs()[pin];
                e += 0.5
                    * self.voltage
                    * self.voltage
                    * t.input_cap.get(name).copied().unwrap_or(0.0);
                e += t.input_energy.get(name).copied().unwrap_or(0.0);
            }
            out.push(e);
        }
        Ok(out)
    }
}
