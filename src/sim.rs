//! Replays an operand stream into the Verilator-built MAC models and counts switching.
//!
//! In: an `OperandStream`, a design (baseline / isolated) and how to count. Out:
//! `DesignResult`: cycles, the accumulator read back, per-signal toggles, cycles/s.
//!
//! Schedule, one operand pair per clock cycle: 2 reset cycles, the pairs (clear_i with the
//! first pair of each dot product), 2 drain cycles. Each cycle is two evaluations: inputs
//! change with clk low (time 2k), rising edge (time 2k+1). Toggles are counted at those
//! points, either from the VCD Verilator dumps (through `vcd`) or, without any file, by
//! snapshotting the sampled signals after each evaluation (`Counting::Fast`). Both see the
//! same values at the same times, so they agree exactly (tested).

use std::collections::BTreeMap;
use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::trace::{wrap_signed, OperandStream};

// build.rs uses the rest of this file (ports, model names).
#[allow(dead_code)]
mod layout {
    include!("../sim/signals.rs");
}
pub use layout::{ACC_W, WIDTHS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Design {
    Baseline,
    Isolated,
    /// The baseline with sign-magnitude operands (an operand-encoding experiment).
    Signmag,
}

impl Design {
    pub const ALL: [Design; 3] = [Design::Baseline, Design::Isolated, Design::Signmag];
    pub fn name(self) -> &'static str {
        match self {
            Design::Baseline => "baseline",
            Design::Isolated => "isolated",
            Design::Signmag => "signmag",
        }
    }

    /// The bits driven onto a_i/b_i for `v`: two's complement, or sign-magnitude for
    /// `Signmag` (which cannot encode the two's-complement minimum).
    pub fn encode(self, v: i16, width: u32) -> Result<u32> {
        let mask = (1u32 << width) - 1;
        match self {
            Design::Signmag if v as i32 == -(1 << (width - 1)) => Err(Error::Sim(format!(
                "sign-magnitude cannot encode {v} in {width} bits (range is +-{})",
                (1 << (width - 1)) - 1
            ))),
            Design::Signmag if v < 0 => Ok((1 << (width - 1)) | (-(v as i32)) as u32),
            _ => Ok(v as u32 & mask),
        }
    }
    pub fn module(self) -> &'static str {
        self.layout().module
    }
    fn layout(self) -> &'static layout::DesignSignals {
        &layout::DESIGNS[self as usize]
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
        "a_q" | "b_q" => "multiplier inputs",
        "mult" | "prod_q" | "mag_prod" => "product",
        "addend" | "acc_q" | "acc_o" | "mag" => "accumulator",
        "clk_i" => "clock",
        _ => "control",
    }
}

