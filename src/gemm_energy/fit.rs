//! Energy models of the patterns, and their honest selection.
//!
//! In: one `Sample` per pattern: its measured cost (J/GEMM, or ms/GEMM without a counter),
//! its features (toggles per MAC under every hardware model and baseline; per signal group
//! of the tile unit's orders) and whether it ran at the power cap. Out: `Selection`: the
//! leave-one-pattern-out errors of every candidate model, the *nested* estimate of the RTL
//! family (the candidate, the tile order and, through non-negative weights, the signal
//! groups chosen inside each fold from the fold's own training patterns, so that picking
//! the best of many models on the same data cannot flatter the result), and for each
//! baseline declared before any fit (operand Hamming proxies with no RTL, popcount, zero
//! fraction, the capped / not capped two-group mean) the difference in mean absolute error
//! with a paired bootstrap CI.

use std::collections::BTreeMap;

use crate::stats::{percentile, spearman, Rng};

/// One pattern as the models see it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub y: f64,
    pub features: BTreeMap<String, f64>,
    pub capped: bool,
}

/// A model of the cost.
#[derive(Debug, Clone, PartialEq)]
pub enum Candidate {
    /// cost = a + b x, one feature.
    Line(String),
    /// cost = floor + sum of w_g x_g with every w_g >= 0: the signal groups of one
    /// hardware model (`name`), each group a feature.
    Groups { name: String, features: Vec<String> },
    /// The mean cost of the training patterns in the same power regime (capped or not).
    TwoGroup,
}

impl Candidate {
    pub fn name(&self) -> String {
        match self {
            Candidate::Line(f) => f.clone(),
            Candidate::Groups { name, .. } => format!("{name}, by signal group"),
            Candidate::TwoGroup => "two-group mean (capped / not capped)".into(),
        }
    }

    /// The prediction for `x` of this model fitted to `train` (None: it cannot be fitted,
    /// e.g. a feature that does not vary).
    pub fn predict(&self, train: &[&Sample], x: &Sample) -> Option<f64> {
        match self {
            Candidate::Line(f) => {
                let xs: Vec<f64> = train
                    .iter()
                    .map(|s| s.features.get(f).copied())
                    .collect::<Option<_>>()?;
                let ys: Vec<f64> = train.iter().map(|s| s.y).collect();
                let (a, b) = crate::stats::linear_fit(&xs, &ys)?;
                Some(a + b * x.features.get(f)?)
            }
            Candidate::Groups { features, .. } => {
                let (floor, w) = nnls_fit(train, features)?;
                let mut v = floor;
                for (f, w) in features.iter().zip(&w) {
                    v += w * x.features.get(f)?;
                }
                Some(v)
            }
            Candidate::TwoGroup => {
                let same: Vec<f64> = train
                    .iter()
                    .filter(|s| s.capped == x.capped)
                    .map(|s| s.y)
                    .collect();
                (!same.is_empty()).then(|| same.iter().sum::<f64>() / same.len() as f64)
            }
        }
    }
}

/// Least squares with an unconstrained floor and non-negative weights: coordinate descent
/// on standardized features (a feature that does not vary gets weight 0). (floor, weights).
pub fn nnls_fit(train: &[&Sample], features: &[String]) -> Option<(f64, Vec<f64>)> {
    let n = train.len();
    if n < 2 {
        return None;
    }
    let cols: Vec<Vec<f64>> = features
        .iter()
        .map(|f| {
            train
                .iter()
                .map(|s| s.features.get(f).copied())
                .collect::<Option<Vec<f64>>>()
        })
        .collect::<Option<_>>()?;
    let my = train.iter().map(|s| s.y).sum::<f64>() / n as f64;
    let stats: Vec<(f64, f64)> = cols
        .iter()
        .map(|c| {
            let m = c.iter().sum::<f64>() / n as f64;
            let sd = (c.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n as f64).sqrt();
            (m, sd)
        })
        .collect();
    let z: Vec<Vec<f64>> = cols
        .iter()
        .zip(&stats)
        .map(|(c, &(m, sd))| {
            c.iter()
                .map(|v| if sd > 0.0 { (v - m) / sd } else { 0.0 })
                .collect()
        })
        .collect();
    let mut resid: Vec<f64> = train.iter().map(|s| s.y - my).collect();
    let mut w = vec![0.0; features.len()];
    for _ in 0..200 {
        let mut moved = 0.0f64;
        for (j, zj) in z.iter().enumerate() {
            let norm: f64 = zj.iter().map(|v| v * v).sum();
            if norm == 0.0 {
                continue;
            }
            let grad: f64 = zj.iter().zip(&resid).map(|(a, r)| a * r).sum();
            let new = (w[j] + grad / norm).max(0.0);
            let d = new - w[j];
            if d != 0.0 {
                for (r, a) in resid.iter_mut().zip(zj) {
                    *r -= d * a;
                }
                w[j] = new;
                moved = moved.max(d.abs());
            }
        }
        if moved < 1e-12 {
            break;
        }
    }
    let weights: Vec<f64> = w
        .iter()
        .zip(&stats)
        .map(|(w, &(_, sd))| if sd > 0.0 { w / sd } else { 0.0 })
        .collect();
    let floor = my
        - weights
            .iter()
            .zip(&stats)
            .map(|(w, &(m, _))| w * m)
            .sum::<f64>();
    Some((floor, weights))
}

