//! Every optimization knob (`model::Opt`, `perfwatt infer --opt`) leaves the arithmetic
//! alone: with any set on, greedy tokens and even the logits are bit for bit those of the
//! plain forward pass (`none`), at batch 2 through prefill and decode. `graphs` is a CUDA
//! knob: the static decode step it captures is checked here on the CPU, step by step on
//! the same tokens, against the plain step (its attention spans the whole reserved cache,
//! so candle's CPU softmax sums in another order: close, not bit for bit).

use candle_core::{Device, Tensor};
use perfwatt::model::{self, argmax, Opt, Opts, Precision, StaticStep};

/// Two prompts of the same length.
fn test_prompts() -> [Vec<u32>; 2] {
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
    [a[..len].to_vec(), b[..len].to_vec()]
}

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
    let prompts = test_prompts();
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

/// The static decode step (what `graphs` captures on CUDA), fed the plain step's tokens at
/// every position, gives the plain step's logits bit for bit, though its attention spans
/// the whole reserved cache (masked): run twice, the second time on the kept reservation.
/// So does the plain step over a fixed span (a concatenated cache padded with zeros).
#[test]
fn static_step_gives_the_plain_step_logits() {
    let prompts = test_prompts();
    let (n, l) = (24, prompts[0].len());
    let load = || {
        model::load(
            &model::default_model_path(),
            Precision::Q4_1,
            Opts::NONE,
            &Device::Cpu,
        )
        .unwrap()
        .0
    };
    let (mut plain, mut fixed) = (load(), load());
    // The plain step attending over all l + n positions (what `perfwatt infer` does on
    // CUDA, for the same shapes as the static step) gives the same logits too.
    let mut spanning = load();
    spanning.decode_span = Some(l + n);
    let mut st = StaticStep::new(&fixed, 2, l + n).unwrap();
    for round in 0..2 {
        let allocated = fixed.reserve_kv(2, l + n).unwrap();
        assert_eq!(
            allocated,
            round == 0,
            "round {round}: only the first reservation allocates"
        );
        plain.clear_kv_cache();
        spanning.clear_kv_cache();
        spanning
            .forward(
                &Tensor::new(prompts.to_vec(), &Device::Cpu).unwrap(),
                0,
                None,
            )
            .unwrap();
        let prompt = Tensor::new(prompts.to_vec(), &Device::Cpu).unwrap();
        let mut next = argmax(&plain.forward(&prompt, 0, None).unwrap()).unwrap();
        assert_eq!(
            argmax(&fixed.forward(&prompt, 0, None).unwrap()).unwrap(),
            next
        );
        for step in 1..n {
            let pos = l + step - 1;
            let x = Tensor::new(next.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(1)
                .unwrap();
            let want = plain.forward(&x, pos, None).unwrap();
            let spanned = spanning.forward(&x, pos, None).unwrap();
            // The step sets its own next tokens and position; setting them is what lets the
            // two follow the same tokens.
            st.start(&next, pos).unwrap();
            let (got_next, got) = st.step_logits(&mut fixed).unwrap();
            next = argmax(&want).unwrap();
            assert_eq!(got_next, next, "round {round} step {step}: greedy tokens");
            let bits = |t: &Tensor| -> Vec<u32> {
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            };
            assert!(
                bits(&got) == bits(&want),
                "round {round} step {step}: logits differ"
            );
            assert!(
                bits(&spanned) == bits(&want),
                "round {round} step {step}: spanning"
            );
        }
    }
}
