//! `perfwatt load` against a mock OpenAI server (tests/load/mock_openai.py, the standard
//! library's HTTP server) whose latencies are set: what load measures is what the server
//! did, its percentiles are those of the requests it recorded, and a server that errors or
//! stalls is reported with a non-zero exit.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use perfwatt::stats::percentile;
use serde_json::Value;

struct Mock(Child, u16);

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mock(args: &[&str]) -> Mock {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/load/mock_openai.py");
    let mut c = Command::new("python3")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .expect("PORT line")
        .parse()
        .unwrap();
    Mock(c, port)
}

fn load(m: &Mock, out: &Path, args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_perfwatt"))
        .args([
            "load",
            "--url",
            &format!("http://127.0.0.1:{}", m.1),
            "--idle-s",
            "0",
            "--out",
        ])
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn rows(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn latencies_are_the_servers_and_percentiles_those_of_the_requests() {
    let m = mock(&["--ttft-ms", "80", "--itl-ms", "20", "--tokens", "5"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (code, err) = load(
        &m,
        &out,
        &[
            "--rate",
            "8,inf",
            "--requests",
            "6",
            "--warmup",
            "0.3",
            "--replicates",
            "2",
            "--max-tokens",
            "5",
            "--slo-ttft",
            "2000",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let rows = rows(&out);
    assert_eq!(rows.len(), 4, "2 loads x 2 replicates");
    // Rounds alternate the order of the loads.
    let order: Vec<&str> = rows.iter().map(|r| r["load"].as_str().unwrap()).collect();
    assert_eq!(order, ["8", "inf", "inf", "8"]);
    let reqs = std::fs::read_to_string(out.join("requests.csv")).unwrap();
    let lines: Vec<Vec<&str>> = reqs
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert!(
        lines.iter().any(|l| l[3] == "true"),
        "warm-up requests are recorded, marked"
    );
    // At an infinite rate the warm-up is one wave of --requests, not a flood for --warmup s.
    let inf_warmup = lines
        .iter()
        .filter(|l| l[0] == "inf" && l[3] == "true")
        .count();
    assert_eq!(inf_warmup, 2 * 6);
    for r in &rows {
        assert_eq!(
            (r["requests"].as_u64(), r["completed"].as_u64()),
            (Some(6), Some(6)),
            "{r}"
        );
        let ttft = r["ttft"]["p50"].as_f64().unwrap();
        assert!(
            (0.075..0.5).contains(&ttft),
            "TTFT p50 {ttft} s, the server waits 80 ms"
        );
        let tpot = r["tpot"]["p50"].as_f64().unwrap();
        assert!(
            (0.018..0.2).contains(&tpot),
            "TPOT p50 {tpot} s, the server waits 20 ms"
        );
        // The row's percentiles are those of its own requests in requests.csv.
        let mine: Vec<f64> = lines
            .iter()
            .filter(|l| {
                l[0] == r["load"].as_str().unwrap()
                    && l[1] == r["replicate"].to_string()
                    && l[3] == "false"
            })
            .map(|l| l[5].parse::<f64>().unwrap())
            .collect();
        assert_eq!(mine.len(), 6);
        for (q, k) in [(50.0, "p50"), (90.0, "p90"), (99.0, "p99")] {
            let want = percentile(&mine, q).unwrap();
            assert!(
                (r["ttft"][k].as_f64().unwrap() - want).abs() < 2e-6,
                "{k}: {r}"
            );
        }
        assert!(r["goodput_rps"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["gpu_j"].is_null() || r["gpu_j"].as_f64().unwrap() > 0.0);
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("## Latency (ms)") && md.contains("| inf |") && md.contains("## Energy"),
        "{md}"
    );
    for p in ["latency", "throughput"] {
        assert!(
            std::fs::metadata(out.join("plots").join(format!("{p}.svg")))
                .unwrap()
                .len()
                > 2000
        );
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let n = csv.lines().next().unwrap().split(',').count();
    assert!(
        n > 20 && csv.lines().skip(1).all(|l| l.split(',').count() == n),
        "{csv}"
    );
}

#[test]
fn chat_endpoint_and_closed_loop() {
    let m = mock(&["--ttft-ms", "20", "--itl-ms", "5", "--tokens", "3"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let trace = dir.path().join("trace.json");
    let (code, err) = load(
        &m,
        &out,
        &[
            "--chat",
            "--concurrency",
            "1,3",
            "--requests",
            "6",
            "--warmup",
            "0",
            "--trace",
            trace.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    for r in rows(&out) {
        assert_eq!(r["completed"], 6, "{r}");
        assert_eq!(r["window"], "to the last completion");
        assert!(r["achieved_rps"].as_f64().unwrap() > 1.0, "{r}");
    }
    // The timeline: a process per load, each request a span; at concurrency 3 requests
    // overlap, so they sit on separate lanes.
    let t: Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let ev = t["traceEvents"].as_array().unwrap();
    let spans: Vec<&Value> = ev
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"].as_str().unwrap().starts_with("request"))
        .collect();
    assert_eq!(spans.len(), 12);
    let lanes: std::collections::BTreeSet<(u64, u64)> = spans
        .iter()
        .map(|e| (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap()))
        .collect();
    assert_eq!(lanes.iter().filter(|l| l.0 == 1).count(), 1, "c1: one lane");
    assert!(
        lanes.iter().filter(|l| l.0 == 2).count() >= 2,
        "c3: overlapping requests on lanes"
    );
}

#[test]
fn a_server_that_errors_or_stalls_is_reported_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let m = mock(&["--mode", "error"]);
    let out = dir.path().join("err");
    let (code, err) = load(
        &m,
        &out,
        &["--rate", "20", "--requests", "3", "--warmup", "0"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("3 of 3 measured requests failed") && err.contains("http 503"),
        "{err}"
    );
    assert_eq!(rows(&out)[0]["errors"]["http 503"], 3);
    assert!(std::fs::read_to_string(out.join("report.md"))
        .unwrap()
        .contains("http 503: 3"));

    let m = mock(&["--mode", "stall"]);
    let out = dir.path().join("stall");
    let t = std::time::Instant::now();
    let (code, err) = load(
        &m,
        &out,
        &[
            "--rate",
            "inf",
            "--requests",
            "2",
            "--warmup",
            "0",
            "--timeout-s",
            "0.5",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(t.elapsed().as_secs_f64() < 20.0);
    assert_eq!(rows(&out)[0]["errors"]["timeout"], 2, "{err}");

    // Nobody listening: connect errors, and without --model the model query says why.
    drop(m);
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = Mock(Command::new("true").spawn().unwrap(), free);
    let (code, err) = load(
        &gone,
        &dir.path().join("gone"),
        &["--rate", "1", "--requests", "1"],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot ask the server for its model"), "{err}");
    let (code, _) = load(
        &gone,
        &dir.path().join("gone2"),
        &[
            "--model",
            "m",
            "--rate",
            "50",
            "--requests",
            "2",
            "--warmup",
            "0",
        ],
    );
    assert_eq!(code, Some(1));
    assert_eq!(rows(&dir.path().join("gone2"))[0]["errors"]["connect"], 2);
    // Bad input: one clear error each.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"ok\"}\n{\"nope\": 1}\n").unwrap();
    let (code, err) = load(
        &gone,
        &dir.path().join("b"),
        &["--prompts", bad.to_str().unwrap()],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("bad.jsonl:2") && err.contains("\"text\""),
        "{err}"
    );
    let (code, err) = load(&gone, &dir.path().join("b"), &["--rate", "0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not a rate"), "{err}");
}
