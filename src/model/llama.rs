//! A llama decoder (SmolLM2's architecture) over GGUF weights, readable top to bottom.
//!
//! In: token ids [batch, seq] and the position of the first one. Out: logits of the last
//! position [batch, vocab]. Every projection is a `Linear` that can run quantized (candle's
//! QMatMul: Q4_1 as shipped, or re-quantized) or dense (f32/f16/bf16), can zero small
//! activations before its matmul (activation sparsity), and reports its input and weight
//! to an optional `LinearTap` (operand capture). The KV cache can be switched off.

use std::sync::Arc;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor, D};

use crate::error::{Error, Result};

/// candle errors, first line only (they may carry a backtrace).
pub(crate) fn me(e: candle_core::Error) -> Error {
    Error::Model(
        e.to_string()
            .lines()
            .next()
            .unwrap_or("candle error")
            .to_string(),
    )
}

/// Weight format of the projections: a software optimization the sweep compares.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Q4_1 as shipped in the GGUF (token embedding/output Q8_0).
    #[value(name = "q4_1")]
    Q4_1,
    /// Re-quantized from the shipped weights.
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
    /// Q4_K where the row length is a multiple of 256, Q4_0 elsewhere (as llama.cpp falls
    /// back); SmolLM2's hidden size 576 is not, so only ffn_down is really Q4_K.
    #[value(name = "q4k")]
    #[serde(rename = "q4k")]
    Q4K,
    /// Dequantized to dense f32 / f16 / bf16 matmuls.
    F32,
    F16,
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Q4_1 => "q4_1",
            Precision::Q8_0 => "q8_0",
            Precision::Q4_0 => "q4_0",
            Precision::Q4K => "q4k",
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }
    fn dense_dtype(self) -> Option<DType> {
        match self {
            Precision::F32 => Some(DType::F32),
            Precision::F16 => Some(DType::F16),
            Precision::Bf16 => Some(DType::BF16),
            _ => None,
        }
    }
}

/// Which projection of which layer (`layer` = None for the output head).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct LinearId {
    pub layer: Option<usize>,
    pub proj: &'static str,
}

/// Sees every projection's input activations (after sparsity) and, on request, its weight.
pub trait LinearTap {
    fn wants(&self, id: &LinearId) -> bool;
    /// `x`: [batch, seq, in] f32 (seq > 1: a prefill from position 0; seq = 1: a decode
    /// step). `weight`: the projection's weight, dequantized or as stored.
    fn record(&mut self, id: &LinearId, x: &Tensor, weight: &WeightView) -> Result<()>;
}

/// A projection's weight as a tap sees it: dequantized, or as the kernel stores it.
pub struct WeightView<'a>(&'a Linear);

impl WeightView<'_> {
    /// [out, in] f32.
    pub fn f32(&self) -> Result<Tensor> {
        self.0.weight_f32()
    }

    /// A quantized weight's GGUF blocks: their type and raw bytes, row after row (what
    /// the quantized matmul reads); None for a dense weight.
    pub fn blocks(&self) -> Result<Option<(GgmlDType, Vec<u8>)>> {
        match &self.0.w {
            Weight::Quant(_, q) => Ok(Some((q.dtype(), q.data().map_err(me)?.into_owned()))),
            Weight::Dense(_) => Ok(None),
        }
    }

    /// A dense weight's compute dtype (what the matmul multiplies); None when quantized.
    pub fn dense_dtype(&self) -> Option<candle_core::DType> {
        match &self.0.w {
            Weight::Quant(..) => None,
            Weight::Dense(t) => Some(t.dtype()),
        }
    }
}

enum Weight {
    Quant(QMatMul, Arc<QTensor>),
    /// Stored transposed, [in, out], in the compute dtype.
    Dense(Tensor),
}

pub struct Linear {
    id: LinearId,
    w: Weight,
    out_features: usize,
    in_features: usize,
}

