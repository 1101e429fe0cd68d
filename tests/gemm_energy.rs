//! gemm-energy on the CPU (what CI can run): the whole pipeline end to end with real
//! SmolLM2 operands, resume, the K permutation's exactness, user .npy operands, and one
//! clear line for each kind of bad input.

use std::path::Path;
use std::process::Command;

use perfwatt::gemm_energy::patterns::{Dtype, Shape};
use perfwatt::gemm_energy::{run_gemm_energy, GemmConfig, Hooks};

fn cfg() -> GemmConfig {
    let mut c = GemmConfig::new(perfwatt::device::DeviceSpec::Cpu);
    c.shape = Shape {
        m: 32,
        k: 256,
        n: 32,
    };
    c.patterns = ["zeros", "normal", "sparse90-a", "2:4-b", "alternating"]
        .map(String::from)
        .to_vec();
    c.seconds = 0.005;
    c.warmup_seconds = 0.0;
    c.rounds = 2;
    c.real_prompts = 1;
    c.real_tokens = 48;
    c
}

fn run(c: &GemmConfig, out: &Path) -> perfwatt::gemm_energy::GemmReport {
    run_gemm_energy(
        c,
        out,
        Hooks {
            on_point: &mut |_, _, _| {},
            interrupted: &|| false,
        },
    )
    .unwrap()
}

#[test]
fn cpu_run_is_complete_exact_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ge");
    let r = run(&cfg(), &out);
    // 5 synthetic + 9 real per dtype, + 2 K-permuted twins for int8.
    let count = |d: Dtype| r.points.iter().filter(|p| p.info.dtype == d).count();
    assert_eq!((count(Dtype::Int8), count(Dtype::Bf16)), (16, 14));
    assert!(r
        .points
        .iter()
        .all(|p| p.rounds == 2 && p.j_per_gemm.is_none() && p.s_per_gemm.mean > 0.0));
    let p = |d: Dtype, n: &str| {
        r.points
            .iter()
            .find(|p| p.info.dtype == d && p.info.pattern == n)
            .unwrap()
    };
    // The hardware models see what the patterns are made of.
    let base = "baseline MAC (RTL)";
    // Zeros switch only the control (a clear per dot product).
    assert!(p(Dtype::Int8, "zeros").info.toggles[base] < 0.1);
    assert!(p(Dtype::Int8, "normal").info.toggles[base] > 40.0);
    assert!(
        p(Dtype::Int8, "sparse90-a").info.toggles["isolated MAC (RTL)"]
            < p(Dtype::Int8, "sparse90-a").info.toggles[base] / 1.5
    );
    assert_eq!(
        p(Dtype::Int8, "alternating").info.toggles["operand bit flips x16"],
        0.0
    );
    // bf16: two RTL designs, two bit-flip models along K and the three other baselines.
    assert!(
        p(Dtype::Int8, "llm-q-l0").info.zero_a > 0.0
            && p(Dtype::Bf16, "llm-down-l15").info.toggles.len() == 7
    );
    // The tile unit, in every order, with its signal groups: zeros deliver nothing.
    let tile = "mma-tile k-outer-n (RTL)";
    assert_eq!(p(Dtype::Int8, "zeros").info.groups[tile]["A delivery"], 0.0);
    assert!(p(Dtype::Int8, "normal").info.groups[tile]["B delivery"] > 0.3);
    assert_eq!(p(Dtype::Int8, "normal").info.groups.len(), 4);
    // bf16: the serial MAC, the fused 16-lane dot unit, and the two bit-flip models.
    assert!(p(Dtype::Bf16, "normal").info.toggles["bf16-dot x16 (RTL)"] > 10.0);
    // The K permutation leaves the int8 product identical and lowers the lane model's flips.
    assert_eq!(r.permutations.len(), 2);
    for perm in &r.permutations {
        assert!(perm.identical, "{}", perm.pattern);
        assert!(
            perm.predicted_pct["operand bit flips x16"] < 0.0,
            "{:?}",
            perm.predicted_pct
        );
    }
    // Outputs: CSV with one row per point and as many fields as its header; report; plots.
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let n = csv.lines().next().unwrap().split(',').count();
    assert_eq!(csv.lines().count(), 1 + 30);
    assert!(csv.lines().all(|l| l.split(',').count() == n), "{csv}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for s in [
        "## int8",
        "## bf16",
        "which hardware model predicts",
        "leave-one-out",
        "K permutation",
        "No energy data",
        "nested selection, against declared baselines",
        "baseline: two-group mean",
        "baseline: operand bit flips across rows",
        "Chosen in the 16 folds",
    ] {
        assert!(md.contains(s), "report lacks {s}");
    }
    assert!(
        out.join("plots/int8_dot_x16__RTL_.png").exists()
            && out.join("plots/bf16_operand_bit_flips_serial.svg").exists()
    );
    // A rerun finds every round done: nothing is measured again.
    let rounds = std::fs::read_to_string(out.join("points.jsonl")).unwrap();
    run(&cfg(), &out);
    assert_eq!(
        std::fs::read_to_string(out.join("points.jsonl")).unwrap(),
        rounds
    );
}