/// Leave-one-out predictions of `c` over `samples` restricted to `idx`: for each i in
/// `idx`, the model fitted to the rest of `idx`.
fn loo_predictions(c: &Candidate, samples: &[Sample], idx: &[usize]) -> Vec<Option<f64>> {
    idx.iter()
        .map(|&i| {
            let train: Vec<&Sample> = idx
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| &samples[j])
                .collect();
            c.predict(&train, &samples[i])
        })
        .collect()
}

/// |predicted - measured| / measured, %.
fn error_pct(pred: f64, y: f64) -> f64 {
    ((pred - y) / y).abs() * 100.0
}

/// One candidate's leave-one-out record.
#[derive(Debug, Clone)]
pub struct LooRecord {
    pub name: String,
    /// Per pattern (None where it could not be fitted).
    pub errors_pct: Vec<Option<f64>>,
    pub median_pct: Option<f64>,
    pub max_pct: Option<f64>,
    pub spearman: Option<f64>,
}

fn record(name: String, preds: &[Option<f64>], samples: &[Sample]) -> LooRecord {
    let errors_pct: Vec<Option<f64>> = preds
        .iter()
        .zip(samples)
        .map(|(p, s)| p.filter(|_| s.y != 0.0).map(|p| error_pct(p, s.y)))
        .collect();
    let ok: Vec<f64> = errors_pct.iter().flatten().copied().collect();
    let pairs: Vec<(f64, f64)> = preds
        .iter()
        .zip(samples)
        .filter_map(|(p, s)| Some(((*p)?, s.y)))
        .collect();
    let (px, py): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
    let complete = ok.len() == samples.len();
    LooRecord {
        name,
        median_pct: complete.then(|| percentile(&ok, 50.0)).flatten(),
        max_pct: complete
            .then(|| ok.iter().copied().reduce(f64::max))
            .flatten(),
        spearman: complete.then(|| spearman(&px, &py)).flatten(),
        errors_pct,
    }
}

/// A baseline against the nested RTL estimate.
#[derive(Debug, Clone)]
pub struct Versus {
    pub baseline: LooRecord,
    /// Mean absolute error of the nested RTL estimate minus the baseline's, percentage
    /// points, with a paired bootstrap 95% CI over patterns (negative: the RTL model is
    /// better).
    pub diff_pp: Option<(f64, f64, f64)>,
}

/// The RTL family's nested estimate beside every baseline.
#[derive(Debug, Clone)]
pub struct Selection {
    pub nested: LooRecord,
    /// How many folds chose each candidate.
    pub chosen: BTreeMap<String, usize>,
    /// Every candidate of the family with its plain (not nested) leave-one-out record.
    pub family: Vec<LooRecord>,
    pub versus: Vec<Versus>,
}

/// Median of the leave-one-out errors of `c` on `idx` (infinite where it cannot be fitted
/// on some fold): the inner score that picks a candidate in a fold.
fn inner_score(c: &Candidate, samples: &[Sample], idx: &[usize]) -> f64 {
    let preds = loo_predictions(c, samples, idx);
    let errs: Option<Vec<f64>> = preds
        .iter()
        .zip(idx)
        .map(|(p, &i)| p.map(|p| error_pct(p, samples[i].y)))
        .collect();
    errs.and_then(|e| percentile(&e, 50.0))
        .unwrap_or(f64::INFINITY)
}

