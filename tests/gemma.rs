//! The second architecture, Gemma 3 270M (scripts/fetch-gemma.sh), against llama.cpp: its
//! tokenizer's ids on a set of texts and its greedy continuations of two chat prompts, one
//! past the 512-position sliding window (tests/data/gemma-reference.json, written by
//! scripts/gemma-reference.py with llama-cpp-python).

use candle_core::Device;
use perfwatt::model::{self, Arch, Precision};
use serde_json::Value;

fn gemma_path() -> std::path::PathBuf {
    perfwatt::asset_path("models/gemma-3-270m-q4_k_m.gguf")
}

fn reference() -> Value {
    let text =
        std::fs::read_to_string(perfwatt::asset_path("tests/data/gemma-reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn load(precision: Precision) -> (model::Llama, model::Tokenizer) {
    model::load(&gemma_path(), precision, model::Opts::all(), &Device::Cpu).unwrap()
}

#[test]
fn tokenizer_equals_llama_cpp_and_round_trips() {
    let (_, tok) = load(Precision::Gguf);
    assert_eq!(tok.chat, model::ChatFormat::Gemma);
    for case in reference()["tokenize"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = tok.encode(text).unwrap();
        assert_eq!(got, ids(&case["ids"]), "ids of {text:?}");
        assert_eq!(tok.decode(&got), text, "round trip of {text:?}");
    }
}

#[test]
fn greedy_tokens_equal_llama_cpp_inside_and_past_the_sliding_window() {
    let (mut m, tok) = load(Precision::Gguf);
    assert_eq!(m.config.arch, Arch::Gemma3);
    assert_eq!(
        (m.config.n_layer, m.config.head_dim, m.config.sliding_window),
        (18, 256, Some(512))
    );
    for case in reference()["cases"].as_array().unwrap() {
        let prompt = ids(&case["prompt"]);
        let want = ids(&case["greedy"]);
        let got = m.greedy(&prompt, want.len()).unwrap();
        assert_eq!(
            got,
            want,
            "{}: ours {:?} vs llama.cpp {:?}",
            case["name"],
            tok.decode(&got),
            tok.decode(&want)
        );
    }
}

/// `infer --model gemma3 --dtype gguf --capture`: the operands of every projection format
/// the GGUF mixes (q5_0, q4_k, q6_k, q8_0), each in its kernel's integers, read back and
/// replayed into the integer datapaths.
#[test]
fn capture_keeps_each_projection_in_its_own_format_and_simulates() {
    use perfwatt::capture::{run_infer, CaptureSpec, InferConfig, Progress};
    use perfwatt::sim::{simulate, Counting, Design};
    use perfwatt::trace::OperandStream;
    let dir = tempfile::tempdir().unwrap();
    let ops = dir.path().join("gemma.ops");
    let cfg = InferConfig {
        model: gemma_path(),
        precision: Precision::Gguf,
        max_new_tokens: 3,
        warmup: 0,
        repeats: 1,
        capture: Some(CaptureSpec {
            layers: vec![0, 2],
            max_pairs: 40_000,
            ..CaptureSpec::default()
        }),
        ..Default::default()
    };
    let progress = Progress {
        on_step: &mut |_, _| {},
        interrupted: &|| false,
        sync: None,
    };
    let (report, _) = run_infer(&cfg, Some(&ops), progress).unwrap();
    assert_eq!(report.model["config"]["arch"], "gemma3");
    let s = OperandStream::read(&ops, 8).unwrap();
    assert_eq!(
        s.format_name(),
        "i8 x i8",
        "mixed formats travel as int8 containers"
    );
    let segs = s.meta["segments"].as_array().unwrap();
    let format_of = |proj: &str, layer: u64| {
        segs.iter()
            .find(|g| g["proj"] == proj && g["layer"] == layer)
            .map(|g| {
                g["arithmetic"]
                    .as_str()
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .unwrap()
    };
    // blk.0: q, k, gate, up Q5_0; v Q8_0; o Q4_K; down Q6_K (blk.2's down is Q4_K).
    for (proj, layer, want) in [
        ("q", 0, "q5_0"),
        ("v", 0, "q8_0"),
        ("o", 0, "q4_k"),
        ("down", 0, "q6_k"),
        ("down", 2, "q4_k"),
    ] {
        assert_eq!(format_of(proj, layer), want, "{proj} of layer {layer}");
    }
    // Each segment's weights lie in its format's range (q4_k: nibbles; q6_k: -32..31).
    for g in segs {
        let (start, n) = (
            g["start"].as_u64().unwrap() as usize,
            g["pairs"].as_u64().unwrap() as usize,
        );
        let (lo, hi) = s.pairs[start..start + n]
            .iter()
            .fold((i16::MAX, i16::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let (min, max) = match g["arithmetic"].as_str().unwrap().split(':').next().unwrap() {
            "q5_0" => (-16, 15),
            "q4_k" => (0, 15),
            "q6_k" => (-32, 31),
            _ => (-128, 127),
        };
        assert!(
            lo >= min && hi <= max && hi > lo,
            "{}: weights {lo}..{hi}",
            g["proj"]
        );
    }
    let r = simulate(
        Design::named("baseline").unwrap(),
        &s,
        &Counting::Fast,
        &mut |_| {},
    )
    .unwrap();
    assert!(r.toggles_per_pair > 1.0);
}