/// `gate_level`: the serial MACs' netlists join the ranked hardware models, in toggles and
/// in fJ per MAC.
#[test]
fn gate_level_models_join_the_ranking() {
    // The netlists tests/gate.rs builds (nextest runs each test in its own process).
    std::env::set_var(
        "PERFWATT_CACHE",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/gate-cache"),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ge");
    let mut c = cfg();
    c.gate_level = true;
    c.real = false;
    c.permute = Vec::new();
    c.patterns = ["zeros", "normal", "sparse90-a"].map(String::from).to_vec();
    // 4-lane dot units: the netlists tests/gate.rs builds (16 lanes take minutes).
    c.lanes = 4;
    let r = run(&c, &out);
    let t = |d: Dtype, n: &str, m: &str| {
        r.points
            .iter()
            .find(|p| p.info.dtype == d && p.info.pattern == n)
            .unwrap()
            .info
            .toggles[m]
    };
    let (gate, rtl) = ("baseline MAC (gate)", "baseline MAC (RTL)");
    assert!(t(Dtype::Int8, "normal", gate) > 3.0 * t(Dtype::Int8, "normal", rtl));
    assert!(t(Dtype::Int8, "zeros", gate) < 1.0);
    assert!(
        t(Dtype::Int8, "sparse90-a", "isolated MAC (gate, fJ)")
            < t(Dtype::Int8, "sparse90-a", "baseline MAC (gate, fJ)")
    );
    assert!(
        t(Dtype::Bf16, "normal", "bf16 MAC (gate)") > t(Dtype::Bf16, "normal", "bf16 MAC (RTL)")
    );
    assert!(t(Dtype::Int8, "normal", "dot x4 (gate)") > t(Dtype::Int8, "normal", "dot x4 (RTL)"));
    assert!(t(Dtype::Bf16, "normal", "bf16-dot x4 (gate, fJ)") > 0.0);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("baseline MAC (gate, fJ)"), "{md}");
}

