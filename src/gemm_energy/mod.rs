//! Data-dependent GEMM energy, explained by switching: `perfwatt gemm-energy`.
//!
//! In: dtypes, a GEMM shape, operand patterns (synthetic, real LLM operands, user `.npy`
//! matrices), a device. Out: a run folder with `points.jsonl` (one row per pattern and
//! round, written as it goes: a rerun resumes), `results.{json,csv}` (per pattern: energy
//! per GEMM with a 95% CI over rounds, power, TOPS, SM clock, throttle reasons, and toggles
//! per MAC under every hardware model), and `report.md` with plots.
//!
//! Measurement (GPU): per point, launches of the same GEMM for `seconds` after a warm-up,
//! energy from the NVML total-energy counter, rounds interleaved in alternating order so
//! that thermal drift hits every pattern alike; idle power before and after. Two regimes
//! (`Regime`): back to back (random-like data runs at the power cap, where energy per GEMM
//! grows through lower clocks), or duty-cycled bursts of about `duty_burst_ms` of GEMMs
//! then a `duty_sleep_ms` sleep (the card stays under its limit at its top clock; the idle
//! windows are then that schedule with no GEMM, its floor). On the CPU, time only (energy
//! null: no RAPL on these machines). The RTL side needs no device: sampled dot products
//! and output blocks of each pattern go through `hw`.

pub mod calibrate;
pub mod devices;
pub mod fit;
#[cfg(feature = "cuda")]
mod gpu;
pub mod hw;
pub mod npy;
pub mod patterns;
pub mod real;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::choice::Choice;
use crate::device::DeviceSpec;
use crate::error::{Error, IoContext, Result};
use crate::files::write_atomic;
use crate::sim::tile::{sample_blocks, TileOrder};
use crate::stats::{percentile, Estimate};
use hw::HwModel;
use patterns::{Dtype, Family, Operands, Shape};

/// How the GEMMs of a measurement are issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Regime {
    /// Launched back to back: the card runs at whatever clock its power limit allows.
    #[default]
    BackToBack,
    /// Bursts of about `duty_burst_ms`, each followed by a `duty_sleep_ms` sleep.
    Duty,
}

impl Choice for Regime {
    const WHAT: &'static str = "regime";
    const ALL: &'static [Self] = &[Regime::BackToBack, Regime::Duty];
    fn name(self) -> &'static str {
        match self {
            Regime::BackToBack => "back-to-back",
            Regime::Duty => "duty",
        }
    }
}
crate::choice_str!(Regime);

/// One `perfwatt gemm-energy` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GemmConfig {
    /// cpu, or cuda (a build with the `cuda` feature).
    pub device: DeviceSpec,
    pub dtypes: Vec<Dtype>,
    pub shape: Shape,
    /// Synthetic pattern names; empty = all.
    pub patterns: Vec<String>,
    /// Add the real LLM patterns (needs the model), from one prefill of this many prompts
    /// of this many tokens.
    pub real: bool,
    pub real_prompts: usize,
    pub real_tokens: usize,
    pub model: PathBuf,
    pub prompts: PathBuf,
    /// User operands: A [M, K] and B [K, N] `.npy` (the shape then comes from them).
    pub operands: Option<(PathBuf, PathBuf)>,
    /// Add a K-permuted twin of these patterns (int8 only: bit-identical products).
    pub permute: Vec<String>,
    pub seconds: f64,
    pub warmup_seconds: f64,
    pub rounds: usize,
    #[serde(default)]
    pub regime: Regime,
    /// Duty regime: GEMMs per burst chosen to take about this long, then this sleep.
    #[serde(default)]
    pub duty_burst_ms: f64,
    #[serde(default)]
    pub duty_sleep_ms: f64,
    /// Lanes of the dot-product unit hardware models (and of the permutation's model).
    pub lanes: u32,
    /// Output elements whose dot products the hardware models replay.
    pub sample_dots: usize,
    /// Traversal orders of the tile-level MMA unit (int8), and how many of its 16 x 8
    /// output blocks (seeded positions, full K) each replays.
    #[serde(default)]
    pub tile_orders: Vec<TileOrder>,
    #[serde(default)]
    pub sample_blocks: usize,
    pub seed: u64,
    /// Idle power windows before and after the run (seconds each, GPU).
    pub idle_seconds: f64,
    /// Add the RTL designs' gate-level netlists (toggles and energy per MAC) to the
    /// hardware models (yosys; built once, cached).
    pub gate_level: bool,
    /// A calibration (from another run) whose predictions the report checks against
    /// this run's measurements.
    #[serde(default)]
    pub check_calibration: Option<PathBuf>,
}

