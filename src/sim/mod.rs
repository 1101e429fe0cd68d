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

use std::collections::BTreeMap;
use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::trace::{wrap_signed, ElemFormat, OperandStream};

pub mod fp;
pub mod gate;

// build.rs uses the rest of this file (ports, model names).
#[allow(dead_code)]
mod layout {
    include!("../../sim/signals.rs");
}
pub use layout::{Params, ACC_W, BF16_DOT_EXTRA, BF16_LANES, LANES, WIDTHS};

/// Lanes of a dot-product unit when none are asked for.
pub const DEFAULT_LANES: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Design {
    /// Serial MAC: one pair per cycle, every register loads every cycle.
    Baseline,
    /// Serial MAC with operand isolation.
    Isolated,
    /// The baseline with sign-magnitude operands (an operand-encoding experiment).
    Signmag,
    /// W-lane dot-product unit: a K-slice of W pairs per cycle, adder tree, accumulator.
    Dot,
    /// The dot unit with per-lane operand isolation.
    DotIsolated,
    /// Serial bf16 x bf16 MAC into an fp32 accumulator (exact product, one rounding per add).
    Bf16,
    /// W-lane fused bf16 dot unit, tensor-core style: a K-slice of W products and the fp32
    /// accumulator aligned to the largest exponent, summed, rounded once.
    Bf16Dot,
}

impl Design {
    /// Every design, in `DESIGNS` order (sim/signals.rs).
    pub const ALL: [Design; 7] = [
        Design::Baseline,
        Design::Isolated,
        Design::Signmag,
        Design::Dot,
        Design::DotIsolated,
        Design::Bf16,
        Design::Bf16Dot,
    ];
    /// The serial MACs the sweep compares (one pair per cycle).
    pub const MACS: [Design; 3] = [Design::Baseline, Design::Isolated, Design::Signmag];

    pub fn name(self) -> &'static str {
        match self {
            Design::Baseline => "baseline",
            Design::Isolated => "isolated",
            Design::Signmag => "signmag",
            Design::Dot => "dot",
            Design::DotIsolated => "dot-isolated",
            Design::Bf16 => "bf16",
            Design::Bf16Dot => "bf16-dot",
        }
    }

    pub fn module(self) -> &'static str {
        layout::DESIGNS[self as usize].module
    }

    /// Takes a K-slice of `lanes` pairs per cycle (a dot-product unit).
    pub fn is_dot(self) -> bool {
        matches!(self, Design::Dot | Design::DotIsolated | Design::Bf16Dot)
    }

    /// Multiplies bf16 operands into an fp32 accumulator.
    pub fn is_bf16(self) -> bool {
        matches!(self, Design::Bf16 | Design::Bf16Dot)
    }

    /// Cycles from a pair's (or slice's) clock edge to its effect on acc_o.
    fn drain(self) -> usize {
        match self {
            Design::Dot | Design::DotIsolated => 3,
            _ => 2,
        }
    }

    /// The model parameters that take `stream`, or why this design cannot.
    pub fn params_for(self, stream: &OperandStream, lanes: u32) -> Result<Params> {
        let (fa, fb) = (stream.a_format, stream.b_format);
        let cannot = |why: String| {
            Err(Error::Sim(format!(
                "{}: cannot take a {} stream: {why}",
                self.name(),
                stream.format_name()
            )))
        };
        let params = |a_w, b_w, b_signed| Params {
            lanes: if self.is_dot() { lanes } else { 1 },
            a_w,
            b_w,
            a_signed: true,
            b_signed,
        };
        let p = if self.is_bf16() {
            if (fa, fb) != (ElemFormat::Bf16, ElemFormat::Bf16) {
                return cannot(format!("{} takes bf16 x bf16 operands", self.name()));
            }
            params(16, 16, true)
        } else if !stream.is_integer() {
            return cannot("an integer datapath needs integer operands".into());
        } else if !self.is_dot() {
            let w = stream.width as u32;
            params(w, w, true)
        } else {
            // int8 x uint4 when the weights are nibbles, else int8 x int8 when both fit.
            let fits8 =
                |f: ElemFormat| matches!(f, ElemFormat::I4 | ElemFormat::U4 | ElemFormat::I8);
            if !fits8(fa) {
                return cannot("activations wider than 8 bits".into());
            }
            match fb {
                ElemFormat::U4 => params(8, 4, false),
                f if fits8(f) => params(8, 8, true),
                _ => return cannot("operands wider than 8 bits (built: i8 x i8, i8 x u4)".into()),
            }
        };
        if !self.is_dot() {
            return Ok(p);
        }
        let built = if self.is_bf16() { BF16_LANES } else { LANES };
        if !built.contains(&lanes) {
            return cannot(format!(
                "no model built for {lanes} lanes (built: {built:?})"
            ));
        }
        let l = lanes as usize;
        let misaligned = stream
            .dot_starts()
            .iter()
            .enumerate()
            .find(|&(i, &s)| s && i % l != 0)
            .map(|(i, _)| i)
            .or((!stream.pairs.len().is_multiple_of(l)).then_some(stream.pairs.len()));
        if let Some(i) = misaligned {
            return cannot(format!(
                "the dot product length (K) must be a multiple of the lane count {lanes}: a dot product starts or the stream ends at pair {i}"
            ));
        }
        Ok(p)
    }

    /// The bits driven onto one lane of a_i (`is_a`) or b_i for `v`: two's complement of
    /// the port's width, or for `Signmag` a sign and a W-bit magnitude.
    fn encode(self, v: i16, p: Params, is_a: bool) -> u32 {
        let w = if is_a { p.a_w } else { p.b_w };
        match self {
            Design::Signmag => ((v < 0) as u32) << w | (v as i32).unsigned_abs(),
            _ => v as u32 & ((1u32 << w) - 1),
        }
    }
}

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

