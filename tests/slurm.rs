//! Sweeps as Slurm job arrays, for real: a one-node cluster on this machine
//! (scripts/slurm-local.sh: munge, slurmctld, slurmd), a small CPU sweep submitted as an
//! array, one task requeued mid-point (it resumes: its finished replicate is not run
//! again), one task killed mid-run, `collect` naming the missing point, a rerun submitting
//! only that point, and the merged rows equal in number and order to the spec's points.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const SPEC: &str = r#"
name = "slurm-test"
replicates = 2
[base]
max_new_tokens = 2
warmup = 0
repeats = 2
[capture]
layers = [0]
projs = ["down"]
max_pairs = 4000
rows = 1
[axes]
sparsity_tau = [0.0, 0.03, 0.08]
"#;

/// Start (or find) the local cluster; returns its SLURM_CONF.
fn cluster() -> String {
    let out = Command::new(root().join("scripts/slurm-local.sh"))
        .arg("start")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/slurm-local.sh start failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("export SLURM_CONF="))
        .expect("the script prints SLURM_CONF")
        .to_string()
}

fn perfwatt(conf: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_perfwatt"))
        .args(args)
        .env("SLURM_CONF", conf)
        .current_dir(root())
        .output()
        .unwrap()
}

fn slurm(conf: &str, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .env("SLURM_CONF", conf)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Wait until squeue lists no task of `name`.
fn drain(conf: &str, name: &str) {
    let t0 = Instant::now();
    while !slurm(conf, "squeue", &["-h", "-r", "-n", name])
        .trim()
        .is_empty()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "tasks of {name} still queued"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn sweep_runs_as_a_job_array_and_a_killed_task_is_resubmitted() {
    let conf = cluster();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("s.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let run = dir.path().join("run");
    let (spec_s, run_s) = (spec.to_str().unwrap(), run.to_str().unwrap());

    // --dry-run writes the script and submits nothing.
    let out = perfwatt(
        &conf,
        &[
            "sweep",
            spec_s,
            "--out",
            run_s,
            "--slurm",
            "--dry-run",
            "--max-parallel",
            "2",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let script = std::fs::read_to_string(run.join("slurm/array-0.sh")).unwrap();
    assert!(
        script.contains("#SBATCH --array=0-2%2") && script.contains("#SBATCH --requeue"),
        "{script}"
    );
    assert!(script.contains("sweep-task"), "{script}");

    // The points in array order (the script's KEYS list).
    let keys: Vec<String> = script
        .split("KEYS=(\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| !l.starts_with(')'))
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(keys.len(), 3);

    // Submit; kill the first task as soon as it runs.
    let out = perfwatt(&conf, &["sweep", spec_s, "--out", run_s, "--slurm"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    let name = word_after(&t, "squeue -n ");
    let job = word_after(&t, "submitted job ");
    let victim = format!("{job}_0");
    let t0 = Instant::now();
    loop {
        let state = slurm(&conf, "squeue", &["-h", "-j", &victim, "-o", "%T"]);
        if state.trim() == "RUNNING" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "task 0 never ran: {state}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    slurm(&conf, "scancel", &[&victim]);
    // Requeue the second task once its first replicate is done (the local cluster lets a
    // requeued task start again after 10 s; Slurm's default is 2 minutes).
    let rep0 = run
        .join("points")
        .join(&keys[1])
        .join("rep0/replicate.json");
    let t0 = Instant::now();
    while !rep0.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "task 1's first replicate never finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rep0_time = std::fs::metadata(&rep0).unwrap().modified().unwrap();
    let task1 = format!("{job}_1");
    let rq = Command::new("scontrol")
        .args(["requeue", &task1])
        .env("SLURM_CONF", &conf)
        .output()
        .unwrap();
    assert!(rq.status.success(), "requeue: {}", text(&rq));
    drain(&conf, &name);
    // The requeued task finished its point without running its first replicate again.
    assert!(run.join("points").join(&keys[1]).join("row.json").exists());
    assert_eq!(
        std::fs::metadata(&rep0).unwrap().modified().unwrap(),
        rep0_time
    );

    // One point is missing: collect says which, and fails.
    let out = perfwatt(&conf, &["collect", run_s]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("1 point(s) still missing"),
        "{}",
        text(&out)
    );

    // The rerun submits only that point; then every row is there, in spec order.
    let out = perfwatt(&conf, &["sweep", spec_s, "--out", run_s, "--slurm"]);
    assert!(
        out.status.success() && text(&out).contains("1 array tasks"),
        "{}",
        text(&out)
    );
    drain(&conf, &name);
    let out = perfwatt(&conf, &["collect", run_s, "--report"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(run.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let taus: Vec<f64> = rows
        .iter()
        .map(|r| r["sparsity_tau"].as_f64().unwrap())
        .collect();
    assert_eq!(taus.len(), 3);
    assert!(taus[0] < taus[1] && taus[1] < taus[2], "{taus:?}");
    assert!(rows.iter().all(|r| r["runs"] == 4 && r["replicates"] == 2));
    assert!(Path::new(&run.join("report.md")).exists());
    // Nothing left: a rerun submits nothing.
    let out = perfwatt(&conf, &["sweep", spec_s, "--out", run_s, "--slurm"]);
    assert!(text(&out).contains("nothing to submit"), "{}", text(&out));
}

/// The word that follows `marker` in `text` (the job id, the job name).
fn word_after(text: &str, marker: &str) -> String {
    text.split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {marker:?} in {text}"))
        .to_string()
}
