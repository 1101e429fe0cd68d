//! Running a sweep: the run folder (the spec copied in, refused if another), workers that
//! take replicates in run order (one per `--devices` GPU), each replicate a child process
//! with its own model load, rows rewritten atomically as points finish.
//!
//! In: a `SweepSpec` and a run folder. Out: the folder's rows, resumed where it stopped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::row::read_rows;
use super::row::write_rows;
use super::{run_order, Point, Replicate, Row, SweepSpec};
use crate::capture::{run_infer, write_report, InferConfig, Progress};
use crate::device::{self, DeviceSpec};
use crate::error::{Error, IoContext, Result};
use crate::files::write_atomic;
use crate::model::Precision;
use crate::sim::{simulate, simulate_gate, Counting, Design, SimReport};
use crate::trace::OperandStream;

pub type OnPoint<'a> = &'a mut (dyn FnMut(usize, usize, Option<&str>) + Send);

pub struct SweepHooks<'a> {
    pub on_point: OnPoint<'a>,
    pub interrupted: &'a (dyn Fn() -> bool + Sync),
}

/// Run (or resume) a sweep into `dir`. Returns all rows, finished earlier or now.
/// `devices` empty: one replicate after another, each on its point's device. Otherwise
/// one worker per device (`sweep --devices`), each taking the next replicate in the run
/// order and running it on its device: replicates of a point may land on different GPUs,
/// so the GPU is part of the replicate-to-replicate spread (the row says which ran).
pub fn run_sweep(
    spec: &SweepSpec,
    dir: &Path,
    devices: &[DeviceSpec],
    hooks: SweepHooks<'_>,
) -> Result<Vec<Row>> {
    let points = prepare_dir(spec, dir)?;
    let reps = spec.replicates.max(1);
    let order = run_order(points.len(), reps, spec.order_seed);
    let queue = Queue {
        spec,
        dir,
        points: &points,
        order: &order,
        reps,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        rows: Mutex::new(collect_rows(dir, &points)?),
        finishing: Mutex::new(Vec::new()),
        on_point: Mutex::new(hooks.on_point),
        interrupted: hooks.interrupted,
    };
    if devices.is_empty() {
        queue.work(None)?;
    } else {
        let (results, ()) = device::on_each(devices, |_, d| queue.work(Some(d)), || ());
        device::every_device(devices, results)?;
    }
    let mut rows = queue.rows.into_inner().expect("rows");
    sort_rows(&mut rows, &points);
    write_rows(dir, &rows)?;
    Ok(rows)
}

/// The replicates of a sweep in run order, shared by its workers.
struct Queue<'a, 'h> {
    spec: &'a SweepSpec,
    dir: &'a Path,
    points: &'a [Point],
    order: &'a [(usize, usize)],
    reps: usize,
    /// Position in `order` of the next replicate to take.
    next: AtomicUsize,
    done: AtomicUsize,
    /// A worker failed: the others take nothing new.
    failed: AtomicBool,
    rows: Mutex<Vec<Row>>,
    /// Points whose row a worker is building (two workers may finish a point's last two
    /// replicates at once: one builds the row).
    finishing: Mutex<Vec<String>>,
    on_point: Mutex<OnPoint<'h>>,
    interrupted: &'h (dyn Fn() -> bool + Sync),
}

impl Queue<'_, '_> {
    /// Take replicates until none is left; `device` overrides the point's.
    fn work(&self, device: Option<DeviceSpec>) -> Result<()> {
        let r = self.take_all(device);
        if r.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        r
    }

    fn take_all(&self, device: Option<DeviceSpec>) -> Result<()> {
        let total = self.order.len();
        let progress = |n: usize, what: Option<&str>| {
            (self.on_point.lock().expect("progress"))(n, total, what)
        };
        loop {
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            if n >= total || self.failed.load(Ordering::SeqCst) {
                return Ok(());
            }
            let (i, r) = self.order[n];
            let p = &self.points[i];
            let key = p.key();
            let pdir = self.dir.join("points").join(&key);
            let has_row = self.rows.lock().expect("rows").iter().any(|x| x.key == key);
            if !has_row {
                if (self.interrupted)() {
                    return Err(Error::Interrupted);
                }
                let on = device.map_or_else(String::new, |d| format!(" on {d}"));
                let what = format!("{key} (replicate {} of {}){on}", r + 1, self.reps);
                progress(self.done.load(Ordering::SeqCst), Some(&what));
                run_replicate_once(p, &pdir, r, self.reps, device, self.interrupted)?;
                self.finish_if_complete(&pdir, key)?;
            }
            progress(self.done.fetch_add(1, Ordering::SeqCst) + 1, None);
        }
    }