impl GemmConfig {
    /// Defaults for a device: 8192^3 and 2 s x 3 rounds on the GPU; 64x256x64 and 0.05 s
    /// on the CPU (seconds, for CI).
    pub fn new(device: DeviceSpec) -> Self {
        let gpu = !device.is_cpu();
        GemmConfig {
            device,
            dtypes: vec![Dtype::Int8, Dtype::Bf16],
            shape: if gpu {
                Shape {
                    m: 8192,
                    k: 8192,
                    n: 8192,
                }
            } else {
                Shape {
                    m: 64,
                    k: 256,
                    n: 64,
                }
            },
            patterns: Vec::new(),
            real: true,
            real_prompts: if gpu { 8 } else { 2 },
            real_tokens: if gpu { 192 } else { 96 },
            model: crate::model::default_model_path(),
            prompts: crate::asset_path("experiments/prompts.jsonl"),
            operands: None,
            permute: vec!["normal".into(), "llm-down-l15".into()],
            seconds: if gpu { 2.0 } else { 0.05 },
            warmup_seconds: if gpu { 0.5 } else { 0.01 },
            rounds: 3,
            regime: Regime::BackToBack,
            duty_burst_ms: 10.0,
            duty_sleep_ms: 12.0,
            lanes: 16,
            sample_dots: 16,
            tile_orders: TileOrder::ALL.to_vec(),
            sample_blocks: 4,
            seed: 1,
            idle_seconds: if gpu { 5.0 } else { 0.0 },
            gate_level: false,
            check_calibration: None,
        }
    }
}

/// What one timed loop of one GEMM measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Measurement {
    pub gemms: u64,
    pub seconds: f64,
    /// NVML energy counter over the loop (None on the CPU).
    pub joules: Option<f64>,
    pub sm_mhz_median: Option<f64>,
    /// Mean power from the energy counter between its first and last update in the loop
    /// (named `power_w_median` in rounds written before 2026-11-23 12:30, though a mean).
    #[serde(alias = "power_w_median")]
    pub power_w: Option<f64>,
    /// Clock-event (throttle) reasons seen during the loop.
    pub throttle: Vec<String>,
}

/// A device that runs GEMMs: CPU (reference loops, time only) or CUDA (cuBLAS + NVML).
pub trait GemmDevice {
    fn name(&self) -> String;
    /// Make `ops` the current GEMM (upload, allocate the output).
    fn load(&mut self, ops: &Operands) -> Result<()>;
    /// Run the current GEMM: `warmup` seconds back to back, then at least `seconds` timed,
    /// in `pace`'s regime.
    fn measure(&mut self, warmup: f64, seconds: f64, pace: Pace) -> Result<Measurement>;
    /// The current GEMM's output, for exactness checks (int8: i32 values; float: f32 bits).
    fn output(&mut self) -> Result<Vec<i64>>;
    /// Mean power over a window with nothing running (None without NVML).
    fn idle_w(&mut self, seconds: f64) -> Option<f64>;
    fn power_limit_w(&self) -> Option<f64>;
}

/// How a measurement issues its GEMMs: back to back (`sleep_s` 0), or bursts of about
/// `burst_s` followed by a `sleep_s` sleep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub burst_s: f64,
    pub sleep_s: f64,
}

impl Pace {
    pub fn of(cfg: &GemmConfig) -> Pace {
        match cfg.regime {
            Regime::BackToBack => Pace {
                burst_s: 0.01,
                sleep_s: 0.0,
            },
            Regime::Duty => Pace {
                burst_s: cfg.duty_burst_ms / 1e3,
                sleep_s: cfg.duty_sleep_ms / 1e3,
            },
        }
    }

    /// GEMMs per burst for GEMMs of `per_gemm` seconds (at least 1, at most 1000).
    pub fn burst(self, per_gemm: f64) -> u64 {
        ((self.burst_s / per_gemm.max(1e-9)) as u64).clamp(1, 1000)
    }

