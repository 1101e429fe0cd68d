//! A load run's files: `results.jsonl` / `results.csv` (one row per load and replicate),
//! `requests.csv` (one row per request, warm-up included and marked), `report.md` with
//! latency, throughput and energy per load, and bar plots of them per load.
//!
//! In: a `LoadRun` and its config. Out: the files, written atomically; their paths.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{LoadConfig, LoadRun, RequestRecord, RunRow};
use crate::error::Result;
use crate::files::write_atomic;
use crate::render::plot::{bars, both, render, BLUE, GREEN, ORANGE};
use crate::render::section::{image_links, table, Align};
use crate::stats::{percentile, Estimate};

pub fn write(run: &LoadRun, cfg: &LoadConfig, dir: &Path) -> Result<Vec<PathBuf>> {
    let files = [
        dir.join("report.md"),
        dir.join("results.csv"),
        dir.join("results.jsonl"),
        dir.join("requests.csv"),
    ];
    let jsonl: String = run
        .rows
        .iter()
        .map(|r| serde_json::to_string(r).expect("row") + "\n")
        .collect();
    write_atomic(&files[1], rows_csv(&run.rows).as_bytes())?;
    write_atomic(&files[2], jsonl.as_bytes())?;
    write_atomic(&files[3], requests_csv(&run.requests).as_bytes())?;
    let plots = plots(run, &dir.join("plots"))?;
    write_atomic(&files[0], markdown(run, cfg, &plots).as_bytes())?;
    Ok(files.into_iter().chain(plots).collect())
}

/// The trace-event timeline of a load run: a process per load, each request a span from
/// its send to the end of its stream with its wait for the first token nested in it (run
/// clock: seconds since the run began).
pub fn timeline(run: &LoadRun) -> Vec<crate::timeline::Process> {
    use crate::timeline::{Process, Span};
    let mut out: Vec<Process> = Vec::new();
    for q in &run.requests {
        let name = format!("load {} round {}", q.load, q.replicate + 1);
        let i = match out.iter().position(|p| p.name == name) {
            Some(i) => i,
            None => {
                out.push(Process {
                    name,
                    ..Default::default()
                });
                out.len() - 1
            }
        };
        let what = if q.warmup {
            "warm-up request"
        } else {
            "request"
        };
        out[i].spans.push(Span {
            name: format!("{what} {}", q.id),
            start_s: q.sent_s,
            end_s: q.end_s,
            args: serde_json::json!({"ttft_s": q.ttft_s(), "output_tokens": q.output_tokens, "error": q.error}),
        });
        if let Some(first) = q.first_token_s {
            out[i].spans.push(Span {
                name: "to the first token".into(),
                start_s: q.sent_s,
                end_s: first,
                args: serde_json::json!({}),
            });
        }
    }
    out
}

/// A row as flat columns: nested objects joined with `_` (ttft_p50), the error map as
/// `kind:count;...`.
fn flat(r: &RunRow) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}_{k}")
                    };
                    walk(&key, x, out);
                }
            }
            Value::Null => out.push((prefix.into(), String::new())),
            Value::String(s) => out.push((prefix.into(), crate::vcd::toggles::csv_field(s))),
            x => out.push((prefix.into(), x.to_string())),
        }
    }
    let mut v = serde_json::to_value(r).expect("row");
    let errors: Vec<String> = r.errors.iter().map(|(k, n)| format!("{k}:{n}")).collect();
    v["errors"] = Value::String(errors.join(";"));
    let mut out = Vec::new();
    walk("", &v, &mut out);
    out
}

fn rows_csv(rows: &[RunRow]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let header: Vec<String> = flat(first).into_iter().map(|c| c.0).collect();
    let mut out = header.join(",") + "\n";
    for r in rows {
        out += &(flat(r)
            .into_iter()
            .map(|c| c.1)
            .collect::<Vec<_>>()
            .join(",")
            + "\n");
    }
    out
}