    /// The point's row, once every replicate is there (also when the last one finished
    /// in an earlier run that was stopped before it wrote the row).
    fn finish_if_complete(&self, pdir: &Path, key: String) -> Result<()> {
        let Some(done) = finished_replicates(pdir, self.reps) else {
            return Ok(());
        };
        {
            let mut f = self.finishing.lock().expect("finishing");
            if f.contains(&key) {
                return Ok(());
            }
            f.push(key.clone());
        }
        let row = finish_point(self.spec, pdir, key, &done)?;
        let mut rows = self.rows.lock().expect("rows");
        rows.push(row);
        write_rows(self.dir, &rows)
    }
}

/// Replicate `r` of point `p`, unless its replicate.json exists (a resumed sweep or a
/// requeued task skips it). The operands are captured once per point, in the first
/// replicate's own run. `device` overrides the point's.
fn run_replicate_once(
    p: &Point,
    pdir: &Path,
    r: usize,
    reps: usize,
    device: Option<DeviceSpec>,
    interrupted: &dyn Fn() -> bool,
) -> Result<()> {
    let rdir = replicate_dir(pdir, r, reps);
    if rdir.join("replicate.json").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&rdir).at(&rdir)?;
    let cfg = InferConfig {
        device: device.unwrap_or(p.cfg.device),
        ..p.cfg.clone()
    };
    spawn_replicate(
        &cfg,
        &rdir,
        (r == 0).then_some(pdir.join("operands.ops").as_path()),
        interrupted,
    )
}

/// Every replicate of a point, when all are there.
fn finished_replicates(pdir: &Path, reps: usize) -> Option<Vec<Replicate>> {
    (0..reps)
        .map(|r| finished_replicate(pdir, r, reps))
        .collect()
}

/// Replicate `r` of a point, when it is there.
pub(super) fn finished_replicate(pdir: &Path, r: usize, reps: usize) -> Option<Replicate> {
    let t = std::fs::read_to_string(replicate_dir(pdir, r, reps).join("replicate.json"));
    t.ok().and_then(|t| serde_json::from_str(&t).ok())
}

/// Rows in the spec's order, whatever order the points ran in.
fn sort_rows(rows: &mut [Row], points: &[Point]) {
    let keys: Vec<String> = points.iter().map(|p| p.key()).collect();
    rows.sort_by_key(|r| keys.iter().position(|k| *k == r.key));
}

/// Make `dir` a run folder of `spec` (refusing one of another spec) and check the points
/// before anything runs. Returns the points.
pub fn prepare_dir(spec: &SweepSpec, dir: &Path) -> Result<Vec<Point>> {
    let spec_text = spec.text.as_str();
    std::fs::create_dir_all(dir).at(dir)?;
    let spec_copy = dir.join("sweep.toml");
    match std::fs::read_to_string(&spec_copy) {
        Ok(old) if old != spec_text => {
            return Err(Error::Config(format!(
                "{} holds results of a different sweep spec ({}); use another --out folder or delete it",
                dir.display(),
                spec_copy.display()
            )))
        }
        Ok(_) => {}
        Err(_) => write_atomic(&spec_copy, spec_text.as_bytes())?,
    }
    let points = spec.points();
    // f16 is captured as f16, and no datapath here multiplies f16: say so before any run.
    if let Some(p) = points.iter().find(|p| {
        p.cfg.precision == Precision::F16 && p.cfg.capture.as_ref().is_some_and(|c| c.width == 8)
    }) {
        return Err(Error::Config(format!(
            "sweep point {}: f16 operands have no datapath to replay them into (integer MACs and dot units, bf16 MAC and fused dot unit); sweep bf16 instead, or capture f16 as int16 with width = 16",
            p.key()
        )));
    }
    Ok(points)
}