/// Where a signal's switching belongs, for "where do the savings come from".
pub fn signal_group(name: &str) -> &'static str {
    match name {
        "a_i" | "b_i" => "operand ports",
        "a_q" | "b_q" | "a_x" | "b_x" => "multiplier inputs",
        "mult" | "prod_q" | "mag_prod" => "product",
        "sum_q" | "emax" | "aligned" | "tree_sum" => "adder tree",
        n if n.contains("g_level[") => "adder tree",
        "addend" | "acc_q" | "acc_o" | "mag" | "sum" => "accumulator",
        "clk_i" => "clock",
        _ => "control",
    }
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

// ------------------------------------------------------------------ the C shim

type NewFn = unsafe extern "C" fn(i32) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type OpenVcdFn = unsafe extern "C" fn(*mut c_void, *const std::ffi::c_char) -> i32;
type RunFn = unsafe extern "C" fn(
    *mut c_void,
    *const c_void,
    u64,
    *mut u64,
    i32,
    *mut u64,
    *mut u64,
    *mut i32,
);
type AccFn = unsafe extern "C" fn(*mut c_void) -> u64;

struct ModelApi {
    new: NewFn,
    free: FreeFn,
    open_vcd: OpenVcdFn,
    run: RunFn,
    acc: AccFn,
}

/// The entry points of every model build.rs built, by model name (OUT_DIR/models.rs lists
/// them as `models_table!(Vmac_baseline_w8, ...)`).
macro_rules! models_table {
    ($($m:ident),* $(,)?) => {
        #[allow(non_snake_case)]
        mod ffi {
            $(pub mod $m {
                use std::ffi::c_void;
                extern "C" {
                    #[link_name = concat!("pw_", stringify!($m), "_new")]
                    pub fn new(trace: i32) -> *mut c_void;
                    #[link_name = concat!("pw_", stringify!($m), "_free")]
                    pub fn free(h: *mut c_void);
                    #[link_name = concat!("pw_", stringify!($m), "_open_vcd")]
                    pub fn open_vcd(h: *mut c_void, path: *const std::ffi::c_char) -> i32;
                    #[link_name = concat!("pw_", stringify!($m), "_run")]
                    pub fn run(h: *mut c_void, cyc: *const c_void, n: u64, t: *mut u64,
                        count: i32, toggles: *mut u64, prev: *mut u64, primed: *mut i32);
                    #[link_name = concat!("pw_", stringify!($m), "_acc")]
                    pub fn acc(h: *mut c_void) -> u64;
                }
            })*
        }
        static MODELS: &[(&str, ModelApi)] = &[$((
            stringify!($m),
            ModelApi {
                new: ffi::$m::new,
                free: ffi::$m::free,
                open_vcd: ffi::$m::open_vcd,
                run: ffi::$m::run,
                acc: ffi::$m::acc,
            },
        )),*];
    };
}
include!(concat!(env!("OUT_DIR"), "/models.rs"));