fn requests_csv(reqs: &[RequestRecord]) -> String {
    let mut out = String::from(
        "load,replicate,id,warmup,sent_s,ttft_s,tpot_s,e2e_s,output_tokens,error,error_detail\n",
    );
    let f = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.6}"));
    for r in reqs {
        let _ = writeln!(
            out,
            "{},{},{},{},{:.6},{},{},{:.6},{},{},{}",
            r.load,
            r.replicate,
            r.id,
            r.warmup,
            r.sent_s,
            f(r.ttft_s()),
            f(r.tpot_s()),
            r.e2e_s(),
            r.output_tokens,
            r.error.as_deref().unwrap_or(""),
            crate::vcd::toggles::csv_field(r.error_detail.as_deref().unwrap_or("")),
        );
    }
    out
}

/// The loads in the order given, each with its rows (one per replicate) and its measured
/// completed requests pooled over replicates.
fn per_load<'a>(run: &'a LoadRun) -> Vec<(String, Vec<&'a RunRow>, Vec<&'a RequestRecord>)> {
    let mut out: Vec<(String, Vec<&RunRow>, Vec<&RequestRecord>)> = Vec::new();
    for r in &run.rows {
        match out.iter_mut().find(|(l, _, _)| *l == r.load) {
            Some(e) => e.1.push(r),
            None => out.push((r.load.clone(), vec![r], Vec::new())),
        }
    }
    for (label, _, reqs) in &mut out {
        reqs.extend(
            run.requests
                .iter()
                .filter(|q| q.load == *label && !q.warmup && q.ok()),
        );
    }
    out
}

fn ms(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| format!("{:.1}", x * 1e3))
}

fn num(v: Option<f64>, d: usize) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.d$}"))
}

/// Mean and 95% CI over replicates of one per-replicate figure, or the single value.
fn over_reps(rows: &[&RunRow], f: impl Fn(&RunRow) -> Option<f64>, scale: f64, d: usize) -> String {
    let v: Vec<f64> = rows
        .iter()
        .filter_map(|r| f(r))
        .map(|x| x * scale)
        .collect();
    match (v.len(), Estimate::of(&v)) {
        (0, _) => "n/a".into(),
        (1, _) => format!("{:.d$}", v[0]),
        (_, Some(e)) => format!("{:.d$} [{:.d$}, {:.d$}]", e.mean, e.ci95_low, e.ci95_high),
        _ => "n/a".into(),
    }
}

fn markdown(run: &LoadRun, cfg: &LoadConfig, plots: &[PathBuf]) -> String {
    let loads = per_load(run);
    let mut md = format!(
        "# perfwatt load\n\nServer `{}`, model `{}`, `{}`, {} measured requests per load{}, max {} tokens, {} replicate(s) in alternating order, {} s warm-up per load, seed {}. Data: `results.csv` (a row per load and replicate), `requests.csv` (a row per request).\n\n",
        cfg.url,
        run.model,
        cfg.endpoint.path(),
        cfg.requests,
        cfg.duration_s.map_or(String::new(), |d| format!(" (or {d} s)")),
        cfg.max_tokens,
        cfg.replicates.max(1),
        cfg.warmup_s,
        cfg.seed
    );
    md += "## Latency (ms)\n\nPercentiles of every completed measured request of a load, pooled over replicates (ITL: every gap between streamed chunks). With two or more replicates the p50 and p99 columns add the mean and 95% CI over replicates of each replicate's own percentile.\n\n";
    let rows: Vec<Vec<String>> = loads
        .iter()
        .map(|(label, reps, reqs)| {
            let col = |f: &dyn Fn(&RequestRecord) -> Option<f64>| -> Vec<f64> {
                reqs.iter().filter_map(|r| f(r)).collect()
            };
            let p = |v: &[f64], q: f64| ms(percentile(v, q));
            let ttft = col(&|r| r.ttft_s());
            let tpot = col(&|r| r.tpot_s());
            let e2e = col(&|r| Some(r.e2e_s()));
            let itl: Vec<f64> = reqs.iter().flat_map(|r| r.itl_s()).collect();
            let ci = |f: &dyn Fn(&RunRow) -> Option<f64>| {
                if reps.len() > 1 {
                    format!(" ({})", over_reps(reps, f, 1e3, 1))
                } else {
                    String::new()
                }
            };
            vec![
                label.clone(),
                reqs.len().to_string(),
                format!("{}{}", p(&ttft, 50.0), ci(&|r| r.ttft.p50)),
                p(&ttft, 90.0),
                format!("{}{}", p(&ttft, 99.0), ci(&|r| r.ttft.p99)),
                format!("{}{}", p(&tpot, 50.0), ci(&|r| r.tpot.p50)),
                p(&tpot, 99.0),
                p(&itl, 50.0),
                p(&itl, 99.0),
                format!("{}{}", p(&e2e, 50.0), ci(&|r| r.e2e.p50)),
                p(&e2e, 99.0),
            ]
        })
        .collect();
    md += &table(
        &[
            ("load", Align::Left),
            ("requests", Align::Right),
            ("TTFT p50", Align::Right),
            ("TTFT p90", Align::Right),
            ("TTFT p99", Align::Right),
            ("TPOT p50", Align::Right),
            ("TPOT p99", Align::Right),
            ("ITL p50", Align::Right),
            ("ITL p99", Align::Right),
            ("E2E p50", Align::Right),
            ("E2E p99", Align::Right),
        ],
        rows,
    );
    md += &throughput_section(&loads, cfg);
    md += &energy_section(run, &loads);
    md += &image_links(plots);
    md += "## Definitions\n\n- Load `R`: Poisson arrivals at R requests/s (seeded); `inf`: every request at once; `cN`: N requests in flight (closed loop).\n- The measured window runs from a load's first measured arrival to its last; throughput counts the requests that completed and the tokens that arrived in it, so warm-up and the drain after the last arrival are excluded. For `inf` and closed loops the window runs to the last completion.\n- TTFT: send to the first chunk with text; TPOT: (last chunk - first chunk) / (output tokens - 1); E2E: send to the end of the stream. Output tokens: the server's `usage` when it reports one, else the text chunks.\n";
    md
}

