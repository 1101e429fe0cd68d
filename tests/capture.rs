//! `infer`: metrics schema, exact-length batches, KV cache and batching consistency, and
//! operand capture (does not change the tokens; replays exactly in the MAC).

use perfwatt::capture::{build_batch, run_infer, CaptureSpec, InferConfig, Progress};
use perfwatt::model::{self, Precision};
use perfwatt::sim::{simulate, Counting, Design};
use perfwatt::trace::OperandStream;

/// A design of the catalogue by name.
fn named(name: &str) -> Design {
    Design::named(name).unwrap()
}

fn cfg(new_tokens: usize) -> InferConfig {
    InferConfig {
        max_new_tokens: new_tokens,
        warmup: 0,
        repeats: 1,
        ..Default::default()
    }
}

fn infer(c: &InferConfig, capture: Option<&std::path::Path>) -> perfwatt::capture::InferReport {
    run_infer(
        c,
        capture,
        Progress {
            on_step: &mut |_, _| {},
            interrupted: &|| false,
            sync: None,
        },
    )
    .unwrap()
    .0
}

#[test]
fn batches_have_exact_lengths_and_the_chat_template() {
    let (_, tok) = model::load(
        &model::default_model_path(),
        Precision::Q4_1,
        model::Opts::all(),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let prompts = InferConfig::default().prompts;
    for len in [40, 96, 192, 512, 1024] {
        let b = build_batch(&tok, &prompts, 5, len).unwrap();
        assert_eq!(b.len(), 5);
        for s in &b {
            assert_eq!(s.len(), len);
            assert!(tok
                .decode(s)
                .ends_with("<|im_end|>\n<|im_start|>assistant\n"));
        }
        // Long prompts are real text: consecutive prompts of the set, each sequence from
        // another first prompt.
        if len >= 512 {
            assert_ne!(b[0], b[1]);
            assert!(tok.decode(&b[0]).contains("\n\n"));
        }
    }
    let e = build_batch(&tok, &prompts, 1, 5000)
        .unwrap_err()
        .to_string();
    assert!(e.contains("long enough"), "{e}");
}

#[test]
fn capture_leaves_tokens_unchanged_and_replays_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ops = dir.path().join("c.ops");
    let mut c = cfg(6);
    let plain = infer(&c, None);
    c.capture = Some(CaptureSpec {
        layers: vec![0, 29],
        projs: vec!["q".into(), "down".into()],
        max_pairs: 40_000,
        rows: 2,
        width: 8,
        ..CaptureSpec::default()
    });
    let captured = infer(&c, Some(&ops));
    assert_eq!(plain.tokens, captured.tokens);
    // The capture run is not among the measured runs.
    assert_eq!(captured.run_latencies_s.len(), 1);
    let s = OperandStream::read(&ops, 8).unwrap();
    assert_eq!(s.width, 8);
    // q4_1 as the kernel multiplies it: uint4 weight nibbles x q8_1 int8 activations.
    assert_eq!(s.format_name(), "i8 x u4");
    assert!(s.meta["format"]["arithmetic"]
        .as_str()
        .unwrap()
        .starts_with("q4_1"));
    assert!(s
        .pairs
        .iter()
        .all(|&(a, b)| a.abs() <= 127 && (0..=15).contains(&b)));
    assert!(
        s.pairs.len() <= 40_000 && s.pairs.len() > 30_000,
        "{}",
        s.pairs.len()
    );
    let segs = s.meta["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 4);
    let dot: Vec<u64> = segs
        .iter()
        .map(|g| g["dot_len"].as_u64().unwrap())
        .collect();
    assert_eq!(dot, vec![576, 1536, 576, 1536]); // q and down of layer 0, then layer 29
                                                 // Sampled from the whole run: prefill positions past the template and 5 decode steps.
    let prompt = captured.prompt_tokens as u64;
    for g in segs {
        let seen = g["vectors_seen"].as_u64().unwrap();
        assert!(seen > 5 && seen < prompt + 5, "{g}");
    }
    // Per-block scales: every 32-element block's largest |x| maps to 127, so far fewer
    // zero activations than the per-tensor quantization gave (~30%).
    assert!(s.pairs.iter().any(|&(a, _)| a.abs() == 127));
    assert!(s.zero_fraction() < 0.2, "{}", s.zero_fraction());
    // Every datapath computes the captured dot products exactly (simulate checks acc vs Rust),
    // the dot units in their int8 x uint4 build (the bf16 datapaths cannot take it, and say so).
    for d in Design::all().filter(|&d| !d.is_bf16()) {
        let r = simulate(d, &s, &Counting::Fast, &mut |_| {}).unwrap();
        if d.is_dot() {
            assert_eq!(r.format, "i8 x u4");
        }
    }
}

/// Each precision is captured in its kernel's format, so precision moves the toggles:
/// integers for the quantized kernels, bf16/f16 bit patterns for the dense ones (f32
/// rounded to bf16, and said so).
#[test]
fn precision_changes_the_captured_format_and_the_toggles() {
    let dir = tempfile::tempdir().unwrap();
    let mut per = Vec::new();
    for (dtype, format, arith) in [
        (Precision::Q8_0, "i8 x i8", "q8_0"),
        (Precision::Q4_0, "i8 x i4", "q4_0"),
        (
            Precision::Bf16,
            "bf16 x bf16",
            "bf16: bf16 weights x bf16 activations",
        ),
        (
            Precision::F16,
            "f16 x f16",
            "f16: f16 weights x f16 activations",
        ),
        (
            Precision::F32,
            "bf16 x bf16",
            "f32: f32 weights and activations rounded to bf16",
        ),
    ] {
        let mut c = cfg(3);
        c.precision = dtype;
        c.capture = Some(CaptureSpec {
            layers: vec![0],
            projs: vec!["q".into()],
            max_pairs: 20_000,
            rows: 2,
            ..CaptureSpec::default()
        });
        let p = dir.path().join(format!("{}.ops", dtype.name()));
        infer(&c, Some(&p));
        let s = OperandStream::read(&p, 8).unwrap();
        assert_eq!(s.format_name(), format, "{}", dtype.name());
        assert!(s.meta["format"]["arithmetic"]
            .as_str()
            .unwrap()
            .starts_with(arith));
        if dtype == Precision::F16 {
            // No f16 datapath: every design says why it cannot take the stream.
            assert!(Design::all().all(|d| d.params_for(&s, 16).is_err()));
            continue;
        }
        let mac = if s.is_integer() {
            named("baseline")
        } else {
            named("bf16")
        };
        per.push(
            simulate(mac, &s, &Counting::Fast, &mut |_| {})
                .unwrap()
                .toggles_per_pair,
        );
    }
    // int8 weights switch more bits than 4-bit ones.
    assert!(per[0] > per[1] + 1.0, "{per:?}");
}

#[test]
fn report_schema_on_cpu_has_null_energy_and_sane_latency() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(4);
    c.repeats = 2;
    let (r, samples) = run_infer(
        &c,
        None,
        Progress {
            on_step: &mut |_, _| {},
            interrupted: &|| false,
            sync: None,
        },
    )
    .unwrap();
    let out = dir.path().join("r.json");
    let power = perfwatt::capture::write_report(&r, &samples, &out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(v["schema"], "perfwatt.infer/1");
    for k in ["p50", "p95", "p99"] {
        assert!(v["latency_s"][k].as_f64().unwrap() > 0.0);
    }
    assert!(v["ttft_s"]["p50"].as_f64().unwrap() < v["latency_s"]["p50"].as_f64().unwrap());
    assert_eq!(v["latency_s"]["mean"]["n"], 2);
    assert!(v["tokens_per_s_output"]["mean"].as_f64().unwrap() > 0.0);
    assert_eq!(v["energy"]["available"], false);
    assert!(v["energy"]["joules"].is_null() && v["energy"]["j_per_token"].is_null());
    assert!(v["energy"]["reason"].as_str().unwrap().contains("CPU"));
    assert!(v["flops_per_run"].as_f64().unwrap() > 1e9);
    assert!(std::fs::read_to_string(power)
        .unwrap()
        .starts_with("t_s,phase,power_w"));
}

#[test]
fn kv_cache_off_and_batching_give_the_same_greedy_tokens() {
    let base = infer(&cfg(5), None);
    let mut nokv = cfg(5);
    nokv.kv_cache = false;
    assert_eq!(infer(&nokv, None).tokens[0], base.tokens[0]);
    let mut b3 = cfg(5);
    b3.batch = 3;
    let r = infer(&b3, None);
    assert_eq!(r.tokens.len(), 3);
    assert_eq!(r.tokens[0], base.tokens[0]);
}

#[test]
fn sparsity_zeroes_more_operands() {
    let dir = tempfile::tempdir().unwrap();
    let spec = CaptureSpec {
        layers: vec![0],
        projs: vec!["down".into()],
        max_pairs: 30_000,
        rows: 2,
        ..CaptureSpec::default()
    };
    let mut zero_frac = Vec::new();
    for tau in [0.0f32, 0.05] {
        let mut c = cfg(2);
        c.sparsity_tau = tau;
        c.capture = Some(spec.clone());
        let p = dir.path().join(format!("{tau}.ops"));
        infer(&c, Some(&p));
        let s = OperandStream::read(&p, 8).unwrap();
        zero_frac.push(s.pairs.iter().filter(|p| p.0 == 0).count() as f64 / s.pairs.len() as f64);
    }
    assert!(zero_frac[1] > zero_frac[0] + 0.05, "{zero_frac:?}");
}

/// `infer --devices`: two workers at once (CPU here; on a GPU host each has its own GPU):
/// percentiles pool every device's samples, tokens/s counts all tokens over the one shared
/// window, energy is n/a with the reason, and every file is written.
#[test]
fn two_devices_pool_their_samples_and_share_one_window() {
    use perfwatt::capture::{run_infer_devices, write_devices_report, DevicesProgress};
    let c = InferConfig {
        repeats: 3,
        ..cfg(5)
    };
    let devices = [perfwatt::device::DeviceSpec::Cpu; 2];
    let steps = std::sync::Mutex::new(vec![0; 2]);
    let run = run_infer_devices(
        &c,
        &devices,
        DevicesProgress {
            on_step: &|i, done, _| steps.lock().unwrap()[i] = done,
            interrupted: &|| false,
        },
    )
    .unwrap();
    assert_eq!(*steps.lock().unwrap(), vec![3, 3]);
    let h = &run.host;
    assert!(h.same_tokens);
    assert_eq!(h.output_tokens, 2 * 3 * 5);
    // Pooled: every decode step of both devices, and the pooled median is the median of
    // all of them, not an average of the two devices' medians.
    let mut all: Vec<f64> = run
        .reports
        .iter()
        .flat_map(|(r, _)| r.runs.iter().flat_map(|x| x.step_latencies_s.clone()))
        .collect();
    assert_eq!(h.tpot_s.samples, 2 * 3 * 4);
    assert_eq!(h.tpot_s.samples, all.len());
    all.sort_by(f64::total_cmp);
    let p50 = perfwatt::stats::percentile(&all, 50.0).unwrap();
    assert!((h.tpot_s.p50 - p50).abs() < 1e-12);
    assert_eq!(h.latency_s.samples, 6);
    // The window holds every measured run of each device.
    for (r, _) in &run.reports {
        assert!(h.window_s >= r.run_latencies_s.iter().sum::<f64>() * 0.999);
    }
    assert!((h.tokens_per_s_output - 30.0 / h.window_s).abs() < 1e-9);
    assert!(!h.energy.available && h.energy.joules.is_none());
    assert!(h.energy.reason.as_ref().unwrap().contains("CPU"));

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("multi.json");
    let files = write_devices_report(&run, &out).unwrap();
    assert_eq!(files.len(), 1 + 2 * 2);
    let host: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(host["schema"], "perfwatt.infer-devices/1");
    assert_eq!(host["devices"][0]["report"], "multi.cpu.json");
    assert_eq!(host["devices"][1]["report"], "multi.cpu-1.json");
    assert_eq!(host["host"]["tpot_s"]["samples"], 24);

    // One device is not a multi-device run; a capture is one device's.
    let one = run_infer_devices(
        &c,
        &devices[..1],
        DevicesProgress {
            on_step: &|_, _, _| {},
            interrupted: &|| false,
        },
    );
    assert!(one.err().unwrap().to_string().contains("--device cuda:N"));
}

/// `infer --threads N` sizes the CPU thread pool and the report says the size it got (each
/// in a process of its own: a pool is made once per process); 0 is a clear error.
#[test]
fn threads_knob_sizes_the_pool_and_the_report_says_so() {
    let dir = tempfile::tempdir().unwrap();
    for n in [1, 2] {
        let out = dir.path().join(format!("t{n}.json"));
        let st = std::process::Command::new(env!("CARGO_BIN_EXE_perfwatt"))
            .args([
                "infer",
                "--threads",
                &n.to_string(),
                "--max-new-tokens",
                "2",
                "--warmup",
                "0",
                "--repeats",
                "1",
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(r["threads"], n);
        assert_eq!(r["config"]["threads"], n);
    }
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_perfwatt"))
        .args(["infer", "--threads", "0", "--out"])
        .arg(dir.path().join("t0.json"))
        .output()
        .unwrap();
    assert!(!st.status.success());
    assert!(String::from_utf8_lossy(&st.stderr).contains("--threads must be at least 1"));
}