/// `lean`: the model built without tracing or public signals (simulate-only runs).
fn api(design: Design, p: Params, lean: bool) -> Result<&'static ModelApi> {
    let name = if lean {
        layout::lean_model_name(design.module(), p)
    } else {
        layout::model_name(design.module(), p)
    };
    MODELS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, api)| api)
        .ok_or_else(|| {
            Error::Sim(format!(
                "{}: no model built for these parameters ({name}; serial MACs: widths {WIDTHS:?}, dot units: lanes {LANES:?})",
                design.name()
            ))
        })
}

/// One live model. Freed on drop (which also closes its VCD).
struct Model {
    api: &'static ModelApi,
    h: *mut c_void,
    t: u64,
}

impl Model {
    fn new(design: Design, p: Params, vcd: Option<&Path>, lean: bool) -> Result<Self> {
        let api = api(design, p, lean)?;
        // SAFETY: the shim allocates a harness; `h` is only used through this struct.
        let h = unsafe { (api.new)(vcd.is_some() as i32) };
        let m = Model { api, h, t: 0 };
        if let Some(p) = vcd {
            let c = CString::new(p.to_string_lossy().as_bytes())
                .map_err(|_| Error::Sim("VCD path has a NUL byte".into()))?;
            // SAFETY: `h` is live, `c` outlives the call.
            if unsafe { (m.api.open_vcd)(m.h, c.as_ptr()) } != 0 {
                return Err(Error::Sim(format!(
                    "cannot open VCD {} for writing",
                    p.display()
                )));
            }
        }
        Ok(m)
    }
    /// Run the cycles of `s`; with `counter`, count toggles of the sampled signals.
    fn run(
        &mut self,
        s: &Schedule,
        range: std::ops::Range<usize>,
        counter: Option<&mut FastCounter>,
    ) {
        let (count, toggles, prev, primed) = match counter {
            Some(c) => (
                1,
                c.toggles.as_mut_ptr(),
                c.prev.as_mut_ptr(),
                &mut c.primed as *mut i32,
            ),
            None => (
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            ),
        };
        let words = &s.words[range.start * s.stride..range.end * s.stride];
        // SAFETY: `h` is live; `words` holds whole cycle records of the layout this model
        // was built with (`PwCycle<NW>`, `stride` = 2 NW + 1 words); the counter's arrays
        // have one slot per snapshot slot and are only touched when `count` is 1.
        unsafe {
            (self.api.run)(
                self.h,
                words.as_ptr() as *const c_void,
                range.len() as u64,
                &mut self.t,
                count,
                toggles,
                prev,
                primed,
            )
        };
    }
    fn acc(&self) -> u64 {
        // SAFETY: `h` is live.
        unsafe { (self.api.acc)(self.h) }
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: created by `new`, freed once.
        unsafe { (self.api.free)(self.h) }
    }
}

/// Per-slot toggle counts kept across `Model::run` calls (filled in by the shim:
/// popcount of what changed between consecutive evaluations).
struct FastCounter {
    prev: Vec<u64>,
    toggles: Vec<u64>,
    primed: i32,
}

impl FastCounter {
    fn new(n: usize) -> Self {
        FastCounter {
            prev: vec![0; n],
            toggles: vec![0; n],
            primed: 0,
        }
    }
}

/// The cycle records a model replays: `PwCycle<NW>` of sim/shim.h, flattened into 32-bit
/// words (a's NW words, b's NW words, then rst_n | valid << 8 | clear << 16).
struct Schedule {
    stride: usize,
    /// Bits per lane of a_i and b_i.
    a_w: u32,
    b_w: u32,
    words: Vec<u32>,
}

impl Schedule {
    fn cycles(&self) -> usize {
        self.words.len() / self.stride
    }

    /// Does cycle `c` start a dot product (clear_i with valid_i)?
    fn clear(&self, c: usize) -> bool {
        let flags = self.words[c * self.stride + self.stride - 1];
        flags >> 16 & 1 == 1 && flags >> 8 & 1 == 1
    }

