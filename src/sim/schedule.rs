//! The cycles a design replays: an operand stream as cycle records.
//!
//! In: a design, its model parameters and an `OperandStream`. Out: `Schedule`, the
//! `PwCycle<NW>` records of sim/shim.h (2 reset cycles, one pair or K-slice per cycle with
//! clear_i at each dot product's start, the drain), where it may be cut for threads, and
//! the same cycles as iverilog stimulus words (tests/rtl/mac_tb.v), written by `sim --export`.

use std::path::Path;

use crate::error::Result;
use crate::trace::OperandStream;

use super::catalogue::Params;
use super::Design;

/// The cycle records a model replays: `PwCycle<NW>` of sim/shim.h, flattened into 32-bit
/// words (a's NW words, b's NW words, then rst_n | valid << 8 | clear << 16 | sel << 24).
pub(super) struct Schedule {
    pub(super) stride: usize,
    /// Bits per lane of a_i and b_i.
    a_w: u32,
    b_w: u32,
    pub(super) words: Vec<u32>,
}

impl Schedule {
    /// No cycles yet, for a model with `nw` words per operand port and lanes of `a_w` and
    /// `b_w` bits.
    pub(super) fn new(nw: usize, a_w: u32, b_w: u32, cycles: usize) -> Schedule {
        Schedule {
            stride: 2 * nw + 1,
            a_w,
            b_w,
            words: Vec::with_capacity(cycles * (2 * nw + 1)),
        }
    }

    pub(super) fn cycles(&self) -> usize {
        self.words.len() / self.stride
    }

    /// Does cycle `c` start a dot product (clear_i with valid_i)?
    pub(super) fn clear(&self, c: usize) -> bool {
        let flags = self.words[c * self.stride + self.stride - 1];
        flags >> 16 & 1 == 1 && flags >> 8 & 1 == 1
    }

    /// One cycle: lanes of a and b (already encoded) packed from bit 0 up; `sel` drives
    /// sel_i where the model has it.
    pub(super) fn push(
        &mut self,
        (rst_n, valid, clear, sel): (bool, bool, bool, u8),
        a: &[u32],
        b: &[u32],
    ) {
        let nw = (self.stride - 1) / 2;
        let at = self.words.len();
        self.words.resize(at + self.stride, 0);
        let words = &mut self.words;
        let mut pack = |vals: &[u32], w: u32, base: usize| {
            for (j, &v) in vals.iter().enumerate() {
                let bit = j as u32 * w;
                let (word, off) = ((bit / 32) as usize, bit % 32);
                words[base + word] |= v << off;
                if off + w > 32 {
                    words[base + word + 1] |= v >> (32 - off);
                }
            }
        };
        pack(a, self.a_w, at);
        pack(b, self.b_w, at + nw);
        self.words[at + 2 * nw] =
            rst_n as u32 | (valid as u32) << 8 | (clear as u32) << 16 | (sel as u32) << 24;
    }
}

/// The schedule of `stream` on `design` with parameters `p` (from `params_for`, which
/// checked that dot products start on slice boundaries): reset, the pairs (a K-slice of
/// `p.lanes` per cycle), drain.
pub(super) fn schedule(design: Design, p: Params, stream: &OperandStream) -> Result<Schedule> {
    let lanes = p.lanes as usize;
    let starts = stream.dot_starts();
    let nw = design.cycle_words(p);
    let (aw, bw) = design.lane_widths(p);
    let mut s = Schedule::new(nw, aw, bw, stream.pairs.len() / lanes + 8);
    let idle = vec![0u32; lanes];
    s.push((false, false, false, 0), &idle, &idle);
    s.push((false, false, false, 0), &idle, &idle);
    let (mut a, mut b) = (vec![0u32; lanes], vec![0u32; lanes]);
    for (c, slice) in stream.pairs.chunks_exact(lanes).enumerate() {
        for (j, &(x, w)) in slice.iter().enumerate() {
            a[j] = design.encode(x, p, true);
            b[j] = design.encode(w, p, false);
        }
        s.push((true, true, starts[c * lanes], 0), &a, &b);
    }
    for _ in 0..design.drain {
        s.push((true, false, false, 0), &idle, &idle);
    }
    Ok(s)
}

