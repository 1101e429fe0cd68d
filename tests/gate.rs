//! Gate level: yosys netlists compute what the RTL computes (every design, both widths,
//! random, edge and real streams), Verilator's zero-delay net toggles equal iverilog's
//! settled ones per net, glitches are counted apart, the energy model follows its formula,
//! the shipped cell table is the Liberty file's numbers, and bad inputs are named.
//!
//! Netlists are built once into target/gate-cache (each test builds different models, so
//! nextest's parallel processes do not build the same one twice).

#[allow(dead_code)]
mod common;

use std::path::PathBuf;
use std::process::Command;

use perfwatt::sim::gate::{CellKind, CellTable, GateOptions, Netlist};
use perfwatt::sim::{simulate_gate, simulate_lanes, Counting, Design, DesignResult};
use perfwatt::trace::synth::{self, Kind};
use perfwatt::trace::{ElemFormat, OperandStream};

/// A design of the catalogue by name.
fn named(name: &str) -> Design {
    Design::named(name).unwrap()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn opts(glitch_cycles: usize) -> GateOptions {
    GateOptions {
        cells: CellTable::shipped(),
        glitch_cycles,
        cache: root().join("target").join("gate-cache"),
    }
}

fn int_stream(width: u8, pairs: Vec<(i16, i16)>, dot_len: usize) -> OperandStream {
    OperandStream::new(
        width,
        pairs,
        serde_json::json!({"source": "test", "dot_len": dot_len}),
    )
    .unwrap()
}

fn sample() -> OperandStream {
    OperandStream::read(&root().join("traces/sample_q4_1.ops"), 8).unwrap()
}

/// RTL and gate level on one stream: the gate run checks its accumulator against the exact
/// dot product itself; here it must also equal the RTL's, and the port nets must toggle
/// as the RTL's ports do.
fn both(
    d: Design,
    lanes: u32,
    s: &OperandStream,
    o: &GateOptions,
    what: &str,
) -> (DesignResult, DesignResult) {
    let rtl = simulate_lanes(d, lanes, s, &Counting::Fast, &mut |_| {})
        .unwrap_or_else(|e| panic!("{what} {} x{lanes} rtl: {e}", d.name()));
    let gate = simulate_gate(d, lanes, s, o, &mut |_| {})
        .unwrap_or_else(|e| panic!("{what} {} x{lanes} gate: {e}", d.name()));
    assert_eq!(
        gate.acc_final,
        rtl.acc_final,
        "{what} {} x{lanes}",
        d.name()
    );
    assert_eq!(gate.cycles, rtl.cycles);
    for port in ["clk_i", "a_i", "b_i", "valid_i", "clear_i"] {
        let t = |r: &DesignResult| {
            r.signals
                .iter()
                .find(|x| x.path.ends_with(&format!(".{port}")))
                .map(|x| x.toggles)
        };
        assert_eq!(
            t(&gate),
            t(&rtl),
            "{what} {} x{lanes}: port {port}",
            d.name()
        );
    }
    (rtl, gate)
}

fn edge_cases(width: u8, n: usize) -> Vec<(&'static str, Vec<(i16, i16)>)> {
    let (lo, hi) = OperandStream::range(width);
    let (lo, hi) = (lo as i16, hi as i16);
    vec![
        ("all-min", vec![(lo, lo); n]),
        ("min-max", vec![(lo, hi); n]),
        ("all-zero", vec![(0, 0); n]),
        (
            "alternating",
            (0..n)
                .map(|i| if i % 2 == 0 { (hi, lo) } else { (lo, lo) })
                .collect(),
        ),
    ]
}

#[test]
fn serial_mac_netlists_compute_what_the_rtl_computes() {
    let o = opts(0);
    for width in [8u8, 16] {
        let mut cases = edge_cases(width, 256);
        cases.push((
            "random",
            synth::stream(Kind::Random, 20_000, width, 3).pairs,
        ));
        cases.push((
            "sparse",
            synth::stream(Kind::ActivationLike, 20_000, width, 4).pairs,
        ));
        for d in Design::integer_macs() {
            for (what, pairs) in &cases {
                // Dot products of 64 (the accumulator restarts) and one long one.
                for k in [64, pairs.len()] {
                    let n = pairs.len() / k * k;
                    both(d, 1, &int_stream(width, pairs[..n].to_vec(), k), &o, what);
                }
            }
        }
    }
    for d in Design::integer_macs() {
        both(d, 1, &sample(), &o, "shipped sample");
    }
}

#[test]
fn dot_unit_netlists_compute_what_the_rtl_computes() {
    let o = opts(0);
    let random = synth::stream(Kind::Random, 16_384, 8, 31).pairs;
    let u4 = |pairs: Vec<(i16, i16)>, k: usize| {
        let pairs = pairs
            .into_iter()
            .map(|(a, b)| (a, b.rem_euclid(16)))
            .collect();
        let meta = serde_json::json!({"source": "test", "dot_len": k});
        OperandStream::with_formats(ElemFormat::I8, ElemFormat::U4, "test", pairs, meta).unwrap()
    };
    for d in [named("dot"), named("dot-isolated")] {
        for (what, pairs) in edge_cases(8, 512)
            .into_iter()
            .chain([("random", random.clone())])
        {
            both(d, 4, &int_stream(8, pairs.clone(), 64), &o, what);
            both(d, 4, &u4(pairs, 64), &o, what);
        }
        both(d, 4, &sample(), &o, "shipped sample");
    }
}

#[test]
fn bf16_netlists_compute_what_the_rtl_computes() {
    let o = opts(0);
    let mut r = perfwatt::stats::Rng::new(5);
    let mut bits = |exp_lo: u64, exp_span: u64| -> i16 {
        let sign = (r.next_u64() & 1) << 15;
        let exp = (exp_lo + r.next_u64() % exp_span) << 7;
        (sign | exp | (r.next_u64() & 0x7f)) as u16 as i16
    };
    let moderate: Vec<(i16, i16)> = (0..8192).map(|_| (bits(120, 14), bits(120, 14))).collect();
    let wide: Vec<(i16, i16)> = (0..8192).map(|_| (bits(0, 255), bits(0, 255))).collect();
    let bf16 = |pairs: Vec<(i16, i16)>, k: usize| {
        let meta = serde_json::json!({"source": "test", "dot_len": k});
        OperandStream::with_formats(ElemFormat::Bf16, ElemFormat::Bf16, "test", pairs, meta)
            .unwrap()
    };
    for (what, pairs) in [("moderate exponents", moderate), ("every exponent", wide)] {
        for k in [16, 8192] {
            both(named("bf16"), 1, &bf16(pairs.clone(), k), &o, what);
            both(named("bf16-dot"), 4, &bf16(pairs.clone(), k), &o, what);
        }
    }
}

/// iverilog with one time unit per gate: the settled values toggle exactly as the
/// zero-delay Verilator model's nets do (net by net), and the multiplier glitches.
#[test]
fn unit_delay_sample_agrees_with_zero_delay_and_counts_glitches() {
    assert!(
        Command::new("iverilog").arg("-V").output().is_ok(),
        "iverilog is not installed: run `make deps`"
    );
    let s = sample();
    for (d, lanes) in [
        (named("baseline"), 1),
        (named("isolated"), 1),
        (named("dot"), 4),
    ] {
        let r = simulate_gate(d, lanes, &s, &opts(600), &mut |_| {}).unwrap();
        let g = r.gate.as_ref().unwrap().glitch.as_ref().unwrap();
        assert!(
            g.functional_matches_zero_delay,
            "{}: iverilog and Verilator differ",
            d.name()
        );
        assert_eq!(g.cycles, 600);
        assert!(g.functional > 10_000, "{}: {g:?}", d.name());
        assert_eq!(g.transitions, g.functional + g.glitches);
        assert!(
            g.glitches > 0,
            "{}: a real multiplier glitches under unit delays",
            d.name()
        );
        assert!(g.energy_with_glitches_pj > g.energy_functional_pj);
        assert!(
            g.ratio_by_group.get("product").copied().unwrap_or(0.0) > 0.1,
            "{g:?}"
        );
    }
}

/// The issue's observation on the shipped stream: the gate level sees several times the
/// RTL's activity, and operand isolation saves less there (its own logic switches).
#[test]
fn gate_level_sees_more_activity_and_a_smaller_isolation_saving() {
    let o = opts(0);
    let s = sample();
    let (rb, gb) = both(named("baseline"), 1, &s, &o, "sample");
    let (ri, gi) = both(named("isolated"), 1, &s, &o, "sample");
    let saving = |b: &DesignResult, i: &DesignResult| {
        1.0 - i.datapath_toggles as f64 / b.datapath_toggles as f64
    };
    let (rtl, gate) = (saving(&rb, &ri), saving(&gb, &gi));
    assert!(
        gb.datapath_toggles > 4 * rb.datapath_toggles,
        "{} vs {}",
        gb.datapath_toggles,
        rb.datapath_toggles
    );
    assert!(
        rtl > 0.15 && gate > 0.0 && gate < rtl,
        "saving rtl {rtl:.3} gate {gate:.3}"
    );
    // Energy: positive, counted over every net, and lower for the isolated design.
    let e = |r: &DesignResult| r.gate.as_ref().unwrap().energy_pj;
    assert!(e(&gi) > 0.0 && e(&gi) < e(&gb));
    let g = gb.gate.as_ref().unwrap();
    assert_eq!(g.net_rows.len(), g.nets);
    let sum: f64 = g.net_rows.iter().map(|n| n.energy_pj).sum();
    assert!((sum - g.energy_pj).abs() < 1e-6 * g.energy_pj);
    let by_kind: u64 = g.cells.iter().map(|c| c.output_toggles).sum();
    let cell_nets: u64 = g
        .net_rows
        .iter()
        .filter(|n| !n.driver.starts_with("port"))
        .map(|n| n.toggles)
        .sum();
    assert_eq!(by_kind, cell_nets);
}

/// A hand-written netlist: y = ~(a & b) registered; energies by the formula.
#[test]
fn net_energy_follows_the_formula() {
    let json = r#"{"modules": {"t": {
      "ports": {"clk_i": {"direction": "input", "bits": [2]},
                "a_i": {"direction": "input", "bits": [3, 4]},
                "acc_o": {"direction": "output", "bits": [6, "0"]}},
      "cells": {
        "n": {"type": "$_NAND_", "connections": {"A": [3], "B": [4], "Y": [5]}},
        "f": {"type": "$_DFF_P_", "connections": {"C": [2], "D": [5], "Q": [6]}},
        "i": {"type": "$_NOT_", "connections": {"A": [5], "Y": [7]}}},
      "netnames": {"acc_q": {"hide_name": 0, "bits": [6]},
                   "dead": {"hide_name": 0, "bits": [9]}}}}}"#;
    let nl = Netlist::parse(json, "t", "test.json").unwrap();
    // Ports' bits, the NAND output, the flop, the inverter; `dead` (no driver, no reader)
    // is dropped.
    assert_eq!(nl.nets.len(), 6);
    assert_eq!(nl.depth(), 2);
    let id = |name: &str| {
        nl.nets
            .iter()
            .position(|n| n.name.as_deref() == Some(name))
            .unwrap()
    };
    let nand = nl
        .nets
        .iter()
        .position(|n| n.signal == "acc_q (logic)")
        .unwrap();
    let t = CellTable::shipped();
    let c = |k: CellKind| t.cells[k.name()].clone();
    let e = t.net_energies(&nl).unwrap();
    let half_v2 = 0.5 * t.voltage * t.voltage;
    let (nand_c, dff_c, not_c) = (c(CellKind::Nand), c(CellKind::Dff), c(CellKind::Not));
    let want = nand_c.output_energy
        + half_v2 * (dff_c.input_cap["D"] + not_c.input_cap["A"])
        + dff_c.input_energy["D"];
    assert!((e[nand] - want).abs() < 1e-12, "{} vs {want}", e[nand]);
    let clk = id("clk_i");
    assert!((e[clk] - (half_v2 * dff_c.input_cap["C"] + dff_c.input_energy["C"])).abs() < 1e-12);
    assert_eq!(e[id("acc_q")], dff_c.output_energy);
    let v = nl.verilog(true);
    assert!(v.contains("assign #1 n") && v.contains("<= #1 n"), "{v}");
}