/// A point whose replicates are all done: simulate its operands, build its row and write
/// it as `row.json` beside them (atomically: what a Slurm task leaves for `collect`).
fn finish_point(spec: &SweepSpec, pdir: &Path, key: String, reps: &[Replicate]) -> Result<Row> {
    let sim = simulate_point(&pdir.join("operands.ops"), pdir, spec.gate_level)?;
    let row = Row::new(key, reps, &sim)?;
    write_atomic(
        &pdir.join("row.json"),
        serde_json::to_string_pretty(&row).expect("row").as_bytes(),
    )?;
    Ok(row)
}

/// Every finished row of a run folder: results.jsonl's, and the `row.json` of points
/// finished elsewhere (Slurm tasks) that it does not have yet; only keys of `points`.
fn collect_rows(dir: &Path, points: &[Point]) -> Result<Vec<Row>> {
    let mut rows = read_rows(dir)?;
    for p in points {
        let key = p.key();
        let path = dir.join("points").join(&key).join("row.json");
        if rows.iter().any(|r| r.key == key) || !path.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&path).at(&path)?;
        let row: Row = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        rows.push(row);
    }
    rows.retain(|r| points.iter().any(|p| p.key() == r.key));
    sort_rows(&mut rows, points);
    Ok(rows)
}

/// Recompute the measurement columns of every row of a run folder from its points'
/// `replicate.json` (what the current statistics make of the same raw runs: CIs over
/// replicates), keeping the switching columns, whose operands a committed folder may no
/// longer hold. Rewrites results.{jsonl,csv} and each point's row.json; returns the rows.
pub fn rescore(dir: &Path) -> Result<Vec<Row>> {
    let spec = SweepSpec::read(&dir.join("sweep.toml"))?;
    let reps = spec.replicates.max(1);
    let mut rows = read_rows(dir)?;
    for row in &mut rows {
        let pdir = dir.join("points").join(&row.key);
        let replicates = finished_replicates(&pdir, reps).ok_or_else(|| {
            Error::Config(format!(
                "{}: not every replicate has its replicate.json",
                pdir.display()
            ))
        })?;
        row.rescore(&replicates)?;
        write_atomic(
            &pdir.join("row.json"),
            serde_json::to_string_pretty(&row).expect("row").as_bytes(),
        )?;
    }
    write_rows(dir, &rows)?;
    Ok(rows)
}

/// Merge a run folder's finished rows (results.jsonl and every point's row.json) into
/// results.{jsonl,csv}, in the spec's order. Returns the rows and the keys still missing.
pub fn collect(dir: &Path) -> Result<(Vec<Row>, Vec<String>)> {
    let spec_path = dir.join("sweep.toml");
    let spec = SweepSpec::read(&spec_path)?;
    let points = spec.points();
    let rows = collect_rows(dir, &points)?;
    write_rows(dir, &rows)?;
    let missing = points
        .iter()
        .map(Point::key)
        .filter(|k| !rows.iter().any(|r| r.key == *k))
        .collect();
    Ok((rows, missing))
}

/// One point of a run folder, all its replicates in order (those already finished are
/// skipped: a requeued or resubmitted task resumes), then its row.json: what one Slurm
/// array task runs (`perfwatt sweep-task`).
pub fn run_point(dir: &Path, key: &str, interrupted: &dyn Fn() -> bool) -> Result<Row> {
    let spec = SweepSpec::read(&dir.join("sweep.toml"))?;
    let points = spec.points();
    let p = points.iter().find(|p| p.key() == key).ok_or_else(|| {
        Error::Config(format!(
            "{}: no point {key} in its sweep.toml",
            dir.display()
        ))
    })?;
    let reps = spec.replicates.max(1);
    let pdir = dir.join("points").join(key);
    for r in 0..reps {
        run_replicate_once(p, &pdir, r, reps, None, interrupted)?;
    }
    // Read back strictly: a replicate.json that does not parse is an error here, not a
    // replicate to rerun.
    let mut done = Vec::new();
    for r in 0..reps {
        let path = replicate_dir(&pdir, r, reps).join("replicate.json");
        let text = std::fs::read_to_string(&path).at(&path)?;
        done.push(
            serde_json::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?,
        );
    }
    finish_point(&spec, &pdir, key.to_string(), &done)
}