/// Where the schedule is cut for `threads` pieces: cycle indices [0, c1, ..., n], each
/// inner cut a cycle that starts a dot product (clear), near an even share of the cycles;
/// [0, n] when the stream is too short to share (under 4,096 cycles a piece).
pub(super) fn piece_cuts(s: &Schedule, threads: usize) -> Vec<usize> {
    let n = s.cycles();
    let mut cuts = vec![0];
    if threads > 1 && n >= threads * 4096 {
        let starts: Vec<usize> = (0..n).filter(|&c| s.clear(c)).collect();
        for k in 1..threads {
            let target = k * n / threads;
            let i = starts.partition_point(|&c| c < target);
            if let Some(&c) = starts.get(i) {
                if c > *cuts.last().unwrap() {
                    cuts.push(c);
                }
            }
        }
    }
    cuts.push(n);
    cuts
}

/// The stream as the stimulus tests/rtl/mac_tb.v replays in iverilog: one hex word per
/// cycle, {rst_n, valid, clear, a_i, b_i} (the ports' bits as `design` takes them, a dot
/// unit's lanes packed), with this module's schedule (reset, the pairs or slices, drain).
/// Used to cross-check and to time iverilog on the same data.
pub fn stimulus_hex(stream: &OperandStream, design: Design, lanes: u32) -> Result<String> {
    let p = design.params_for(stream, lanes)?;
    let sched = schedule(design, p, stream)?;
    let width = |port| design.signal_width(p, port) as usize;
    let (aw, bw) = (width("a_i"), width("b_i"));
    Ok(schedule_hex(&sched, (aw, bw, 0), 0..sched.cycles()))
}

/// Cycles `range` of a schedule as stimulus words (see `stimulus_hex`); `aw`, `bw` and
/// `sw` are the widths in bits of a_i, b_i and sel_i (0: no sel_i, as in every stream
/// design). With sel_i the word is {rst_n, valid, clear, sel, a_i, b_i}.
pub(super) fn schedule_hex(
    sched: &Schedule,
    (aw, bw, sw): (usize, usize, usize),
    range: std::ops::Range<usize>,
) -> String {
    let nw = (sched.stride - 1) / 2;
    let bits = bw + aw + sw + 3;
    let mut out = String::with_capacity(range.len() * (bits.div_ceil(4) + 1));
    for rec in
        sched.words[range.start * sched.stride..range.end * sched.stride].chunks_exact(sched.stride)
    {
        // The word, little-endian in 32-bit pieces: b, then a, then the control bits.
        let mut word = vec![0u32; bits.div_ceil(32)];
        let mut put = |at: usize, v: u32, n: usize| {
            for k in 0..n.min(32) {
                if v >> k & 1 == 1 {
                    word[(at + k) / 32] |= 1 << ((at + k) % 32);
                }
            }
        };
        for (i, &w) in rec[nw..2 * nw].iter().enumerate() {
            put(i * 32, w, bw.saturating_sub(i * 32));
        }
        for (i, &w) in rec[..nw].iter().enumerate() {
            put(bw + i * 32, w, aw.saturating_sub(i * 32));
        }
        let flags = rec[2 * nw];
        let at = bw + aw;
        put(at, flags >> 24, sw);
        put(at + sw, flags >> 16 & 1, 1);
        put(at + sw + 1, flags >> 8 & 1, 1);
        put(at + sw + 2, flags & 1, 1);
        let hex: String = word.iter().rev().map(|w| format!("{w:08x}")).collect();
        out.push_str(&hex[hex.len() - bits.div_ceil(4)..]);
        out.push('\n');
    }
    out
}

/// `sim --export`: the stream as CSV (by extension) or as iverilog stimulus for `design`
/// (a dot unit with `lanes` lanes).
pub fn export_stream(
    stream: &OperandStream,
    path: &Path,
    design: Design,
    lanes: u32,
) -> Result<()> {
    let bytes = if path.extension().is_some_and(|e| e == "csv") {
        let mut v = Vec::new();
        stream
            .write_csv(&mut v)
            .map_err(|e| crate::error::Error::io(path, e))?;
        v
    } else {
        stimulus_hex(stream, design, lanes)?.into_bytes()
    };
    crate::files::write_atomic(path, &bytes)
}