    /// The sleep after a burst (nothing back to back).
    pub fn rest(self) {
        if self.sleep_s > 0.0 {
            std::thread::sleep(std::time::Duration::from_secs_f64(self.sleep_s));
        }
    }
}

/// C = A B^T on the host: int8 in i64, floats in f32 (as bits). The reference every device
/// is checked against, and the CPU device's workload.
pub fn reference_gemm(ops: &Operands) -> Vec<i64> {
    let Shape { m, k, n } = ops.shape;
    let mut c = vec![0i64; m * n];
    let value = |v: i16| -> f32 {
        match ops.dtype {
            Dtype::Int8 => v as f32,
            Dtype::Bf16 => f32::from_bits((v as u16 as u32) << 16),
            Dtype::F16 => half::f16::from_bits(v as u16).to_f32(),
        }
    };
    for i in 0..m {
        let a = &ops.a[i * k..(i + 1) * k];
        for j in 0..n {
            let b = &ops.b[j * k..(j + 1) * k];
            c[i * n + j] = if ops.dtype == Dtype::Int8 {
                a.iter().zip(b).map(|(&x, &y)| x as i64 * y as i64).sum()
            } else {
                a.iter()
                    .zip(b)
                    .map(|(&x, &y)| value(x) * value(y))
                    .sum::<f32>()
                    .to_bits() as i64
            };
        }
    }
    c
}

/// The CPU: reference loops, timed; no energy.
pub struct CpuDevice {
    ops: Option<Operands>,
}

impl GemmDevice for CpuDevice {
    fn name(&self) -> String {
        "cpu".into()
    }
    fn load(&mut self, ops: &Operands) -> Result<()> {
        self.ops = Some(ops.clone());
        Ok(())
    }
    fn measure(&mut self, warmup: f64, seconds: f64, pace: Pace) -> Result<Measurement> {
        let ops = self
            .ops
            .as_ref()
            .ok_or_else(|| Error::Config("no GEMM loaded".into()))?;
        let t0 = Instant::now();
        let mut per_gemm = f64::MAX;
        while per_gemm == f64::MAX || t0.elapsed().as_secs_f64() < warmup {
            let s = Instant::now();
            std::hint::black_box(reference_gemm(ops));
            per_gemm = per_gemm.min(s.elapsed().as_secs_f64());
        }
        let burst = pace.burst(per_gemm);
        let (t, mut gemms) = (Instant::now(), 0);
        while gemms == 0 || t.elapsed().as_secs_f64() < seconds {
            for _ in 0..burst {
                std::hint::black_box(reference_gemm(ops));
            }
            gemms += burst;
            pace.rest();
        }
        Ok(Measurement {
            gemms,
            seconds: t.elapsed().as_secs_f64(),
            ..Default::default()
        })
    }
    fn output(&mut self) -> Result<Vec<i64>> {
        Ok(reference_gemm(
            self.ops
                .as_ref()
                .ok_or_else(|| Error::Config("no GEMM loaded".into()))?,
        ))
    }
    fn idle_w(&mut self, _: f64) -> Option<f64> {
        None
    }
    fn power_limit_w(&self) -> Option<f64> {
        None
    }
}

/// The device `cfg.device` names.
pub fn open_device(device: DeviceSpec) -> Result<Box<dyn GemmDevice>> {
    match device.ordinal() {
        None => Ok(Box::new(CpuDevice { ops: None })),
        Some(n) => open_cuda(n),
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Box<dyn GemmDevice>> {
    Ok(Box::new(gpu::CudaDevice::open(ordinal)?))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_: usize) -> Result<Box<dyn GemmDevice>> {
    Err(Error::Config(format!(
        "--device cuda: {}",
        crate::device::NO_CUDA
    )))
}

/// One pattern of one dtype: its operands are generated when measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointInfo {
    pub dtype: Dtype,
    pub pattern: String,
    pub family: Family,
    pub about: String,
    /// Fraction of zero elements in A and B.
    pub zero_a: f64,
    pub zero_b: f64,
    /// Toggles per MAC under each hardware model (a baseline's value under its name).
    pub toggles: BTreeMap<String, f64>,
    /// Per model with signal groups (the tile unit's orders): toggles per MAC per group.
    #[serde(default)]
    pub groups: BTreeMap<String, BTreeMap<String, f64>>,
}

/// One timed round of one point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundRow {
    pub dtype: Dtype,
    pub pattern: String,
    pub round: usize,
    pub m: Measurement,
}

