//! Sweeps: resume after kill -9 without losing or redoing finished points; the report.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use perfwatt::device::DeviceSpec;

const SPEC: &str = r#"
name = "test"
gate_level = true
[base]
max_new_tokens = 2
warmup = 0
repeats = 2
[capture]
layers = [0]
projs = ["down"]
max_pairs = 20000
rows = 2
[axes]
sparsity_tau = [0.0, 0.03, 0.08]
"#;

fn rows(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("results.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn sweep(spec: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_perfwatt"));
    c.args(["sweep"])
        .arg(spec)
        .arg("--out")
        .arg(out)
        // Gate-level netlists: the cache tests/gate.rs builds too.
        .env(
            "PERFWATT_CACHE",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/gate-cache"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

#[test]
fn kill_9_loses_nothing_finished_and_rerun_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("s.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let out = dir.path().join("run");
    let mut child = sweep(&spec, &out).spawn().unwrap();
    // Kill -9 as soon as the first point is in results.jsonl.
    let t0 = Instant::now();
    while rows(&out).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(300), "no point finished");
        assert!(child.try_wait().unwrap().is_none(), "sweep exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let first = rows(&out);
    assert!(!first.is_empty() && first.len() < 3, "{}", first.len());
    let key0 = first[0]["key"].as_str().unwrap().to_string();
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let infer0 = out.join("points").join(&key0).join("infer.json");
    let before = mtime(&infer0);
    // The CSV is written atomically and before the JSONL, so it holds every row the JSONL
    // lists (one more only if the next point finished within the kill's 50 ms window).
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let csv_rows = csv.lines().count() - 1;
    assert!(
        csv_rows == first.len() || csv_rows == first.len() + 1,
        "{csv_rows}"
    );

    assert!(sweep(&spec, &out).status().unwrap().success());
    let all = rows(&out);
    assert_eq!(all.len(), 3);
    let keys: Vec<&str> = all.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys.iter().filter(|k| **k == key0).count(), 1);
    assert_eq!(mtime(&infer0), before, "finished point was recomputed");
    assert_eq!(
        all.iter().find(|r| r["key"] == key0.as_str()),
        Some(&first[0])
    );
    // Nothing left to do: a third run changes nothing.
    assert!(sweep(&spec, &out).status().unwrap().success());
    assert_eq!(rows(&out), all);

    // More sparsity, more zero operands, bigger isolation savings on this data.
    let z: Vec<f64> = all
        .iter()
        .map(|r| r["zero_fraction"].as_f64().unwrap())
        .collect();
    assert!(z[0] < z[1] && z[1] < z[2], "{z:?}");
    // Gate level beside RTL: more activity per MAC than the RTL sees, priced in fJ.
    for r in &all {
        let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {r}"));
        assert!(f("gate_baseline_toggles_per_mac") > 2.0 * f("baseline_toggles_per_mac"));
        assert!(f("gate_baseline_fj_per_mac") > 0.0 && f("gate_isolated_fj_per_mac") > 0.0);
        assert!(f("gate_toggle_saving_pct") < f("toggle_saving_pct"));
    }

    // The report: markdown with numbers, PNG and SVG plots that exist and are non-trivial.
    let report = perfwatt::report::write_report(&out).unwrap();
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(
        // Few configurations: the toggle axis may have too few values for a correlation,
        // and the report then says so instead of naming a strength.
        ((md.contains("Pearson r =") && md.contains("Spearman rho ="))
            || md.contains("Not identifiable from this design"))
            && md.contains("No energy data")
            && md.contains("## Gate level")
    );
    for name in [
        "toggles_per_config",
        "toggles_per_group",
        "throughput",
        "correlation",
    ] {
        for ext in ["png", "svg"] {
            let p = out.join("plots").join(format!("{name}.{ext}"));
            assert!(
                std::fs::metadata(&p).unwrap().len() > 2000,
                "{}",
                p.display()
            );
        }
    }
    // The CSV reads as a table: header and rows with the same number of fields.
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let n = csv.lines().next().unwrap().split(',').count();
    assert!(csv.lines().all(|l| l.split(',').count() >= n));
}

#[test]
fn different_spec_in_same_folder_is_refused_and_bad_spec_is_clear() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("s.toml");
    std::fs::write(&spec, "name = \"x\"\n[axes]\nbogus = [1]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_perfwatt"))
        .arg("sweep")
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("s.toml") && e.contains("bogus") && e.contains("line 3"),
        "{e}"
    );

    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("sweep.toml"), "name = \"other\"\n").unwrap();
    std::fs::write(&spec, "name = \"x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_perfwatt"))
        .arg("sweep")
        .arg(&spec)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("different sweep spec"));
}

