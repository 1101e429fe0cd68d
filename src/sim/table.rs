//! What `perfwatt sim` prints: `SimReport`, the stream's provenance and one result per
//! design, as JSON or as side-by-side text tables (RTL and gate level).
//!
//! In: an `OperandStream` and its `DesignResult`s. Out: `SimReport` and its tables.

use serde::Serialize;

use crate::trace::OperandStream;

use super::{gate, verilator_version, DesignResult, SignalCount};

/// What `perfwatt sim` prints: the stream's provenance and one result per design.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub source: serde_json::Value,
    pub pairs: u64,
    pub width: u8,
    /// Operand formats, activation x weight ("i8 x u4").
    pub format: String,
    pub zero_fraction: f64,
    pub verilator: &'static str,
    pub designs: Vec<DesignResult>,
}

impl SimReport {
    pub fn new(stream: &OperandStream, designs: Vec<DesignResult>) -> Self {
        SimReport {
            source: stream.meta.clone(),
            pairs: stream.pairs.len() as u64,
            width: stream.width,
            format: stream.format_name(),
            zero_fraction: stream.zero_fraction(),
            verilator: verilator_version(),
            designs,
        }
    }

    /// Per design totals, then per group and per signal side by side with the change
    /// relative to the first design (the baseline).
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "stream: {} pairs, {}, {:.1}% with a zero operand ({})\n\n",
            self.pairs,
            self.format,
            100.0 * self.zero_fraction,
            self.source
                .get("source")
                .and_then(|s| s.as_str())
                .unwrap_or("?")
        );
        out.push_str(&format!(
            "{:<13} {:>5} {:>12} {:>14} {:>14} {:>10} {:>14}\n",
            "design", "level", "cycles", "acc_final", "datapath tgl", "tgl/pair", "cycles/s"
        ));
        for d in &self.designs {
            // An fp32 accumulator reads as its value, not its bits.
            let acc = if d.format.starts_with("bf16") {
                format!("{:e}", f32::from_bits(d.acc_final as u32))
            } else {
                d.acc_final.to_string()
            };
            out.push_str(&format!(
                "{:<13} {:>5} {:>12} {:>14} {:>14} {:>10.2} {:>14.0}\n",
                d.design,
                d.level,
                d.cycles,
                acc,
                d.datapath_toggles,
                d.toggles_per_pair,
                d.cycles_per_s
            ));
        }
        for level in ["rtl", "gate"] {
            let at: Vec<&DesignResult> = self.designs.iter().filter(|d| d.level == level).collect();
            if !at.is_empty() {
                out.push_str(&format!("\n{level} level:"));
                out.push_str(&compare_signals(&at));
            }
        }
        out.push_str(&self.gate_table());
        out
    }

    /// Gate level beside RTL per design, then the cells, energy and glitches.
    fn gate_table(&self) -> String {
        let gates: Vec<(&DesignResult, &gate::GateDetail)> = self
            .designs
            .iter()
            .filter_map(|d| Some((d, d.gate.as_deref()?)))
            .collect();
        let Some((_, first)) = gates.first() else {
            return String::new();
        };
        let mut out = format!(
            "\ngate level vs RTL (datapath toggles: without clock and operand ports)\n{:<13} {:>14} {:>14} {:>7} {:>7} {:>7} {:>14} {:>10} {:>9}\n",
            "design", "rtl tgl", "gate tgl", "gate/rtl", "cells", "nets", "energy pJ", "fJ/pair", "glitch/f"
        );
        for (d, g) in &gates {
            let rtl = self
                .designs
                .iter()
                .find(|r| r.level == "rtl" && r.design == d.design && r.lanes == d.lanes);
            let rtl_tgl = rtl.map_or("-".to_string(), |r| r.datapath_toggles.to_string());
            let ratio = rtl
                .filter(|r| r.datapath_toggles > 0)
                .map_or("-".to_string(), |r| {
                    format!(
                        "{:.2}",
                        d.datapath_toggles as f64 / r.datapath_toggles as f64
                    )
                });
            let glitch = g
                .glitch
                .as_ref()
                .map_or("-".to_string(), |x| format!("{:.2}", x.glitch_ratio));
            out.push_str(&format!(
                "{:<13} {:>14} {:>14} {:>7} {:>7} {:>7} {:>14.0} {:>10.0} {:>9}\n",
                d.design,
                rtl_tgl,
                d.datapath_toggles,
                ratio,
                g.cells.iter().map(|c| c.count).sum::<usize>(),
                g.nets,
                g.energy_pj,
                g.energy_fj_per_pair,
                glitch
            ));
        }
        out.push_str(&format!(
            "\nper cell kind: count / output toggles / energy pJ\n{:<6}",
            "kind"
        ));
        for (d, _) in &gates {
            out.push_str(&format!(" {:>34}", d.design));
        }
        out.push('\n');
        for kind in gate::CellKind::ALL {
            let cells: Vec<Option<&gate::CellRow>> = gates
                .iter()
                .map(|(_, g)| g.cells.iter().find(|c| c.kind == kind.name()))
                .collect();
            if cells.iter().all(Option::is_none) {
                continue;
            }
            out.push_str(&format!("{:<6}", kind.name()));
            for c in cells {
                let cell = c.map_or("-".to_string(), |c| {
                    format!("{} / {} / {:.0}", c.count, c.output_toggles, c.energy_pj)
                });
                out.push_str(&format!(" {cell:>34}"));
            }
            out.push('\n');
        }
        for (d, g) in &gates {
            if let Some(x) = &g.glitch {
                out.push_str(&format!(
                    "glitches ({}, first {} cycles, unit gate delay, iverilog): {} functional toggles, {} glitch transitions ({:.2} per toggle); energy x{:.2} with glitches; settled values {} the zero-delay model's\n",
                    d.design,
                    x.cycles,
                    x.functional,
                    x.glitches,
                    x.glitch_ratio,
                    x.energy_with_glitches_pj / x.energy_functional_pj.max(1e-30),
                    if x.functional_matches_zero_delay { "match" } else { "DIFFER FROM" }
                ));
            }
        }
        out.push_str(&format!(
            "energy: {}\nsynthesis: {} ({})\n",
            first.energy_source, first.synthesis, first.yosys
        ));
        out
    }
}

