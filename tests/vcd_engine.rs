//! The VCD toggle engine against hand-checked files, a second parser (the `vcd` crate),
//! real simulators (iverilog, Verilator) and bad input.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::vcd_crate::vcd_crate_toggles;
use perfwatt::vcd::{
    count_toggles, count_toggles_path, count_toggles_path_threads, count_toggles_segmented, saif,
    ToggleReport,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn count_str(s: &str) -> perfwatt::Result<ToggleReport> {
    count_toggles(s.as_bytes(), "test.vcd")
}

/// Every signal's toggles and x transitions must match the `vcd`-crate counter.
fn assert_agrees_with_vcd_crate(path: &Path) {
    let ours = count_toggles_path(path).unwrap();
    let theirs =
        vcd_crate_toggles(std::io::BufReader::new(std::fs::File::open(path).unwrap())).unwrap();
    assert!(!theirs.is_empty());
    for (p, (w, t, x)) in &theirs {
        let s = ours
            .signal(p)
            .unwrap_or_else(|| panic!("{p} missing in {}", path.display()));
        assert_eq!(
            (s.width, s.toggles, s.x_transitions),
            (*w, *t, *x),
            "{p} in {}",
            path.display()
        );
    }
    assert_eq!(ours.signals.len(), theirs.len());
    assert_segments_agree(path);
}

/// Counting a file in 2..16 pieces on as many threads and joining them gives the
/// sequential pass's counts, bit for bit.
fn assert_segments_agree(path: &Path) {
    let seq = count_toggles_path_threads(path, false, 1).unwrap();
    let bits = |r: &ToggleReport| -> Vec<(String, Vec<(u64, u64)>)> {
        r.signals
            .iter()
            .map(|s| {
                (
                    s.path.clone(),
                    s.bits
                        .iter()
                        .map(|b| (b.toggles, b.x_transitions))
                        .collect(),
                )
            })
            .collect()
    };
    for k in [2, 3, 5, 16] {
        let par = count_toggles_segmented(path, k).unwrap();
        assert_eq!(bits(&par), bits(&seq), "{} in {k} segments", path.display());
        assert_eq!(
            (par.end_time, par.value_changes),
            (seq.end_time, seq.value_changes)
        );
    }
}

#[test]
fn edge_cases_hand_checked() {
    let r = count_toggles_path(&root().join("tests/vcd/edge.vcd")).unwrap();
    let get = |p: &str| {
        let s = r.signal(p).unwrap();
        (s.width, s.toggles, s.x_transitions)
    };
    // Worked out by hand in the file's order of changes.
    assert_eq!(get("tb.clk"), (1, 4, 4));
    assert_eq!(get("tb.data"), (8, 5, 26));
    assert_eq!(get("tb.sub.data_alias"), (8, 5, 26)); // alias of data's identifier
    assert_eq!(get("tb.count"), (32, 2, 0)); // short vectors are zero-extended
    assert_eq!(get("tb.sub.nib"), (4, 1, 4)); // z-extension, then z -> 0/1
    assert_eq!(get("tb.ev"), (1, 0, 1));
    assert!(r.signal("tb.temp").is_none(), "real vars are not reported");
    assert_eq!(r.end_time, 30);
    assert_eq!(r.timescale.as_deref(), Some("1ns"));
    assert_eq!(r.total_toggles, 17);
    assert_eq!(r.signal("tb.data").unwrap().range.as_deref(), Some("[7:0]"));
    // Per-bit counts: data bits 7..4 toggled 0->1 once, bit 1 1->0 once.
    let bits: Vec<u64> = r
        .signal("tb.data")
        .unwrap()
        .bits
        .iter()
        .map(|b| b.toggles)
        .collect();
    assert_eq!(bits, vec![0, 1, 0, 0, 1, 1, 1, 1]);
}

#[test]
fn hand_files_agree_with_vcd_crate() {
    for f in std::fs::read_dir(root().join("tests/vcd")).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "vcd") {
            assert_agrees_with_vcd_crate(&f);
        }
    }
}