/// Per point over its rounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointResult {
    #[serde(flatten)]
    pub info: PointInfo,
    pub rounds: usize,
    /// Energy per GEMM (J), and above the idle draw over the same time.
    pub j_per_gemm: Option<Estimate>,
    pub j_per_gemm_above_idle: Option<Estimate>,
    pub s_per_gemm: Estimate,
    pub avg_w: Option<Estimate>,
    pub tops: Estimate,
    pub pj_per_mac: Option<f64>,
    pub sm_mhz_median: Option<f64>,
    pub throttle: Vec<String>,
}

/// The K-permutation experiment on one pattern: the same GEMM with K reordered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Permutation {
    pub dtype: Dtype,
    pub pattern: String,
    pub lanes: u32,
    /// The permuted GEMM's output equals the original's, element for element (on the device).
    pub identical: bool,
    /// Predicted change of toggles/MAC per hardware model, %.
    pub predicted_pct: BTreeMap<String, f64>,
    /// Measured change of energy per GEMM, % (mean of per-round paired changes, 95% CI).
    pub measured_pct: Option<Estimate>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GemmReport {
    pub schema: String,
    pub config: GemmConfig,
    pub device: String,
    pub power_limit_w: Option<f64>,
    pub idle_w_before: Option<f64>,
    pub idle_w_after: Option<f64>,
    pub points: Vec<PointResult>,
    pub permutations: Vec<Permutation>,
}

/// Progress and interruption hooks.
pub struct Hooks<'a> {
    pub on_point: &'a mut dyn FnMut(usize, usize, &str),
    pub interrupted: &'a dyn Fn() -> bool,
}

/// Name of the K-permuted twin of a pattern.
pub fn permuted_name(pattern: &str) -> String {
    format!("{pattern}+kperm")
}

/// Every point of the run with its operands; the (original, permuted) point pairs.
struct Plan {
    points: Vec<(PointInfo, Operands)>,
    permutations: Vec<(usize, usize)>,
}

/// Generate every point's operands and run the hardware models on them.
fn plan(cfg: &GemmConfig) -> Result<Plan> {
    let user = match &cfg.operands {
        Some((a, b)) => Some((npy::Array::read(a)?, npy::Array::read(b)?)),
        None => None,
    };
    let real = if cfg.real && user.is_none() {
        real::real_matrices(&cfg.model, &cfg.prompts, cfg.real_prompts, cfg.real_tokens)?
    } else {
        Vec::new()
    };
    let selected: Vec<&patterns::Pattern> = if cfg.patterns.is_empty() {
        patterns::PATTERNS.iter().collect()
    } else {
        cfg.patterns
            .iter()
            .map(|n| {
                patterns::find(n).ok_or_else(|| {
                    let names: Vec<&str> = patterns::PATTERNS.iter().map(|p| p.name).collect();
                    Error::Config(format!("pattern '{n}': one of {}", names.join(", ")))
                })
            })
            .collect::<Result<_>>()?
    };
    // What to build, then built on all cores (8192^2 operands take seconds each).
    type Build<'a> = (
        Dtype,
        String,
        Family,
        String,
        Box<dyn Fn() -> Result<Operands> + Sync + 'a>,
    );
    let mut specs: Vec<Build> = Vec::new();
    for &dtype in &cfg.dtypes {
        if let Some((a, b)) = &user {
            let about = format!("{} x {}", a.file, b.file);
            specs.push((
                dtype,
                "user".into(),
                Family::User,
                about,
                Box::new(move || patterns::user_operands(dtype, a, b)),
            ));
            continue;
        }
        for &p in &selected {
            specs.push((
                dtype,
                p.name.into(),
                p.family,
                p.about.into(),
                Box::new(move || Ok(p.operands(dtype, cfg.shape, cfg.seed))),
            ));
        }
        for (name, x, w) in &real {
            let about = format!(
                "SmolLM2-135M {name}: {} activation rows x {} weight rows of K = {}, tiled",
                x.rows, w.rows, x.cols
            );
            specs.push((
                dtype,
                name.to_string(),
                Family::Real,
                about,
                Box::new(move || Ok(patterns::real_operands(dtype, cfg.shape, x, w))),
            ));
        }
    }
    let built = par_map(&specs, |(dtype, name, family, about, make)| {
        let ops = make()?;
        let models = HwModel::for_dtype(*dtype, cfg.lanes, cfg.gate_level, &cfg.tile_orders);
        let base = (info(&ops, name, *family, about, cfg, &models)?, ops);
        // The K-permuted twin (int8: exact), ordered for the dot unit's lanes.
        let twin = if *dtype == Dtype::Int8 && cfg.permute.contains(name) {
            let order = hw::greedy_k_order(&base.1, cfg.lanes as usize, 64);
            let ops = base.1.permute_k(&order);
            let about = format!("{name} with K reordered to minimize bit flips per lane ({} lanes, greedy nearest neighbour)", cfg.lanes);
            Some((
                info(&ops, &permuted_name(name), *family, &about, cfg, &models)?,
                ops,
            ))
        } else {
            None
        };
        Ok((base, twin))
    })?;
    let mut out = Plan {
        points: Vec::new(),
        permutations: Vec::new(),
    };
    for (base, twin) in built {
        out.points.push(base);
        if let Some(t) = twin {
            let i = out.points.len() - 1;
            out.points.push(t);
            out.permutations.push((i, i + 1));
        }
    }
    Ok(out)
}

