//! `roofline` on the CPU (what CI can run): every kernel timed, cost models as documented,
//! peaks/ridge/bounds consistent, CSV = JSON, plots written, partial results kept on
//! interruption, clear errors for a missing CUDA build and a bad dtype.

use std::process::Command;

use perfwatt::roofline::{run_roofline, Hooks, Preset, RooflineConfig, RooflineReport};

fn quick(dir: &std::path::Path, stop_after: Option<usize>) -> perfwatt::Result<RooflineReport> {
    let mut seen = 0;
    let mut on_kernel = |i: usize, _: usize, _: &str| seen = i;
    let stop = std::cell::Cell::new(0usize);
    run_roofline(
        &RooflineConfig::new(perfwatt::device::DeviceSpec::Cpu, Preset::Quick),
        dir,
        Hooks {
            on_kernel: &mut on_kernel,
            interrupted: &|| {
                stop.set(stop.get() + 1);
                stop_after.is_some_and(|n| stop.get() > n)
            },
        },
    )
}

#[test]
fn cpu_quick_roofline_is_complete_and_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let r = quick(dir.path(), None).unwrap();
    assert_eq!(r.config.dtype, "f32");
    assert!(r.energy_reason.as_deref().unwrap().contains("CPU"));
    let bw = r.bandwidth_bytes_per_s.expect("copy bandwidth");
    assert!(bw > 1e8, "copy bandwidth {bw}");
    assert!(r.peaks.iter().any(|p| p.dtype == "f32"), "no f32 peak");
    let highest = r
        .peaks
        .iter()
        .reduce(|a, b| if b.flop_per_s > a.flop_per_s { b } else { a })
        .unwrap();
    for p in &r.peaks {
        assert!(
            (p.ridge_flop_per_byte.unwrap() - p.flop_per_s / bw).abs() <= 1e-9 * p.flop_per_s / bw
        );
    }
    let cats: std::collections::BTreeSet<&str> =
        r.kernels.iter().map(|k| k.category.as_str()).collect();
    for c in [
        "peak-matmul",
        "peak-copy",
        "linear",
        "qmatmul",
        "attention",
        "attention-decode",
        "rmsnorm",
        "silu",
        "rope",
        "embedding",
    ] {
        assert!(cats.contains(c), "no {c} kernel");
    }
    for k in &r.kernels {
        let t = k
            .timing
            .as_ref()
            .unwrap_or_else(|| panic!("{}: {:?}", k.name, k.error));
        assert!(
            t.min_s > 0.0
                && t.min_s <= t.p5_s
                && t.p5_s <= t.median_s
                && t.median_s <= t.p95_s
                && t.p95_s <= t.max_s,
            "{}: {t:?}",
            k.name
        );
        assert!(t.repeats >= 5, "{}", k.name);
        assert!(k.energy.is_none());
        assert_eq!(k.bytes_per_s.unwrap(), k.bytes / t.median_s);
        if k.flops > 0.0 {
            // Each kernel's roof: min(peak, intensity x bandwidth), with the peak of its own
            // dtype, or for mixed kernels (q4_1/f32) the highest peak measured so far.
            let roof_dtype = k.roof_dtype.as_deref().expect("roof dtype");
            if ["f32", "f16", "bf16"].contains(&k.dtype.as_str()) {
                assert_eq!(roof_dtype, k.dtype, "{}", k.name);
            } else {
                assert_eq!(roof_dtype, highest.dtype, "{}", k.name);
            }
            let peak = r
                .peaks
                .iter()
                .find(|p| p.dtype == roof_dtype)
                .unwrap_or_else(|| panic!("{}: no {roof_dtype} peak", k.name));
            let roof = k.roof_flop_per_s.unwrap();
            assert!(
                (roof - peak.flop_per_s.min(k.intensity * bw)).abs() <= 1e-6 * roof,
                "{}: roof {roof} vs {roof_dtype} peak {} and bandwidth {bw}",
                k.name,
                peak.flop_per_s
            );
            let ridge = peak.ridge_flop_per_byte.unwrap();
            assert_eq!(
                k.bound.unwrap(),
                if k.intensity < ridge {
                    "memory"
                } else {
                    "compute"
                },
                "{}",
                k.name
            );
        }
    }
    // Cost model of a linear layer: 2MKN FLOPs, x, W and y moved once.
    let lin = r
        .kernels
        .iter()
        .find(|k| k.name == "linear up M=32")
        .unwrap();
    assert_eq!(lin.shape, "M=32 K=576 N=1536");
    assert_eq!(lin.flops, 2.0 * 32.0 * 576.0 * 1536.0);
    assert_eq!(
        lin.bytes,
        4.0 * (32.0 * 576.0 + 576.0 * 1536.0 + 32.0 * 1536.0)
    );
    // The peak is the best f32 product: it sits on its roof, the others under it.
    let mm: Vec<f64> = r
        .kernels
        .iter()
        .filter(|k| k.category == "peak-matmul" && k.dtype == "f32")
        .map(|k| k.roof_fraction.unwrap())
        .collect();
    assert!(
        mm.iter().all(|&f| f <= 1.0 + 1e-9) && mm.iter().any(|&f| (f - 1.0).abs() < 1e-9),
        "{mm:?}"
    );

    // CSV: one row per kernel, same figures as the JSON.
    let csv = std::fs::read_to_string(dir.path().join("roofline.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), r.kernels.len());
    for (row, k) in rows.iter().zip(&r.kernels) {
        assert_eq!(row.len(), header.len(), "{row:?}");
        assert_eq!(row[col("name")], k.name);
        assert_eq!(
            row[col("median_s")].parse::<f64>().unwrap(),
            k.timing.as_ref().unwrap().median_s
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("roofline.json")).unwrap()).unwrap();
    assert_eq!(json["kernels"].as_array().unwrap().len(), r.kernels.len());
    assert!(json["kernels"][0]["energy"].is_null());
    for f in ["roofline.png", "roofline.svg"] {
        assert!(
            std::fs::metadata(dir.path().join(f)).unwrap().len() > 1000,
            "{f}"
        );
    }
    assert!(std::fs::read_to_string(dir.path().join("roofline.svg"))
        .unwrap()
        .contains("Roofline"));
}

#[test]
fn interrupted_roofline_keeps_the_kernels_measured_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let err = quick(dir.path(), Some(3)).unwrap_err();
    assert!(matches!(err, perfwatt::Error::Interrupted), "{err}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("roofline.json")).unwrap()).unwrap();
    assert_eq!(json["kernels"].as_array().unwrap().len(), 3);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("roofline.csv"))
            .unwrap()
            .lines()
            .count(),
        4
    );
}

#[test]
fn cli_roofline_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_perfwatt"))
            .arg("roofline")
            .args(args)
            .arg("--out")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = run(&["--dtype", "f64", "--quick"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dtype 'f64'"));
    if !cfg!(feature = "cuda") {
        let out = run(&["--device", "cuda", "--quick"]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("without CUDA") && err.lines().count() == 1,
            "{err}"
        );
    }
    let out = run(&["--quick"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("peak f32") && stdout.contains("linear up M=32"),
        "{stdout}"
    );
}
