//! `perfwatt load --url URL`: an OpenAI-compatible server under load, latency per request
//! and energy per request.
//!
//! In: a server's base URL and `LoadConfig`: offered loads (open-loop Poisson arrivals at a
//! rate, seeded, or closed-loop concurrency), requests per load, prompts, replicates.
//! Out: `LoadRun`: every request's timings (`client::RequestRecord`) and one `RunRow` per
//! load and replicate: TTFT, TPOT, inter-token and end-to-end percentiles, achieved request
//! and token throughput, goodput under the SLOs, errors by kind, and the GPUs' energy
//! (NVML counter, idle measured before) and the CPUs' (RAPL) over the measured window, per
//! request and per output token. `report` writes the files.
//!
//! The measured window of a load runs from its first measured arrival to its last (arrivals
//! are stationary there; warm-up requests before it and the drain after it are excluded):
//! throughput counts the requests that completed and the tokens that arrived inside it, and
//! energy per request divides the window's energy by those completions. At an infinite rate
//! every arrival is at once, and the window runs to the last completion instead (said so).
//! Loads run in rounds (replicate r), each round in the opposite order of the one before.

pub mod client;
mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::energy::rapl::RaplMeter;
use crate::energy::GpuMeter;
use crate::error::{Error, Result};
use crate::measure::GpuChoice;
use crate::stats::{percentile, Rng};
pub use client::{Endpoint, RequestRecord, Target};
pub use report::{timeline, write};

/// Prompts from a file: JSON Lines with a "text" field (the shipped prompt set), else one
/// prompt per line; blank lines skipped. A line of JSON without "text" is an error naming it.
pub fn read_prompts(path: &std::path::Path) -> Result<Vec<String>> {
    use crate::error::IoContext;
    let text = std::fs::read_to_string(path).at(path)?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        if line.trim_start().starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::Parse {
                file: path.display().to_string(),
                line: i as u64 + 1,
                offset: 0,
                msg: e.to_string(),
            })?;
            let t = v["text"].as_str().ok_or_else(|| Error::Parse {
                file: path.display().to_string(),
                line: i as u64 + 1,
                offset: 0,
                msg: "a JSON prompt needs a \"text\" field".into(),
            })?;
            out.push(t.to_string());
        } else {
            out.push(line.to_string());
        }
    }
    if out.is_empty() {
        return Err(Error::Config(format!("{}: no prompts", path.display())));
    }
    Ok(out)
}

/// One offered load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Poisson arrivals at this many requests per second (infinity: all at once).
    Rate(f64),
    /// This many requests in flight, each sent when the one before it completes.
    Concurrency(usize),
}

impl Load {
    pub fn label(&self) -> String {
        match self {
            Load::Rate(r) if r.is_infinite() => "inf".into(),
            Load::Rate(r) => format!("{r}"),
            Load::Concurrency(n) => format!("c{n}"),
        }
    }

    /// `--rate 1,2,inf` -> rates.
    pub fn rates(list: &str) -> Result<Vec<Load>> {
        list.split(',')
            .map(|x| match x.trim() {
                "inf" => Ok(Load::Rate(f64::INFINITY)),
                v => v
                    .parse::<f64>()
                    .ok()
                    .filter(|r| *r > 0.0 && r.is_finite())
                    .map(Load::Rate)
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "--rate {list:?}: `{v}` is not a rate (requests/s > 0, or inf)"
                        ))
                    }),
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL (`http://127.0.0.1:8000`), without the /v1 path.
    pub url: String,
    /// The model name requests carry; None: the first the server lists at /v1/models.
    pub model: Option<String>,
    pub endpoint: Endpoint,
    pub loads: Vec<Load>,
    /// Measured requests per load (or, with `duration_s`, as many as arrive in it).
    pub requests: usize,
    pub duration_s: Option<f64>,
    pub prompts: Vec<String>,
    pub max_tokens: usize,
    /// Seconds of warm-up requests at each load before the measured ones.
    pub warmup_s: f64,
    pub seed: u64,
    pub slo_ttft_s: Option<f64>,
    pub slo_tpot_s: Option<f64>,
    pub replicates: usize,
    /// A request whose stream sends nothing for this long failed ("timeout").
    pub timeout_s: f64,
    pub gpus: GpuChoice,
    pub idle_s: f64,
    pub powercap_root: PathBuf,
}

/// Percentiles of one latency over a run's completed measured requests (seconds).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Spread {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub samples: usize,
}

impl Spread {
    pub fn of(xs: &[f64]) -> Self {
        Spread {
            p50: percentile(xs, 50.0),
            p90: percentile(xs, 90.0),
            p99: percentile(xs, 99.0),
            samples: xs.len(),
        }
    }
}