impl Linear {
    fn new(id: LinearId, q: QTensor, precision: Precision, device: &Device) -> Result<Self> {
        let (out_features, in_features) = q.shape().dims2().map_err(me)?;
        let w = if let Some(dt) = precision.dense_dtype() {
            let t = q
                .dequantize(device)
                .map_err(me)?
                .t()
                .map_err(me)?
                .contiguous()
                .map_err(me)?;
            Weight::Dense(t.to_dtype(dt).map_err(me)?)
        } else {
            let target = match precision {
                Precision::Q8_0 => Some(GgmlDType::Q8_0),
                Precision::Q4_0 => Some(GgmlDType::Q4_0),
                Precision::Q4K if in_features % 256 == 0 => Some(GgmlDType::Q4K),
                Precision::Q4K => Some(GgmlDType::Q4_0),
                _ => None,
            };
            let q = match target {
                Some(dt) if dt != q.dtype() => requantize(&q, dt, device)?,
                _ => q,
            };
            let q = Arc::new(q);
            Weight::Quant(QMatMul::from_arc(q.clone()).map_err(me)?, q)
        };
        Ok(Linear {
            id,
            w,
            out_features,
            in_features,
        })
    }

    pub fn params(&self) -> usize {
        self.out_features * self.in_features
    }

    fn weight_f32(&self) -> Result<Tensor> {
        match &self.w {
            Weight::Quant(_, q) => q.dequantize(&q.device()).map_err(me),
            Weight::Dense(t) => t.t().map_err(me)?.to_dtype(DType::F32).map_err(me),
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        tau: f32,
        tap: &mut Option<&mut dyn LinearTap>,
    ) -> Result<Tensor> {
        // Activation sparsity: zero |x| < tau before the matmul.
        let x = if tau > 0.0 {
            let keep = x
                .abs()
                .map_err(me)?
                .ge(tau as f64)
                .map_err(me)?
                .to_dtype(x.dtype())
                .map_err(me)?;
            (x * keep).map_err(me)?
        } else {
            x.clone()
        };
        if let Some(t) = tap.as_deref_mut() {
            if t.wants(&self.id) {
                t.record(&self.id, &x, &WeightView(self))?;
            }
        }
        match &self.w {
            Weight::Quant(m, _) => m.forward(&x).map_err(me),
            Weight::Dense(w) => {
                let y = x
                    .to_dtype(w.dtype())
                    .map_err(me)?
                    .broadcast_matmul(w)
                    .map_err(me)?;
                y.to_dtype(DType::F32).map_err(me)
            }
        }
    }
}

/// Re-quantize a weight to `dt` on `device`. Quantization runs on the CPU; the result is
/// loaded onto the device like a GGUF tensor. candle 0.11's on-device `QTensor::quantize`
/// leaves the CUDA buffer's row padding uninitialised (`alloc`, where loading uses
/// `alloc_zeros`), and its CUDA matmuls read that padding: every re-quantized model then
/// generated only <|endoftext|> on an H100 (experiments/results/h100-2026-11-22).
fn requantize(q: &QTensor, dt: GgmlDType, device: &Device) -> Result<QTensor> {
    let f = q.dequantize(device).map_err(me)?;
    quantize_onto(&f, dt, device)
}

/// Quantize `f` to `dt` on the CPU and load the blocks onto `device` the way GGUF tensors
/// are loaded (see `requantize` for why not on the device).
pub(crate) fn quantize_onto(f: &Tensor, dt: GgmlDType, device: &Device) -> Result<QTensor> {
    let f = f.to_device(&Device::Cpu).map_err(me)?;
    let cpu = QTensor::quantize(&f, dt).map_err(me)?;
    if device.is_cpu() {
        return Ok(cpu);
    }
    let data = cpu.data().map_err(me)?;
    let storage = QStorage::from_data(data, device, dt).map_err(me)?;
    QTensor::new(storage, cpu.shape().clone()).map_err(me)
}

struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps as f32).map_err(me)
    }
}

struct Block {
    attn_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
    kv: Option<(Tensor, Tensor)>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub vocab: usize,
    pub rope_base: f32,
    pub rms_eps: f64,
    pub context: usize,
}

pub struct Llama {
    pub config: Config,
    pub precision: Precision,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    output: Linear,
    cos: Tensor,
    sin: Tensor,
    /// Activation sparsity threshold (0 = off).
    pub tau: f32,
    pub device: Device,
}

