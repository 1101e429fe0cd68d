//! Whole output blocks of a GEMM replayed through the tile-level MMA unit (rtl/mma_tile.v).
//!
//! In: `TileOperands` (A as M x K, B as N x K, int8 values), the output blocks to replay
//! (their top-left corners) and a `TileOrder`. Out: `TileRun`: toggles per signal, per
//! signal group and per MAC, every accumulator of every block read back and checked
//! against the exact dot product (a mismatch is an error, not a count).
//!
//! The unit has TILE_ROWS x TILE_COLS cells of `lanes` lanes; one block is BLOCK_M x BLOCK_N
//! outputs (16 x 8: PTX mma.m16n8k32's tile), i.e. SUB_M x SUB_N sub-blocks of one output
//! per cell, each accumulated in its own entry of the cells' accumulator files (entry =
//! mb * SUB_N + nb). Per cycle the unit takes one K-slice of `lanes` elements of the
//! TILE_ROWS rows of A and TILE_COLS rows of B of one sub-block. The orders:
//!
//! - `k-outer-n` / `k-outer-m`: for each K-slice, every sub-block of the block in turn (n
//!   fastest, or m fastest), as an MMA does: the fragments change across rows of A or B
//!   from one cycle to the next, and a lane sees K-slice k again only `lanes` elements on.
//! - `k-inner-n` / `k-inner-m`: each sub-block over the whole K before the next
//!   (output-stationary): a lane sees consecutive K-slices of one row, as the dot unit does.
//!
//! Between blocks the unit drains with its operands held (valid low), and the accumulators
//! are read out through acc_o with counting off: read-out is not datapath work.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};

use super::catalogue::{snapshot_slots, Params, TILE_COLS, TILE_DEPTH, TILE_ROWS};
use super::ffi::{FastCounter, Model};
use super::schedule::{schedule_hex, Schedule};
use super::{Design, SignalCount};

/// Sub-blocks of one output block, along M and along N (SUB_M * SUB_N = TILE_DEPTH).
pub const SUB_M: usize = 4;
pub const SUB_N: usize = 2;
/// Outputs of one block.
pub const BLOCK_M: usize = SUB_M * TILE_ROWS as usize;
pub const BLOCK_N: usize = SUB_N * TILE_COLS as usize;
const _: () = assert!(SUB_M * SUB_N == TILE_DEPTH as usize);

/// The order in which the unit walks one block's K-slices and sub-blocks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum TileOrder {
    KOuterN,
    KOuterM,
    KInnerN,
    KInnerM,
}

impl crate::choice::Choice for TileOrder {
    const WHAT: &'static str = "tile order";
    const ALL: &'static [Self] = &[
        TileOrder::KOuterN,
        TileOrder::KOuterM,
        TileOrder::KInnerN,
        TileOrder::KInnerM,
    ];
    fn name(self) -> &'static str {
        match self {
            TileOrder::KOuterN => "k-outer-n",
            TileOrder::KOuterM => "k-outer-m",
            TileOrder::KInnerN => "k-inner-n",
            TileOrder::KInnerM => "k-inner-m",
        }
    }
    fn about(self) -> &'static str {
        match self {
            TileOrder::KOuterN => "each K-slice over every sub-block, n fastest (an MMA)",
            TileOrder::KOuterM => "each K-slice over every sub-block, m fastest",
            TileOrder::KInnerN => "each sub-block over all of K, n fastest (output-stationary)",
            TileOrder::KInnerM => "each sub-block over all of K, m fastest",
        }
    }
}
crate::choice_str!(TileOrder);

impl TileOrder {
    fn k_outer(self) -> bool {
        matches!(self, TileOrder::KOuterN | TileOrder::KOuterM)
    }