/// One load in one replicate.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RunRow {
    pub load: String,
    pub replicate: usize,
    pub offered_rps: Option<f64>,
    pub concurrency: Option<usize>,
    pub requests: usize,
    pub completed: usize,
    pub failed: usize,
    /// Error kind -> count.
    pub errors: BTreeMap<String, usize>,
    /// "arrivals" (first to last measured arrival) or "to the last completion".
    pub window: String,
    pub window_s: f64,
    pub completed_in_window: usize,
    pub tokens_in_window: usize,
    pub achieved_rps: Option<f64>,
    pub output_tps: Option<f64>,
    /// Completed requests per second that met every SLO given (None without SLOs).
    pub goodput_rps: Option<f64>,
    pub ttft: Spread,
    pub tpot: Spread,
    pub itl: Spread,
    pub e2e: Spread,
    /// GPUs' energy over the window (J, summed over GPUs), above their idle, per completed
    /// request and per output token of the window.
    pub gpu_j: Option<f64>,
    pub gpu_above_idle_j: Option<f64>,
    pub j_per_request: Option<f64>,
    pub j_per_output_token: Option<f64>,
    pub above_idle_j_per_request: Option<f64>,
    /// RAPL package energy over the window (J).
    pub cpu_j: Option<f64>,
}

pub struct LoadRun {
    pub model: String,
    pub rows: Vec<RunRow>,
    pub requests: Vec<RequestRecord>,
    /// Per GPU: (NVML index, name, idle W).
    pub gpus: Vec<(u32, String, Option<f64>)>,
    pub energy_reason: Option<String>,
    pub cpu_reason: Option<String>,
}

/// Run every load of `cfg` against the server, `replicates` rounds. `progress(done, total,
/// what)` after each load; `stop()` ends the run after the load in progress.
pub fn run(
    cfg: &LoadConfig,
    progress: &mut dyn FnMut(usize, usize, &str),
    stop: &dyn Fn() -> bool,
) -> Result<LoadRun> {
    if cfg.loads.is_empty()
        || cfg.prompts.is_empty()
        || cfg.requests == 0 && cfg.duration_s.is_none()
    {
        return Err(Error::Config(
            "load needs loads (--rate or --concurrency), prompts and requests".into(),
        ));
    }
    if cfg.duration_s.is_some() && cfg.loads.contains(&Load::Rate(f64::INFINITY)) {
        return Err(Error::Config(
            "--rate inf sends --requests at once; --duration needs finite rates".into(),
        ));
    }
    let url = cfg
        .url
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .to_string();
    if !url.starts_with("http://") {
        return Err(Error::Config(format!(
            "--url {}: http:// only (perfwatt load has no TLS; put a local proxy in front of https)",
            cfg.url
        )));
    }
    let model = match &cfg.model {
        Some(m) => m.clone(),
        None => client::first_model(&url)
            .map_err(|e| Error::Config(format!("cannot ask the server for its model: {e}")))?,
    };
    let target = Target {
        base_url: url,
        model: model.clone(),
        endpoint: cfg.endpoint,
        max_tokens: cfg.max_tokens,
        timeout: Duration::from_secs_f64(cfg.timeout_s),
    };
    let (meters, energy_reason) = crate::measure::open_gpus(&cfg.gpus)?;
    let idle: Vec<Option<f64>> = crate::measure::idle_windows(&meters, cfg.idle_s)
        .iter()
        .map(|w| percentile(w, 50.0))
        .collect();
    let mut rapl = RaplMeter::open(&cfg.powercap_root);
    let t0 = Instant::now();
    let (mut rows, mut requests) = (Vec::new(), Vec::new());
    let total = cfg.loads.len() * cfg.replicates.max(1);
    'rounds: for rep in 0..cfg.replicates.max(1) {
        let mut order = cfg.loads.clone();
        if rep % 2 == 1 {
            order.reverse();
        }
        for load in order {
            if stop() {
                break 'rounds;
            }
            progress(
                rows.len(),
                total,
                &format!("load {} round {}", load.label(), rep + 1),
            );
            let shot = Shot {
                cfg,
                target: &target,
                load,
                rep,
                t0,
            };
            let (recs, window) = shot.run(&meters, rapl.as_mut().ok());
            rows.push(run_row(cfg, load, rep, &recs, &window, &idle));
            requests.extend(recs);
        }
    }
    progress(rows.len(), total, "done");
    Ok(LoadRun {
        model,
        rows,
        requests,
        gpus: meters
            .iter()
            .zip(&idle)
            .map(|(g, i)| (g.index(), g.name.clone(), *i))
            .collect(),
        energy_reason,
        cpu_reason: rapl.err(),
    })
}