/// A reader that hands out `n` bytes at a time: every chunk boundary position is exercised.
struct Dribble<'a>(&'a [u8], usize);
impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.1.min(self.0.len()).min(buf.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn chunking_does_not_change_results() {
    let data = std::fs::read(root().join("tests/vcd/edge.vcd")).unwrap();
    let whole = count_toggles(&data[..], "x").unwrap();
    for n in [1, 2, 3, 7, 64] {
        let r = count_toggles(Dribble(&data, n), "x").unwrap();
        let a: Vec<_> = whole
            .signals
            .iter()
            .map(|s| (&s.path, s.toggles, s.x_transitions))
            .collect();
        let b: Vec<_> = r
            .signals
            .iter()
            .map(|s| (&s.path, s.toggles, s.x_transitions))
            .collect();
        assert_eq!(a, b, "chunk size {n}");
    }
}

#[test]
fn big_generated_file_crosses_buffer_boundaries_and_matches_closed_form() {
    // 20k cycles of an 8-bit binary counter: bit i toggles floor(N / 2^i) times.
    let n = 20_000u64;
    let mut s = String::from("$timescale 1ps $end\n$scope module top $end\n$var reg 8 !! cnt [7:0] $end\n$var wire 1 \" clk $end\n$upscope $end\n$enddefinitions $end\n#0\nb0 !!\n0\"\n");
    for c in 1..=n {
        s.push_str(&format!(
            "#{}\nb{:b} !!\n1\"\n#{}\n0\"\n",
            10 * c,
            c % 256,
            10 * c + 5
        ));
    }
    assert!(s.len() > 600_000, "must exceed the parser's chunk size");
    let r = count_str(&s).unwrap();
    let expect: u64 = (0..8).map(|i| n >> i).sum();
    assert_eq!(r.signal("top.cnt").unwrap().toggles, expect);
    assert_eq!(r.signal("top.clk").unwrap().toggles, 2 * n);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.vcd");
    std::fs::write(&f, &s).unwrap();
    assert_segments_agree(&f);
    assert_eq!(
        count_toggles_segmented(&f, 7)
            .unwrap()
            .signal("top.cnt")
            .unwrap()
            .toggles,
        expect
    );
}

#[test]
fn segmented_counting_falls_back_on_splits_it_cannot_join() {
    let dir = tempfile::tempdir().unwrap();
    let head = "$timescale 1ns $end\n$scope module t $end\n$var wire 4 ! v $end\n$upscope $end\n$enddefinitions $end\n";
    let mut body = String::from("#0\nb0 !\n");
    for t in 1..2000 {
        body.push_str(&format!("#{t}\nb{:b} !\n", t % 16));
        if t == 1000 {
            // A comment holding time-stamp lines: a split inside it cannot be parsed alone.
            // A comment holding time-stamp lines, a third of the file: some split of 16
            // lands inside it, and that piece cannot be parsed alone.
            body.push_str(&format!("$comment\n{}$end\n", "#5\nb1 !\n".repeat(1000)));
        }
    }
    let f = dir.path().join("comment.vcd");
    std::fs::write(&f, format!("{head}{body}")).unwrap();
    assert_segments_agree(&f);
    // Errors come out exactly as from the sequential pass (which reports them).
    for (name, text) in [
        ("backwards.vcd", format!("{head}{body}#5\nb1 !\n")),
        ("truncated.vcd", format!("{head}{body}b10")),
        ("unknown.vcd", format!("{head}{body}b1 ?\n")),
    ] {
        let f = dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        let seq = count_toggles_path_threads(&f, false, 1)
            .unwrap_err()
            .to_string();
        for k in [2, 4, 9] {
            assert_eq!(
                count_toggles_segmented(&f, k).unwrap_err().to_string(),
                seq,
                "{name}"
            );
        }
    }
}

#[test]
fn toggles_without_trailing_newline_and_crlf() {
    let s = "$scope module t $end\r\n$var wire 1 ! a $end\r\n$upscope $end\r\n$enddefinitions $end\r\n#0\r\n0!\r\n#1\r\n1!";
    assert_eq!(count_str(s).unwrap().total_toggles, 1);
}

#[test]
fn identifiers_of_any_printable_characters() {
    let s = "$scope module t $end\n$var wire 1 #$% a $end\n$var wire 2 ~~~~~ b $end\n$upscope $end\n$enddefinitions $end\n#0 0#$% b00 ~~~~~ #1 1#$% b11 ~~~~~\n";
    let r = count_str(s).unwrap();
    assert_eq!(r.signal("t.a").unwrap().toggles, 1);
    assert_eq!(r.signal("t.b").unwrap().toggles, 2);
}

#[test]
fn scope_filter_keeps_subtree_only() {
    let mut r = count_toggles_path(&root().join("tests/vcd/edge.vcd")).unwrap();
    r.retain_scope("tb.sub");
    let paths: Vec<_> = r.signals.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, vec!["tb.sub.nib", "tb.sub.data_alias"]);
    assert_eq!(r.total_toggles, 6);
    r.retain_scope("tb.su");
    assert!(r.signals.is_empty());
}

