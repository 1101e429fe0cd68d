//! Calibrate once on a GPU, predict without one.
//!
//! In (calibrate): a finished gemm-energy run (`GemmReport`). Out: `Calibration` per dtype,
//! `perfwatt.gemm-calibration/1` JSON: the RTL-family model the nested selection chose in
//! the most folds, fitted to every pattern of the run, with the patterns it was fitted on,
//! the device, regime and shape, and its leave-one-out relative errors (the spread a new
//! prediction carries).
//!
//! In (predict): a calibration and the operands of one GEMM (A M x K and B K x N `.npy`).
//! Out: `Prediction`: the same hardware model replayed on those operands (on the CPU), the
//! predicted energy per GEMM and a 95% prediction interval from the calibration's
//! leave-one-out errors (their 2.5th and 97.5th percentiles, applied to the prediction).
//! The calibration predicts at its own shape: other shapes are refused.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::choice::Choice;
use crate::error::{Error, IoContext, Result};
use crate::gemm_energy::fit::{self, Candidate};
use crate::gemm_energy::hw::{self, HwModel};
use crate::gemm_energy::patterns::{Dtype, Operands, Shape};
use crate::gemm_energy::report::{candidates, samples};
use crate::gemm_energy::{GemmReport, PointResult, Regime};
use crate::sim::tile::{sample_blocks, TileOrder};
use crate::stats::percentile;

pub const SCHEMA: &str = "perfwatt.gemm-calibration/1";

/// A fitted model of one dtype's energy per GEMM on one device and regime.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Calibration {
    pub schema: String,
    pub device: String,
    pub dtype: Dtype,
    pub regime: Regime,
    pub shape: Shape,
    /// What the model replays and how (as in the run).
    pub lanes: u32,
    pub sample_dots: usize,
    pub sample_blocks: usize,
    pub seed: u64,
    /// The hardware model (`HwModel::name`) whose toggles are the features.
    pub hw_model: String,
    /// The candidate's name in the report (`... , by signal group` for group weights).
    pub candidate: String,
    /// Feature names (the model's value, or `<model> | <group>`), floor and weights:
    /// J/GEMM = floor + sum of weight x feature.
    pub features: Vec<String>,
    pub floor: f64,
    pub weights: Vec<f64>,
    /// What it predicts: "J/GEMM" (ms/GEMM on a device with no energy counter).
    pub unit: String,
    /// The patterns it was fitted on.
    pub fitted_on: Vec<String>,
    /// Leave-one-out relative errors (predicted / measured - 1, %), one per pattern.
    pub loo_errors_pct: Vec<f64>,
    /// Folds that chose this candidate, of all folds.
    pub chosen_in: (usize, usize),
}

/// The hardware model a candidate's features come from.
fn hw_model_of(c: &Candidate) -> Option<String> {
    match c {
        Candidate::Line(f) => Some(f.clone()),
        Candidate::Groups { name, .. } => Some(name.clone()),
        Candidate::TwoGroup => None,
    }
}

/// Calibrations of every dtype of `r` (a dtype with too few patterns is left out).
pub fn calibrate(r: &GemmReport) -> Vec<Calibration> {
    r.config
        .dtypes
        .iter()
        .filter_map(|&dtype| {
            let points: Vec<&PointResult> =
                r.points.iter().filter(|p| p.info.dtype == dtype).collect();
            calibrate_dtype(r, dtype, &points)
        })
        .collect()
}

fn calibrate_dtype(r: &GemmReport, dtype: Dtype, points: &[&PointResult]) -> Option<Calibration> {
    let s = samples(points, r.power_limit_w, r.config.regime);
    let (family, baselines) = candidates(r, dtype, &s);
    let sel = fit::select(&s, &family, &baselines)?;
    let (top, &count) = sel.chosen.iter().max_by_key(|(_, &k)| k)?;
    let cand = family.iter().find(|c| &c.name() == top)?;
    let all: Vec<&fit::Sample> = s.iter().collect();
    let (features, floor, weights) = match cand {
        Candidate::Line(f) => {
            let xs: Vec<f64> = s.iter().map(|x| x.features[f]).collect();
            let ys: Vec<f64> = s.iter().map(|x| x.y).collect();
            let (a, b) = crate::stats::linear_fit(&xs, &ys)?;
            (vec![f.clone()], a, vec![b])
        }
        Candidate::Groups { features, .. } => {
            let (floor, w) = fit::nnls_fit(&all, features)?;
            (features.clone(), floor, w)
        }
        Candidate::TwoGroup => return None,
    };
    let loo: Vec<f64> = (0..s.len())
        .filter_map(|i| {
            let train: Vec<&fit::Sample> = s
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, x)| x)
                .collect();
            let p = cand.predict(&train, &s[i])?;
            Some((p / s[i].y - 1.0) * 100.0)
        })
        .collect();
    let energy = points.iter().all(|p| p.j_per_gemm.is_some());
    Some(Calibration {
        schema: SCHEMA.into(),
        device: r.device.clone(),
        dtype,
        regime: r.config.regime,
        shape: r.config.shape,
        lanes: r.config.lanes,
        sample_dots: r.config.sample_dots,
        sample_blocks: r.config.sample_blocks,
        seed: r.config.seed,
        hw_model: hw_model_of(cand)?,
        candidate: cand.name(),
        features,
        floor,
        weights,
        unit: match (energy, r.config.regime) {
            (true, Regime::Duty) => "J/GEMM above the duty schedule's floor",
            (true, _) => "J/GEMM",
            _ => "ms/GEMM",
        }
        .into(),
        fitted_on: points.iter().map(|p| p.info.pattern.clone()).collect(),
        loo_errors_pct: loo,
        chosen_in: (count, s.len()),
    })
}