/// The duty regime, a calibration written by the CLI, `predict` on user operands at the
/// calibrated shape (and one clear line for what it cannot do), and a run whose report
/// checks the calibration's predictions.
#[test]
fn duty_regime_calibrate_and_predict_without_a_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cal");
    let o = out.to_str().unwrap();
    let (ok, err) = cli(&[
        "--dtype",
        "int8",
        "--shape",
        "32,64,16",
        "--no-real",
        "--permute",
        "none",
        "--patterns",
        "all,-checker,-laplace",
        "--tile-orders",
        "k-outer-n,k-inner-n",
        "--sample-blocks",
        "2",
        "--seconds",
        "0.002",
        "--rounds",
        "2",
        "--regime",
        "both",
        "--duty-burst-ms",
        "1",
        "--duty-sleep-ms",
        "1",
        "--calibrate",
        "--out",
        o,
    ]);
    assert!(ok, "{err}");
    let md = std::fs::read_to_string(out.join("duty/report.md")).unwrap();
    assert!(
        md.contains("--regime duty --duty-burst-ms 1 --duty-sleep-ms 1"),
        "{md}"
    );
    assert!(!md.contains("| checker |") && md.contains("| rows-alternating |"));
    let cal = out.join("duty/calibration.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cal).unwrap()).unwrap();
    assert_eq!(v[0]["schema"], "perfwatt.gemm-calibration/1");
    assert_eq!(v[0]["regime"], "duty");
    assert_eq!(v[0]["fitted_on"].as_array().unwrap().len(), 32);
    assert!(out.join("back-to-back/calibration.json").exists());
    // `gemm-energy report DIR` rewrites the same report from results.json alone.
    let before = std::fs::read_to_string(out.join("back-to-back/report.md")).unwrap();
    let (ok, err) = cli(&["report", out.join("back-to-back").to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("back-to-back/report.md")).unwrap(),
        before
    );
    // Predict: operands at the calibrated shape (A 32 x 64, B 64 x 16).
    let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
    npy_i8(&a, 32, 64, |i| (i * 37 % 255) as i8);
    npy_i8(&b, 64, 16, |i| (i * 11 % 201) as i8);
    let predict = |extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_perfwatt"));
        c.args([
            "gemm-energy",
            "predict",
            "--calibration",
            cal.to_str().unwrap(),
            "--operands",
        ]);
        c.args([a.to_str().unwrap(), b.to_str().unwrap()])
            .args(extra);
        c.output().unwrap()
    };
    let p = predict(&["--json"]);
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    let j: serde_json::Value = serde_json::from_slice(&p.stdout).unwrap();
    let (lo, mid, hi) = (
        j["low"].as_f64().unwrap(),
        j["predicted"].as_f64().unwrap(),
        j["high"].as_f64().unwrap(),
    );
    assert!(lo <= mid && mid <= hi && j["unit"] == "ms/GEMM", "{j}");
    // Bad input, one line each: another dtype, another shape, an unknown order.
    let e = predict(&["--dtype", "bf16"]);
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(
        !e.status.success() && msg.contains("no bf16 model") && msg.trim().lines().count() == 1,
        "{msg}"
    );
    npy_i8(&a, 16, 64, |i| i as i8);
    let e = predict(&[]);
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(
        !e.status.success() && msg.contains("not the calibrated one"),
        "{msg}"
    );
    let (ok, err) = cli(&[
        "--tile-orders",
        "k-sideways",
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("unknown tile order 'k-sideways'") && err.trim().lines().count() == 1,
        "{err}"
    );
    let (ok, err) = cli(&[
        "--shape",
        "8,64,8",
        "--no-real",
        "--patterns",
        "normal",
        "--out",
        dir.path().join("y").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("16 x 8 block"), "{err}");
    // The held-out patterns, predicted by the duty calibration in a new run's report.
    let check = dir.path().join("check");
    let (ok, err) = cli(&[
        "--dtype",
        "int8",
        "--shape",
        "32,64,16",
        "--no-real",
        "--permute",
        "none",
        "--patterns",
        "checker,laplace",
        "--tile-orders",
        "k-outer-n,k-inner-n",
        "--sample-blocks",
        "2",
        "--seconds",
        "0.002",
        "--rounds",
        "1",
        "--regime",
        "duty",
        "--seed",
        "2",
        "--check-calibration",
        cal.to_str().unwrap(),
        "--out",
        check.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let md = std::fs::read_to_string(check.join("report.md")).unwrap();
    assert!(
        md.contains("predicted by the calibration")
            && md.contains("over the 2 it was not fitted on"),
        "{md}"
    );
}

/// A .npy file (format 1.0) of `descr` and `shape` with `body` as its data.
fn npy(path: &Path, descr: &str, shape: (usize, usize), body: &[u8]) {
    let mut h = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}, {}), }}",
        shape.0, shape.1
    );
    let pad = 63 - (10 + h.len()) % 64;
    h.extend(std::iter::repeat_n(' ', pad));
    h.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(h.len() as u16).to_le_bytes());
    v.extend_from_slice(h.as_bytes());
    v.extend_from_slice(body);
    std::fs::write(path, v).unwrap();
}

fn npy_i8(path: &Path, rows: usize, cols: usize, f: impl Fn(usize) -> i8) {
    let body: Vec<u8> = (0..rows * cols).map(|i| f(i) as u8).collect();
    npy(path, "|i1", (rows, cols), &body);
}