/// `f` over `items` on all cores, results in order; the first error wins.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> Result<R> + Sync) -> Result<Vec<R>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<Result<R>>>> =
        std::sync::Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                results.lock().expect("no panics while held")[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .expect("no panics while held")
        .into_iter()
        .map(|r| r.expect("every item was processed"))
        .collect()
}

fn info(
    ops: &Operands,
    name: &str,
    family: Family,
    about: &str,
    cfg: &GemmConfig,
    models: &[HwModel],
) -> Result<PointInfo> {
    let outputs = hw::sample_outputs(ops, cfg.sample_dots);
    let blocks = sample_blocks(ops.shape.m, ops.shape.n, cfg.sample_blocks, cfg.seed);
    let counts = hw::toggles_per_mac(ops, &outputs, &blocks, models)?;
    let zeros = |x: &[i16]| {
        x.iter().filter(|&&v| ops.dtype.format().is_zero(v)).count() as f64 / x.len().max(1) as f64
    };
    Ok(PointInfo {
        dtype: ops.dtype,
        pattern: name.into(),
        family,
        about: about.into(),
        zero_a: zeros(&ops.a),
        zero_b: zeros(&ops.b),
        toggles: counts.toggles,
        groups: counts.groups,
    })
}

/// What an earlier run of the same folder found (its results.json): the device, its idle
/// draw and power limit, and which permuted GEMMs matched their originals. Used when
/// nothing is left to measure, so that new hardware models can score old measurements
/// without the device.
#[derive(Default)]
struct Prior {
    device: Option<String>,
    power_limit_w: Option<f64>,
    idle_w_before: Option<f64>,
    idle_w_after: Option<f64>,
    identical: Vec<(String, String, bool)>,
}

impl Prior {
    fn read(out: &Path) -> Prior {
        let Some(v) = std::fs::read_to_string(out.join("results.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        else {
            return Prior::default();
        };
        let f = |k: &str| v.get(k).and_then(|x| x.as_f64());
        Prior {
            device: v.get("device").and_then(|d| d.as_str()).map(String::from),
            power_limit_w: f("power_limit_w"),
            idle_w_before: f("idle_w_before"),
            idle_w_after: f("idle_w_after"),
            identical: v["permutations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        p["dtype"].as_str()?.to_string(),
                        p["pattern"].as_str()?.to_string(),
                        p["identical"].as_bool()?,
                    ))
                })
                .collect(),
        }
    }

    fn identical(&self, info: &PointInfo) -> Option<bool> {
        self.identical
            .iter()
            .find(|(d, p, _)| d == info.dtype.name() && *p == info.pattern)
            .map(|x| x.2)
    }
}

