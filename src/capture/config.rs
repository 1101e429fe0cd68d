//! What one `perfwatt infer` run is: `InferConfig` (device, precision, batch, lengths,
//! repeats, energy windows) and `CaptureSpec` (which matmuls' operands to record), and
//! the prompts it feeds the model.
//!
//! In: flags or a sweep point; a prompt set (JSON Lines with a `text` field). Out: the
//! config, and chat-formatted prompts of exactly the asked length.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::model::{self, Opts, Precision, Tokenizer};

/// What to capture. Layers and projections name the matmuls; each captured activation
/// vector meets `rows` evenly spaced weight rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CaptureSpec {
    pub layers: Vec<usize>,
    pub projs: Vec<String>,
    /// 8: the quantized kernel's own integers (int8 for formats without one); 16: int16
    /// with one scale per tensor.
    pub width: u8,
    pub max_pairs: usize,
    pub rows: usize,
    /// Seed of the reservoir sampling of activation vectors.
    pub seed: u64,
}

impl Default for CaptureSpec {
    fn default() -> Self {
        CaptureSpec {
            layers: vec![0, 15, 29],
            projs: ["q", "k", "v", "o", "gate", "up", "down"]
                .map(String::from)
                .to_vec(),
            width: 8,
            max_pairs: 500_000,
            rows: 4,
            seed: 1,
        }
    }
}

/// One `perfwatt infer` run. Serialized into the report and used by sweep points.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct InferConfig {
    pub model: PathBuf,
    pub prompts: PathBuf,
    pub device: DeviceSpec,
    pub precision: Precision,
    pub batch: usize,
    /// Prompt length in tokens (chat template included): short=40, medium=96, long=192, or N.
    pub prompt_len: String,
    pub max_new_tokens: usize,
    pub warmup: usize,
    pub repeats: usize,
    pub kv_cache: bool,
    /// Optimizations of the forward pass that are on (`model::Opt`): all by default.
    #[serde(default)]
    pub opts: Opts,
    /// Activation sparsity: zero |x| < tau at every projection's input (0 = off).
    pub sparsity_tau: f32,
    pub sample_hz: f64,
    /// Measure the sampler's own cost: measured runs (`runs`) or the decode steps of each
    /// measured run (`steps`) alternate sampler on / paused in ABBA order (drift cancels)
    /// and the report gains a paired comparison.
    pub sampler_ab: AbUnit,
    /// Grid carbon intensity for gCO2eq, g per kWh.
    pub grid_g_per_kwh: f64,
    /// Idle power: `idle_windows` counter windows of `idle_seconds` before the runs and
    /// as many after them (GPU only).
    pub idle_seconds: f64,
    pub idle_windows: usize,
    /// CPU threads of the kernels (candle's rayon pool and its gemm); None: one per core.
    pub threads: Option<usize>,
    /// Partial offload on CUDA: the first L layers on the GPU, the rest and the head on
    /// the CPU (None: every layer on `device`).
    pub gpu_layers: Option<usize>,
    pub capture: Option<CaptureSpec>,
}

impl Default for InferConfig {
    fn default() -> Self {
        InferConfig {
            model: model::default_model_path(),
            prompts: crate::asset_path("experiments/prompts.jsonl"),
            device: DeviceSpec::Cpu,
            precision: Precision::Q4_1,
            batch: 1,
            prompt_len: "short".into(),
            max_new_tokens: 16,
            warmup: 1,
            repeats: 3,
            kv_cache: true,
            opts: Opts::all(),
            sparsity_tau: 0.0,
            sample_hz: 50.0,
            sampler_ab: AbUnit::Off,
            grid_g_per_kwh: 400.0,
            idle_seconds: 5.0,
            idle_windows: 2,
            threads: None,
            gpu_layers: None,
            capture: None,
        }
    }
}

