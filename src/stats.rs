//! Small statistics, a leaf used by `capture`, `report` and the other reports: mean with a
//! 95% t-interval, percentiles, Pearson and Spearman correlation, bootstrap CIs,
//! least-squares fit, and a seeded random number generator.

use serde::Serialize;

/// Mean of repeated measurements with its 95% confidence interval (Student t).
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Estimate {
    pub mean: f64,
    pub ci95_low: f64,
    pub ci95_high: f64,
    pub n: usize,
}

/// One-sided 80% Student-t quantile (the power term of a minimum detectable effect).
fn t80(df: usize) -> f64 {
    const T: [f64; 10] = [
        1.376, 1.061, 0.978, 0.941, 0.920, 0.906, 0.896, 0.889, 0.883, 0.879,
    ];
    match df {
        0 => f64::NAN,
        d if d <= 10 => T[d - 1],
        d if d <= 30 => 0.86,
        _ => 0.842,
    }
}

/// Two-sided 95% Student-t quantile for `df` degrees of freedom.
fn t95(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        d if d <= 30 => T[d - 1],
        _ => 1.96,
    }
}

impl Estimate {
    /// The smallest true mean a two-sided test at 5% would detect with 80% power given
    /// this estimate's standard error: (t_0.975 + t_0.80) x SE, df = n - 1. None below 2.
    pub fn min_detectable(&self) -> Option<f64> {
        (self.n >= 2).then(|| {
            let se = (self.ci95_high - self.mean) / t95(self.n - 1);
            se * (t95(self.n - 1) + t80(self.n - 1))
        })
    }

    /// The estimate of `f` over the items where it has a value (runs with a counter
    /// reading, rounds of one pattern, ...).
    pub fn over<T>(items: &[T], f: impl Fn(&T) -> Option<f64>) -> Option<Estimate> {
        Estimate::of(&items.iter().filter_map(f).collect::<Vec<_>>())
    }

    pub fn of(xs: &[f64]) -> Option<Estimate> {
        if xs.is_empty() || xs.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n as f64;
        if n == 1 {
            return Some(Estimate {
                mean,
                ci95_low: mean,
                ci95_high: mean,
                n,
            });
        }
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let h = t95(n - 1) * (var / n as f64).sqrt();
        Some(Estimate {
            mean,
            ci95_low: mean - h,
            ci95_high: mean + h,
            n,
        })
    }
}

/// Percentiles of pooled samples (their count in `samples`: with few, p99 is about the
/// maximum) and the mean over runs with its 95% CI (`mean.n` = runs).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    #[serde(default)]
    pub samples: usize,
    pub mean: Estimate,
}

impl Percentiles {
    /// `pooled`: every request's (or token's) sample; `per_run`: one value per run.
    pub fn of(pooled: &[f64], per_run: &[f64]) -> Option<Self> {
        Some(Percentiles {
            p50: percentile(pooled, 50.0)?,
            p95: percentile(pooled, 95.0)?,
            p99: percentile(pooled, 99.0)?,
            samples: pooled.len(),
            mean: Estimate::of(per_run)?,
        })
    }
}

/// Percentile (0..=100) by linear interpolation between order statistics.
pub fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let r = (p / 100.0) * (v.len() - 1) as f64;
    let (lo, hi) = (r.floor() as usize, r.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (r - lo as f64))
}

pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len();
    if n < 2 || n != y.len() {
        return None;
    }
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        sxy += (x[i] - mx) * (y[i] - my);
        sxx += (x[i] - mx).powi(2);
        syy += (y[i] - my).powi(2);
    }
    if sxx == 0.0 || syy == 0.0 {
        return None;
    }
    Some(sxy / (sxx * syy).sqrt())
}

/// Average ranks (ties share the mean rank).
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            r[idx[k]] = avg;
        }
        i = j + 1;
    }
    r
}

pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    pearson(&ranks(x), &ranks(y))
}