/// What the measured window saw: its edges on the run's clock, each GPU's counter energy
/// and the RAPL package energy over it.
#[derive(Debug, Default)]
struct Window {
    start_s: f64,
    end_s: f64,
    gpu_j: Vec<Option<f64>>,
    cpu_j: Option<f64>,
}

/// One load in one replicate: warm-up, then the measured requests.
struct Shot<'a> {
    cfg: &'a LoadConfig,
    target: &'a Target,
    load: Load,
    rep: usize,
    t0: Instant,
}

impl Shot<'_> {
    fn run(
        &self,
        meters: &[GpuMeter],
        mut rapl: Option<&mut RaplMeter>,
    ) -> (Vec<RequestRecord>, Window) {
        let mut recs = Vec::new();
        if self.cfg.warmup_s > 0.0 {
            recs.extend(self.send(true, &mut |_| {}));
        }
        let mut edges: Vec<(f64, Vec<Option<u64>>, Option<f64>)> = Vec::new();
        let mut mark = |t: f64| {
            let cpu = rapl.as_deref_mut().and_then(|r| r.report().cpu_j);
            edges.push((t, meters.iter().map(|g| g.energy_mj()).collect(), cpu));
        };
        let measured = self.send(false, &mut mark);
        let mut w = Window::default();
        if let [(a, ea, ca), (b, eb, cb)] = &edges[..] {
            (w.start_s, w.end_s) = (*a, *b);
            w.gpu_j = ea
                .iter()
                .zip(eb)
                .map(|(x, y)| Some(y.as_ref()?.checked_sub(*x.as_ref()?)? as f64 / 1000.0))
                .collect();
            w.cpu_j = cb.zip(*ca).map(|(b, a)| b - a);
        }
        recs.extend(measured);
        (recs, w)
    }

    /// Send one phase's requests (warm-up: for `warmup_s`; measured: `requests`, or for
    /// `duration_s`) and wait for them. `mark(t)` is called at the first and the last
    /// arrival of the measured phase (at the last completion for all-at-once arrivals).
    fn send(&self, warmup: bool, mark: &mut dyn FnMut(f64)) -> Vec<RequestRecord> {
        let cfg = self.cfg;
        let now = || self.t0.elapsed().as_secs_f64();
        let start = now();
        // A warm-up lasts warmup_s, except at an infinite rate, where it is one wave of
        // `requests` (a time limit there would send without bound).
        let (until, count) = match (warmup, self.load) {
            (true, Load::Rate(r)) if r.is_infinite() => (None, Some(cfg.requests)),
            (true, _) => (Some(cfg.warmup_s), None),
            (false, _) if cfg.duration_s.is_some() => (cfg.duration_s, None),
            (false, _) => (None, Some(cfg.requests)),
        };
        let more =
            |i: usize| until.is_none_or(|d| now() - start < d) && count.is_none_or(|c| i < c);
        let out = Arc::new(Mutex::new(Vec::new()));
        let issued = AtomicUsize::new(0);
        let record = |i: usize| RequestRecord {
            load: self.load.label(),
            replicate: self.rep,
            id: i,
            warmup,
            ..Default::default()
        };
        let prompt = |i: usize| cfg.prompts[(i + self.rep * 7) % cfg.prompts.len()].clone();
        std::thread::scope(|s| match self.load {
            Load::Rate(rate) => {
                let mut rng = Rng::new(
                    cfg.seed ^ ((self.rep as u64) << 32) ^ rate.to_bits() ^ (warmup as u64),
                );
                let mut next = start;
                let mut i = 0;
                while more(i) {
                    let wait = next - now();
                    if wait > 0.0 {
                        std::thread::sleep(Duration::from_secs_f64(wait));
                    }
                    if i == 0 && !warmup {
                        mark(now());
                    }
                    let (p, r, out) = (prompt(i), record(i), out.clone());
                    s.spawn(move || {
                        let rec = self.target.send(&p, self.t0, r);
                        out.lock().expect("records").push(rec);
                    });
                    i += 1;
                    if rate.is_finite() {
                        next += -(1.0 - rng.unit()).ln() / rate;
                    }
                    if !more(i) && !warmup && rate.is_finite() {
                        mark(now());
                    }
                }
            }
            Load::Concurrency(n) => {
                if !warmup {
                    mark(now());
                }
                for _ in 0..n {
                    let (issued, out) = (&issued, out.clone());
                    let (more, prompt, record) = (&more, &prompt, &record);
                    s.spawn(move || loop {
                        let i = issued.fetch_add(1, Ordering::Relaxed);
                        if !more(i) {
                            break;
                        }
                        let rec = self.target.send(&prompt(i), self.t0, record(i));
                        out.lock().expect("records").push(rec);
                    });
                }
            }
        });
        // Every request has ended (the scope joined them). All-at-once and closed-loop
        // loads close their window here, at the last completion.
        let closes_late = !matches!(self.load, Load::Rate(r) if r.is_finite());
        if !warmup && closes_late {
            mark(now());
        }
        let mut v = Arc::try_unwrap(out)
            .expect("joined")
            .into_inner()
            .expect("records");
        v.sort_by_key(|r| r.id);
        v
    }
}