fn throughput_section(
    loads: &[(String, Vec<&RunRow>, Vec<&RequestRecord>)],
    cfg: &LoadConfig,
) -> String {
    let mut md = String::from("\n## Throughput, goodput and errors\n\n");
    if let (None, None) = (cfg.slo_ttft_s, cfg.slo_tpot_s) {
        md += "No SLO given (`--slo-ttft`, `--slo-tpot`): goodput is n/a.\n\n";
    } else {
        let _ = writeln!(
            md,
            "Goodput: completed requests per second that met TTFT <= {} ms and TPOT <= {} ms.\n",
            ms(cfg.slo_ttft_s),
            ms(cfg.slo_tpot_s)
        );
    }
    let rows: Vec<Vec<String>> = loads
        .iter()
        .map(|(label, reps, _)| {
            let errors: std::collections::BTreeMap<String, usize> = reps
                .iter()
                .flat_map(|r| r.errors.iter())
                .fold(Default::default(), |mut m, (k, n)| {
                    *m.entry(k.clone()).or_insert(0) += n;
                    m
                });
            vec![
                label.clone(),
                over_reps(reps, |r| r.achieved_rps, 1.0, 2),
                over_reps(reps, |r| r.output_tps, 1.0, 1),
                over_reps(reps, |r| r.goodput_rps, 1.0, 2),
                reps.iter().map(|r| r.failed).sum::<usize>().to_string(),
                if errors.is_empty() {
                    "none".into()
                } else {
                    errors
                        .iter()
                        .map(|(k, n)| format!("{k}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ]
        })
        .collect();
    md += &table(
        &[
            ("load", Align::Left),
            ("achieved req/s", Align::Right),
            ("output tok/s", Align::Right),
            ("goodput req/s", Align::Right),
            ("failed", Align::Right),
            ("errors", Align::Left),
        ],
        rows,
    );
    md
}

fn energy_section(run: &LoadRun, loads: &[(String, Vec<&RunRow>, Vec<&RequestRecord>)]) -> String {
    let mut md = String::from("\n## Energy over the measured window\n\n");
    if let Some(why) = &run.energy_reason {
        let _ = writeln!(md, "No GPU energy: {why}.");
    } else {
        for (i, name, idle) in &run.gpus {
            let _ = writeln!(
                md,
                "- GPU {i} {name}: idle {} W (median of the windows before the run).",
                num(*idle, 1)
            );
        }
        md += "\nThe GPUs' energy counters over each window, summed over GPUs; per completed request and per output token of the window. This is the server's energy whatever it runs for, measured from outside: how a shared batch's energy splits between its requests is not attributed here.\n\n";
        let rows: Vec<Vec<String>> = loads
            .iter()
            .map(|(label, reps, _)| {
                vec![
                    label.clone(),
                    over_reps(reps, |r| r.gpu_j, 1.0, 1),
                    over_reps(reps, |r| r.j_per_request, 1.0, 2),
                    over_reps(reps, |r| r.above_idle_j_per_request, 1.0, 2),
                    over_reps(reps, |r| r.j_per_output_token, 1.0, 3),
                ]
            })
            .collect();
        md += &table(
            &[
                ("load", Align::Left),
                ("GPU J", Align::Right),
                ("J/request", Align::Right),
                ("above idle J/request", Align::Right),
                ("J/output token", Align::Right),
            ],
            rows,
        );
    }
    match &run.cpu_reason {
        Some(why) => {
            let _ = writeln!(md, "\nCPU energy (RAPL) not measured: {why}.\n");
        }
        None => {
            let per: Vec<String> = loads
                .iter()
                .map(|(l, reps, _)| format!("{l}: {} J", over_reps(reps, |r| r.cpu_j, 1.0, 1)))
                .collect();
            let _ = writeln!(
                md,
                "\nCPU package energy (RAPL) over the window: {}.\n",
                per.join(", ")
            );
        }
    }
    md
}

/// Bars per load: latency percentiles, throughput, and energy per request when measured.
fn plots(run: &LoadRun, dir: &Path) -> Result<Vec<PathBuf>> {
    let loads = per_load(run);
    if loads.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    let cats: Vec<String> = loads.iter().map(|l| l.0.clone()).collect();
    let pooled = |f: &dyn Fn(&RequestRecord) -> Option<f64>, q: f64| -> Vec<f64> {
        loads
            .iter()
            .map(|(_, _, reqs)| {
                let v: Vec<f64> = reqs.iter().filter_map(|r| f(r)).collect();
                percentile(&v, q).map_or(f64::NAN, |x| x * 1e3)
            })
            .collect()
    };
    let mean = |f: &dyn Fn(&RunRow) -> Option<f64>| -> Vec<f64> {
        loads
            .iter()
            .map(|(_, reps, _)| {
                let v: Vec<f64> = reps.iter().filter_map(|r| f(r)).collect();
                if v.is_empty() {
                    f64::NAN
                } else {
                    v.iter().sum::<f64>() / v.len() as f64
                }
            })
            .collect()
    };
    let lat = [
        ("TTFT p50", BLUE, pooled(&|r| r.ttft_s(), 50.0)),
        ("TTFT p99", ORANGE, pooled(&|r| r.ttft_s(), 99.0)),
        ("E2E p50", GREEN, pooled(&|r| Some(r.e2e_s()), 50.0)),
    ];
    let tput = [("achieved req/s", BLUE, mean(&|r| r.achieved_rps))];
    let mut out = vec![
        render(
            dir,
            "latency",
            (900, 420),
            both!(|root| { bars(&root, "Latency per offered load", "ms", &cats, &lat, None) }),
        )?,
        render(
            dir,
            "throughput",
            (900, 420),
            both!(|root| {
                bars(
                    &root,
                    "Achieved throughput per offered load",
                    "requests/s",
                    &cats,
                    &tput,
                    None,
                )
            }),
        )?,
    ];
    if run.energy_reason.is_none() {
        let e = [
            ("J/request", BLUE, mean(&|r| r.j_per_request)),
            ("above idle", ORANGE, mean(&|r| r.above_idle_j_per_request)),
        ];
        out.push(render(
            dir,
            "energy",
            (900, 420),
            both!(|root| {
                bars(
                    &root,
                    "GPU energy per completed request",
                    "J",
                    &cats,
                    &e,
                    None,
                )
            }),
        )?);
    }
    Ok(out)
}