/// Per group and per signal side by side, with the change of each design after the first
/// relative to the first (the baseline).
fn compare_signals(designs: &[&DesignResult]) -> String {
    let mut out = String::new();
    let pct = |b: u64, x: u64| {
        if b == 0 {
            "n/a".to_string()
        } else {
            format!("{:+.1}%", 100.0 * (x as f64 - b as f64) / b as f64)
        }
    };
    out.push_str(&format!("\n{:<22}", "group / signal"));
    for (i, d) in designs.iter().enumerate() {
        out.push_str(&format!(" {:>12}", d.design));
        if i > 0 {
            out.push_str(&format!(" {:>9}", "change"));
        }
    }
    out.push('\n');
    // Each design after the first is followed by its change relative to the first.
    let row = |out: &mut String, name: &str, vals: Vec<Option<u64>>| {
        out.push_str(&format!("{name:<22}"));
        for (i, v) in vals.iter().enumerate() {
            out.push_str(&format!(
                " {:>12}",
                v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
            ));
            if i > 0 {
                let c = match (vals[0], v) {
                    (Some(b), Some(x)) => pct(b, *x),
                    _ => String::new(),
                };
                out.push_str(&format!(" {c:>9}"));
            }
        }
        out.push('\n');
    };
    let groups: std::collections::BTreeSet<&str> = designs
        .iter()
        .flat_map(|d| d.groups.keys().copied())
        .collect();
    for g in groups {
        let vals = designs.iter().map(|d| d.groups.get(g).copied()).collect();
        row(&mut out, &format!("[{g}]"), vals);
    }
    // A signal's name within its design (`g_level[1].s` keeps its scope).
    let local = |s: &SignalCount| {
        s.path
            .split_once('.')
            .map_or(s.path.clone(), |p| p.1.to_string())
    };
    let mut names: Vec<String> = Vec::new();
    for d in designs {
        for s in &d.signals {
            let n = local(s);
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    for n in names {
        let vals = designs
            .iter()
            .map(|d| d.signals.iter().find(|s| local(s) == n).map(|s| s.toggles))
            .collect();
        row(&mut out, &format!("  {n}"), vals);
    }
    let totals = designs.iter().map(|d| Some(d.datapath_toggles)).collect();
    row(&mut out, "datapath total", totals);
    out
}
