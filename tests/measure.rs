//! `perfwatt measure -- CMD` as a user runs it: exit codes passed through, phases timed from
//! stdout, stderr and the FIFO, interrupts forwarded with the report still written, RAPL
//! read from a powercap tree (a fixture the command itself advances), and the trace-event
//! timeline lined up with the report. Without NVML (CI) the energy fields carry the reason.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn measure(out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_perfwatt"));
    c.args(["measure", "--idle-s", "0", "--out"]).arg(out);
    c
}

fn report(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("measure.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn rapl_zone(root: &Path, zone: &str, name: &str, uj: u64) {
    let d = root.join(zone);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
    std::fs::write(d.join("energy_uj"), format!("{uj}\n")).unwrap();
    std::fs::write(d.join("max_energy_range_uj"), "262143328850\n").unwrap();
}

#[test]
fn phases_exit_code_rapl_and_trace() {
    let dir = tempfile::tempdir().unwrap();
    let (out, trace, rapl) = (
        dir.path().join("m"),
        dir.path().join("t.json"),
        dir.path().join("powercap"),
    );
    rapl_zone(&rapl, "intel-rapl:0", "package-0", 1_000_000);
    rapl_zone(&rapl, "intel-rapl:0:0", "dram", 0);
    // A sequential phase on stdout, a window begun on stderr and ended through the FIFO,
    // a marker without a name, and the package counter advanced by 4 J.
    let script = r#"echo hello
echo PERFWATT_PHASE load
sleep 0.3
echo PERFWATT_PHASE begin compute >&2
echo 5000000 > "$RAPL/intel-rapl:0/energy_uj"
sleep 0.3
echo "PERFWATT_PHASE end compute" > "$PERFWATT_PHASE_FIFO"
echo PERFWATT_PHASE
sleep 0.1
exit 3"#;
    let o = measure(&out)
        .arg("--trace")
        .arg(&trace)
        .env("PERFWATT_POWERCAP_ROOT", &rapl)
        .env("RAPL", &rapl)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.starts_with("hello\nPERFWATT_PHASE load\n"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("PERFWATT_PHASE begin compute"));

    let r = report(&out);
    assert_eq!(r["schema"], "perfwatt.measure/1");
    assert_eq!(r["exit"]["exit_code"], 3);
    let phases = r["phases"].as_array().unwrap();
    let get = |name: &str| {
        phases
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {r}"))
    };
    let f = |p: &Value, k: &str| p[k].as_f64().unwrap();
    let (load, compute) = (get("load"), get("compute"));
    assert_eq!(load["closed_by_exit"], true);
    assert_eq!(compute["closed_by_exit"], false);
    assert!(f(load, "start_s") < 0.2, "{load}");
    assert_eq!(f(load, "end_s"), f(&r, "duration_s"));
    let d = f(compute, "duration_s");
    assert!(
        (0.25..0.9).contains(&d),
        "compute lasted {d} s, slept 0.3 s"
    );
    assert!(f(compute, "start_s") >= 0.3 && f(compute, "end_s") < f(&r, "duration_s"));
    let problems = r["marker_problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("needs a phase name")),
        "{r}"
    );

    // No GPU here means a reason, never a zero; on a GPU machine, energy per phase.
    let gpus = r["gpus"].as_array().unwrap();
    assert_eq!(gpus.is_empty(), r["energy_reason"].is_string(), "{r}");
    for p in phases {
        assert_eq!(p["energy"].as_array().unwrap().len(), gpus.len());
    }
    assert!((f(&r["cpu"], "cpu_j") - 4.0).abs() < 1e-9, "{}", r["cpu"]);
    assert_eq!(r["cpu"]["dram_j"], 0.0);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| compute |")
            && md.contains("exited with code 3")
            && md.contains("Packages 4.000 J"),
        "{md}"
    );

    // The timeline: trace-event JSON whose spans are the report's phases, to the microsecond.
    let events = trace_events(&trace);
    for p in phases {
        let span = span_named(&events, p["name"].as_str().unwrap());
        assert!(
            (span["ts"].as_f64().unwrap() - f(p, "start_s") * 1e6).abs() < 0.01,
            "{span} {p}"
        );
        assert!(
            (span["dur"].as_f64().unwrap() - f(p, "duration_s") * 1e6).abs() < 0.01,
            "{span} {p}"
        );
    }
    // One process per GPU, each with its power counter track.
    let counters = events
        .iter()
        .filter(|e| e["ph"] == "C" && e["name"] == "power (W)");
    let pids: std::collections::BTreeSet<u64> =
        counters.map(|e| e["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids.len(), gpus.len());
}

/// The events of a trace-event file, each checked to be what the format allows.
fn trace_events(path: &Path) -> Vec<Value> {
    let t: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let events = t["traceEvents"].as_array().unwrap().clone();
    for e in &events {
        let ph = e["ph"].as_str().unwrap();
        assert!(["M", "X", "C"].contains(&ph), "{e}");
        assert!(
            e["pid"].is_u64() && e["tid"].is_u64() && e["name"].is_string(),
            "{e}"
        );
        if ph != "M" {
            assert!(e["ts"].as_f64().unwrap() >= -1e9, "{e}");
            assert!(e["args"].is_object(), "{e}");
        }
        if ph == "X" {
            assert!(e["dur"].as_f64().unwrap() >= 0.0, "{e}");
        }
    }
    events
}

fn span_named<'a>(events: &'a [Value], name: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["ph"] == "X" && e["name"] == name)
        .unwrap_or_else(|| panic!("no span {name}"))
}