    /// One cycle: lanes of a and b (already encoded) packed from bit 0 up.
    fn push(&mut self, rst_n: bool, valid: bool, clear: bool, a: &[u32], b: &[u32]) {
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
        self.words[at + 2 * nw] = rst_n as u32 | (valid as u32) << 8 | (clear as u32) << 16;
    }
}

/// The schedule of `stream` on `design` with parameters `p` (from `params_for`, which
/// checked that dot products start on slice boundaries): reset, the pairs (a K-slice of
/// `p.lanes` per cycle), drain.
fn schedule(design: Design, p: Params, stream: &OperandStream) -> Result<Schedule> {
    let lanes = p.lanes as usize;
    let starts = stream.dot_starts();
    let nw = layout::cycle_words(design.module(), p);
    let (aw, bw) = if design == Design::Signmag {
        (p.a_w + 1, p.b_w + 1)
    } else {
        (p.a_w, p.b_w)
    };
    let mut s = Schedule {
        stride: 2 * nw + 1,
        a_w: aw,
        b_w: bw,
        words: Vec::with_capacity((stream.pairs.len() / lanes + 8) * (2 * nw + 1)),
    };
    let idle = vec![0u32; lanes];
    s.push(false, false, false, &idle, &idle);
    s.push(false, false, false, &idle, &idle);
    let (mut a, mut b) = (vec![0u32; lanes], vec![0u32; lanes]);
    for (c, slice) in stream.pairs.chunks_exact(lanes).enumerate() {
        for (j, &(x, w)) in slice.iter().enumerate() {
            a[j] = design.encode(x, p, true);
            b[j] = design.encode(w, p, false);
        }
        s.push(true, true, starts[c * lanes], &a, &b);
    }
    for _ in 0..design.drain() {
        s.push(true, false, false, &idle, &idle);
    }
    Ok(s)
}

/// Where the schedule is cut for `threads` pieces: cycle indices [0, c1, ..., n], each
/// inner cut a cycle that starts a dot product (clear), near an even share of the cycles;
/// [0, n] when the stream is too short to share (under 4,096 cycles a piece).
fn piece_cuts(s: &Schedule, threads: usize) -> Vec<usize> {
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

/// One piece's outcome: its toggles, the snapshot it started from (after its warm-up) and
/// ended in, and its accumulator.
struct Piece {
    toggles: Vec<u64>,
    entry: Vec<u64>,
    exit: Vec<u64>,
    acc: u64,
}

/// What every piece of one simulation shares: the model to build, the schedule, and how
/// to count (`vcd`: the one-piece run that dumps a file).
struct Runner<'a> {
    design: Design,
    p: Params,
    s: &'a Schedule,
    vcd: Option<&'a Path>,
    lean: bool,
    fast: bool,
    slots: usize,
}

