//! The reports as text: what `perfwatt infer` prints (one device, or the host of several).
//!
//! In: `InferReport`, `HostSummary`. Out: a few lines each, with n and CIs where measured.

use super::{AbUnit, EnergyReport, HostSummary, InferReport};
use crate::stats::Estimate;

impl InferReport {
    /// What `perfwatt infer` prints: speed, energy, the first sequence's text.
    pub fn to_text(&self) -> String {
        let r = self;
        let e = &r.energy;
        let f = |o: Option<Estimate>, unit: &str| {
            o.map(|e| {
                format!(
                    "{:.4} {unit} [{:.4}, {:.4}]",
                    e.mean, e.ci95_low, e.ci95_high
                )
            })
            .unwrap_or_else(|| "n/a".into())
        };
        format!(
        "device {} | {} | batch {} | prompt {} tok | {} new tok\n\
         latency p50 {:.3} s  p95 {:.3} s  p99 {:.3} s | TTFT p50 {:.3} s | TPOT p50 {:.4} s\n\
         tokens/s: output {:.1}  decode {:.1}  input {:.1}\n\
         energy: {} | J/token {} | avg W {}{}\n{}\
         sample: {:?}\n",
        r.device,
        r.config.precision.name(),
        r.batch,
        r.prompt_tokens,
        r.new_tokens,
        r.latency_s.p50,
        r.latency_s.p95,
        r.latency_s.p99,
        r.ttft_s.p50,
        r.tpot_s.p50,
        r.tokens_per_s_output.mean,
        r.tokens_per_s_decode.mean,
        r.tokens_per_s_input.mean,
        f(e.joules, "J"),
        f(e.j_per_token, "J"),
        f(e.avg_w, "W"),
        e.reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        energy_notes(e),
        r.generated.first().map(|s| s.as_str()).unwrap_or(""),
    ) + &r
        .sampler_ab
        .as_ref()
        .map(|a| {
            format!(
                "NVML sampler overhead over {} {} pairs: mean {:+.2}% [{:+.2}, {:+.2}], median {:+.2}% {}\n",
                a.pairs,
                if a.unit == AbUnit::Steps { "decode-step" } else { "run" },
                a.overhead_pct.mean,
                a.overhead_pct.ci95_low,
                a.overhead_pct.ci95_high,
                a.overhead_pct_median,
                a.overhead_pct_median_ci95
                    .map(|(l, h)| format!("[{l:+.2}, {h:+.2}]"))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_default()
    }
}

/// Idle, above-idle energy, the counter's period and the power-series check: one line each
/// when measured (95% CIs are over runs, n = runs).
fn energy_notes(e: &EnergyReport) -> String {
    let mut out = String::new();
    if let (Some(i), Some(a)) = (&e.idle, e.joules_above_idle) {
        out.push_str(&format!(
            "above idle: {:.3} J [{:.3}, {:.3}] per run (n = {} runs, {}) | idle {:.1} W: median of {} x {:.0} s windows before and after, drift {:+.1} W\n",
            a.mean, a.ci95_low, a.ci95_high, a.n,
            e.energy_basis.as_deref().unwrap_or("per run"),
            i.median_w, i.before_w.len() + i.after_w.len(), i.window_s, i.drift_w.unwrap_or(f64::NAN),
        ));
    }
    if let Some(p) = e.counter_period_s {
        out.push_str(&format!(
            "energy counter updates every {:.1} ms | power series ({} field) vs counter per run: median {:+.1}%, {} of {} runs differ by more than 5%\n",
            p * 1e3,
            e.power_field.as_deref().unwrap_or("?"),
            e.power_check_median_diff_pct.unwrap_or(f64::NAN),
            e.power_check_flagged,
            e.power_check.len(),
        ));
    }
    out
}

impl HostSummary {
    /// What `infer --devices` prints after every device's own summary.
    pub fn to_text(&self) -> String {
        let h = self;
        let e = &h.energy;
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or_else(|| "n/a".into(), f);
        let gpus: Vec<String> = e
            .per_gpu
            .iter()
            .map(|g| format!("{} {}", g.device, opt(g.joules, &|j| format!("{j:.1} J"))))
            .collect();
        format!(
        "--- host: {} devices, one window of {:.2} s\n\
         latency p50 {:.3} s  p99 {:.3} s | TTFT p50 {:.3} s | TPOT p50 {:.4} s  p99 {:.4} s (pooled: {} steps)\n\
         tokens/s output {:.1} ({} tokens) | same tokens on every device: {}\n\
         energy {} ({}) | one window over all GPUs {} (sum {}) | J/token {} above idle {} | avg W {}\n{}",
        h.devices.len(),
        h.window_s,
        h.latency_s.p50,
        h.latency_s.p99,
        h.ttft_s.p50,
        h.tpot_s.p50,
        h.tpot_s.p99,
        h.tpot_s.samples,
        h.tokens_per_s_output,
        h.output_tokens,
        h.same_tokens,
        opt(e.joules, &|j| format!("{j:.1} J")),
        gpus.join(" + "),
        opt(e.one_window_joules, &|j| format!("{j:.1} J")),
        opt(e.sum_vs_one_window_pct, &|p| format!("{p:+.2}%")),
        opt(e.j_per_token, &|j| format!("{j:.4}")),
        opt(e.j_per_token_above_idle, &|j| format!("{j:.4}")),
        opt(e.avg_w, &|w| format!("{w:.1}")),
        e.reason.as_ref().map_or_else(String::new, |r| format!("energy n/a: {r}\n")),
    )
    }
}