/// Replicates run in randomized blocks; every CI of a mean counts runs (never the
/// sequences of a batch, which finish together), percentiles pool requests.
#[test]
fn replicates_pool_runs_and_cis_count_runs_not_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("r.toml");
    std::fs::write(
        &spec,
        r#"
name = "reps"
replicates = 2
[base]
precision = "f32"
batch = 4
max_new_tokens = 3
warmup = 0
repeats = 3
[capture]
layers = [0]
projs = ["q"]
max_pairs = 4000
rows = 1
[axes]
sparsity_tau = [0.0, 0.05]
"#,
    )
    .unwrap();
    let out = dir.path().join("run");
    assert!(sweep(&spec, &out).status().unwrap().success());
    let all = rows(&out);
    assert_eq!(all.len(), 2);
    for row in &all {
        assert_eq!(
            (row["replicates"].as_u64(), row["runs"].as_u64()),
            (Some(2), Some(6))
        );
        let key = row["key"].as_str().unwrap();
        let pdir = out.join("points").join(key);
        assert!(pdir.join("operands.ops").exists() && pdir.join("sim.json").exists());
        for r in 0..2 {
            let v: serde_json::Value = serde_json::from_slice(
                &std::fs::read(pdir.join(format!("rep{r}/infer.json"))).unwrap(),
            )
            .unwrap();
            // 3 runs of a batch of 4: the mean's CI has n = 3, the percentiles pool 12
            // requests; TPOT pools the 2 decode steps of each run.
            assert_eq!(v["latency_s"]["mean"]["n"], 3);
            assert_eq!(v["latency_s"]["samples"], 12);
            assert_eq!(v["tpot_s"]["samples"], 6);
            assert_eq!(v["runs"].as_array().unwrap().len(), 3);
            assert_eq!(
                v["runs"][0]["step_latencies_s"].as_array().unwrap().len(),
                2
            );
            // Each replicate ran in a child process of its own (`perfwatt sweep-point`).
            assert!(pdir.join(format!("rep{r}/config.json")).exists());
            assert!(pdir.join(format!("rep{r}/stderr.txt")).exists());
        }
    }
    // Rows come back in the spec's order whatever order the points ran in.
    assert!(all[0]["sparsity_tau"].as_f64() < all[1]["sparsity_tau"].as_f64());
    // Stopped after its last replicate but before it wrote the rows: a rerun writes them
    // from the finished replicates and runs nothing again.
    let infer = out
        .join("points")
        .join(all[0]["key"].as_str().unwrap())
        .join("rep1/infer.json");
    let before = std::fs::metadata(&infer).unwrap().modified().unwrap();
    std::fs::remove_file(out.join("results.jsonl")).unwrap();
    assert!(sweep(&spec, &out).status().unwrap().success());
    // Equal but for the simulation speed (the operands are replayed again, timed anew).
    let untimed = |rows: Vec<serde_json::Value>| {
        rows.into_iter()
            .map(|mut r| {
                r.as_object_mut().unwrap().remove("sim_cycles_per_s");
                r
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(untimed(rows(&out)), untimed(all.clone()));
    assert_eq!(
        std::fs::metadata(&infer).unwrap().modified().unwrap(),
        before
    );
    // CIs of means are over the 2 replicates (each replicate's 3 runs averaged first).
    for row in &all {
        assert_eq!(row["ci_over"], "replicates");
    }
    // A row written by an older perfwatt (CIs over runs, no `ci_over`): `report --rescore`
    // recomputes its measurement columns from the replicates and keeps its switching ones.
    let old: String = all
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let o = r.as_object_mut().unwrap();
            o.remove("ci_over");
            o.insert("latency_ci95_low_s".into(), 0.0.into());
            o.insert("baseline_toggles".into(), 7.into());
            serde_json::to_string(&r).unwrap() + "\n"
        })
        .collect();
    std::fs::write(out.join("results.jsonl"), old).unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_perfwatt"))
        .args(["report", "--rescore"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    for (new, was) in rows(&out).iter().zip(&all) {
        assert_eq!(new["ci_over"], "replicates");
        assert_eq!(new["latency_ci95_low_s"], was["latency_ci95_low_s"]);
        assert_eq!(new["baseline_toggles"], 7);
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("over the 2 replicates"), "{md}");
}

/// `sweep --devices`: one worker per device takes the next replicate in the run order
/// (two CPU workers here; on a GPU host each has its GPU): every replicate runs once, two
/// run at a time, rows come back complete and in the spec's order.
#[test]
fn workers_on_several_devices_run_each_replicate_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
name = "devs"
replicates = 2
[base]
precision = "f32"
max_new_tokens = 3
warmup = 0
repeats = 2
[capture]
layers = [0]
projs = ["q"]
max_pairs = 2000
rows = 1
[axes]
sparsity_tau = [0.0, 0.05]
"#;
    let spec = perfwatt::sweep::SweepSpec::from_toml(text, "devs.toml").unwrap();
    let out = dir.path().join("run");
    std::env::set_var("PERFWATT_BIN", env!("CARGO_BIN_EXE_perfwatt"));
    let started = std::sync::Mutex::new(Vec::new());
    let mut last = 0;
    let rows = perfwatt::sweep::run_sweep(
        &spec,
        &out,
        &[DeviceSpec::Cpu, DeviceSpec::Cpu],
        perfwatt::sweep::SweepHooks {
            on_point: &mut |done, total, what| {
                assert_eq!(total, 4);
                last = last.max(done);
                if let Some(w) = what {
                    started.lock().unwrap().push(w.to_string());
                }
            },
            interrupted: &|| false,
        },
    )
    .unwrap();
    assert_eq!(last, 4);
    let started = started.into_inner().unwrap();
    assert_eq!(started.len(), 4, "{started:?}");
    assert!(
        started.iter().all(|s| s.ends_with(" on cpu")),
        "{started:?}"
    );
    assert_eq!(rows.len(), 2);
    assert!(rows[0].sparsity_tau < rows[1].sparsity_tau);
    for row in &rows {
        assert_eq!(
            (row.replicates, row.runs, row.device.as_str()),
            (Some(2), Some(4), "cpu")
        );
    }
    // Two workers ran at once: some replicate started before another one ended.
    let span = |r: &Path| {
        let cfg = std::fs::metadata(r.join("config.json"))
            .unwrap()
            .modified()
            .unwrap();
        let end = std::fs::metadata(r.join("replicate.json"))
            .unwrap()
            .modified()
            .unwrap();
        (cfg, end)
    };
    let spans: Vec<_> = rows
        .iter()
        .flat_map(|row| {
            let p = out.join("points").join(&row.key);
            (0..2).map(move |r| span(&p.join(format!("rep{r}"))))
        })
        .collect();
    let overlap = spans
        .iter()
        .enumerate()
        .any(|(i, a)| spans.iter().skip(i + 1).any(|b| a.0 < b.1 && b.0 < a.1));
    assert!(overlap, "no two replicates overlapped: {spans:?}");
    // What each device ran (one name here, so the report has no Devices section).
    let uses = perfwatt::sweep::device_use(&out).unwrap();
    assert_eq!(uses.len(), 1);
    assert_eq!((uses[0].replicates, uses[0].runs), (4, 8));
    assert!(uses[0].run_seconds > 0.0 && uses[0].energy_j.is_none());
    // A rerun finds every row and runs nothing.
    let again = perfwatt::sweep::run_sweep(
        &spec,
        &out,
        &[DeviceSpec::Cpu, DeviceSpec::Cpu],
        perfwatt::sweep::SweepHooks {
            on_point: &mut |_, _, what| assert!(what.is_none(), "{what:?} ran again"),
            interrupted: &|| false,
        },
    )
    .unwrap();
    assert_eq!(again.len(), 2);
}

/// An `opts` axis: one point per optimization set (keys name the set unless it is all of
/// them), the same greedy text in every row, and the report's Optimizations section
/// against the all-on twin.
#[test]
fn optimization_sets_are_an_axis_with_the_same_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("o.toml");
    std::fs::write(
        &spec,
        r#"
name = "opts"
[base]
max_new_tokens = 6
warmup = 0
repeats = 3
[capture]
layers = [0]
projs = ["q"]
max_pairs = 4000
rows = 1
[axes]
opts = ["all", "none", "all,-inplace-kv"]
"#,
    )
    .unwrap();
    let out = dir.path().join("run");
    assert!(sweep(&spec, &out).status().unwrap().success());
    let all = rows(&out);
    let got: Vec<(&str, &str)> = all
        .iter()
        .map(|r| (r["opts"].as_str().unwrap(), r["key"].as_str().unwrap()))
        .collect();
    assert_eq!(got[0].0, "tiles,merged-proj,inplace-kv,graphs,fused");
    assert!(got[0].1.ends_with("-w8"), "{got:?}");
    assert_eq!(got[1].0, "none");
    assert!(got[1].1.ends_with("-w8-onone"), "{got:?}");
    assert_eq!(got[2].0, "tiles,merged-proj,graphs,fused");
    assert!(
        got[2].1.ends_with("-w8-otiles+merged-proj+graphs+fused"),
        "{got:?}"
    );
    for r in &all[1..] {
        assert_eq!(r["generated"], all[0]["generated"], "{}", r["opts"]);
    }
    let report = std::fs::read_to_string(perfwatt::report::write_report(&out).unwrap()).unwrap();
    let section = report.split("### Optimizations").nth(1).expect("section");
    let table: Vec<&str> = section
        .split("\n### ")
        .next()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("| q4_1"))
        .collect();
    assert_eq!(table.len(), 2, "{section}");
    assert!(
        table[0].contains("opt=none") && table[1].contains("opt=tiles,merged-proj,graphs,fused")
    );
    assert!(table.iter().all(|l| l.ends_with("| same |")), "{section}");
}