/// Run one replicate in a child process (`perfwatt sweep-point`), so replicates differ in
/// everything a process carries (allocator, CUDA context, caches), not only the model
/// load. The child's stderr goes to `stderr.txt` beside its results.
fn spawn_replicate(
    cfg: &InferConfig,
    rdir: &Path,
    capture: Option<&Path>,
    interrupted: &dyn Fn() -> bool,
) -> Result<()> {
    let exe = std::env::var_os("PERFWATT_BIN")
        .map(PathBuf::from)
        .map_or_else(std::env::current_exe, Ok)
        .map_err(|e| {
            Error::Config(format!(
                "cannot find the perfwatt binary to run a replicate: {e}"
            ))
        })?;
    let cfg_path = rdir.join("config.json");
    write_atomic(
        &cfg_path,
        serde_json::to_string_pretty(cfg)
            .expect("config")
            .as_bytes(),
    )?;
    let err_path = rdir.join("stderr.txt");
    let err = std::fs::File::create(&err_path).at(&err_path)?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg("sweep-point")
        .arg("--config")
        .arg(&cfg_path)
        .arg("--out")
        .arg(rdir)
        .stdout(std::process::Stdio::null())
        .stderr(err);
    if let Some(c) = capture {
        cmd.arg("--capture").arg(c);
    }
    let status = cmd.status().map_err(|e| Error::io(&exe, e))?;
    if interrupted() {
        return Err(Error::Interrupted);
    }
    if !status.success() {
        let tail = std::fs::read_to_string(&err_path).unwrap_or_default();
        let tail = tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(Error::Config(format!(
            "replicate in {} failed ({status}): {tail} (all of its stderr: {})",
            rdir.display(),
            err_path.display()
        )));
    }
    Ok(())
}

/// What `perfwatt sweep-point` does in the child: run the configuration, write infer.json
/// (with its power series) and replicate.json into `out`.
pub fn run_replicate(cfg_path: &Path, out: &Path, capture: Option<&Path>) -> Result<()> {
    let text = std::fs::read_to_string(cfg_path).at(cfg_path)?;
    let cfg: InferConfig = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: {e}", cfg_path.display())))?;
    let (report, samples) = run_infer(
        &cfg,
        capture,
        Progress {
            on_step: &mut |_, _| {},
            interrupted: &|| false,
            sync: None,
        },
    )?;
    write_report(&report, &samples, &out.join("infer.json"))?;
    write_atomic(
        &out.join("replicate.json"),
        serde_json::to_string(&Replicate::of(&report))
            .expect("replicate")
            .as_bytes(),
    )
}

/// Where replicate `r` of a point keeps its report: the point's folder when it has one.
fn replicate_dir(pdir: &Path, r: usize, replicates: usize) -> PathBuf {
    if replicates == 1 {
        pdir.to_path_buf()
    } else {
        pdir.join(format!("rep{r}"))
    }
}

/// Replay a point's operands into every design that can take their format (integer MACs
/// and dot units, or the bf16 MAC and fused dot unit), and with `gate` the serial MACs'
/// netlists too; writes sim.json.
fn simulate_point(ops: &Path, pdir: &Path, gate: bool) -> Result<SimReport> {
    let stream = OperandStream::read(ops, 8)?;
    let mut results = Vec::new();
    let fits = |d: &Design| d.params_for(&stream, crate::sim::DEFAULT_LANES).is_ok();
    for d in Design::all().filter(fits) {
        results.push(simulate(d, &stream, &Counting::Fast, &mut |_| {})?);
    }
    if gate {
        let opts = crate::sim::gate::GateOptions::default();
        // The serial MACs that are datapaths, not encoding experiments.
        for d in Design::all()
            .filter(|d| !d.is_dot() && !d.experiment)
            .filter(fits)
        {
            results.push(simulate_gate(d, 1, &stream, &opts, &mut |_| {})?);
        }
    }
    let sim = SimReport::new(&stream, results);
    write_atomic(
        &pdir.join("sim.json"),
        serde_json::to_string_pretty(&sim).expect("sim").as_bytes(),
    )?;
    Ok(sim)
}