/// `infer --trace`: each measured run a span holding its prefill and decode steps, at the
/// times the report gives.
#[test]
fn infer_trace_spans_are_the_reports_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (out, trace) = (dir.path().join("r.json"), dir.path().join("t.json"));
    let o = Command::new(env!("CARGO_BIN_EXE_perfwatt"))
        .args([
            "infer",
            "--max-new-tokens",
            "4",
            "--warmup",
            "0",
            "--repeats",
            "2",
            "--out",
        ])
        .arg(&out)
        .arg("--trace")
        .arg(&trace)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let events = trace_events(&trace);
    let runs = r["runs"].as_array().unwrap();
    let at = |i: usize, k: &str| runs[i][k].as_f64().unwrap();
    for i in 0..runs.len() {
        let span = span_named(&events, &format!("run {i}"));
        assert!(
            (span["ts"].as_f64().unwrap() - at(i, "start_s") * 1e6).abs() < 0.01,
            "{span}"
        );
        assert!(
            (span["dur"].as_f64().unwrap() - at(i, "latency_s") * 1e6).abs() < 0.01,
            "{span}"
        );
    }
    assert!(
        at(1, "start_s") >= at(0, "start_s") + at(0, "latency_s"),
        "runs in order"
    );
    let steps = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"].as_str().unwrap().starts_with("decode step"))
        .count();
    assert_eq!(steps, 2 * 3, "3 decode steps per run of 4 tokens");
}

/// Start `perfwatt measure` on `script`, wait for the script's "ready" line, send SIGINT
/// `times` times; returns the exit code and the report.
fn interrupted(script: &str, times: usize) -> (Option<i32>, Value, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    let mut child = measure(&out)
        .args(["--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let t0 = Instant::now();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    for _ in 0..times {
        let ok = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        std::thread::sleep(Duration::from_millis(300));
    }
    let status = child.wait().unwrap();
    (status.code(), report(&out), t0.elapsed())
}

#[test]
fn interrupts_reach_the_command_and_the_report_is_still_written() {
    // The command handles SIGINT and exits with its own code: perfwatt passes it on.
    let (code, r, took) = interrupted(
        r#"trap 'echo stopping; exit 7' INT; echo ready; sleep 20 & wait"#,
        1,
    );
    assert_eq!(code, Some(7), "{r}");
    assert_eq!(r["exit"]["interrupts"], 1);
    assert!(took < Duration::from_secs(10), "{took:?}");
    // A command that ignores SIGINT: the second interrupt kills it (128 + 9).
    let (code, r, took) = interrupted(r#"trap '' INT; echo ready; sleep 20"#, 2);
    assert_eq!(code, Some(137), "{r}");
    assert_eq!(
        (
            r["exit"]["signal"].as_i64(),
            r["exit"]["interrupts"].as_u64()
        ),
        (Some(9), Some(2))
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn bad_input_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    let run = |args: &[&str]| {
        let o = measure(&out).args(args).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--", "no-such-command-perfwatt"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot run `no-such-command-perfwatt`") && !err.contains("panicked"),
        "{err}"
    );
    let (code, err) = run(&["--devices", "0,x", "--", "true"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("`x` is not a GPU index"), "{err}");
    let (code, err) = run(&["--interval-ms", "0", "--", "true"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--interval-ms"), "{err}");
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2), "clap's usage error");
    assert!(err.contains("CMD"), "{err}");
}

/// `infer` on the CPU reports RAPL package energy per run where the host exposes it: here a
/// fixture tree whose counter a thread advances at 10 W (atomically, as the kernel's reads
/// are), and a reason where there is none.
#[test]
fn infer_reports_cpu_energy_from_rapl() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("powercap");
    rapl_zone(&root, "intel-rapl:0", "package-0", 0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (root, stop) = (root.clone(), stop.clone());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let uj = (t0.elapsed().as_secs_f64() * 10e6) as u64;
                let tmp = root.join("intel-rapl:0/.energy_uj");
                std::fs::write(&tmp, format!("{uj}\n")).unwrap();
                std::fs::rename(&tmp, root.join("intel-rapl:0/energy_uj")).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let infer = |root: &Path, out: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_perfwatt"))
            .args([
                "infer",
                "--max-new-tokens",
                "4",
                "--warmup",
                "0",
                "--repeats",
                "2",
                "--out",
            ])
            .arg(out)
            .env("PERFWATT_POWERCAP_ROOT", root)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
        v
    };
    let r = infer(&root, &dir.path().join("a.json"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    ticker.join().unwrap();
    let c = &r["cpu_energy"];
    assert!(c["reason"].is_null(), "{c}");
    // 10 W over each run's latency, within the ticker's 2 ms steps.
    for run in r["runs"].as_array().unwrap() {
        let (j, s) = (
            run["cpu_j"].as_f64().unwrap(),
            run["latency_s"].as_f64().unwrap(),
        );
        assert!(
            (j - 10.0 * s).abs() <= 10.0 * 0.01 + 0.05 * j,
            "{j} J over {s} s"
        );
    }
    assert!(c["j_per_token"]["mean"].as_f64().unwrap() > 0.0, "{c}");
    let none = infer(&dir.path().join("absent"), &dir.path().join("b.json"));
    assert!(none["cpu_energy"]["joules"].is_null());
    assert!(none["cpu_energy"]["reason"]
        .as_str()
        .unwrap()
        .contains("does not expose RAPL"));
}