#[test]
fn shipped_cell_table_is_the_liberty_files_numbers() {
    let lib = root().join("models/cells/osu018_stdcells.lib");
    assert!(
        lib.exists(),
        "{} missing: run scripts/fetch-liberty.sh (make test does)",
        lib.display()
    );
    let shipped = CellTable::shipped();
    let read = CellTable::from_liberty(&lib, &shipped.cell_names().unwrap()).unwrap();
    assert_eq!(read.voltage, shipped.voltage);
    assert_eq!(read.cells.len(), CellKind::ALL.len());
    for (k, want) in &shipped.cells {
        let got = &read.cells[k];
        assert_eq!(got.library_cell, want.library_cell);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1e-12);
        assert!(close(got.output_energy, want.output_energy), "{k}");
        for (pins_got, pins_want) in [
            (&got.input_cap, &want.input_cap),
            (&got.input_energy, &want.input_energy),
        ] {
            assert_eq!(pins_got.len(), pins_want.len(), "{k}");
            for (p, v) in pins_want {
                assert!(close(pins_got[p], *v), "{k}.{p}");
            }
        }
    }
    // The same file through `--cells x.lib`.
    assert_eq!(CellTable::load(&lib).unwrap().cells, read.cells);
}

#[test]
fn bad_cell_tables_and_liberty_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let err = |p: &std::path::Path| CellTable::load(p).unwrap_err().to_string();
    let e = err(&write(
        "t.toml",
        "source = \"x\"\nvoltage = 1.0\n[cells.FOO]\noutput_energy = 1.0\n",
    ));
    assert!(e.contains("FOO") && e.contains("t.toml"), "{e}");
    let e = err(&write(
        "u.toml",
        "source = \"x\"\nvoltage = 1.0\nbogus = 2\n",
    ));
    assert!(e.contains("bogus"), "{e}");
    let lib = "library(x) {\n  capacitive_load_unit (1,ff);\n  nom_voltage : 0.9;\n  cell (INV) {\n    pin(A) { direction : input; capacitance : 2.0; }\n    pin(Y) { direction : output;\n      internal_power() { related_pin : \"A\";\n        rise_power(t) { values (\"4.0, 9\"); }\n        fall_power(t) { values (\"6.0, 9\"); } }\n    }\n  }\n}\n";
    let p = write("x.lib", lib);
    let names = [(CellKind::Not, "INV".to_string())].into_iter().collect();
    let t = CellTable::from_liberty(&p, &names).unwrap();
    // ff -> pF, and energies in ff x V^2 -> pJ.
    assert_eq!(t.voltage, 0.9);
    assert!((t.cells["NOT"].input_cap["A"] - 0.002).abs() < 1e-15);
    assert!((t.cells["NOT"].output_energy - 0.005).abs() < 1e-15);
    let names = [(CellKind::Nand, "NAND9".to_string())]
        .into_iter()
        .collect();
    let e = CellTable::from_liberty(&p, &names).unwrap_err().to_string();
    assert!(e.contains("NAND9"), "{e}");
    // Truncated: the line of the end of file is named.
    let p = write("cut.lib", &lib[..lib.len() / 2]);
    let e = CellTable::load(&p).unwrap_err().to_string();
    assert!(
        e.contains("cut.lib:")
            && (e.contains("end of file") || e.contains("unterminated"))
            && e.contains("byte offset"),
        "{e}"
    );
}