fn err(s: &str) -> String {
    match count_str(s) {
        Ok(_) => panic!("accepted bad input: {s:?}"),
        Err(e) => e.to_string(),
    }
}

const HDR: &str = "$scope module t $end\n$var wire 4 ! a $end\n$var real 64 \" r $end\n$upscope $end\n$enddefinitions $end\n";

#[test]
fn bad_input_gives_line_and_offset() {
    let e = err(&format!("{HDR}#0\nb0000 !\nb1 ?\n"));
    assert!(
        e.contains("test.vcd:8:") && e.contains("unknown identifier '?'"),
        "{e}"
    );
    assert!(
        e.contains(&format!("byte offset {}", HDR.len() + 11)),
        "{e}"
    );
    let e = err(&format!("{HDR}#0\nb10201 !\n"));
    assert!(e.contains(":7:") && e.contains("bad value"), "{e}");
    let e = err(&format!("{HDR}#0\nb11111 !\n"));
    assert!(e.contains("bad width"), "{e}");
    let e = err(&format!("{HDR}#0\nb1 !\n\x01\x02garbage\n"));
    assert!(
        e.contains(":8:") && e.contains("unexpected byte 0x01"),
        "{e}"
    );
    let e = err(&format!("{HDR}#0\nb1 !\n\u{e9}\n"));
    assert!(e.contains("unexpected byte 0xc3"), "{e}");
    let e = err(&format!("{HDR}#0\nr1.5 !\n"));
    assert!(e.contains("real value for a bit var"), "{e}");
    let e = err(&format!("{HDR}#0\nrabc \"\n"));
    assert!(e.contains("bad real"), "{e}");
    let e = err(&format!("{HDR}#5\n#3\n"));
    assert!(e.contains("time goes backwards"), "{e}");
    let e = err("$scope module t $end\n$var wire zz ! a $end\n");
    assert!(e.contains(":2:") && e.contains("bad width"), "{e}");
    let e = err("$scope module t $end\n$var wire 0 ! a $end\n");
    assert!(e.contains("bad width"), "{e}");
    let e = err("$scope module t $end\n$var wire 2 ! a $end\n$var wire 3 ! b $end\n$upscope $end\n$enddefinitions $end\n");
    assert!(e.contains("declared with widths 2 and 3"), "{e}");
    let e = err("$upscope $end\n");
    assert!(e.contains("without a matching"), "{e}");
    let e = err("hello world\n");
    assert!(
        e.contains(":1:") && e.contains("unexpected byte 0x68"),
        "{e}"
    );
}

#[test]
fn truncated_files_are_errors() {
    let full = format!("{HDR}#0\n$dumpvars\nb0000 !\nr0 \"\n$end\n#10\nb1111 !\n");
    // Cut inside the header: always an error.
    for cut in [5, 30, HDR.len() - 3] {
        let e = err(&full[..cut]);
        assert!(e.contains("truncated"), "cut {cut}: {e}");
    }
    // Cut inside the $dumpvars block, or between a vector value and its identifier.
    let e = err(&full[..HDR.len() + 15]);
    assert!(e.contains("truncated"), "{e}");
    let e = err(&format!("{HDR}#0\nb0000"));
    assert!(e.contains("truncated") || e.contains("identifier"), "{e}");
    let e = err(&format!("{HDR}#0\n$comment never ends"));
    assert!(e.contains("truncated"), "{e}");
    assert!(count_str(&full).is_ok());
    assert!(count_str("").unwrap_err().to_string().contains("truncated"));
}

#[test]
fn fuzz_seeds_never_panic() {
    // Every prefix of every seed, and bytes flipped: errors are fine, panics are not.
    let dir = root().join("fuzz/seeds/vcd");
    for f in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(f.unwrap().path()).unwrap();
        for cut in (0..data.len()).step_by(3) {
            let _ = count_toggles(&data[..cut], "x");
        }
        for i in (0..data.len()).step_by(5) {
            let mut d = data.clone();
            d[i] ^= 0x5a;
            let _ = count_toggles(&d[..], "x");
        }
    }
}