/// Run everything: plan, idle, rounds (resuming from `points.jsonl`), summarize, report.
/// With every round already measured, the device is not opened: the hardware models are
/// run again on the same operands and the results and report rewritten.
pub fn run_gemm_energy(cfg: &GemmConfig, out: &Path, mut hooks: Hooks<'_>) -> Result<GemmReport> {
    std::fs::create_dir_all(out).at(out)?;
    let rounds_path = out.join("points.jsonl");
    // The device first: a missing one is reported before minutes of operand generation,
    // unless this folder holds rounds that may already be complete.
    let dev = open_device(cfg.device);
    if !rounds_path.exists() {
        dev.as_ref().map_err(|e| Error::Config(e.to_string()))?;
    }
    let plan = plan(cfg)?;
    let mut rows: Vec<RoundRow> = crate::files::read_jsonl_if_exists(&rounds_path)?;
    let prior = Prior::read(out);
    let mut exact: Vec<Option<bool>> = plan
        .permutations
        .iter()
        .map(|&(orig, _)| prior.identical(&plan.points[orig].0))
        .collect();
    let missing = plan.points.iter().any(|(info, _)| {
        (0..cfg.rounds).any(|round| {
            !rows
                .iter()
                .any(|r| r.round == round && r.dtype == info.dtype && r.pattern == info.pattern)
        })
    });
    let (device, power_limit_w, idle_w_before, idle_w_after) = if missing {
        let mut dev = dev?;
        let before = dev.idle_w(cfg.idle_seconds);
        measure_rounds(
            dev.as_mut(),
            cfg,
            &plan,
            &mut rows,
            &rounds_path,
            &mut exact,
            &mut hooks,
        )?;
        (hooks.on_point)(
            plan.points.len() * cfg.rounds,
            plan.points.len() * cfg.rounds,
            "idle",
        );
        let after = dev.idle_w(cfg.idle_seconds);
        (dev.name(), dev.power_limit_w(), before, after)
    } else {
        (
            prior
                .device
                .clone()
                .unwrap_or_else(|| cfg.device.to_string()),
            prior.power_limit_w,
            prior.idle_w_before,
            prior.idle_w_after,
        )
    };
    let idle = match (idle_w_before, idle_w_after) {
        (Some(a), Some(b)) => Some((a + b) / 2.0),
        (a, b) => a.or(b),
    };
    let points: Vec<PointResult> = plan
        .points
        .iter()
        .map(|(info, _)| summarize(info, &rows, cfg.shape, idle))
        .collect();
    let permutations = plan
        .permutations
        .iter()
        .zip(&exact)
        .map(|(&(orig, perm), &same)| {
            permutation(
                &plan.points[orig].0,
                &plan.points[perm].0,
                &rows,
                same.unwrap_or(false),
                cfg.lanes,
            )
        })
        .collect();
    let report = GemmReport {
        schema: "perfwatt.gemm-energy/1".into(),
        config: cfg.clone(),
        device,
        power_limit_w,
        idle_w_before,
        idle_w_after,
        points,
        permutations,
    };
    write_atomic(
        &out.join("results.json"),
        (serde_json::to_string_pretty(&report).expect("json") + "\n").as_bytes(),
    )?;
    write_atomic(&out.join("results.csv"), report::to_csv(&report).as_bytes())?;
    report::write_report(&report, out)?;
    Ok(report)
}

/// Rewrite a finished run's report, CSV and (where it has one) calibration from its
/// results.json alone: no device, no operands regenerated, so a new report section or a
/// new fit reaches committed data in seconds. `check` replaces the calibration the report
/// checks (`--check-calibration`, e.g. where the run's own path was on another machine).
pub fn rerender(out: &Path, check: Option<&Path>) -> Result<GemmReport> {
    let path = out.join("results.json");
    let text = std::fs::read_to_string(&path).at(&path)?;
    let mut report: GemmReport = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: not a gemm-energy result: {e}", path.display())))?;
    if let Some(c) = check {
        report.config.check_calibration = Some(c.to_path_buf());
    }
    write_atomic(
        &path,
        (serde_json::to_string_pretty(&report).expect("json") + "\n").as_bytes(),
    )?;
    write_atomic(&out.join("results.csv"), report::to_csv(&report).as_bytes())?;
    report::write_report(&report, out)?;
    let cal = out.join("calibration.json");
    if cal.exists() {
        calibrate::write(&calibrate::calibrate(&report), &cal)?;
    }
    Ok(report)
}

