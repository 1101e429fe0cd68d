//! Netlist in, per-net toggle counts out: the netlist's Verilog is built with Verilator into
//! a small program (sim/gate_main.cpp plus the generated bit snapshot) once per netlist,
//! cached; a run pipes the RTL harness's cycle records into it and reads back the cycles,
//! the accumulator and one toggle count per net.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::netlist::Netlist;
use crate::error::{Error, IoContext, Result};

pub(crate) const MAIN_CPP: &str = include_str!("../../../sim/gate_main.cpp");
pub(crate) const SHIM_H: &str = include_str!("../../../sim/shim.h");

/// What one zero-delay run returns.
#[derive(Debug, Clone)]
pub struct NetToggles {
    pub cycles: u64,
    pub acc: u64,
    /// Per net, in netlist order.
    pub toggles: Vec<u64>,
}

/// A built netlist simulator.
#[derive(Debug, Clone)]
pub struct GateModel {
    pub exe: PathBuf,
    pub nets: usize,
}

/// Build (or find in `dir`) the Verilator program for `nl`, whose cycle records carry `nw`
/// 32-bit words per operand port.
pub fn build(nl: &Netlist, nw: usize, dir: &Path) -> Result<GateModel> {
    let exe = dir.join("obj").join("gate_sim");
    let model = GateModel {
        exe: exe.clone(),
        nets: nl.nets.len(),
    };
    // The program is current when it was built from this very Verilog (a newer perfwatt
    // may number or write the nets differently from the same yosys netlist).
    let v = dir.join("gate.v");
    let verilog = nl.verilog(false);
    if exe.exists() && std::fs::read_to_string(&v).is_ok_and(|old| old == verilog) {
        return Ok(model);
    }
    std::fs::create_dir_all(dir).at(dir)?;
    let _ = std::fs::remove_dir_all(dir.join("obj"));
    std::fs::write(&v, verilog).at(&v)?;
    // The snapshot: each net's bit into word id / 64, bit id % 64.
    let mut snap =
        String::from("static inline void pw_gate_snap(Vgate___024root* r, uint64_t* o) {\n");
    for w in 0..nl.nets.len().div_ceil(64) {
        let terms: Vec<String> = (w * 64..((w + 1) * 64).min(nl.nets.len()))
            .map(|id| format!("(uint64_t)r->gate__DOT__n{id} << {}", id % 64))
            .collect();
        snap.push_str(&format!("  o[{w}] = {};\n", terms.join(" | ")));
    }
    snap.push_str("}\n");
    let main = format!(
        "#include \"Vgate.h\"\n#include \"Vgate___024root.h\"\n#define PW_NW {nw}\n#define PW_NETS {}\n{snap}{MAIN_CPP}",
        nl.nets.len()
    );
    let main_path = dir.join("gate_main.cpp");
    std::fs::write(&main_path, main).at(&main_path)?;
    let shim = dir.join("shim.h");
    std::fs::write(&shim, SHIM_H).at(&shim)?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let out = Command::new("verilator")
        .args(["--cc", "--exe", "--build", "-j", &jobs.to_string()])
        .args(["-O3", "--x-assign", "0", "--x-initial", "0", "--public-flat-rw"])
        .args(["-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-UNOPTFLAT"])
        .args(["--top-module", "gate", "--prefix", "Vgate", "--Mdir"])
        .arg(dir.join("obj"))
        .args(["-o", "gate_sim", "-CFLAGS"])
        .arg(format!("-O1 -I{}", dir.display()))
        .arg(&v)
        .arg(&main_path)
        .output()
        .map_err(|e| {
            Error::Sim(format!(
                "cannot run verilator ({e}): install it with `make deps` (apt-get install verilator)"
            ))
        })?;
    if !out.status.success() || !exe.exists() {
        let log = dir.join("verilator.log");
        let mut text = out.stdout.clone();
        text.extend_from_slice(&out.stderr);
        std::fs::write(&log, &text).at(&log)?;
        return Err(Error::Sim(format!(
            "building the gate-level model in {} failed ({}); log: {}",
            dir.display(),
            out.status,
            log.display()
        )));
    }
    Ok(model)
}

impl GateModel {
    /// Replay `records` (the flattened `PwCycle` words of the RTL schedule, `stride` words
    /// per cycle) and count. `progress` gets the cycles sent so far.
    pub fn run(
        &self,
        records: &[u32],
        stride: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<NetToggles> {
        let mut child = Command::new(&self.exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .at(&self.exe)?;
        let mut stdin = child.stdin.take().expect("piped");
        // The child answers only at EOF, so writing everything first cannot deadlock.
        let chunk = stride * 16384;
        for (i, part) in records.chunks(chunk).enumerate() {
            let bytes: Vec<u8> = part.iter().flat_map(|w| w.to_le_bytes()).collect();
            stdin.write_all(&bytes).at(&self.exe)?;
            progress((i * chunk + part.len()) / stride);
        }
        drop(stdin);
        let out = child.wait_with_output().at(&self.exe)?;
        if !out.status.success() {
            return Err(Error::Sim(format!(
                "{} failed ({}): {}",
                self.exe.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        parse_output(&out.stdout, self.nets, &self.exe)
    }
}

fn parse_output(text: &[u8], nets: usize, exe: &Path) -> Result<NetToggles> {
    let bad = |what: &str| Error::Sim(format!("{}: unexpected output ({what})", exe.display()));
    let mut lines = text.lines();
    let mut field = |key: &str| -> Result<u64> {
        let l = lines
            .next()
            .ok_or_else(|| bad(key))?
            .map_err(|_| bad(key))?;
        l.strip_prefix(key)
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| bad(key))
    };
    let cycles = field("cycles")?;
    let acc = field("acc")?;
    let toggles = lines
        .map(|l| {
            l.ok()
                .and_then(|l| l.trim().parse().ok())
                .ok_or_else(|| bad("count"))
        })
        .collect::<Result<Vec<u64>>>()?;
    if toggles.len() != nets {
        return Err(bad(&format!("{} counts for {nets} nets", toggles.len())));
    }
    Ok(NetToggles {
        cycles,
        acc,
        toggles,
    })
}