/// Nested leave-one-pattern-out selection over `family`, and each of `baselines` scored
/// the same (plain LOO: a baseline is one fixed model, nothing to select). None with fewer
/// than 4 patterns.
pub fn select(
    samples: &[Sample],
    family: &[Candidate],
    baselines: &[Candidate],
) -> Option<Selection> {
    let n = samples.len();
    if n < 4 || family.is_empty() {
        return None;
    }
    let all: Vec<usize> = (0..n).collect();
    let mut chosen: BTreeMap<String, usize> = BTreeMap::new();
    let preds: Vec<Option<f64>> = (0..n)
        .map(|i| {
            let train: Vec<usize> = all.iter().copied().filter(|&j| j != i).collect();
            let best = family
                .iter()
                .map(|c| (inner_score(c, samples, &train), c))
                .filter(|(s, _)| s.is_finite())
                .min_by(|a, b| a.0.total_cmp(&b.0))?
                .1;
            *chosen.entry(best.name()).or_default() += 1;
            let t: Vec<&Sample> = train.iter().map(|&j| &samples[j]).collect();
            best.predict(&t, &samples[i])
        })
        .collect();
    let nested = record("nested selection".into(), &preds, samples);
    let family: Vec<LooRecord> = family
        .iter()
        .map(|c| record(c.name(), &loo_predictions(c, samples, &all), samples))
        .collect();
    let versus = baselines
        .iter()
        .map(|c| {
            let baseline = record(c.name(), &loo_predictions(c, samples, &all), samples);
            let diff_pp = paired_diff(&nested.errors_pct, &baseline.errors_pct);
            Versus { baseline, diff_pp }
        })
        .collect();
    Some(Selection {
        nested,
        chosen,
        family,
        versus,
    })
}

/// Mean of a - b over the patterns both have, with a percentile-bootstrap 95% CI.
fn paired_diff(a: &[Option<f64>], b: &[Option<f64>]) -> Option<(f64, f64, f64)> {
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .filter_map(|(x, y)| Some((*x)? - (*y)?))
        .collect();
    if d.len() < 3 {
        return None;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut rng = Rng::new(7);
    let mut boots: Vec<f64> = (0..2000)
        .map(|_| {
            let s: Vec<f64> = (0..d.len())
                .map(|_| d[(rng.next_u64() % d.len() as u64) as usize])
                .collect();
            mean(&s)
        })
        .collect();
    boots.sort_by(f64::total_cmp);
    Some((
        mean(&d),
        percentile(&boots, 2.5)?,
        percentile(&boots, 97.5)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(y: f64, f: &[(&str, f64)], capped: bool) -> Sample {
        Sample {
            y,
            features: f.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            capped,
        }
    }

    #[test]
    fn nnls_recovers_non_negative_weights_and_zeroes_a_harmful_feature() {
        let mut rng = Rng::new(1);
        let samples: Vec<Sample> = (0..30)
            .map(|_| {
                let (a, b, c) = (rng.unit(), rng.unit(), rng.unit());
                // c enters with a negative sign: a non-negative fit must leave it out.
                sample(
                    1.0 + 2.0 * a + 0.5 * b - 0.3 * c,
                    &[("a", a), ("b", b), ("c", c)],
                    false,
                )
            })
            .collect();
        let refs: Vec<&Sample> = samples.iter().collect();
        let (floor, w) = nnls_fit(&refs, &["a".into(), "b".into(), "c".into()]).unwrap();
        assert_eq!(w[2], 0.0);
        assert!(
            (w[0] - 2.0).abs() < 0.3 && (w[1] - 0.5).abs() < 0.3,
            "{w:?}"
        );
        assert!(floor > 0.5 && floor < 1.5, "{floor}");
    }

    #[test]
    fn nested_selection_cannot_pick_a_lucky_noise_feature_after_the_fact() {
        // y follows "signal" exactly; 30 noise features exist. Nested selection must find
        // the signal in (nearly) every fold and predict well; the two-group baseline, with
        // no regime difference here, must lose with a CI below zero.
        let mut rng = Rng::new(3);
        let samples: Vec<Sample> = (0..20)
            .map(|i| {
                let x = i as f64;
                let mut f = vec![("signal".to_string(), x)];
                f.extend((0..30).map(|k| (format!("noise{k}"), rng.unit())));
                Sample {
                    y: 10.0 + x,
                    features: f.into_iter().collect(),
                    capped: i % 2 == 0,
                }
            })
            .collect();
        let mut family = vec![Candidate::Line("signal".into())];
        family.extend((0..30).map(|k| Candidate::Line(format!("noise{k}"))));
        let s = select(&samples, &family, &[Candidate::TwoGroup]).unwrap();
        assert!(s.chosen["signal"] >= 19, "{:?}", s.chosen);
        assert!(s.nested.max_pct.unwrap() < 1e-6);
        let (d, lo, hi) = s.versus[0].diff_pp.unwrap();
        assert!(d < 0.0 && hi < 0.0, "{d} [{lo}, {hi}]");
    }

    #[test]
    fn two_group_mean_predicts_by_regime() {
        let s: Vec<Sample> = [(1.0, false), (1.2, false), (3.0, true), (3.2, true)]
            .iter()
            .map(|&(y, c)| sample(y, &[], c))
            .collect();
        let train: Vec<&Sample> = s[1..].iter().collect();
        assert_eq!(Candidate::TwoGroup.predict(&train, &s[0]), Some(1.2));
    }
}