/// The row of one load and replicate from its requests and window.
fn run_row(
    cfg: &LoadConfig,
    load: Load,
    rep: usize,
    recs: &[RequestRecord],
    w: &Window,
    idle_w: &[Option<f64>],
) -> RunRow {
    let measured: Vec<&RequestRecord> = recs.iter().filter(|r| !r.warmup).collect();
    let ok: Vec<&&RequestRecord> = measured.iter().filter(|r| r.ok()).collect();
    let mut errors = BTreeMap::new();
    for r in measured.iter().filter(|r| !r.ok()) {
        *errors
            .entry(r.error.clone().unwrap_or_default())
            .or_insert(0) += 1;
    }
    let col = |f: &dyn Fn(&RequestRecord) -> Option<f64>| -> Vec<f64> {
        ok.iter().filter_map(|r| f(r)).collect()
    };
    let inside = |t: f64| t >= w.start_s && t <= w.end_s;
    let window_s = w.end_s - w.start_s;
    let completed_in_window = ok.iter().filter(|r| inside(r.end_s)).count();
    let tokens_in_window = measured
        .iter()
        .map(|r| r.token_s.iter().filter(|&&t| inside(t)).count())
        .sum();
    let per_s = |n: usize| (window_s > 0.0).then(|| n as f64 / window_s);
    let meets = |r: &RequestRecord| {
        cfg.slo_ttft_s
            .is_none_or(|s| r.ttft_s().is_some_and(|t| t <= s))
            && cfg
                .slo_tpot_s
                .is_none_or(|s| r.tpot_s().is_none_or(|t| t <= s))
    };
    let good = ok.iter().filter(|r| inside(r.end_s) && meets(r)).count();
    let gpu_j: Option<f64> = (!w.gpu_j.is_empty())
        .then(|| w.gpu_j.iter().copied().sum::<Option<f64>>())
        .flatten();
    let idle_sum: Option<f64> = (!idle_w.is_empty())
        .then(|| idle_w.iter().copied().sum::<Option<f64>>())
        .flatten();
    let above = gpu_j.zip(idle_sum).map(|(e, i)| e - i * window_s);
    let per = |e: Option<f64>, n: usize| e.filter(|_| n > 0).map(|e| e / n as f64);
    RunRow {
        load: load.label(),
        replicate: rep,
        offered_rps: match load {
            Load::Rate(r) => Some(r),
            Load::Concurrency(_) => None,
        },
        concurrency: match load {
            Load::Concurrency(n) => Some(n),
            Load::Rate(_) => None,
        },
        requests: measured.len(),
        completed: ok.len(),
        failed: measured.len() - ok.len(),
        errors,
        window: if !matches!(load, Load::Rate(r) if r.is_finite()) {
            "to the last completion".into()
        } else {
            "arrivals".into()
        },
        window_s,
        completed_in_window,
        tokens_in_window,
        achieved_rps: per_s(completed_in_window),
        output_tps: per_s(tokens_in_window),
        goodput_rps: (cfg.slo_ttft_s.is_some() || cfg.slo_tpot_s.is_some())
            .then(|| per_s(good))
            .flatten(),
        ttft: Spread::of(&col(&|r| r.ttft_s())),
        tpot: Spread::of(&col(&|r| r.tpot_s())),
        itl: Spread::of(&ok.iter().flat_map(|r| r.itl_s()).collect::<Vec<_>>()),
        e2e: Spread::of(&col(&|r| Some(r.e2e_s()))),
        gpu_j,
        gpu_above_idle_j: above,
        j_per_request: per(gpu_j, completed_in_window),
        j_per_output_token: per(gpu_j, tokens_in_window),
        above_idle_j_per_request: per(above, completed_in_window),
        cpu_j: w.cpu_j,
    }
}