fn signal_width(design: Design, name: &str, w: u32) -> u32 {
    match (design, name) {
        (_, "a_i" | "b_i" | "a_q" | "b_q") => w,
        (Design::Signmag, "mult" | "prod_q") => 2 * w - 1,
        (_, "mag_prod") => 2 * w - 2,
        (_, "mult" | "prod_q") => 2 * w,
        (_, "addend" | "acc_q" | "acc_o" | "mag") => ACC_W,
        _ => 1,
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
    pub width: u32,
    pub acc_width: u32,
    pub pairs: u64,
    pub cycles: u64,
    /// Accumulator after the last operand, signed, ACC_W bits.
    pub acc_final: i64,
    /// The same computed in Rust from the stream; the run fails if they differ.
    pub acc_expected: i64,
    pub total_toggles: u64,
    /// Toggles without the clock and the operand ports (identical in every design).
    pub datapath_toggles: u64,
    pub toggles_per_pair: f64,
    pub groups: BTreeMap<&'static str, u64>,
    pub signals: Vec<SignalCount>,
    pub counting: &'static str,
    pub cycles_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcd: Option<String>,
}

// ------------------------------------------------------------------ the C shim

type NewFn = unsafe extern "C" fn(i32) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type OpenVcdFn = unsafe extern "C" fn(*mut c_void, *const std::ffi::c_char) -> i32;
type RunFn = unsafe extern "C" fn(
    *mut c_void,
    *const Cycle,
    u64,
    *mut u64,
    i32,
    *mut u64,
    *mut u64,
    *mut i32,
);
type AccFn = unsafe extern "C" fn(*mut c_void) -> u64;

/// One clock cycle's inputs; the layout of `PwCycle` in sim/shim.h.
#[repr(C)]
#[derive(Clone, Copy)]
struct Cycle {
    a: u32,
    b: u32,
    rst_n: u8,
    valid: u8,
    clear: u8,
    pad: u8,
}

struct ModelApi {
    new: NewFn,
    free: FreeFn,
    open_vcd: OpenVcdFn,
    run: RunFn,
    acc: AccFn,
}

macro_rules! model_api {
    ($name:ident, $prefix:literal) => {
        mod $name {
            use std::ffi::c_void;
            extern "C" {
                #[link_name = concat!("pw_", $prefix, "_new")]
                pub fn new(trace: i32) -> *mut c_void;
                #[link_name = concat!("pw_", $prefix, "_free")]
                pub fn free(h: *mut c_void);
                #[link_name = concat!("pw_", $prefix, "_open_vcd")]
                pub fn open_vcd(h: *mut c_void, path: *const std::ffi::c_char) -> i32;
                #[link_name = concat!("pw_", $prefix, "_run")]
                pub fn run(
                    h: *mut c_void,
                    cyc: *const super::Cycle,
                    n: u64,
                    t: *mut u64,
                    count: i32,
                    toggles: *mut u64,
                    prev: *mut u64,
                    primed: *mut i32,
                );
                #[link_name = concat!("pw_", $prefix, "_acc")]
                pub fn acc(h: *mut c_void) -> u64;
            }
        }
        const _: () = (); // keep the macro an item list
    };
}

model_api!(baseline_w8, "Vmac_baseline_w8");
model_api!(baseline_w16, "Vmac_baseline_w16");
model_api!(isolated_w8, "Vmac_isolated_w8");
model_api!(isolated_w16, "Vmac_isolated_w16");
model_api!(signmag_w8, "Vmac_signmag_w8");
model_api!(signmag_w16, "Vmac_signmag_w16");
model_api!(baseline_w8_lean, "Vmac_baseline_w8_lean");
model_api!(baseline_w16_lean, "Vmac_baseline_w16_lean");
model_api!(isolated_w8_lean, "Vmac_isolated_w8_lean");
model_api!(isolated_w16_lean, "Vmac_isolated_w16_lean");
model_api!(signmag_w8_lean, "Vmac_signmag_w8_lean");
model_api!(signmag_w16_lean, "Vmac_signmag_w16_lean");

macro_rules! api_of {
    ($m:ident) => {
        ModelApi {
            new: $m::new,
            free: $m::free,
            open_vcd: $m::open_vcd,
            run: $m::run,
            acc: $m::acc,
        }
    };
}

/// `lean`: the model built without tracing or public signals (simulate-only runs).
fn api(design: Design, width: u32, lean: bool) -> Result<ModelApi> {
    Ok(match (design, width) {
        (Design::Baseline, 8) if lean => api_of!(baseline_w8_lean),
        (Design::Baseline, 16) if lean => api_of!(baseline_w16_lean),
        (Design::Isolated, 8) if lean => api_of!(isolated_w8_lean),
        (Design::Isolated, 16) if lean => api_of!(isolated_w16_lean),
        (Design::Signmag, 8) if lean => api_of!(signmag_w8_lean),
        (Design::Signmag, 16) if lean => api_of!(signmag_w16_lean),
        (Design::Baseline, 8) => api_of!(baseline_w8),
        (Design::Baseline, 16) => api_of!(baseline_w16),
        (Design::Isolated, 8) => api_of!(isolated_w8),
        (Design::Isolated, 16) => api_of!(isolated_w16),
        (Design::Signmag, 8) => api_of!(signmag_w8),
        (Design::Signmag, 16) => api_of!(signmag_w16),
        _ => {
            return Err(Error::Sim(format!(
                "no model built for operand width {width} (built: {WIDTHS:?})"
            )))
        }
    })
}

/// One live model. Freed on drop (which also closes its VCD).
struct Model {
    api: ModelApi,
    h: *mut c_void,
    t: u64,
}

impl Model {
    fn new(design: Design, width: u32, vcd: Option<&Path>, lean: bool) -> Result<Self> {
        let api = api(design, width, lean)?;
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
    /// Run `cycles`; with `counter`, count toggles of the sampled signals.
    fn run(&mut self, cycles: &[Cycle], counter: Option<&mut FastCounter>) {
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
        // SAFETY: `h` is live; the counter's arrays have one slot per sampled signal (the
        // layout the shim was generated with) and are only touched when `count` is 1.
        unsafe {
            (self.api.run)(
                self.h,
                cycles.as_ptr(),
                cycles.len() as u64,
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

/// Per-signal toggle counts kept across `Model::run` calls (filled in by the shim:
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

/// Simulate `design` on `stream`. `progress` is called with pairs done so far.
pub fn simulate(
    design: Design,
    stream: &OperandStream,
    counting: &Counting,
    progress: &mut dyn FnMut(u64),
) -> Result<DesignResult> {
    let width = stream.width as u32;
    let vcd_path = match counting {
        Counting::Vcd(d) | Counting::Both(d) => {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
            Some(d.join(format!("{}_w{width}.vcd", design.name())))
        }
        _ => None,
    };
    let lean = matches!(counting, Counting::None);
    let mut model = Model::new(design, width, vcd_path.as_deref(), lean)?;
    let names = design.layout().signals;
    let fast = matches!(counting, Counting::Fast | Counting::Both(_));
    let mut fc = FastCounter::new(names.len());
    let starts = stream.dot_starts();
    let encoded: Vec<(u32, u32)> = stream
        .pairs
        .iter()
        .map(|&(a, b)| Ok((design.encode(a, width)?, design.encode(b, width)?)))
        .collect::<Result<_>>()?;

    let cyc = |rst_n: u8, valid: u8, clear: u8, a: u32, b: u32| Cycle {
        a,
        b,
        rst_n,
        valid,
        clear,
        pad: 0,
    };
    let mut schedule = Vec::with_capacity(encoded.len() + 4);
    schedule.extend([cyc(0, 0, 0, 0, 0); 2]);
    schedule.extend(
        encoded
            .iter()
            .zip(&starts)
            .map(|(&(a, b), &s)| cyc(1, 1, s as u8, a, b)),
    );
    schedule.extend([cyc(1, 0, 0, 0, 0); 2]);

    let start = Instant::now();
    let mut done = 0u64;
    for chunk in schedule.chunks(1 << 16) {
        model.run(chunk, fast.then_some(&mut fc));
        done += chunk.len() as u64;
        progress(done.saturating_sub(2).min(stream.pairs.len() as u64));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cycles = stream.pairs.len() as u64 + 4;
    let acc_final = wrap_signed(model.acc(), ACC_W);
    drop(model); // closes the VCD
    let acc_expected = stream.expected_acc(ACC_W);
    if acc_final != acc_expected {
        return Err(Error::Sim(format!(
            "{}: accumulator {acc_final} != expected dot product {acc_expected}",
            design.name()
        )));
    }

    let fast_signals: Vec<SignalCount> = names
        .iter()
        .zip(&fc.toggles)
        .map(|(n, &t)| SignalCount {
            path: format!("{}.{n}", design.module()),
            width: signal_width(design, n, width),
            toggles: t,
            group: signal_group(n),
        })
        .collect();
    let (signals, how) = match (&vcd_path, counting) {
        (Some(p), _) => {
            let vcd_signals = count_vcd(p, design, width)?;
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
    Ok(DesignResult {
        design: design.name(),
        width,
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
        counting: how,
        cycles_per_s: cycles as f64 / elapsed.max(1e-9),
        vcd: vcd_path.map(|p| p.display().to_string()),
    })
}

/// Count the VCD Verilator wrote, restricted to the design's sampled signals, in the
/// fast path's order (Verilator puts the design under a `TOP` scope).
fn count_vcd(path: &Path, design: Design, width: u32) -> Result<Vec<SignalCount>> {
    let report = crate::vcd::count_toggles_path(path)?;
    design
        .layout()
        .signals
        .iter()
        .map(|n| {
            let p = format!("TOP.{}.{n}", design.module());
            let s = report
                .signal(&p)
                .ok_or_else(|| Error::Sim(format!("{}: signal {p} missing", path.display())))?;
            Ok(SignalCount {
                path: format!("{}.{n}", design.module()),
                width: s.width,
                toggles: s.toggles,
                group: signal_group(n),
            })
        })
        .collect::<Result<Vec<_>>>()
        .inspect(|v| {
            debug_assert!(v.iter().all(
                |s| s.width == signal_width(design, s.path.rsplit('.').next().unwrap(), width)
            ));
        })
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
            zero_fraction: stream.zero_fraction(),
            verilator: verilator_version(),
            designs,
        }
    }

    /// Per design totals, then per group and per signal side by side with the change
    /// relative to the first design (the baseline).
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "stream: {} pairs, {}-bit, {:.1}% with a zero operand ({})\n\n",
            self.pairs,
            self.width,
            100.0 * self.zero_fraction,
            self.source
                .get("source")
                .and_then(|s| s.as_str())
                .unwrap_or("?")
        );
        out.push_str(&format!(
            "{:<10} {:>12} {:>14} {:>14} {:>10} {:>14}\n",
            "design", "cycles", "acc_final", "datapath tgl", "tgl/pair", "cycles/s"
        ));
        for d in &self.designs {
            out.push_str(&format!(
                "{:<10} {:>12} {:>14} {:>14} {:>10.2} {:>14.0}\n",
                d.design,
                d.cycles,
                d.acc_final,
                d.datapath_toggles,
                d.toggles_per_pair,
                d.cycles_per_s
            ));
        }
        let Some(base) = self.designs.first() else {
            return out;
        };
        let pct = |b: u64, x: u64| {
            if b == 0 {
                "n/a".to_string()
            } else {
                format!("{:+.1}%", 100.0 * (x as f64 - b as f64) / b as f64)
            }
        };
        out.push_str(&format!("\n{:<22}", "group / signal"));
        for (i, d) in self.designs.iter().enumerate() {
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
        for g in base.groups.keys() {
            let vals = self
                .designs
                .iter()
                .map(|d| d.groups.get(g).copied())
                .collect();
            row(&mut out, &format!("[{g}]"), vals);
        }
        let mut names: Vec<&str> = Vec::new();
        for d in &self.designs {
            for s in &d.signals {
                let n = s.path.rsplit('.').next().unwrap_or(&s.path);
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        for n in names {
            let vals = self
                .designs
                .iter()
                .map(|d| {
                    d.signals
                        .iter()
                        .find(|s| s.path.ends_with(&format!(".{n}")))
                        .map(|s| s.toggles)
                })
                .collect();
            row(&mut out, &format!("  {n}"), vals);
        }
        let totals = self
            .designs
            .iter()
            .map(|d| Some(d.datapath_toggles))
            .collect();
        row(&mut out, "datapath total", totals);
        out
    }
}

/// The stream as the stimulus tests/rtl/mac_tb.v replays in iverilog: one hex word per
/// cycle, {rst_n, valid, clear, a, b} (a, b encoded for `design`), with this module's schedule (2 reset cycles, the
/// pairs, 2 drain cycles). Used to cross-check and to time iverilog on the same data.
pub fn stimulus_hex(stream: &OperandStream, design: Design) -> Result<String> {
    let w = stream.width as u32;
    let word = |rst: u64, valid: u64, clear: u64, a: i16, b: i16| -> Result<u64> {
        let (a, b) = (design.encode(a, w)? as u64, design.encode(b, w)? as u64);
        Ok((rst << (2 * w + 2)) | (valid << (2 * w + 1)) | (clear << (2 * w)) | (a << w) | b)
    };
    let starts = stream.dot_starts();
    let mut out = String::with_capacity((stream.pairs.len() + 4) * 10);
    let mut push = |x: u64| {
        out.push_str(&format!("{x:x}\n"));
    };
    push(word(0, 0, 0, 0, 0)?);
    push(word(0, 0, 0, 0, 0)?);
    for (i, &(a, b)) in stream.pairs.iter().enumerate() {
        push(word(1, 1, starts[i] as u64, a, b)?);
    }
    push(word(1, 0, 0, 0, 0)?);
    push(word(1, 0, 0, 0, 0)?);
    Ok(out)
}