    /// The block's sub-blocks (mb, nb) in this order's sequence.
    fn sub_blocks(self) -> Vec<(usize, usize)> {
        let n_fast = matches!(self, TileOrder::KOuterN | TileOrder::KInnerN);
        let mut v = Vec::with_capacity(SUB_M * SUB_N);
        if n_fast {
            for mb in 0..SUB_M {
                v.extend((0..SUB_N).map(|nb| (mb, nb)));
            }
        } else {
            for nb in 0..SUB_N {
                v.extend((0..SUB_M).map(|mb| (mb, nb)));
            }
        }
        v
    }

    /// The cycles of one block: (K-slice, sub-block) pairs in order.
    fn steps(self, slices: usize) -> Vec<(usize, (usize, usize))> {
        let subs = self.sub_blocks();
        if self.k_outer() {
            (0..slices)
                .flat_map(|ks| subs.iter().map(move |&s| (ks, s)))
                .collect()
        } else {
            subs.iter()
                .flat_map(|&s| (0..slices).map(move |ks| (ks, s)))
                .collect()
        }
    }
}

/// One GEMM's operands as the tile unit takes them: int8 values, row-major.
#[derive(Debug, Clone, Copy)]
pub struct TileOperands<'a> {
    /// M x K.
    pub a: &'a [i16],
    /// N x K.
    pub b: &'a [i16],
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// What one replay counted.
#[derive(Debug, Clone, Serialize)]
pub struct TileRun {
    pub order: TileOrder,
    pub lanes: u32,
    pub blocks: usize,
    /// Multiply-accumulates the replayed blocks hold (blocks x BLOCK_M x BLOCK_N x K).
    pub macs: u64,
    /// Cycles counted (reset, compute and drain; read-out is not).
    pub cycles: u64,
    pub signals: Vec<SignalCount>,
    /// Toggles per MAC by signal group (without the clock).
    pub per_mac: BTreeMap<&'static str, f64>,
    /// Toggles per MAC without the clock and the operand ports.
    pub datapath_per_mac: f64,
}

/// The catalogue's tile unit.
pub fn tile_design() -> Design {
    Design::catalogue()
        .find(|d| d.tile)
        .expect("the catalogue has a tile unit")
}

/// `count` block corners spread over the output at seeded positions (distinct where the
/// output has that many blocks).
pub fn sample_blocks(m: usize, n: usize, count: usize, seed: u64) -> Vec<(usize, usize)> {
    let (bm, bn) = (m / BLOCK_M, n / BLOCK_N);
    let total = bm * bn;
    if total == 0 {
        return Vec::new();
    }
    let mut rng = crate::stats::Rng::new(seed);
    let mut picked: Vec<usize> = Vec::new();
    while picked.len() < count.min(total) {
        let b = (rng.next_u64() % total as u64) as usize;
        if !picked.contains(&b) {
            picked.push(b);
        }
    }
    picked
        .into_iter()
        .map(|b| ((b / bn) * BLOCK_M, (b % bn) * BLOCK_N))
        .collect()
}

/// Why these operands or blocks cannot be replayed, if they cannot.
fn check(ops: &TileOperands, blocks: &[(usize, usize)], lanes: u32) -> Result<()> {
    let bad = |why: String| Err(Error::Sim(format!("mma-tile: {why}")));
    if ops.a.len() != ops.m * ops.k || ops.b.len() != ops.n * ops.k {
        return bad(format!(
            "A holds {} values and B {}, not M x K = {} and N x K = {}",
            ops.a.len(),
            ops.b.len(),
            ops.m * ops.k,
            ops.n * ops.k
        ));
    }
    if ops.k == 0 || !ops.k.is_multiple_of(lanes as usize) {
        return bad(format!(
            "K = {} must be a positive multiple of the lane count {lanes}",
            ops.k
        ));
    }
    if let Some(v) = ops
        .a
        .iter()
        .chain(ops.b)
        .find(|v| !(-128..=127).contains(*v))
    {
        return bad(format!("takes int8 operands; found the value {v}"));
    }
    if blocks.is_empty() {
        return bad(format!(
            "no output block to replay: the output ({} x {}) must hold at least one {BLOCK_M} x {BLOCK_N} block",
            ops.m, ops.n
        ));
    }
    for &(m0, n0) in blocks {
        if m0 + BLOCK_M > ops.m || n0 + BLOCK_N > ops.n {
            return bad(format!(
                "the block at ({m0}, {n0}) does not fit the {} x {} output",
                ops.m, ops.n
            ));
        }
    }
    Ok(())
}

