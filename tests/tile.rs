//! The tile-level MMA unit (rtl/mma_tile.v) and its block replay (perfwatt::sim::tile):
//! every accumulator exact in every order, on random and edge operands; the orders see
//! what they should (rows vs K); iverilog counts the same toggles per signal; bad input is
//! one clear error.

#[allow(dead_code)]
mod common;

use std::path::PathBuf;
use std::process::Command;

use perfwatt::choice::Choice;
use perfwatt::sim::tile::{
    sample_blocks, simulate_tiles, tile_stimulus_hex, TileOperands, TileOrder, BLOCK_M, BLOCK_N,
};
use perfwatt::stats::Rng;

fn random(len: usize, seed: u64) -> Vec<i16> {
    let mut r = Rng::new(seed);
    (0..len)
        .map(|_| (r.next_u64() % 256) as i16 - 128)
        .collect()
}

fn ops<'a>(a: &'a [i16], b: &'a [i16], m: usize, n: usize, k: usize) -> TileOperands<'a> {
    TileOperands { a, b, m, n, k }
}

#[test]
fn every_accumulator_is_exact_in_every_order() {
    let (m, n, k) = (32, 16, 64);
    // Random; the extremes (-128 x -128 in every lane: the largest products, and sums
    // that need the full tree width); zeros in A against random B.
    let cases: Vec<(&str, Vec<i16>, Vec<i16>)> = vec![
        ("random", random(m * k, 1), random(n * k, 2)),
        ("extremes", vec![-128; m * k], vec![-128; n * k]),
        (
            "mixed extremes",
            (0..m * k)
                .map(|i| if i % 3 == 0 { 127 } else { -128 })
                .collect(),
            vec![-128; n * k],
        ),
        ("zero A", vec![0; m * k], random(n * k, 3)),
    ];
    let blocks = sample_blocks(m, n, 4, 9);
    assert_eq!(blocks.len(), 4, "a 32 x 16 output holds 4 blocks of 16 x 8");
    for (name, a, b) in &cases {
        for &order in TileOrder::ALL {
            let run = simulate_tiles(&ops(a, b, m, n, k), &blocks, order, 16)
                .unwrap_or_else(|e| panic!("{name} {order}: {e}"));
            assert_eq!(run.macs, (4 * BLOCK_M * BLOCK_N * k) as u64);
            if *name == "zero A" {
                assert_eq!(run.per_mac.get("A delivery"), Some(&0.0), "{name} {order}");
            }
        }
    }
}

#[test]
fn the_orders_see_rows_or_k() {
    let (m, n, k) = (16, 8, 256);
    // Rows of A alternate +85 / -86 (01010101 / 10101010: every bit flips), constant along
    // K; B constant. Stepping across rows (k-outer, m fastest) flips A's fragments every
    // cycle; walking K (k-inner) never does.
    let rows: Vec<i16> = (0..m * k)
        .map(|i| if (i / k) % 2 == 0 { 85 } else { -86 })
        .collect();
    let b = vec![3i16; n * k];
    let blocks = [(0, 0)];
    let a_deliv = |a: &[i16], order| {
        simulate_tiles(&ops(a, &b, m, n, k), &blocks, order, 16)
            .unwrap()
            .per_mac["A delivery"]
    };
    // A fragment r holds rows r, r+4, r+8, r+12 of the block: same parity, so the rows
    // pattern must alternate with period 8 to flip between sub-blocks.
    let rows8: Vec<i16> = (0..m * k)
        .map(|i| if (i / k / 4) % 2 == 0 { 85 } else { -86 })
        .collect();
    assert!(
        a_deliv(&rows8, TileOrder::KOuterM) > 10.0 * a_deliv(&rows8, TileOrder::KInnerM).max(1e-3)
    );
    assert_eq!(
        a_deliv(&rows, TileOrder::KInnerN),
        a_deliv(&rows, TileOrder::KInnerM)
    );
    // Along K: every element flips from one K-slice to the next (slices alternate), rows
    // identical: k-inner sees a flip every cycle, k-outer only once per 8 sub-blocks.
    let along: Vec<i16> = (0..m * k)
        .map(|i| if (i % k / 16) % 2 == 0 { 85 } else { -86 })
        .collect();
    let (inner, outer) = (
        a_deliv(&along, TileOrder::KInnerN),
        a_deliv(&along, TileOrder::KOuterN),
    );
    assert!(
        inner > 4.0 * outer && outer > 0.0,
        "k-inner {inner} vs k-outer {outer}"
    );
}