/// Percentile-bootstrap 95% CI of `stat` over paired samples (deterministic seed).
pub fn bootstrap_ci(
    x: &[f64],
    y: &[f64],
    stat: fn(&[f64], &[f64]) -> Option<f64>,
    iters: usize,
) -> Option<(f64, f64)> {
    let n = x.len();
    if n < 3 {
        return None;
    }
    let mut rng = Rng::new(42);
    let mut vals = Vec::with_capacity(iters);
    let (mut bx, mut by) = (vec![0.0; n], vec![0.0; n]);
    for _ in 0..iters {
        for i in 0..n {
            let j = (rng.next_u64() % n as u64) as usize;
            bx[i] = x[j];
            by[i] = y[j];
        }
        if let Some(v) = stat(&bx, &by) {
            vals.push(v);
        }
    }
    if vals.len() < iters / 2 {
        return None;
    }
    Some((percentile(&vals, 2.5)?, percentile(&vals, 97.5)?))
}

/// Least squares y = a + b x: (a, b).
pub fn linear_fit(x: &[f64], y: &[f64]) -> Option<(f64, f64)> {
    let n = x.len();
    if n < 2 {
        return None;
    }
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let b = x
        .iter()
        .zip(y)
        .map(|(a, c)| (a - mx) * (c - my))
        .sum::<f64>()
        / sxx;
    Some((my - b * mx, b))
}

/// Leave-one-out prediction errors of the least-squares line: for each point, the line fit
/// to all the others predicts it; |predicted - actual| / |actual| in %. Empty with fewer
/// than 3 points (a line through 1 point is undefined).
pub fn loo_errors_pct(x: &[f64], y: &[f64]) -> Vec<f64> {
    if x.len() < 3 {
        return Vec::new();
    }
    (0..x.len())
        .filter_map(|i| {
            let (xs, ys): (Vec<f64>, Vec<f64>) = x
                .iter()
                .zip(y)
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, (&a, &b))| (a, b))
                .unzip();
            let (a, b) = linear_fit(&xs, &ys)?;
            (y[i] != 0.0).then(|| ((a + b * x[i] - y[i]) / y[i]).abs() * 100.0)
        })
        .collect()
}

/// xorshift64*: small, seedable, no dependency (bootstrap resampling, synthetic streams,
/// operand patterns).
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_detectable_effect_of_three_rounds() {
        // mean 2, sd 1, n 3: SE = 1/sqrt(3); (t_0.975,2 + t_0.80,2) = 4.303 + 1.061.
        let e = Estimate::of(&[1.0, 2.0, 3.0]).unwrap();
        let want = (4.303 + 1.061) / 3f64.sqrt();
        assert!((e.min_detectable().unwrap() - want).abs() < 1e-9);
        assert!(Estimate::of(&[1.0])
            .and_then(|e| e.min_detectable())
            .is_none());
    }

    #[test]
    fn loo_errors_are_zero_on_a_line_and_grow_off_it() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!(loo_errors_pct(&x, &[3.0, 5.0, 7.0, 9.0])
            .iter()
            .all(|e| e.abs() < 1e-9));
        let e = loo_errors_pct(&x, &[3.0, 5.0, 9.0, 9.0]);
        assert_eq!(e.len(), 4);
        assert!(e[2] > 10.0, "{e:?}");
        assert!(loo_errors_pct(&x[..2], &[1.0, 2.0]).is_empty());
    }

    #[test]
    fn estimates_and_correlations() {
        let e = Estimate::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((e.mean - 2.5).abs() < 1e-12);
        // sd = 1.291, se = 0.6455, t(3) = 3.182
        assert!((e.ci95_high - 2.5 - 3.182 * 0.645497).abs() < 1e-4);
        assert_eq!(percentile(&[3.0, 1.0, 2.0, 4.0], 50.0), Some(2.5));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 95.0), Some(4.8));
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!((pearson(&x, &[2.0, 4.0, 6.0, 8.0, 10.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((spearman(&x, &[1.0, 4.0, 9.0, 16.0, 100.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((spearman(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(
            linear_fit(&x, &[3.0, 5.0, 7.0, 9.0, 11.0]),
            Some((1.0, 2.0))
        );
        let (lo, hi) = bootstrap_ci(&x, &[1.1, 1.9, 3.2, 3.9, 5.1], pearson, 500).unwrap();
        assert!(lo > 0.9 && hi <= 1.0);
    }
}