/// Size this process's CPU kernels' threads to `threads` and return the count they run
/// on: RAYON_NUM_THREADS, which candle reads once (its own rayon pool, barrier pool and
/// gemm threads), and rayon's global pool. Both are made once per process: a second,
/// different count is an error, not a silent no-op.
pub fn set_threads(threads: Option<usize>) -> Result<usize> {
    if let Some(n) = threads {
        if n == 0 {
            return Err(Error::Config("--threads must be at least 1".into()));
        }
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
        let have = (
            candle_core::utils::get_num_threads(),
            rayon::current_num_threads(),
        );
        if have != (n, n) {
            return Err(Error::Config(format!(
                "--threads {n}: this process's kernels already run {} threads (threads are set once per process, before the model loads)",
                have.0
            )));
        }
    }
    Ok(candle_core::utils::get_num_threads())
}

/// What the NVML sampler A/B alternates over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AbUnit {
    #[default]
    Off,
    Runs,
    Steps,
}

impl crate::choice::Choice for AbUnit {
    const WHAT: &'static str = "sampler A/B unit";
    const ALL: &'static [Self] = &[AbUnit::Off, AbUnit::Runs, AbUnit::Steps];
    fn name(self) -> &'static str {
        match self {
            AbUnit::Off => "off",
            AbUnit::Runs => "runs",
            AbUnit::Steps => "steps",
        }
    }
}
crate::choice_str!(AbUnit);

pub fn prompt_tokens(len: &str) -> Result<usize> {
    match len {
        "short" => Ok(40),
        "medium" => Ok(96),
        "long" => Ok(192),
        n => n.parse().ok().filter(|&n| n >= 8).ok_or_else(|| {
            Error::Config(format!(
                "prompt length '{n}': short, medium, long or a number >= 8"
            ))
        }),
    }
}

/// Chat-formatted prompts of exactly `len` tokens: prompts whose user text is long enough
/// are cut to fit (the template's head and tail kept), taken in file order, repeated to
/// fill the batch. Where no prompt is long enough (512, 1024 tokens), each sequence is
/// consecutive prompts of the set joined by a blank line, from a different first prompt
/// per sequence (wrapping around the set), cut to fit: real text, never padding; a set
/// whose prompts together are too short is an error. Equal lengths make batches exact.
pub fn build_batch(
    tok: &Tokenizer,
    prompts: &Path,
    batch: usize,
    len: usize,
) -> Result<Vec<Vec<u32>>> {
    /// One line of a prompt set (experiments/prompts.jsonl; other fields are provenance).
    #[derive(Deserialize)]
    struct PromptLine {
        text: String,
    }
    let lines: Vec<PromptLine> = crate::files::read_jsonl(prompts)?;
    let head = tok.encode(&tok.chat.prompt_head())?;
    let tail = tok.encode(&tok.chat.prompt_tail())?;
    let need = len
        .checked_sub(head.len() + tail.len())
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            Error::Config(format!(
                "prompt length {len} is shorter than the chat template ({} tokens)",
                head.len() + tail.len() + 1
            ))
        })?;
    let fit = |user: &[u32]| [head.as_slice(), &user[..need], tail.as_slice()].concat();
    let mut fits = Vec::new();
    for line in &lines {
        let user = tok.encode(&line.text)?;
        if user.len() >= need {
            fits.push(fit(&user));
        }
    }
    if fits.is_empty() {
        let n = lines.len();
        for first in 0..batch.min(n) {
            let joined: Vec<&str> = (0..n)
                .map(|i| lines[(first + i) % n].text.as_str())
                .collect();
            let user = tok.encode(&joined.join("\n\n"))?;
            if user.len() < need {
                return Err(Error::Config(format!(
                    "no prompt in {} is long enough for {len} tokens, nor are all {n} together ({} tokens)",
                    prompts.display(),
                    user.len() + head.len() + tail.len()
                )));
            }
            fits.push(fit(&user));
        }
    }
    if fits.is_empty() {
        return Err(Error::Config(format!("{}: no prompts", prompts.display())));
    }
    Ok((0..batch).map(|i| fits[i % fits.len()].clone()).collect())
}