/// Write the calibrations of a run as one JSON array.
pub fn write(cals: &[Calibration], path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(cals).expect("json") + "\n";
    crate::files::write_atomic(path, text.as_bytes())
}

/// Read a calibration file (what `write` wrote), checking its schema.
pub fn read(path: &Path) -> Result<Vec<Calibration>> {
    let text = std::fs::read_to_string(path).at(path)?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: not JSON: {e}", path.display())))?;
    let items = v.as_array().cloned().unwrap_or_else(|| vec![v]);
    items
        .into_iter()
        .map(|c| {
            let schema = c.get("schema").and_then(|s| s.as_str()).unwrap_or("none");
            if schema != SCHEMA {
                return Err(Error::Config(format!(
                    "{}: schema '{schema}', expected '{SCHEMA}' (write one with `perfwatt gemm-energy --calibrate`)",
                    path.display()
                )));
            }
            serde_json::from_value(c)
                .map_err(|e| Error::Config(format!("{}: not a calibration: {e}", path.display())))
        })
        .collect()
}

/// One prediction.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub device: String,
    pub dtype: Dtype,
    pub regime: Regime,
    pub unit: String,
    pub predicted: f64,
    /// 95% prediction interval from the calibration's leave-one-out errors.
    pub low: f64,
    pub high: f64,
    /// The features the model was evaluated at.
    pub features: Vec<(String, f64)>,
    pub hw_model: String,
}

/// The calibration of `dtype` among `cals`, or one line saying which there are.
pub fn for_dtype(cals: &[Calibration], dtype: Dtype) -> Result<&Calibration> {
    cals.iter().find(|c| c.dtype == dtype).ok_or_else(|| {
        let have: Vec<&str> = cals.iter().map(|c| c.dtype.name()).collect();
        Error::Config(format!(
            "the calibration holds no {} model (it has: {}); calibrate a run with --dtype {}",
            dtype.name(),
            have.join(", "),
            dtype.name()
        ))
    })
}

/// Predict the cost of the GEMM `ops` from `cal` (same dtype and shape).
pub fn predict(cal: &Calibration, ops: &Operands) -> Result<Prediction> {
    if ops.dtype != cal.dtype {
        return Err(Error::Config(format!(
            "a {} calibration cannot predict a {} GEMM",
            cal.dtype.name(),
            ops.dtype.name()
        )));
    }
    if ops.shape != cal.shape {
        let s = |x: Shape| format!("{} x {} x {}", x.m, x.k, x.n);
        return Err(Error::Config(format!(
            "the operands' shape (M x K x N = {}) is not the calibrated one ({}): energy per GEMM is calibrated at one shape",
            s(ops.shape),
            s(cal.shape)
        )));
    }
    let model = HwModel::for_dtype(cal.dtype, cal.lanes, true, <TileOrder as Choice>::ALL)
        .into_iter()
        .find(|m| m.name() == cal.hw_model)
        .ok_or_else(|| {
            Error::Config(format!(
                "unknown hardware model '{}' in the calibration",
                cal.hw_model
            ))
        })?;
    let outputs = hw::sample_outputs(ops, cal.sample_dots);
    let blocks = sample_blocks(ops.shape.m, ops.shape.n, cal.sample_blocks, cal.seed);
    let counts = hw::toggles_per_mac(ops, &outputs, &blocks, &[model])?;
    let mut features = counts.toggles;
    for (m, groups) in counts.groups {
        for (g, v) in groups {
            features.insert(format!("{m} | {g}"), v);
        }
    }
    predict_from(cal, &features)
}

/// The prediction at already counted features (a point's toggles and `<model> | <group>`
/// values, as `report::samples` names them).
pub fn predict_from(cal: &Calibration, have: &BTreeMap<String, f64>) -> Result<Prediction> {
    let features: Vec<(String, f64)> = cal
        .features
        .iter()
        .map(|f| {
            have.get(f).map(|v| (f.clone(), *v)).ok_or_else(|| {
                Error::Config(format!("no value of the calibration's feature '{f}'"))
            })
        })
        .collect::<Result<_>>()?;
    let predicted = cal.floor
        + features
            .iter()
            .zip(&cal.weights)
            .map(|((_, x), w)| x * w)
            .sum::<f64>();
    // predicted / measured - 1 = e  =>  measured = predicted / (1 + e).
    let q = |p: f64| percentile(&cal.loo_errors_pct, p).unwrap_or(0.0) / 100.0;
    let (lo, hi) = (predicted / (1.0 + q(97.5)), predicted / (1.0 + q(2.5)));
    Ok(Prediction {
        device: cal.device.clone(),
        dtype: cal.dtype,
        regime: cal.regime,
        unit: cal.unit.clone(),
        predicted,
        low: lo.min(hi),
        high: lo.max(hi),
        features,
        hw_model: cal.hw_model.clone(),
    })
}