/// The unit's model parameters at `lanes` lanes.
fn params(design: Design, lanes: u32) -> Result<Params> {
    if !design.lanes.contains(&lanes) {
        return Err(Error::Sim(format!(
            "mma-tile: no model built for {lanes} lanes (built: {:?})",
            design.lanes
        )));
    }
    Ok(Params {
        lanes,
        a_w: 8,
        b_w: 8,
        a_signed: true,
        b_signed: true,
    })
}

/// Two reset cycles (zero operands), with room for `more` cycles after them.
fn reset_schedule(nw: usize, lanes: u32, more: usize) -> Schedule {
    let idle = vec![0u32; TILE_ROWS.max(TILE_COLS) as usize * lanes as usize];
    let mut s = Schedule::new(nw, 8, 8, 2 + more);
    for _ in 0..2 {
        s.push((false, false, false, 0), &idle, &idle);
    }
    s
}

/// The cycles of one block in `order`, then the drain with the last operands held.
fn block_schedule(
    ops: &TileOperands,
    (m0, n0): (usize, usize),
    order: TileOrder,
    p: Params,
    nw: usize,
) -> Schedule {
    let l = p.lanes as usize;
    let (rows, cols) = (TILE_ROWS as usize, TILE_COLS as usize);
    let steps = order.steps(ops.k / l);
    let mut s = Schedule::new(nw, 8, 8, steps.len() + 4);
    let (mut a, mut b) = (vec![0u32; rows * l], vec![0u32; cols * l]);
    let fill = |dst: &mut [u32], src: &[i16], first_row: usize, ks: usize| {
        for (r, chunk) in dst.chunks_exact_mut(l).enumerate() {
            let row = &src[(first_row + r) * ops.k + ks * l..][..l];
            for (d, &v) in chunk.iter_mut().zip(row) {
                *d = v as u32 & 0xff;
            }
        }
    };
    for &(ks, (mb, nb)) in &steps {
        fill(&mut a, ops.a, m0 + mb * rows, ks);
        fill(&mut b, ops.b, n0 + nb * cols, ks);
        let entry = (mb * SUB_N + nb) as u8;
        s.push((true, true, ks == 0, entry), &a, &b);
    }
    for _ in 0..=tile_design().drain {
        s.push((true, false, false, 0), &a, &b);
    }
    s
}

/// The exact accumulators of one block, in read-out order (cell * DEPTH + entry, cell =
/// r * TILE_COLS + c), wrapped to 32 bits.
fn expected_block(ops: &TileOperands, (m0, n0): (usize, usize)) -> Vec<i64> {
    let (rows, cols) = (TILE_ROWS as usize, TILE_COLS as usize);
    let mut v = Vec::with_capacity(rows * cols * SUB_M * SUB_N);
    for r in 0..rows {
        for c in 0..cols {
            for mb in 0..SUB_M {
                for nb in 0..SUB_N {
                    let (i, j) = (m0 + mb * rows + r, n0 + nb * cols + c);
                    let a = &ops.a[i * ops.k..][..ops.k];
                    let b = &ops.b[j * ops.k..][..ops.k];
                    let dot: i64 = a.iter().zip(b).map(|(&x, &y)| x as i64 * y as i64).sum();
                    v.push(dot as i32 as i64);
                }
            }
        }
    }
    v
}

