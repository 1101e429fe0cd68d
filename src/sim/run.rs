//! Cycle records -> toggle counts: one design simulated on one stream.
//!
//! In: a design, an `OperandStream`, how to count (`Counting`), threads; for the gate
//! level, `gate::GateOptions`. Out: `DesignResult`, with the accumulator checked against
//! the design's Rust reference. Threaded runs cut the schedule at dot-product starts and
//! join the pieces' counts exactly (every register compared at each seam).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::trace::{wrap_signed, OperandStream};

use super::catalogue::{snapshot_slots, Params, ACC_W};
use super::ffi::{FastCounter, Model};
use super::schedule::{piece_cuts, schedule, schedule_hex, Schedule};
use super::{gate, Counting, Design, DesignResult, SignalCount, DEFAULT_LANES};

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
            Some(d.join(format!("{}.vcd", design.model_name(p))))
        }
        _ => None,
    };
    let sched = schedule(design, p, stream)?;
    let names = design.signals(p);
    let widths: Vec<u32> = names.iter().map(|n| design.signal_width(p, n)).collect();
    let runner = Runner {
        design,
        p,
        s: &sched,
        vcd: vcd_path.as_deref(),
        lean: matches!(counting, Counting::None),
        fast: matches!(counting, Counting::Fast | Counting::Both(_)),
        slots: widths.iter().map(|&w| snapshot_slots(w)).sum(),
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
            toggles: slot.by_ref().take(snapshot_slots(w)).sum(),
            group: design.signal_group(n),
        })
        .collect();
    let (signals, how) = match (&vcd_path, counting) {
        (Some(path), _) => {
            let vcd_signals = count_vcd(path, design, &names)?;
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
    let nw = design.cycle_words(p);
    let name = design.model_name(p);
    let prep = gate::prepare(module, &(design.verilog_params)(p), nw, &name, &opts.cache)?;
    let nl = &prep.netlist;
    let start = Instant::now();
    let run = prep.model.run(&sched.words, sched.stride, &mut |cycles| {
        progress(((cycles.saturating_sub(2)) * p.lanes as usize).min(stream.pairs.len()) as u64)
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    let (acc_final, acc_expected) = check_acc(design, p, stream, run.acc)?;
    // One count per RTL signal a net is or feeds, in net order of first appearance.
    let group_of = |id: usize| gate_group(design, &nl.nets[id].signal);
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
fn gate_group(design: Design, signal: &str) -> &'static str {
    let base = signal.trim_end_matches(" (logic)");
    if base.contains("g_level[") {
        return design.signal_group(base);
    }
    design.signal_group(base.rsplit('.').next().unwrap_or(base))
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
    let width = |port| design.signal_width(p, port) as usize;
    let (aw, bw) = (width("a_i"), width("b_i"));
    let hex = schedule_hex(sched, (aw, bw, 0), 0..n);
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
            .entry(gate_group(design, &nl.nets[id].signal).to_string())
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
    let acc_expected = design.expected_acc(p, stream);
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
    DesignResult {
        design: design.name(),
        width: p.a_w,
        lanes: p.lanes,
        format: design.format_name(p),
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
fn count_vcd(path: &Path, design: Design, names: &[String]) -> Result<Vec<SignalCount>> {
    let module = design.module();
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
                group: design.signal_group(n),
            })
        })
        .collect()
}

/// What `perfwatt sim` runs: these designs (dot units at `lanes` lanes), counted so, on up
/// to `threads` threads; with `gate`, each design's netlist too.
pub struct SimPlan<'a> {
    pub designs: Vec<Design>,
    pub lanes: u32,
    pub counting: Counting,
    pub threads: usize,
    pub gate: Option<&'a gate::GateOptions>,
    /// Skip a design that cannot take the stream, saying why, instead of failing
    /// (`--design all`).
    pub skip_unfit: bool,
}

/// What a plan is doing, for progress bars.
pub enum SimEvent<'a> {
    /// A design that cannot take the stream, and why.
    Skipped(&'a str),
    /// A simulation starts (`sim dot`, `gate baseline`), of this many pairs.
    Started(&'a str, u64),
    /// Pairs done of the simulation that started last.
    Done(u64),
    Finished,
}

/// The report of every simulation of a plan, and the failures (one design's failure does
/// not stop the others).
pub struct SimRun {
    pub report: super::SimReport,
    pub failed: Vec<String>,
}

/// Run `plan` on `stream`, telling `on` what happens.
pub fn simulate_plan(
    plan: &SimPlan<'_>,
    stream: &OperandStream,
    on: &mut dyn FnMut(SimEvent<'_>),
) -> Result<SimRun> {
    let n = stream.pairs.len() as u64;
    let mut results = Vec::new();
    let mut failed = Vec::new();
    let mut keep = |r: Result<DesignResult>, failed: &mut Vec<String>| match r {
        Ok(r) => results.push(r),
        Err(e) => failed.push(e.to_string()),
    };
    for &d in &plan.designs {
        if let Err(why) = d.params_for(stream, plan.lanes) {
            if !plan.skip_unfit {
                return Err(why);
            }
            on(SimEvent::Skipped(&why.to_string()));
            continue;
        }
        on(SimEvent::Started(&format!("sim {}", d.name()), n));
        let r = simulate_threads(
            d,
            plan.lanes,
            stream,
            &plan.counting,
            plan.threads,
            &mut |k| on(SimEvent::Done(k)),
        );
        on(SimEvent::Finished);
        keep(r, &mut failed);
        if let Some(opts) = plan.gate {
            on(SimEvent::Started(
                &format!("gate {} (first run synthesizes)", d.name()),
                n,
            ));
            let r = simulate_gate(d, plan.lanes, stream, opts, &mut |k| on(SimEvent::Done(k)));
            on(SimEvent::Finished);
            keep(r, &mut failed);
        }
    }
    Ok(SimRun {
        report: super::SimReport::new(stream, results),
        failed,
    })
}