#[test]
fn saif_round_trip() {
    let r = count_toggles_path(&root().join("tests/vcd/edge.vcd")).unwrap();
    let text = saif::to_saif(&r);
    let (duration, nets) = saif::read_saif(&text).unwrap();
    assert_eq!(duration, 30);
    // clk: 0 on [0,5) [10,15) [25,30)... per the file: 0@0 1@5 0@10 1@15 x@20 0@25 1@30.
    let clk = nets["tb/clk"];
    assert_eq!((clk.t0, clk.t1, clk.tx, clk.tc), (15, 10, 5, 4));
    for s in &r.signals {
        for (i, b) in s.bits.iter().enumerate() {
            assert_eq!(b.t0 + b.t1 + b.tx + b.tz, 30, "{} bit {i}", s.path);
        }
    }
    let tc: u64 = nets.values().map(|n| n.tc).sum();
    assert_eq!(tc, r.total_toggles);
    // Ranged vectors name their bits by the declared index.
    assert_eq!(nets["tb/data[7]"].tc, 1);
    assert_eq!(nets["tb/sub/nib[2]"].tc, 1);
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        || Command::new(tool).arg("-V").output().is_ok()
}

/// The 4-bit counter runs 100 increments after reset: bit i toggles floor(100 / 2^i).
fn check_counter_vcd(vcd: &Path) {
    let r = count_toggles_path(vcd).unwrap();
    // Verilator wraps the design in a TOP scope; iverilog does not.
    let sig = |name: &str| {
        r.signals
            .iter()
            .find(|s| s.path.ends_with(name))
            .unwrap()
            .toggles
    };
    assert_eq!(
        sig("counter_tb.count"),
        100 + 50 + 25 + 12,
        "{}",
        vcd.display()
    );
    assert!(sig("counter_tb.lfsr") > 100);
    assert_agrees_with_vcd_crate(vcd);
}

#[test]
fn iverilog_vcd() {
    assert!(
        have("iverilog"),
        "iverilog is not installed: run `make deps` (apt-get install iverilog)"
    );
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("tb.vvp");
    let vcd = dir.path().join("iv.vcd");
    let st = Command::new("iverilog")
        .arg("-o")
        .arg(&exe)
        .arg(root().join("tests/rtl/counter_tb.v"))
        .status()
        .unwrap();
    assert!(st.success());
    common::run_ok(
        Command::new("vvp")
            .arg("-n")
            .arg(&exe)
            .arg(format!("+vcd={}", vcd.display())),
    );
    check_counter_vcd(&vcd);
    // iverilog starts regs at x: the reset's x -> 0 is an x transition, not a toggle.
    let r = count_toggles_path(&vcd).unwrap();
    assert_eq!(r.signal("counter_tb.count").unwrap().x_transitions, 4);
}

#[test]
fn verilator_vcd() {
    assert!(
        have("verilator"),
        "verilator is not installed: run `make deps` (apt-get install verilator)"
    );
    let dir = tempfile::tempdir().unwrap();
    let vcd = dir.path().join("vl.vcd");
    common::run_ok(
        Command::new("verilator")
            .args(["--binary", "--timing", "--trace", "-Wno-fatal", "--Mdir"])
            .arg(dir.path().join("obj"))
            .arg(root().join("tests/rtl/counter_tb.v")),
    );
    common::run_ok(
        Command::new(dir.path().join("obj/Vcounter_tb")).arg(format!("+vcd={}", vcd.display())),
    );
    check_counter_vcd(&vcd);
}

#[test]
fn cli_reports_errors_without_panicking() {
    let exe = env!("CARGO_BIN_EXE_perfwatt");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.vcd");
    std::fs::write(&bad, format!("{HDR}#0\nb1 ?\n")).unwrap();
    let out = Command::new(exe)
        .args(["toggles"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.starts_with("perfwatt: error: ") && e.contains("bad.vcd:7:") && e.lines().count() == 1,
        "{e}"
    );
    // JSON shape, CSV and SAIF from the CLI, stdin as `-`.
    let saif_out = dir.path().join("a.saif");
    let edge = std::fs::read(root().join("tests/vcd/edge.vcd")).unwrap();
    let mut child = Command::new(exe)
        .args(["toggles", "-", "--format", "json", "--saif"])
        .arg(&saif_out)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&edge).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total_toggles"], 17);
    assert_eq!(v["end_time"], 30);
    assert_eq!(v["timescale"], "1ns");
    assert_eq!(v["signals"][0]["path"], "tb.clk");
    assert_eq!(v["signals"][0]["width"], 1);
    assert_eq!(v["signals"][0]["toggles"], 4);
    assert!(std::fs::read_to_string(&saif_out)
        .unwrap()
        .starts_with("(SAIFILE"));
    let out = Command::new(exe)
        .args(["toggles", "--format", "csv"])
        .arg(root().join("tests/vcd/edge.vcd"))
        .output()
        .unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(
        csv.starts_with("path,width,toggles,x_transitions,kind,range\ntb.clk,1,4,4,wire,\n"),
        "{csv}"
    );
}
