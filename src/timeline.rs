//! Timeline traces in the Chrome trace-event format (what Perfetto and chrome://tracing
//! open): a leaf.
//!
//! In: processes (a command, a GPU), each with counter tracks (power, energy, clocks:
//! (seconds, value) series) and spans (phases, runs: named [start, end] windows), all on
//! one clock in seconds. Out: the trace-event JSON (`{"traceEvents": [...]}`, timestamps in
//! microseconds), written atomically. Spans that overlap without nesting go on separate
//! threads of their process, since a viewer draws one thread's spans as a stack.

use std::path::Path;

use serde_json::{json, Value};

use crate::energy::PowerSample;
use crate::error::Result;

/// A named counter track: one or more series (`args` of one "C" event) on one time base.
#[derive(Debug, Clone)]
pub struct Counter {
    pub name: String,
    /// Series name -> (seconds, value) points.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

#[derive(Debug, Clone)]
pub struct Span {
    pub name: String,
    pub start_s: f64,
    pub end_s: f64,
    pub args: Value,
}

#[derive(Debug, Clone, Default)]
pub struct Process {
    pub name: String,
    pub counters: Vec<Counter>,
    pub spans: Vec<Span>,
}

fn us(s: f64) -> f64 {
    // Whole nanoseconds: the viewer's resolution, and no float noise in the file.
    (s * 1e9).round() / 1e3
}

/// Thread (lane) of each span: the first lane where it nests in or is disjoint from every
/// span already there.
fn lanes(spans: &[Span]) -> Vec<usize> {
    let mut lanes: Vec<Vec<(f64, f64)>> = Vec::new();
    let fits = |lane: &[(f64, f64)], a: f64, b: f64| {
        lane.iter()
            .all(|&(x, y)| b <= x || a >= y || (a >= x && b <= y) || (x >= a && y <= b))
    };
    spans
        .iter()
        .map(|s| {
            let (a, b) = (s.start_s, s.end_s);
            let i = match lanes.iter().position(|l| fits(l, a, b)) {
                Some(i) => i,
                None => {
                    lanes.push(Vec::new());
                    lanes.len() - 1
                }
            };
            lanes[i].push((a, b));
            i
        })
        .collect()
}

/// The trace-event JSON of `processes` (pid = position + 1), with `meta` as `otherData`.
pub fn to_json(processes: &[Process], meta: Value) -> Value {
    let mut events = Vec::new();
    for (p, proc_) in processes.iter().enumerate() {
        let pid = p + 1;
        events.push(
            json!({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
            "args": {"name": proc_.name}}),
        );
        events.push(
            json!({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
            "args": {"sort_index": pid}}),
        );
        for (span, tid) in proc_.spans.iter().zip(lanes(&proc_.spans)) {
            events.push(json!({"ph": "X", "name": span.name, "pid": pid, "tid": tid,
                "ts": us(span.start_s), "dur": us(span.end_s - span.start_s).max(0.0),
                "args": span.args}));
        }
        for c in &proc_.counters {
            // One "C" event per time stamp carries every series that has a point there.
            let mut stamps: Vec<f64> = c
                .series
                .iter()
                .flat_map(|s| s.1.iter().map(|p| p.0))
                .collect();
            stamps.sort_by(f64::total_cmp);
            stamps.dedup();
            let mut next = vec![0usize; c.series.len()];
            for t in stamps {
                let mut args = serde_json::Map::new();
                for (k, (name, pts)) in c.series.iter().enumerate() {
                    if let Some(&(pt, v)) = pts.get(next[k]) {
                        if pt == t {
                            args.insert(name.clone(), json!(v));
                            next[k] += 1;
                        }
                    }
                }
                events.push(json!({"ph": "C", "name": c.name, "pid": pid, "tid": 0,
                    "ts": us(t), "args": args}));
            }
        }
    }
    json!({"traceEvents": events, "displayTimeUnit": "ms", "otherData": meta})
}

/// A GPU's counter tracks from its NVML samples: power (both fields), energy since
/// `e0_mj` (the counter at the trace's origin), SM clock, utilisation.
pub fn gpu_counters(samples: &[PowerSample], e0_mj: Option<f64>) -> Vec<Counter> {
    let series = |f: &dyn Fn(&PowerSample) -> Option<f64>| -> Vec<(f64, f64)> {
        samples
            .iter()
            .filter_map(|s| Some((s.t_s, f(s)?)))
            .collect()
    };
    let counter = |name: &str, parts: Vec<(&str, Vec<(f64, f64)>)>| Counter {
        name: name.into(),
        series: parts.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    };
    vec![
        counter(
            "power (W)",
            vec![
                ("averaged field", series(&|s| s.power_w)),
                ("instantaneous field", series(&|s| s.power_instant_w)),
            ],
        ),
        counter(
            "energy (J)",
            vec![(
                "counter",
                series(&|s| Some((s.energy_mj? as f64 - e0_mj?) / 1000.0)),
            )],
        ),
        counter(
            "SM clock (MHz)",
            vec![("sm", series(&|s| s.sm_clock_mhz.map(f64::from)))],
        ),
        counter(
            "GPU utilization (%)",
            vec![("gpu", series(&|s| s.gpu_util_pct.map(f64::from)))],
        ),
    ]
}

/// Write the trace of `processes` to `path` atomically.
pub fn write(path: &Path, processes: &[Process], meta: Value) -> Result<()> {
    let text = serde_json::to_string(&to_json(processes, meta)).expect("serializable");
    crate::files::write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(name: &str, a: f64, b: f64) -> Span {
        Span {
            name: name.into(),
            start_s: a,
            end_s: b,
            args: json!({}),
        }
    }

    #[test]
    fn overlapping_spans_get_their_own_thread_and_counters_merge_by_time() {
        let p = Process {
            name: "cmd".into(),
            spans: vec![
                span("a", 0.0, 2.0),
                span("in", 0.5, 1.0),
                span("x", 1.5, 3.0),
            ],
            counters: vec![Counter {
                name: "power (W)".into(),
                series: vec![
                    ("averaged".into(), vec![(0.0, 1.0), (0.01, 2.0)]),
                    ("instant".into(), vec![(0.01, 5.0)]),
                ],
            }],
        };
        let v = to_json(&[p], json!({"k": 1}));
        let ev = v["traceEvents"].as_array().unwrap();
        let xs: Vec<(&str, u64, f64, f64)> = ev
            .iter()
            .filter(|e| e["ph"] == "X")
            .map(|e| {
                let f = |k: &str| e[k].as_f64().unwrap();
                (
                    e["name"].as_str().unwrap(),
                    e["tid"].as_u64().unwrap(),
                    f("ts"),
                    f("dur"),
                )
            })
            .collect();
        assert_eq!(
            xs,
            [
                ("a", 0, 0.0, 2e6),
                ("in", 0, 5e5, 5e5),
                ("x", 1, 1.5e6, 1.5e6)
            ]
        );
        let cs: Vec<&Value> = ev.iter().filter(|e| e["ph"] == "C").collect();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["args"], json!({"averaged": 1.0}));
        assert_eq!(cs[1]["args"], json!({"averaged": 2.0, "instant": 5.0}));
        assert_eq!(cs[1]["ts"], json!(10000.0));
        assert_eq!(v["otherData"]["k"], 1);
    }
}