/// The CLI: tables side by side, JSON with every net, and errors for misuse.
#[test]
fn cli_gate_level_runs_and_refuses_misuse() {
    let bin = env!("CARGO_BIN_EXE_perfwatt");
    let cache = root().join("target").join("gate-cache");
    let run = |args: &[&str]| {
        Command::new(bin)
            .args(args)
            .env("PERFWATT_CACHE", &cache)
            .current_dir(root())
            .output()
            .unwrap()
    };
    let out = run(&[
        "sim",
        "--synthetic",
        "activation-like",
        "--pairs",
        "3000",
        "--design",
        "signmag",
        "--level",
        "gate",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("gate level vs RTL")
            && text.contains("per cell kind")
            && text.contains("OSU 0.18"),
        "{text}"
    );
    let out = run(&[
        "sim",
        "--synthetic",
        "random",
        "--pairs",
        "2000",
        "--design",
        "signmag",
        "--level",
        "gate",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gate = &v["designs"][1];
    assert_eq!(gate["level"], "gate");
    assert_eq!(
        gate["gate"]["net_rows"].as_array().unwrap().len() as u64,
        gate["gate"]["nets"].as_u64().unwrap()
    );
    let out = run(&["sim", "--synthetic", "random", "--glitch-cycles", "10"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--level gate"));
    let out = run(&[
        "sim",
        "--synthetic",
        "random",
        "--level",
        "gate",
        "--cells",
        "no/such.toml",
    ]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no/such.toml"));
}
