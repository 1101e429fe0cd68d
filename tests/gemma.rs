//! The second architecture, Gemma 3 270M (scripts/fetch-gemma.sh), against llama.cpp: its
//! tokenizer's ids on a set of texts and its greedy continuations of two chat prompts, one
//! past the 512-position sliding window (tests/data/gemma-reference.json, written by
//! scripts/gemma-reference.py with llama-cpp-python).

use candle_core::{Device, Tensor};
use perfwatt::model::{self, argmax, Arch, Precision};
use serde_json::Value;

fn gemma_path() -> std::path::PathBuf {
    perfwatt::asset_path("models/gemma-3-270m-q4_k_m.gguf")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(perfwatt::asset_path("tests/data/gemma-reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn load(precision: Precision) -> (model::Llama, model::Tokenizer) {
    model::load(&gemma_path(), precision, model::Opts::all(), &Device::Cpu).unwrap()
}

/// `n` greedy tokens after `prompt`: one prefill, then a decode step per token.
fn greedy(m: &mut model::Llama, prompt: &[u32], n: usize) -> Vec<u32> {
    m.clear_kv_cache();
    let (mut out, mut pos, mut input) = (Vec::new(), 0, prompt.to_vec());
    for _ in 0..n {
        let t = Tensor::new(input.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let next = argmax(&m.forward(&t, pos, None).unwrap()).unwrap()[0];
        pos += input.len();
        out.push(next);
        input = vec![next];
    }
    out
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
    assert_eq!((m.config.n_layer, m.config.head_dim, m.config.sliding_window), (18, 256, Some(512)));
    for case in reference()["cases"].as_array().unwrap() {
        let prompt = ids(&case["prompt"]);
        let want = ids(&case["greedy"]);
        let got = greedy(&mut m, &prompt, want.len());
        assert_eq!(got, want, "{}: ours {:?} vs llama.cpp {:?}", case["name"], tok.decode(&got), tok.decode(&want));
    }
}
