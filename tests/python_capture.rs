//! The Python capture package (`python/perfwatt_capture`) against perfwatt: its `.ops`
//! writer read back and re-encoded byte for byte, and its `nn.Linear` hooks run for real on
//! a small randomly initialised torch model (Debian's python3-torch, installed by `make
//! deps`), the stream laid out as `infer --capture` lays it out and simulated by `perfwatt
//! sim`.

use std::path::{Path, PathBuf};
use std::process::Command;

use perfwatt::trace::{ElemFormat, OperandStream};

/// The interpreter with torch: $PERFWATT_PYTHON, else Debian's (python3-torch lives there).
fn python() -> PathBuf {
    std::env::var_os("PERFWATT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let debian = Path::new("/usr/bin/python3");
            if debian.exists() {
                debian.into()
            } else {
                "python3".into()
            }
        })
}

fn run_python(code: &str, dir: &Path) -> String {
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let o = Command::new(python())
        .arg("-c")
        .arg(code)
        .current_dir(dir)
        .env("PYTHONPATH", pkg)
        .output()
        .expect("python3 runs");
    assert!(
        o.status.success(),
        "python failed (torch: `make deps` installs python3-torch):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn python_writer_is_read_and_reencoded_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    // Every format pair the kernels produce, values over each format's whole range.
    let code = r#"
from perfwatt_capture.ops import OpsStream, write_ops
cases = {"i8": ("i8", "i8", 256, -128), "q4_1": ("i8", "u4", 16, 0), "q4_0": ("i8", "i4", 16, -8),
         "bf16": ("bf16", "bf16", 65536, -32768), "i16": ("i16", "i16", 65536, -32768)}
for name, (fa, fb, span, lo) in cases.items():
    n = 1000
    a = [((i * 37) % 256) - 128 if fa == "i8" else ((i * 40503) % 65536) - 32768 for i in range(n)]
    b = [((i * 7) % span) + lo for i in range(n)]
    meta = {"source": "test ü", "segments": [{"layer": "l0", "proj": "q", "start": 0, "pairs": n, "dot_len": 50}]}
    write_ops(f"{name}.ops", OpsStream(fa, fb, a, b, meta), f"{fa} x {fb}")
"#;
    run_python(code, dir.path());
    for (name, fa, fb, span, lo) in [
        ("i8", ElemFormat::I8, ElemFormat::I8, 256, -128),
        ("q4_1", ElemFormat::I8, ElemFormat::U4, 16, 0),
        ("q4_0", ElemFormat::I8, ElemFormat::I4, 16, -8),
        ("bf16", ElemFormat::Bf16, ElemFormat::Bf16, 65536, -32768),
        ("i16", ElemFormat::I16, ElemFormat::I16, 65536, -32768),
    ] {
        let path = dir.path().join(format!("{name}.ops"));
        let bytes = std::fs::read(&path).unwrap();
        let s = OperandStream::from_ops_bytes(&bytes, name).unwrap();
        assert_eq!((s.a_format, s.b_format), (fa, fb), "{name}");
        let want: Vec<(i16, i16)> = (0..1000i64)
            .map(|i| {
                let a = if fa == ElemFormat::I8 {
                    (i * 37) % 256 - 128
                } else {
                    (i * 40503) % 65536 - 32768
                };
                (a as i16, ((i * 7) % span + lo) as i16)
            })
            .collect();
        assert_eq!(s.pairs, want, "{name}");
        assert_eq!(s.dot_len(), None);
        assert_eq!(s.dot_starts().iter().filter(|&&f| f).count(), 20, "{name}");
        assert_eq!(
            s.meta["format"]["arithmetic"],
            format!("{} x {}", fa.name(), fb.name())
        );
        assert_eq!(
            s.to_ops_bytes(),
            bytes,
            "{name}: perfwatt re-encodes the file differently"
        );
    }
    // A value outside its format is refused by the writer, not written for perfwatt to reject.
    let o = Command::new(python())
        .args(["-c", "from perfwatt_capture.ops import *; write_ops('x.ops', OpsStream('i8', 'u4', [0], [16], {}), '')"])
        .current_dir(dir.path())
        .env("PYTHONPATH", Path::new(env!("CARGO_MANIFEST_DIR")).join("python"))
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("does not fit u4"));
}

