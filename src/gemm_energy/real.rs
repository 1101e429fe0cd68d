//! Real LLM operands for GEMM patterns: the activations the shipped model's projections
//! really see on real prompts, and their real weights.
//!
//! In: the GGUF (SmolLM2-135M, Q4_1) and the shipped prompts. Out: per chosen projection,
//! the activation matrix [tokens, in] and the weight matrix [out, in] (dequantized f32),
//! from one CPU forward pass over a batch of chat-formatted prompts.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::gemm_energy::patterns::RealMatrix;
use crate::model::llama::me;
use crate::model::{self, LinearId, LinearTap, Precision, WeightView};

/// The projections the real patterns use: (pattern name, layer, projection).
pub const REAL: &[(&str, usize, &str)] = &[
    ("llm-q-l0", 0, "q"),
    ("llm-k-l0", 0, "k"),
    ("llm-v-l0", 0, "v"),
    ("llm-o-l15", 15, "o"),
    ("llm-up-l15", 15, "up"),
    ("llm-down-l15", 15, "down"),
    ("llm-q-l29", 29, "q"),
    ("llm-gate-l29", 29, "gate"),
    ("llm-down-l29", 29, "down"),
];

/// Keeps every activation row and the weight of the chosen projections.
struct MatrixTap {
    want: Vec<(usize, &'static str)>,
    got: Vec<(LinearId, RealMatrix, RealMatrix)>,
}

fn matrix(t: &Tensor) -> Result<RealMatrix> {
    let t = t.to_dtype(candle_core::DType::F32).map_err(me)?;
    let cols = *t.dims().last().unwrap_or(&1);
    let values = t.flatten_all().map_err(me)?.to_vec1::<f32>().map_err(me)?;
    Ok(RealMatrix {
        rows: values.len() / cols.max(1),
        cols,
        values,
    })
}

impl LinearTap for MatrixTap {
    fn wants(&self, id: &LinearId) -> bool {
        id.layer.is_some_and(|l| self.want.contains(&(l, id.proj)))
    }

    fn record(&mut self, id: &LinearId, x: &Tensor, weight: &WeightView) -> Result<()> {
        if !self.got.iter().any(|g| &g.0 == id) {
            self.got
                .push((id.clone(), matrix(x)?, matrix(&weight.f32()?)?));
        }
        Ok(())
    }
}

/// (pattern name, activations, weights) of every `REAL` projection, from one prefill of
/// `batch` prompts of `tokens` tokens each.
pub fn real_matrices(
    gguf: &Path,
    prompts: &Path,
    batch: usize,
    tokens: usize,
) -> Result<Vec<(&'static str, RealMatrix, RealMatrix)>> {
    let (mut m, tok) = model::load(gguf, Precision::Q4_1, model::Opts::all(), &Device::Cpu)?;
    let ids = crate::capture::build_batch(&tok, prompts, batch, tokens)?;
    let mut tap = MatrixTap {
        want: REAL.iter().map(|r| (r.1, r.2)).collect(),
        got: Vec::new(),
    };
    let input = Tensor::new(ids, &Device::Cpu).map_err(me)?;
    m.forward(&input, 0, Some(&mut tap))?;
    Ok(REAL
        .iter()
        .filter_map(|&(name, layer, proj)| {
            let i = tap
                .got
                .iter()
                .position(|g| g.0.layer == Some(layer) && g.0.proj == proj)?;
            let (_, x, w) = tap.got.swap_remove(i);
            Some((name, x, w))
        })
        .collect())
}
