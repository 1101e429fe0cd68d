//! The shipped model: tokenizer against known ids, round trips, and greedy generation
//! (coherent, and equal to what candle's own quantized llama and MODEL.md report).

use candle_core::{Device, Tensor};
use perfwatt::model::{self, argmax, Precision};

/// The shipped model on the CPU with every optimization (tests/opts.rs covers the rest).
fn load(precision: Precision) -> (model::Llama, model::Tokenizer) {
    model::load(
        &model::default_model_path(),
        precision,
        model::Opts::all(),
        &Device::Cpu,
    )
    .unwrap()
}

fn greedy(precision: Precision, ids: &[u32], n: usize) -> Vec<u32> {
    load(precision).0.greedy(ids, n).unwrap()
}

#[test]
fn tokenizer_matches_reference_ids_and_round_trips() {
    let (_, tok) = load(Precision::Q4_1);
    assert_eq!(
        tok.encode("The capital of France is").unwrap(),
        vec![504, 3575, 282, 4649, 314]
    );
    for text in [
        "Hello, world! It's 2026; 3.14159 * 42 = 131.95",
        "  leading spaces\n\nand\ttabs  ",
        "naïve café — 東京 🚀",
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    ] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids), text);
    }
    let ids = tok.encode("<|im_start|>user").unwrap();
    assert_eq!(ids[0], tok.token_id("<|im_start|>").unwrap());
    assert_eq!(
        tok.encode("12345").unwrap().len(),
        5,
        "digits are split one by one"
    );
}

#[test]
fn greedy_generation_is_coherent() {
    let (_, tok) = load(Precision::Q4_1);
    let out = greedy(Precision::Q4_1, &[504, 3575, 282, 4649, 314], 12);
    let text = tok.decode(&out);
    assert!(text.starts_with(" Paris."), "{text:?}");
    assert_eq!(
        text,
        " Paris.\n\nThe United States has a population of approximately"
    );
}

#[test]
fn matches_candle_quantized_llama() {
    // candle-transformers' own implementation on the same file: same greedy tokens.
    let path = model::default_model_path();
    let mut f = std::fs::File::open(&path).unwrap();
    let ct = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let mut reference = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
        ct,
        &mut f,
        &Device::Cpu,
    )
    .unwrap();
    let prompt = [504u32, 3575, 282, 4649, 314];
    let mut ids = Vec::new();
    let mut input = prompt.to_vec();
    let mut pos = 0;
    for _ in 0..8 {
        let t = Tensor::new(input.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = reference.forward(&t, pos).unwrap();
        let next = argmax(&logits).unwrap()[0];
        pos += input.len();
        ids.push(next);
        input = vec![next];
    }
    assert_eq!(greedy(Precision::Q4_1, &prompt, 8), ids);
}

#[test]
fn precision_variants_load_and_stay_coherent() {
    let (_, tok) = load(Precision::Q4_1);
    // Higher precisions than the shipped Q4_1 keep the answer.
    for p in [
        Precision::Q8_0,
        Precision::F32,
        Precision::F16,
        Precision::Bf16,
    ] {
        let text = tok.decode(&greedy(p, &[504, 3575, 282, 4649, 314], 3));
        assert!(text.contains("Paris"), "{p:?}: {text:?}");
    }
    // Re-quantizing 4-bit weights to another 4-bit format loses information twice; it runs
    // but may change the answer (Q4_0 gave " capitalised as" here): a real effect the sweep
    // measures, not a failure.
    for p in [Precision::Q4_0, Precision::Q4K] {
        let out = greedy(p, &[504, 3575, 282, 4649, 314], 3);
        assert!(out.iter().all(|&t| (t as usize) < tok.vocab_size()));
    }
}

/// Partial offload's code path (`--gpu-layers`), here with both sides on the CPU: the
/// pass's inputs copied for the later layers and the hidden state crossing after layer L
/// give the same greedy tokens as the unsplit model, at every split point tried; and
/// `infer --gpu-layers` on a CPU device is a clear error, not a silent CPU run.
#[test]
fn gpu_layers_split_keeps_tokens_and_needs_cuda_for_infer() {
    let (mut whole, tok) = load(Precision::Q4_1);
    let ids = tok.encode("The capital of France is").unwrap();
    let want = whole.greedy(&ids, 8).unwrap();
    for l in [0, 1, 15, 29] {
        let (mut split, _) = model::load_offloaded(
            &model::default_model_path(),
            Precision::Q4_1,
            model::Opts::all(),
            &Device::Cpu,
            Some(l),
        )
        .unwrap();
        assert_eq!(split.gpu_layers, Some(l));
        assert_eq!(
            split.greedy(&ids, 8).unwrap(),
            want,
            "split after {l} layers"
        );
    }
    let cfg = perfwatt::capture::InferConfig {
        gpu_layers: Some(4),
        max_new_tokens: 2,
        repeats: 1,
        warmup: 0,
        ..Default::default()
    };
    let progress = perfwatt::capture::Progress {
        on_step: &mut |_, _| {},
        interrupted: &|| false,
        sync: None,
    };
    let err = match perfwatt::capture::run_infer(&cfg, None, progress) {
        Ok(_) => panic!("--gpu-layers on the CPU ran"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("--gpu-layers 4") && err.contains("--device cuda"),
        "{err}"
    );
}