/// Replay `blocks` of `ops` in `order` through the tile unit of `lanes` lanes.
pub fn simulate_tiles(
    ops: &TileOperands,
    blocks: &[(usize, usize)],
    order: TileOrder,
    lanes: u32,
) -> Result<TileRun> {
    check(ops, blocks, lanes)?;
    let design = tile_design();
    let p = params(design, lanes)?;
    let nw = design.cycle_words(p);
    let names = design.signals(p);
    let widths: Vec<u32> = names.iter().map(|n| design.signal_width(p, n)).collect();
    let mut model = Model::new(design, p, None, false)?;
    let mut fc = FastCounter::new(widths.iter().map(|&w| snapshot_slots(w)).sum());
    let reset = reset_schedule(nw, lanes, 0);
    // Counted like a stream design's reset (nothing but the clock moves in it), so that one
    // block's counts equal those of a simulator replaying `tile_stimulus_hex`.
    model.run(&reset, 0..2, Some(&mut fc));
    let mut cycles = 2u64;
    for &corner in blocks {
        let s = block_schedule(ops, corner, order, p, nw);
        model.run(&s, 0..s.cycles(), Some(&mut fc));
        cycles += s.cycles() as u64;
        read_back(&mut model, &s, corner, &expected_block(ops, corner))?;
    }
    let macs = (blocks.len() * BLOCK_M * BLOCK_N * ops.k) as u64;
    let mut slot = fc.toggles.iter();
    let signals: Vec<SignalCount> = names
        .iter()
        .zip(&widths)
        .map(|(n, &w)| SignalCount {
            path: format!("{}.{n}", design.module()),
            width: w,
            toggles: slot.by_ref().take(snapshot_slots(w)).sum(),
            group: design.signal_group(n),
        })
        .collect();
    let mut per_mac: BTreeMap<&'static str, f64> = BTreeMap::new();
    for s in signals.iter().filter(|s| s.group != "clock") {
        *per_mac.entry(s.group).or_default() += s.toggles as f64 / macs as f64;
    }
    let datapath_per_mac = per_mac
        .iter()
        .filter(|(g, _)| **g != "operand ports")
        .map(|(_, v)| v)
        .sum();
    Ok(TileRun {
        order,
        lanes,
        blocks: blocks.len(),
        macs,
        cycles,
        signals,
        per_mac,
        datapath_per_mac,
    })
}

/// Read every accumulator of the block just replayed through acc_o (counting off, the last
/// operands held) and compare with the exact values.
fn read_back(model: &mut Model, s: &Schedule, corner: (usize, usize), want: &[i64]) -> Result<()> {
    let last = s.cycles() - 1;
    let rec = &s.words[last * s.stride..(last + 1) * s.stride];
    let nw = (s.stride - 1) / 2;
    for (i, &want) in want.iter().enumerate() {
        let mut one = Schedule::new(nw, 8, 8, 1);
        one.words.extend_from_slice(rec);
        let flags = one.words.len() - 1;
        one.words[flags] = 1 | (i as u32) << 24;
        model.run(&one, 0..1, None);
        let got = model.acc() as u32 as i32 as i64;
        if got != want {
            let (cell, entry) = (i / TILE_DEPTH as usize, i % TILE_DEPTH as usize);
            return Err(Error::Sim(format!(
                "mma-tile: block at {corner:?}, cell {cell}, entry {entry}: accumulator {got}, expected {want}"
            )));
        }
    }
    Ok(())
}

/// One block's replay as iverilog stimulus for tests/rtl/mac_tb.v (built with -DHAS_SEL):
/// two reset cycles, the block in `order`, the drain: the cycles `simulate_tiles` of that
/// one block counts.
pub fn tile_stimulus_hex(
    ops: &TileOperands,
    corner: (usize, usize),
    order: TileOrder,
    lanes: u32,
) -> Result<String> {
    check(ops, &[corner], lanes)?;
    let design = tile_design();
    let p = params(design, lanes)?;
    let nw = design.cycle_words(p);
    let block = block_schedule(ops, corner, order, p, nw);
    let mut s = reset_schedule(nw, lanes, block.cycles());
    s.words.extend_from_slice(&block.words);
    let w = |port| design.signal_width(p, port) as usize;
    Ok(schedule_hex(
        &s,
        (w("a_i"), w("b_i"), w("sel_i")),
        0..s.cycles(),
    ))
}