#[test]
fn iverilog_agrees_per_signal_on_a_block() {
    assert!(
        Command::new("iverilog").arg("-V").output().is_ok(),
        "iverilog is not installed: run `make deps`"
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let (m, n, k) = (16, 8, 48);
    let (a, b) = (random(m * k, 5), random(n * k, 6));
    let o = ops(&a, &b, m, n, k);
    for order in [TileOrder::KOuterN, TileOrder::KInnerM] {
        let ours = simulate_tiles(&o, &[(0, 0)], order, 16).unwrap();
        let stim = tile_stimulus_hex(&o, (0, 0), order, 16).unwrap();
        assert_eq!(stim.lines().count() as u64, ours.cycles);
        let stim_path = dir.path().join("stim.hex");
        std::fs::write(&stim_path, &stim).unwrap();
        let width = |n: &str| {
            ours.signals
                .iter()
                .find(|s| s.path.ends_with(n))
                .unwrap()
                .width
        };
        let exe = dir.path().join("tile.vvp");
        let st = Command::new("iverilog")
            .args([
                "-g2012",
                "-DDUT=mma_tile",
                "-DHAS_SEL",
                "-DDUT_PARAMS=.LANES(16)",
            ])
            .arg(format!("-Pmac_tb.A_PW={}", width(".a_i")))
            .arg(format!("-Pmac_tb.B_PW={}", width(".b_i")))
            .arg(format!("-Pmac_tb.SEL_W={}", width(".sel_i")))
            .arg("-o")
            .arg(&exe)
            .arg(root.join("rtl/mma_tile.v"))
            .arg(root.join("tests/rtl/mac_tb.v"))
            .status()
            .unwrap();
        assert!(st.success());
        let vcd = dir.path().join("tile.vcd");
        common::run_ok(
            Command::new("vvp")
                .arg("-n")
                .arg(&exe)
                .arg(format!("+stim={}", stim_path.display()))
                .arg(format!("+n={}", ours.cycles))
                .arg(format!("+vcd={}", vcd.display())),
        );
        let iv = perfwatt::vcd::count_toggles_path(&vcd).unwrap();
        for sig in &ours.signals {
            let name = sig.path.split_once('.').unwrap().1;
            let theirs = iv
                .signal(&format!("mac_tb.dut.{name}"))
                .unwrap_or_else(|| panic!("{order}: {name} not in iverilog VCD"));
            assert_eq!(theirs.toggles, sig.toggles, "{order} {name}");
        }
    }
}

#[test]
fn bad_input_is_one_clear_error() {
    let (a, b) = (random(16 * 40, 1), random(8 * 40, 2));
    let e = simulate_tiles(&ops(&a, &b, 16, 8, 40), &[(0, 0)], TileOrder::KOuterN, 16).unwrap_err();
    assert!(
        e.to_string().contains("multiple of the lane count 16"),
        "{e}"
    );
    let (a, b) = (random(16 * 32, 1), random(8 * 32, 2));
    let e = simulate_tiles(&ops(&a, &b, 16, 8, 32), &[(8, 0)], TileOrder::KOuterN, 16).unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
    let e = simulate_tiles(&ops(&a, &b, 16, 8, 32), &[], TileOrder::KOuterN, 16).unwrap_err();
    assert!(e.to_string().contains("at least one 16 x 8 block"), "{e}");
    let wide = vec![300i16; 16 * 32];
    let e = simulate_tiles(
        &ops(&wide, &b, 16, 8, 32),
        &[(0, 0)],
        TileOrder::KOuterN,
        16,
    )
    .unwrap_err();
    assert!(e.to_string().contains("int8"), "{e}");
    let e = "k-sideways".parse::<TileOrder>().unwrap_err();
    assert!(e.to_string().contains("k-outer-n"), "{e}");
    let e = perfwatt::sim::simulate(
        perfwatt::sim::Design::named("mma-tile").unwrap(),
        &perfwatt::trace::OperandStream::new(8, vec![(1, 1); 16], serde_json::json!({})).unwrap(),
        &perfwatt::sim::Counting::Fast,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("whole output blocks"), "{e}");
}

#[test]
fn the_rtl_is_lint_clean() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new("verilator")
        .args(["--lint-only", "-Wall"])
        .arg(root.join("rtl/mma_tile.v"))
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