impl Llama {
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        r: &mut R,
        precision: Precision,
        device: &Device,
    ) -> Result<Self> {
        let u = |k: &str| -> Result<usize> {
            ct.metadata
                .get(k)
                .and_then(|v| v.to_u32().ok())
                .map(|v| v as usize)
                .ok_or_else(|| Error::Model(format!("GGUF lacks {k}")))
        };
        let f = |k: &str, d: f32| {
            ct.metadata
                .get(k)
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(d)
        };
        let (n_embd, n_head) = (
            u("llama.embedding_length")?,
            u("llama.attention.head_count")?,
        );
        let config = Config {
            n_layer: u("llama.block_count")?,
            n_embd,
            n_head,
            n_kv_head: u("llama.attention.head_count_kv")?,
            head_dim: n_embd / n_head,
            n_ff: u("llama.feed_forward_length")?,
            vocab: 0,
            rope_base: f("llama.rope.freq_base", 10000.0),
            rms_eps: f("llama.attention.layer_norm_rms_epsilon", 1e-5) as f64,
            context: u("llama.context_length").unwrap_or(2048),
        };
        let mut tensor = |name: &str| {
            ct.tensor(r, name, device)
                .map_err(|e| Error::Model(format!("{name}: {e}")))
        };
        let norm = |t: QTensor, eps: f64| -> Result<RmsNorm> {
            Ok(RmsNorm {
                weight: t.dequantize(device).map_err(me)?,
                eps,
            })
        };
        let embd_q = tensor("token_embd.weight")?;
        let embed = embd_q.dequantize(device).map_err(me)?;
        let vocab = embed.dim(0).map_err(me)?;
        let mut blocks = Vec::with_capacity(config.n_layer);
        for l in 0..config.n_layer {
            let mut lin = |suffix: &str, proj: &'static str| -> Result<Linear> {
                Linear::new(
                    LinearId {
                        layer: Some(l),
                        proj,
                    },
                    tensor(&format!("blk.{l}.{suffix}.weight"))?,
                    precision,
                    device,
                )
            };
            blocks.push(Block {
                q: lin("attn_q", "q")?,
                k: lin("attn_k", "k")?,
                v: lin("attn_v", "v")?,
                o: lin("attn_output", "o")?,
                gate: lin("ffn_gate", "gate")?,
                up: lin("ffn_up", "up")?,
                down: lin("ffn_down", "down")?,
                attn_norm: norm(
                    tensor(&format!("blk.{l}.attn_norm.weight"))?,
                    config.rms_eps,
                )?,
                ffn_norm: norm(tensor(&format!("blk.{l}.ffn_norm.weight"))?, config.rms_eps)?,
                kv: None,
            });
        }
        let out_norm = norm(tensor("output_norm.weight")?, config.rms_eps)?;
        // The output head: output.weight if present, else tied to the embedding. Quantized
        // variants keep it as shipped (Q8_0), like llama.cpp keeps the head at high precision.
        let head_q = tensor("output.weight").or_else(|_| tensor("token_embd.weight"))?;
        let head_precision = if precision.dense_dtype().is_some() {
            precision
        } else {
            Precision::Q4_1
        };
        let output = Linear::new(
            LinearId {
                layer: None,
                proj: "output",
            },
            head_q,
            head_precision,
            device,
        )?;
        let (cos, sin) = rope_tables(
            config.head_dim,
            config.rope_base,
            config.context.min(8192),
            device,
        )?;
        Ok(Llama {
            config: Config { vocab, ..config },
            precision,
            embed,
            blocks,
            norm: out_norm,
            output,
            cos,
            sin,
            tau: 0.0,
            device: device.clone(),
        })
    }

    /// Parameters in the projections (what the matmuls multiply by).
    pub fn linear_params(&self) -> usize {
        self.blocks
            .iter()
            .map(|b| {
                [&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down]
                    .iter()
                    .map(|l| l.params())
                    .sum::<usize>()
            })
            .sum::<usize>()
            + self.output.params()
    }

    pub fn clear_kv_cache(&mut self) {
        for b in &mut self.blocks {
            b.kv = None;
        }
    }

    /// Logits of the last position for each sequence: [batch, vocab].
    pub fn forward(
        &mut self,
        tokens: &Tensor,
        pos: usize,
        mut tap: Option<&mut dyn LinearTap>,
    ) -> Result<Tensor> {
        let (b, s) = tokens.dims2().map_err(me)?;
        let c = &self.config;
        let mut h = self
            .embed
            .index_select(&tokens.flatten_all().map_err(me)?, 0)
            .map_err(me)?
            .reshape((b, s, c.n_embd))
            .map_err(me)?;
        let mask = if s > 1 {
            Some(causal_mask(s, pos, &self.device)?)
        } else {
            None
        };
        let cos = self.cos.narrow(0, pos, s).map_err(me)?;
        let sin = self.sin.narrow(0, pos, s).map_err(me)?;
        let tau = self.tau;
        for blk in &mut self.blocks {
            // Attention.
            let x = blk.attn_norm.forward(&h)?;
            let q = blk.q.forward(&x, tau, &mut tap)?;
            let k = blk.k.forward(&x, tau, &mut tap)?;
            let v = blk.v.forward(&x, tau, &mut tap)?;
            let heads = |t: Tensor, n: usize| -> Result<Tensor> {
                t.reshape((b, s, n, c.head_dim))
                    .map_err(me)?
                    .transpose(1, 2)
                    .map_err(me)?
                    .contiguous()
                    .map_err(me)
            };
            let q = candle_nn::rotary_emb::rope_i(&heads(q, c.n_head)?, &cos, &sin).map_err(me)?;
            let k =
                candle_nn::rotary_emb::rope_i(&heads(k, c.n_kv_head)?, &cos, &sin).map_err(me)?;
            let v = heads(v, c.n_kv_head)?;
            let (k, v) = match &blk.kv {
                Some((pk, pv)) if pos > 0 => (
                    Tensor::cat(&[pk, &k], 2).map_err(me)?,
                    Tensor::cat(&[pv, &v], 2).map_err(me)?,
                ),
                _ => (k, v),
            };
            blk.kv = Some((k.clone(), v.clone()));
            let rep = c.n_head / c.n_kv_head;
            let k = candle_transformers::utils::repeat_kv(k, rep).map_err(me)?;
            let v = candle_transformers::utils::repeat_kv(v, rep).map_err(me)?;
            let att = (q.matmul(&k.t().map_err(me)?).map_err(me)? / (c.head_dim as f64).sqrt())
                .map_err(me)?;
            let att = match &mask {
                Some(m) => att.broadcast_add(m).map_err(me)?,
                None => att,
            };
            let att = candle_nn::ops::softmax_last_dim(&att).map_err(me)?;
            let y = att.matmul(&v.contiguous().map_err(me)?).map_err(me)?;
            let y = y
                .transpose(1, 2)
                .map_err(me)?
                .reshape((b, s, c.n_embd))
                .map_err(me)?;
            h = (h + blk.o.forward(&y, tau, &mut tap)?).map_err(me)?;
            // Feed-forward (SwiGLU).
            let x = blk.ffn_norm.forward(&h)?;
            let g = candle_nn::ops::silu(&blk.gate.forward(&x, tau, &mut tap)?).map_err(me)?;
            let u = blk.up.forward(&x, tau, &mut tap)?;
            h = (h + blk.down.forward(&(g * u).map_err(me)?, tau, &mut tap)?).map_err(me)?;
        }
        let last = h
            .narrow(1, s - 1, 1)
            .map_err(me)?
            .contiguous()
            .map_err(me)?;
        let x = self.norm.forward(&last)?;
        // The output head is not subject to activation sparsity (it picks the token).
        self.output
            .forward(&x, 0.0, &mut tap)?
            .squeeze(1)
            .map_err(me)
    }
}

fn rope_tables(
    head_dim: usize,
    base: f32,
    max_len: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / head_dim as f32))
        .collect();
    let inv = Tensor::new(inv.as_slice(), device).map_err(me)?;
    let t = Tensor::arange(0u32, max_len as u32, device)
        .map_err(me)?
        .to_dtype(DType::F32)
        .map_err(me)?;
    let freqs = t
        .reshape((max_len, 1))
        .map_err(me)?
        .broadcast_mul(&inv.reshape((1, head_dim / 2)).map_err(me)?)
        .map_err(me)?;
    Ok((freqs.cos().map_err(me)?, freqs.sin().map_err(me)?))
}

/// Additive mask [s, pos + s]: -inf where query i (at pos + i) would see a later key.
fn causal_mask(s: usize, pos: usize, device: &Device) -> Result<Tensor> {
    let t = pos + s;
    let m: Vec<f32> = (0..s)
        .flat_map(|i| (0..t).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(m, (s, t), device).map_err(me)
}

/// Index of the largest logit per row: greedy decoding.
pub fn argmax(logits: &Tensor) -> Result<Vec<u32>> {
    logits
        .argmax(D::Minus1)
        .map_err(me)?
        .to_vec1::<u32>()
        .map_err(me)
}