impl Runner<'_> {
    /// Simulate cycles `range` on a fresh model, warmed up (not counted) from cycle `warm`.
    /// The model is dropped (its VCD closed) before this returns.
    fn piece(
        &self,
        (warm, range): (usize, std::ops::Range<usize>),
        done: &std::sync::atomic::AtomicUsize,
    ) -> Result<Piece> {
        let mut model = Model::new(self.design, self.p, self.vcd, self.lean)?;
        let mut fc = FastCounter::new(self.slots);
        if warm < range.start {
            model.run(self.s, warm..range.start, self.fast.then_some(&mut fc));
            fc.toggles.fill(0);
        }
        let entry = fc.prev.clone();
        let chunk = 1 << 14;
        let mut at = range.start;
        while at < range.end {
            let end = (at + chunk).min(range.end);
            model.run(self.s, at..end, self.fast.then_some(&mut fc));
            done.fetch_add(end - at, std::sync::atomic::Ordering::Relaxed);
            at = end;
        }
        Ok(Piece {
            toggles: fc.toggles,
            entry,
            exit: fc.prev,
            acc: model.acc(),
        })
    }

    /// Run the pieces between `cuts` on one thread each, check every seam, join the
    /// counts. Returns the summed toggles per snapshot slot and the last piece's
    /// accumulator. `progress` gets the cycles simulated so far.
    fn pieces(&self, cuts: &[usize], progress: &mut dyn FnMut(usize)) -> Result<(Vec<u64>, u64)> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let s = self.s;
        let done = AtomicUsize::new(0);
        // Warm-up: from the dot product before the cut (its clear resets the accumulator).
        let warm_for = |at: usize| (0..at).rev().find(|&c| s.clear(c)).unwrap_or(0);
        let jobs: Vec<(usize, std::ops::Range<usize>)> = cuts
            .windows(2)
            .map(|w| (if w[0] == 0 { 0 } else { warm_for(w[0]) }, w[0]..w[1]))
            .collect();
        let main = std::thread::current();
        let mut pieces: Vec<Result<Piece>> = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|job| {
                    let (job, done, main) = (job.clone(), &done, main.clone());
                    scope.spawn(move || {
                        let r = self.piece(job, done);
                        main.unpark(); // wake the progress loop at once, not at its next tick
                        r
                    })
                })
                .collect();
            while !handles.iter().all(|h| h.is_finished()) {
                progress(done.load(Ordering::Relaxed));
                std::thread::park_timeout(std::time::Duration::from_millis(50));
            }
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Sim("a simulation thread panicked".into())))
                })
                .collect()
        });
        // Seams: a piece whose warmed-up state is not where the previous piece ended is run
        // again from the stream's start (then its state is the one-thread run's by
        // construction).
        if self.fast {
            for i in 1..pieces.len() {
                let matches = match (&pieces[i - 1], &pieces[i]) {
                    (Ok(a), Ok(b)) => a.exit == b.entry,
                    _ => true,
                };
                if !matches {
                    pieces[i] = self.piece((0, jobs[i].1.clone()), &done);
                }
            }
        }
        progress(done.load(Ordering::Relaxed));
        let pieces: Vec<Piece> = pieces.into_iter().collect::<Result<_>>()?;
        let mut toggles = vec![0u64; self.slots];
        for piece in &pieces {
            for (t, x) in toggles.iter_mut().zip(&piece.toggles) {
                *t += x;
            }
        }
        Ok((toggles, pieces.last().map_or(0, |x| x.acc)))
    }
}

/// Simulate `design` on `stream` (dot units with `DEFAULT_LANES`). `progress` is called
/// with pairs done so far.
pub fn simulate(
    design: Design,
    stream: &OperandStream,
    counting: &Counting,
    progress: &mut dyn FnMut(u64),
) -> Result<DesignResult> {
    simulate_lanes(design, DEFAULT_LANES, stream, counting, progress)
}

/// Simulate `design` (a dot unit with `lanes` lanes) on `stream`, on one thread.
pub fn simulate_lanes(
    design: Design,
    lanes: u32,
    stream: &OperandStream,
    counting: &Counting,
    progress: &mut dyn FnMut(u64),
) -> Result<DesignResult> {
    simulate_threads(design, lanes, stream, counting, 1, progress)
}