#[test]
fn hooks_on_a_random_torch_model_capture_what_the_layers_multiply() {
    let dir = tempfile::tempdir().unwrap();
    // Two bf16 layers and an f32 model rounded to bf16; int8 under per-tensor scales. The
    // script prints what the layout must be: each kept vector's bits against weight rows.
    let code = r#"
import json, torch
from perfwatt_capture import Capture
torch.manual_seed(0)
def model(dtype):
    return torch.nn.Sequential(torch.nn.Linear(48, 32), torch.nn.ReLU(), torch.nn.Linear(32, 24)).to(dtype)
m = model(torch.bfloat16)
with Capture(m, vectors=6, rows=3, seed=5) as cap:
    for _ in range(4):
        m(torch.randn(2, 5, 48, dtype=torch.bfloat16))  # 10 vectors per call: 40 seen
s = cap.write_ops("bf16.ops", source="random model")
npy = cap.write_npy("npy")
l0 = cap.layers[0]
x0 = torch.stack(l0.kept)[0].view(torch.int16).tolist()
w = m[0].weight.detach().view(torch.int16)
f = model(torch.float32)
with Capture(f, match=["2"], vectors=4, rows=2) as c32:
    f(torch.randn(3, 48))
c32.write_ops("f32.ops")
with Capture(f, vectors=4, rows=2, int8=True) as c8:
    f(torch.randn(3, 48))
c8.write_ops("int8.ops")
# The reservoir keeps every vector with the same chance: ids 0..999, keep 100.
lin = torch.nn.Linear(4, 2)
with Capture(lin, vectors=100, seed=3) as r:
    for c in range(10):
        lin(torch.arange(c * 100, c * 100 + 100, dtype=torch.float32)[:, None].repeat(1, 4))
ids = sorted(int(v[0]) for v in r.layers[0].kept)
print(json.dumps({"x0": x0, "w0": w[0].tolist(), "w1": w[10].tolist(), "w2": w[21].tolist(), "ids": ids}))
"#;
    let out = run_python(code, dir.path());
    let want: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let read = |n: &str| OperandStream::read(&dir.path().join(n), 8).unwrap();

    let s = read("bf16.ops");
    assert_eq!(
        (s.a_format, s.b_format),
        (ElemFormat::Bf16, ElemFormat::Bf16)
    );
    let segs = s.meta["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[0]["dot_len"], 48);
    assert_eq!(segs[0]["vectors_seen"], 40);
    assert_eq!(segs[0]["rows"], serde_json::json!([0, 10, 21]));
    assert_eq!(segs[1]["pairs"], 6 * 3 * 32);
    assert_eq!(s.pairs.len(), 6 * 3 * 48 + 6 * 3 * 32);
    // (x_i, w_ji): the first kept vector against rows 0, 10 and 21, K pairs each.
    let bits = |v: &serde_json::Value| -> Vec<i16> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap() as i16)
            .collect()
    };
    let x0 = bits(&want["x0"]);
    for (r, key) in ["w0", "w1", "w2"].iter().enumerate() {
        let got: Vec<(i16, i16)> = s.pairs[r * 48..(r + 1) * 48].to_vec();
        let expect: Vec<(i16, i16)> = x0.iter().copied().zip(bits(&want[*key])).collect();
        assert_eq!(got, expect, "row {key}");
    }
    // ReLU zeros reach the second layer: exactly zero bf16 activations, counted.
    assert!(
        segs[1]["a_zero_fraction"].as_f64().unwrap() > 0.2,
        "{}",
        segs[1]
    );

    let f = read("f32.ops");
    assert_eq!(f.meta["precision"], "f32 rounded to bf16");
    assert_eq!(
        f.meta["segments"].as_array().unwrap().len(),
        1,
        "match=[\"2\"]: one layer"
    );
    let q = read("int8.ops");
    assert_eq!((q.a_format, q.b_format), (ElemFormat::I8, ElemFormat::I8));
    assert!(q
        .pairs
        .iter()
        .all(|&(a, b)| a.abs() <= 127 && b.abs() <= 127));
    assert!(
        q.pairs.iter().any(|&(a, _)| a.abs() == 127),
        "the scale maps the max to 127"
    );

    // Uniform reservoir: the mean kept id of 100 of 0..999 is 499.5 +- 2 sd (58).
    let ids: Vec<f64> = want["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(ids.len(), 100);
    let mean = ids.iter().sum::<f64>() / 100.0;
    assert!(
        (mean - 499.5).abs() < 58.0 && ids[99] >= 900.0,
        "{mean} {ids:?}"
    );

    // gemm-energy takes the .npy pairs: the kept activations (6 x 48) times the weight
    // transposed (48 x 32), the values the layer multiplies.
    let ge = dir.path().join("ge");
    let o = Command::new(env!("CARGO_BIN_EXE_perfwatt"))
        .args(["gemm-energy", "--dtype", "bf16", "--operands"])
        .args([
            dir.path().join("npy/0.A.npy"),
            dir.path().join("npy/0.B.npy"),
        ])
        .args(["--seconds", "0.001", "--rounds", "1", "--out"])
        .arg(&ge)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ge.join("results.json")).unwrap()).unwrap();
    assert_eq!(r["points"][0]["pattern"], "user", "{r}");

    // perfwatt sim takes every stream: bf16 on the bf16 designs, int8 on the integer ones.
    for (file, design) in [("bf16.ops", "bf16"), ("int8.ops", "baseline")] {
        let o = Command::new(env!("CARGO_BIN_EXE_perfwatt"))
            .args(["sim", "--operands"])
            .arg(dir.path().join(file))
            .args(["--design", design, "--format", "json"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(j.to_string().contains("toggles"), "{file}: {j}");
    }
}
