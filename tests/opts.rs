//! Every optimization knob (`model::Opt`, `perfwatt infer --opt`) leaves the arithmetic
//! alone: with any set on, greedy tokens and even the logits are bit for bit those of the
//! plain forward pass (`none`), at batch 2 through prefill and decode.

use candle_core::{Device, Tensor};
use perfwatt::model::{self, argmax, Opt, Opts, Precision};

/// Greedy continuation of two prompts, and the logits of the last step.
fn generate(opts: Opts, prompts: &[Vec<u32>; 2], n: usize) -> (Vec<Vec<u32>>, Vec<u32>) {
    let (mut m, _) = model::load(
        &model::default_model_path(),
        Precision::Q4_1,
        opts,
        &Device::Cpu,
    )
    .unwrap();
    let mut seqs = prompts.to_vec();
    let mut input = Tensor::new(seqs.clone(), &Device::Cpu).unwrap();
    let mut pos = 0;
    let mut last = Vec::new();
    for _ in 0..n {
        let logits = m.forward(&input, pos, None).unwrap();
        pos += input.dim(1).unwrap();
        let next = argmax(&logits).unwrap();
        last = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (s, &t) in seqs.iter_mut().zip(&next) {
            s.push(t);
        }
        input = Tensor::new(next.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(1)
            .unwrap();
    }
    (seqs, last.iter().map(|x| x.to_bits()).collect())
}

#[test]
fn greedy_tokens_and_logits_are_the_same_with_any_optimization() {
    let tok = model::load(
        &model::default_model_path(),
        Precision::Q4_1,
        Opts::NONE,
        &Device::Cpu,
    )
    .unwrap()
    .1;
    let a = tok
        .encode("The capital of France is Paris. The capital of Italy is")
        .unwrap();
    let b = tok
        .encode("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci numb")
        .unwrap();
    let len = a.len().min(b.len());
    let prompts = [a[..len].to_vec(), b[..len].to_vec()];
    let plain = generate(Opts::NONE, &prompts, 20);
    assert_ne!(plain.0[0], plain.0[1], "two different continuations");
    let mut sets = vec![Opts::all()];
    sets.extend(Opts::all_but_one());
    sets.extend(Opt::ALL.iter().map(|&o| Opts::NONE.with(o, true)));
    for opts in sets {
        let got = generate(opts, &prompts, 20);
        assert_eq!(
            got.0, plain.0,
            "--opt {opts}: greedy tokens differ from --opt none"
        );
        assert!(
            got.1 == plain.1,
            "--opt {opts}: last logits differ from --opt none"
        );
    }
}