/// Simulate `design` on `stream` with up to `threads` threads (one model each): the
/// schedule is cut into pieces at dot-product starts, each piece simulated on its own
/// thread after a warm-up over the dot product before it, and the counts joined. The join
/// is exact: a piece's counts are kept only when its state after the warm-up (every
/// register of the design, from the toggle snapshot) equals the state the piece before it
/// ended in; otherwise it is run again warmed up from the stream's start. VCD counting
/// stays on one thread (one file).
pub fn simulate_threads(
    design: Design,
    lanes: u32,
    stream: &OperandStream,
    counting: &Counting,
    threads: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<DesignResult> {
    let p = design.params_for(stream, lanes)?;
    let vcd_path = match counting {
        Counting::Vcd(d) | Counting::Both(d) => {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
            Some(d.join(format!("{}.vcd", layout::model_name(design.module(), p))))
        }
        _ => None,
    };
    let sched = schedule(design, p, stream)?;
    let names = layout::signals(design.module(), p);
    let widths: Vec<u32> = names
        .iter()
        .map(|n| layout::signal_width(design.module(), p, n))
        .collect();
    let runner = Runner {
        design,
        p,
        s: &sched,
        vcd: vcd_path.as_deref(),
        lean: matches!(counting, Counting::None),
        fast: matches!(counting, Counting::Fast | Counting::Both(_)),
        slots: widths.iter().map(|&w| layout::snapshot_slots(w)).sum(),
    };
    // A VCD is one file: one piece.
    let cuts = piece_cuts(&sched, if vcd_path.is_some() { 1 } else { threads });
    let start = Instant::now();
    let (toggles, acc_bits) = runner.pieces(&cuts, &mut |cycles| {
        progress(((cycles.saturating_sub(2)) * p.lanes as usize).min(stream.pairs.len()) as u64)
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    let (acc_final, acc_expected) = check_acc(design, p, stream, acc_bits)?;
    let module = design.module();
    let mut slot = toggles.iter();
    let fast_signals: Vec<SignalCount> = names
        .iter()
        .zip(&widths)
        .map(|(n, &w)| SignalCount {
            path: format!("{module}.{n}"),
            width: w,
            toggles: slot.by_ref().take(layout::snapshot_slots(w)).sum(),
            group: signal_group(n),
        })
        .collect();
    let (signals, how) = match (&vcd_path, counting) {
        (Some(path), _) => {
            let vcd_signals = count_vcd(path, module, &names)?;
            if let Counting::Both(_) = counting {
                if vcd_signals != fast_signals {
                    return Err(Error::Sim(format!(
                        "{}: VCD and fast-path counts differ:\n vcd:  {vcd_signals:?}\n fast: {fast_signals:?}",
                        design.name()
                    )));
                }
            }
            (vcd_signals, "vcd")
        }
        (None, Counting::Fast) => (fast_signals, "fast"),
        _ => (Vec::new(), "none"),
    };
    Ok(summarize(
        design,
        p,
        stream,
        signals,
        how,
        (acc_final, acc_expected),
        sched.cycles() as u64,
        elapsed,
        vcd_path,
    ))
}

/// Simulate `design` (a dot unit with `lanes` lanes) on `stream` at the gate level: the
/// yosys netlist of the same model (built or found in `opts.cache`), replayed with the same
/// cycle records as the RTL, every net counted; the signals of the result are the RTL
/// signals the nets are or feed. `progress` gets pairs done.
pub fn simulate_gate(
    design: Design,
    lanes: u32,
    stream: &OperandStream,
    opts: &gate::GateOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<DesignResult> {
    let p = design.params_for(stream, lanes)?;
    let module = design.module();
    let sched = schedule(design, p, stream)?;
    let nw = layout::cycle_words(module, p);
    let name = layout::model_name(module, p);
    let prep = gate::prepare(
        module,
        &layout::verilog_params(module, p),
        nw,
        &name,
        &opts.cache,
    )?;
    let nl = &prep.netlist;
    let start = Instant::now();
    let run = prep.model.run(&sched.words, sched.stride, &mut |cycles| {
        progress(((cycles.saturating_sub(2)) * p.lanes as usize).min(stream.pairs.len()) as u64)
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    let (acc_final, acc_expected) = check_acc(design, p, stream, run.acc)?;
    // One count per RTL signal a net is or feeds, in net order of first appearance.
    let group_of = |id: usize| gate_group(&nl.nets[id].signal);
    let mut signals: Vec<SignalCount> = Vec::new();
    let mut at: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, net) in nl.nets.iter().enumerate() {
        let i = *at.entry(&net.signal).or_insert_with(|| {
            signals.push(SignalCount {
                path: format!("{module}.{}", net.signal),
                width: 0,
                toggles: 0,
                group: group_of(id),
            });
            signals.len() - 1
        });
        signals[i].width += 1;
        signals[i].toggles += run.toggles[id];
    }
    let energies = opts.cells.net_energies(nl)?;
    let priced = gate::price(nl, &opts.cells, &energies, &run.toggles, &|id| {
        group_of(id).to_string()
    });
    let energy_pj = priced.total_pj;
    let glitch = if opts.glitch_cycles > 0 {
        Some(glitch_sample(design, p, &sched, &prep, opts, &energies)?)
    } else {
        None
    };
    let mut r = summarize(
        design,
        p,
        stream,
        signals,
        "fast",
        (acc_final, acc_expected),
        run.cycles,
        elapsed,
        None,
    );
    r.level = "gate";
    r.gate = Some(Box::new(gate::GateDetail {
        yosys: prep.yosys.clone(),
        synthesis: prep.script.clone(),
        netlist_dir: prep.dir.display().to_string(),
        nets: nl.nets.len(),
        cells: priced.cells,
        energy_pj,
        energy_fj_per_pair: if stream.pairs.is_empty() {
            0.0
        } else {
            1e3 * energy_pj / stream.pairs.len() as f64
        },
        energy_source: opts.cells.source.clone(),
        energy_by_group: priced.by_group,
        glitch,
        net_rows: priced.nets,
    }));
    Ok(r)
}

/// A net's group: the group of the RTL signal it is or feeds (`prod_q (logic)` is the
/// product; a submodule's `u_tree.x` is `x`, its tree levels the adder tree).
fn gate_group(signal: &str) -> &'static str {
    let base = signal.trim_end_matches(" (logic)");
    if base.contains("g_level[") {
        return signal_group(base);
    }
    signal_group(base.rsplit('.').next().unwrap_or(base))
}

/// The first `opts.glitch_cycles` cycles with unit gate delays (iverilog), their glitches,
/// and a check that the settled values toggle as the zero-delay model's nets do.
fn glitch_sample(
    design: Design,
    p: Params,
    sched: &Schedule,
    prep: &gate::Prepared,
    opts: &gate::GateOptions,
    e: &[f64],
) -> Result<gate::GlitchSummary> {
    let nl = &prep.netlist;
    let n = opts.glitch_cycles.min(sched.cycles());
    let width = |port| layout::signal_width(design.module(), p, port) as usize;
    let (aw, bw) = (width("a_i"), width("b_i"));
    let hex = schedule_hex(sched, aw, bw, 0..n);
    let dir = prep.dir.join(format!("glitch-{}", std::process::id()));
    let t = gate::glitch::unit_delay(nl, &hex, aw, bw, &dir)?;
    let zero = prep
        .model
        .run(&sched.words[..n * sched.stride], sched.stride, &mut |_| {})?;
    let _ = std::fs::remove_dir_all(&dir);
    let sum = |v: &[u64]| v.iter().sum::<u64>();
    let priced = |v: &[u64]| v.iter().zip(e).map(|(&t, &e)| t as f64 * e).sum::<f64>();
    let (functional, transitions) = (sum(&t.functional), sum(&t.total));
    let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for id in 0..nl.nets.len() {
        let g = by
            .entry(gate_group(&nl.nets[id].signal).to_string())
            .or_default();
        g.0 += t.functional[id];
        g.1 += t.total[id] - t.functional[id];
    }
    let ratio = |f: u64, g: u64| if f == 0 { 0.0 } else { g as f64 / f as f64 };
    Ok(gate::GlitchSummary {
        cycles: t.cycles,
        half_cycle_units: t.half,
        functional,
        transitions,
        glitches: transitions - functional,
        glitch_ratio: ratio(functional, transitions - functional),
        energy_functional_pj: priced(&t.functional),
        energy_with_glitches_pj: priced(&t.total),
        ratio_by_group: by.into_iter().map(|(k, (f, g))| (k, ratio(f, g))).collect(),
        functional_matches_zero_delay: zero.toggles == t.functional,
    })
}

/// The accumulator read back (`acc_bits`) as a signed value, and what it must be: the
/// stream's last dot product, computed in Rust (the bf16 designs' own rounding).
fn check_acc(
    design: Design,
    p: Params,
    stream: &OperandStream,
    acc_bits: u64,
) -> Result<(i64, i64)> {
    let acc_final = wrap_signed(acc_bits, ACC_W);
    let acc_expected = if design == Design::Bf16 {
        fp::mac_bf16(stream.last_dot()) as i32 as i64
    } else if design == Design::Bf16Dot {
        fp::dot_bf16(stream.last_dot(), p.lanes as usize) as i32 as i64
    } else {
        stream.expected_acc(ACC_W)
    };
    if acc_final != acc_expected {
        return Err(Error::Sim(format!(
            "{}: accumulator {acc_final} != expected dot product {acc_expected}",
            design.name()
        )));
    }
    Ok((acc_final, acc_expected))
}

/// Totals, datapath toggles and groups of one run.
#[allow(clippy::too_many_arguments)]
fn summarize(
    design: Design,
    p: Params,
    stream: &OperandStream,
    signals: Vec<SignalCount>,
    counting: &'static str,
    (acc_final, acc_expected): (i64, i64),
    cycles: u64,
    elapsed: f64,
    vcd: Option<PathBuf>,
) -> DesignResult {
    let total: u64 = signals.iter().map(|s| s.toggles).sum();
    let datapath: u64 = signals
        .iter()
        .filter(|s| !matches!(s.group, "clock" | "operand ports"))
        .map(|s| s.toggles)
        .sum();
    let mut groups = BTreeMap::new();
    for s in &signals {
        *groups.entry(s.group).or_insert(0) += s.toggles;
    }
    let fmt = |w: u32, signed: bool| format!("{}{w}", if signed { "i" } else { "u" });
    DesignResult {
        design: design.name(),
        width: p.a_w,
        lanes: p.lanes,
        format: if design.is_bf16() {
            "bf16 x bf16".into()
        } else {
            format!("{} x {}", fmt(p.a_w, p.a_signed), fmt(p.b_w, p.b_signed))
        },
        acc_width: ACC_W,
        pairs: stream.pairs.len() as u64,
        cycles,
        acc_final,
        acc_expected,
        total_toggles: total,
        datapath_toggles: datapath,
        toggles_per_pair: if stream.pairs.is_empty() {
            0.0
        } else {
            datapath as f64 / stream.pairs.len() as f64
        },
        groups,
        signals,
        counting,
        level: "rtl",
        cycles_per_s: cycles as f64 / elapsed.max(1e-9),
        vcd: vcd.map(|p| p.display().to_string()),
        gate: None,
    }
}

/// Count the VCD Verilator wrote, restricted to the design's sampled signals, in the
/// fast path's order (Verilator puts the design under a `TOP` scope; a generate block's
/// signal `g_level[1].s` sits in the scope `g_level[1]`).
fn count_vcd(path: &Path, module: &str, names: &[String]) -> Result<Vec<SignalCount>> {
    let report = crate::vcd::count_toggles_path(path)?;
    names
        .iter()
        .map(|n| {
            let p = format!("TOP.{module}.{n}");
            let s = report
                .signal(&p)
                .ok_or_else(|| Error::Sim(format!("{}: signal {p} missing", path.display())))?;
            Ok(SignalCount {
                path: format!("{module}.{n}"),
                width: s.width,
                toggles: s.toggles,
                group: signal_group(n),
            })
        })
        .collect()
}

/// Verilator version the models were built with.
pub fn verilator_version() -> &'static str {
    env!("PERFWATT_VERILATOR_VERSION")
}

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

/// The stream as the stimulus tests/rtl/mac_tb.v replays in iverilog: one hex word per
/// cycle, {rst_n, valid, clear, a_i, b_i} (the ports' bits as `design` takes them, a dot
/// unit's lanes packed), with this module's schedule (reset, the pairs or slices, drain).
/// Used to cross-check and to time iverilog on the same data.
pub fn stimulus_hex(stream: &OperandStream, design: Design, lanes: u32) -> Result<String> {
    let p = design.params_for(stream, lanes)?;
    let sched = schedule(design, p, stream)?;
    let width = |port| layout::signal_width(design.module(), p, port) as usize;
    let (aw, bw) = (width("a_i"), width("b_i"));
    Ok(schedule_hex(&sched, aw, bw, 0..sched.cycles()))
}

/// Cycles `range` of a schedule as stimulus words (see `stimulus_hex`), `aw` and `bw` the
/// operand ports' widths in bits.
fn schedule_hex(sched: &Schedule, aw: usize, bw: usize, range: std::ops::Range<usize>) -> String {
    let nw = (sched.stride - 1) / 2;
    let bits = bw + aw + 3;
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
        put(bw + aw, flags >> 16 & 1, 1);
        put(bw + aw + 1, flags >> 8 & 1, 1);
        put(bw + aw + 2, flags & 1, 1);
        let hex: String = word.iter().rev().map(|w| format!("{w:08x}")).collect();
        out.push_str(&hex[hex.len() - bits.div_ceil(4)..]);
        out.push('\n');
    }
    out
}