/// Every round not yet in `rows`, in alternating order (drift over a round hits the
/// patterns in reverse next round), each appended to `points.jsonl` as it finishes; a
/// permuted GEMM's output is compared with its original's once.
fn measure_rounds(
    dev: &mut dyn GemmDevice,
    cfg: &GemmConfig,
    plan: &Plan,
    rows: &mut Vec<RoundRow>,
    rounds_path: &Path,
    exact: &mut [Option<bool>],
    hooks: &mut Hooks<'_>,
) -> Result<()> {
    let total = plan.points.len() * cfg.rounds;
    let mut done = rows.len();
    for round in 0..cfg.rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..plan.points.len()).collect()
        } else {
            (0..plan.points.len()).rev().collect()
        };
        for i in order {
            let (info, ops) = &plan.points[i];
            if rows
                .iter()
                .any(|r| r.round == round && r.dtype == info.dtype && r.pattern == info.pattern)
            {
                continue;
            }
            if (hooks.interrupted)() {
                return Err(Error::Interrupted);
            }
            (hooks.on_point)(
                done,
                total,
                &format!("{} {}", info.dtype.name(), info.pattern),
            );
            dev.load(ops)?;
            let m = dev.measure(cfg.warmup_seconds, cfg.seconds, Pace::of(cfg))?;
            if let Some(p) = plan
                .permutations
                .iter()
                .position(|p| p.1 == i)
                .filter(|&p| exact[p].is_none())
            {
                let permuted = dev.output()?;
                dev.load(&plan.points[plan.permutations[p].0].1)?;
                exact[p] = Some(dev.output()? == permuted);
            }
            rows.push(RoundRow {
                dtype: info.dtype,
                pattern: info.pattern.clone(),
                round,
                m,
            });
            let text: String = rows
                .iter()
                .map(|r| serde_json::to_string(r).expect("json") + "\n")
                .collect();
            write_atomic(rounds_path, text.as_bytes())?;
            done += 1;
        }
    }
    Ok(())
}

fn summarize(
    info: &PointInfo,
    rows: &[RoundRow],
    shape: Shape,
    idle_w: Option<f64>,
) -> PointResult {
    let mine: Vec<&RoundRow> = rows
        .iter()
        .filter(|r| r.dtype == info.dtype && r.pattern == info.pattern)
        .collect();
    let est = |f: &dyn Fn(&Measurement) -> Option<f64>| Estimate::over(&mine, |r| f(&r.m));
    let per = |m: &Measurement, v: f64| v / m.gemms.max(1) as f64;
    let j = est(&|m| Some(per(m, m.joules?)));
    let clocks: Vec<f64> = mine.iter().filter_map(|r| r.m.sm_mhz_median).collect();
    let mut throttle: Vec<String> = mine
        .iter()
        .flat_map(|r| r.m.throttle.iter().cloned())
        .collect();
    throttle.sort();
    throttle.dedup();
    PointResult {
        info: info.clone(),
        rounds: mine.len(),
        pj_per_mac: j.map(|e| e.mean / shape.macs() * 1e12),
        j_per_gemm: j,
        j_per_gemm_above_idle: est(&|m| Some(per(m, m.joules? - idle_w? * m.seconds))),
        s_per_gemm: est(&|m| Some(per(m, m.seconds))).unwrap_or_default(),
        avg_w: est(&|m| Some(m.joules? / m.seconds)),
        tops: est(&|m| Some(2.0 * shape.macs() * m.gemms as f64 / m.seconds / 1e12))
            .unwrap_or_default(),
        sm_mhz_median: percentile(&clocks, 50.0),
        throttle,
    }
}

fn permutation(
    orig: &PointInfo,
    perm: &PointInfo,
    rows: &[RoundRow],
    identical: bool,
    lanes: u32,
) -> Permutation {
    let j = |name: &str, round: usize| {
        rows.iter()
            .find(|r| r.dtype == orig.dtype && r.pattern == name && r.round == round)
            .and_then(|r| Some(r.m.joules? / r.m.gemms.max(1) as f64))
    };
    let rounds = rows.iter().map(|r| r.round + 1).max().unwrap_or(0);
    let changes: Vec<f64> = (0..rounds)
        .filter_map(|r| Some((j(&perm.pattern, r)? / j(&orig.pattern, r)? - 1.0) * 100.0))
        .collect();
    Permutation {
        dtype: orig.dtype,
        pattern: orig.pattern.clone(),
        lanes,
        identical,
        predicted_pct: orig
            .toggles
            .iter()
            .filter_map(|(k, &v)| {
                Some((k.clone(), (perm.toggles.get(k)? / v - 1.0) * 100.0)).filter(|_| v > 0.0)
            })
            .collect(),
        measured_pct: Estimate::of(&changes),
    }
}