fn cli(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_perfwatt"))
        .arg("gemm-energy")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn user_operands_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
    npy_i8(&a, 16, 64, |i| (i % 7) as i8 - 3);
    npy_i8(&b, 64, 8, |i| (i % 5) as i8 - 2);
    let out = dir.path().join("u");
    let (ok, err) = cli(&[
        "--dtype",
        "int8",
        "--operands",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--seconds",
        "0.001",
        "--rounds",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(r["points"][0]["pattern"], "user");
    assert_eq!(r["points"].as_array().unwrap().len(), 1);
    // Each bad input: exit 1 and one line saying what is wrong.
    let bad_k = dir.path().join("k.npy");
    npy_i8(&bad_k, 16, 60, |_| 1);
    let bad_b = dir.path().join("kb.npy");
    npy_i8(&bad_b, 60, 8, |_| 1);
    let wrong_inner = dir.path().join("w.npy");
    npy_i8(&wrong_inner, 32, 8, |_| 1);
    for (args, want) in [
        (vec!["--device", "cuda", "--no-real"], "built without CUDA"),
        (
            vec![
                "--dtype",
                "int8",
                "--operands",
                a.to_str().unwrap(),
                wrong_inner.to_str().unwrap(),
            ],
            "inner dimensions differ",
        ),
        (
            vec![
                "--dtype",
                "int8",
                "--operands",
                bad_k.to_str().unwrap(),
                bad_b.to_str().unwrap(),
                "--permute",
                "none",
            ],
            "multiple of the lane count 16",
        ),
        (vec!["--shape", "8,8"], "three positive integers"),
        (vec!["--patterns", "nope", "--no-real"], "pattern 'nope'"),
    ] {
        let mut full = args.clone();
        full.extend([
            "--out",
            dir.path().join("x").to_str().unwrap().to_string().leak(),
        ]);
        let (ok, err) = cli(&full);
        assert!(!ok, "{args:?} succeeded");
        assert!(
            err.contains(want) && err.trim().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    // A float array is not an int8 operand.
    let f = dir.path().join("f.npy");
    let body: Vec<u8> = (0..16 * 64)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    npy(&f, "<f4", (16, 64), &body);
    let (ok, err) = cli(&[
        "--dtype",
        "int8",
        "--operands",
        f.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        dir.path().join("y").to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("f.npy") && err.contains("not an int8"),
        "{err}"
    );
}

/// `gemm-energy --devices`: every device measures every pattern at once into its own
/// folder (a complete one-device run each), and devices.{csv,md,json} put them side by
/// side (two CPU workers here: time only, energy n/a).
#[test]
fn several_devices_measure_at_once_and_are_compared_pattern_by_pattern() {
    use perfwatt::gemm_energy::devices::{run_gemm_energy_devices, DevicesHooks};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ge");
    let mut c = cfg();
    c.real = false;
    c.dtypes = vec![Dtype::Int8];
    c.permute = Vec::new();
    let devices = [perfwatt::device::DeviceSpec::Cpu; 2];
    let seen = std::sync::Mutex::new([0usize; 2]);
    let cmp = run_gemm_energy_devices(
        &c,
        &devices,
        &out,
        DevicesHooks {
            on_point: &|i, k, _, _| {
                let mut s = seen.lock().unwrap();
                s[i] = s[i].max(k);
            },
            interrupted: &|| false,
        },
    )
    .unwrap();
    assert_eq!(cmp.patterns.len(), 5);
    assert!(seen.lock().unwrap().iter().all(|&k| k >= 5 * 2));
    for folder in ["cpu", "cpu-1"] {
        for f in ["results.json", "results.csv", "report.md", "points.jsonl"] {
            assert!(out.join(folder).join(f).exists(), "{folder}/{f}");
        }
    }
    for p in &cmp.patterns {
        assert_eq!(p.s_per_gemm.len(), 2);
        assert!(p.s_per_gemm.iter().all(|&s| s > 0.0));
        assert!(p.j_per_gemm.iter().all(Option::is_none));
    }
    assert_eq!(cmp.devices[1].folder, "cpu-1");
    let csv = std::fs::read_to_string(out.join("devices.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 5 * 2);
    assert!(csv.starts_with("dtype,pattern,device,gpu,s_per_gemm,"));
    let md = std::fs::read_to_string(out.join("devices.md")).unwrap();
    assert!(md.contains("](cpu-1/report.md)"), "{md}");
    let e = run_gemm_energy_devices(
        &c,
        &devices[..1],
        &out,
        DevicesHooks {
            on_point: &|_, _, _, _| {},
            interrupted: &|| false,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("at least two"), "{e}");
}
