//! A llama decoder (SmolLM2's architecture) over GGUF weights, readable top to bottom, and
//! Gemma 3's variant of it (`Arch::Gemma3`: embeddings scaled by sqrt(d), per-head q/k
//! norms, norms after attention and feed-forward, GELU gating, NeoX RoPE, and five of
//! every six layers attending over a sliding window with their own RoPE base).
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

use super::fused;
use super::opts::{Opt, Opts};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Every weight as the GGUF ships it (Gemma 3 270M "Q4_K_M": Q5_0, Q4_K, Q6_K, Q8_0).
    Gguf,
    /// Q4_1: SmolLM2 as shipped (token embedding/output Q8_0); other models re-quantized.
    Q4_1,
    /// Re-quantized from the shipped weights.
    Q8_0,
    Q4_0,
    /// Q4_K where the row length is a multiple of 256, Q4_0 elsewhere (as llama.cpp falls
    /// back); SmolLM2's hidden size 576 is not, so only ffn_down is really Q4_K.
    #[serde(rename = "q4k")]
    Q4K,
    /// Dequantized to dense f32 / f16 / bf16 matmuls.
    F32,
    F16,
    Bf16,
}

impl crate::choice::Choice for Precision {
    const WHAT: &'static str = "weight format";
    const ALL: &'static [Self] = &[
        Precision::Gguf,
        Precision::Q4_1,
        Precision::Q8_0,
        Precision::Q4_0,
        Precision::Q4K,
        Precision::F32,
        Precision::F16,
        Precision::Bf16,
    ];
    fn name(self) -> &'static str {
        Precision::name(self)
    }
    fn about(self) -> &'static str {
        match self {
            Precision::Gguf => "every weight as the GGUF ships it",
            Precision::Q4_1 => "Q4_1 (SmolLM2 as shipped; other models re-quantized)",
            Precision::Q8_0 | Precision::Q4_0 => "re-quantized from the shipped weights",
            Precision::Q4K => "Q4_K where the row length is a multiple of 256, Q4_0 elsewhere",
            _ => "dequantized to dense matmuls",
        }
    }
}
crate::choice_str!(Precision);

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Gguf => "gguf",
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
                Precision::Q4_1 => Some(GgmlDType::Q4_1),
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

    /// The weight's format: its GGUF block type, or its dense dtype.
    fn format(&self) -> std::result::Result<GgmlDType, DType> {
        match &self.w {
            Weight::Quant(_, q) => Ok(q.dtype()),
            Weight::Dense(t) => Err(t.dtype()),
        }
    }

    fn weight_f32(&self) -> Result<Tensor> {
        match &self.w {
            Weight::Quant(_, q) => q.dequantize(&q.device()).map_err(me),
            Weight::Dense(t) => t.t().map_err(me)?.to_dtype(DType::F32).map_err(me),
        }
    }

    /// The activations this projection multiplies: `x` with |x| < tau zeroed (activation
    /// sparsity; tau = 0 is off).
    fn sparsify(x: &Tensor, tau: f32) -> Result<Tensor> {
        if tau <= 0.0 {
            return Ok(x.clone());
        }
        let keep = x
            .abs()
            .map_err(me)?
            .ge(tau as f64)
            .map_err(me)?
            .to_dtype(x.dtype())
            .map_err(me)?;
        (x * keep).map_err(me)
    }

    fn show(&self, x: &Tensor, tap: &mut Option<&mut dyn LinearTap>) -> Result<()> {
        match tap.as_deref_mut() {
            Some(t) if t.wants(&self.id) => t.record(&self.id, x, &WeightView(self)),
            _ => Ok(()),
        }
    }

    fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        match &self.w {
            Weight::Quant(m, _) => m.forward(x).map_err(me),
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

    fn forward(
        &self,
        x: &Tensor,
        tau: f32,
        tap: &mut Option<&mut dyn LinearTap>,
    ) -> Result<Tensor> {
        let x = Self::sparsify(x, tau)?;
        self.show(&x, tap)?;
        self.matmul(&x)
    }

    /// Projections of one input as one: their weight rows concatenated (`Opt::MergedProj`).
    fn merged(parts: &[&Linear], proj: &'static str, device: &Device) -> Result<Linear> {
        let first = parts[0];
        let out_features = parts.iter().map(|p| p.out_features).sum();
        let w = match &first.w {
            Weight::Quant(_, q0) => {
                let mut bytes = Vec::new();
                for p in parts {
                    match &p.w {
                        Weight::Quant(_, q) if q.dtype() == q0.dtype() => {
                            bytes.extend_from_slice(&q.data().map_err(me)?)
                        }
                        _ => return Err(Error::Model(format!("{proj}: mixed weight formats"))),
                    }
                }
                let storage = QStorage::from_data(bytes.into(), device, q0.dtype()).map_err(me)?;
                let q =
                    Arc::new(QTensor::new(storage, (out_features, first.in_features)).map_err(me)?);
                Weight::Quant(QMatMul::from_arc(q.clone()).map_err(me)?, q)
            }
            Weight::Dense(_) => {
                let ws: Vec<&Tensor> = parts
                    .iter()
                    .map(|p| match &p.w {
                        Weight::Dense(t) => Ok(t),
                        Weight::Quant(..) => {
                            Err(Error::Model(format!("{proj}: mixed weight formats")))
                        }
                    })
                    .collect::<Result<_>>()?;
                Weight::Dense(Tensor::cat(&ws, 1).map_err(me)?)
            }
        };
        Ok(Linear {
            id: LinearId {
                layer: first.id.layer,
                proj,
            },
            w,
            out_features,
            in_features: first.in_features,
        })
    }
}

/// Projections that multiply the same input (q, k, v; gate, up), and the same as one
/// matmul when `Opt::MergedProj` is on. Taps see each projection; results are the same.
struct Projections {
    parts: Vec<Linear>,
    merged: Option<Linear>,
}

/// Most activation rows for which candle's CUDA quantized matmul runs its mat-vec kernel,
/// which computes every output row on its own: a merged weight gives the same bits there.
/// Above it, the tiled kernel (and cuBLAS for dense weights) picks tiles by shape, and the
/// merged shapes changed greedy tokens on an H100 (experiments/results/h100-2026-11-23-opts).
const CUDA_MAT_VEC_ROWS: usize = 8;

impl Projections {
    fn new(parts: Vec<Linear>, proj: &'static str, merge: bool, device: &Device) -> Result<Self> {
        // Parts of different formats (a mixed GGUF such as Gemma's) cannot be one matmul.
        let same = parts.windows(2).all(|w| w[0].format() == w[1].format());
        let merged = if merge && same {
            let refs: Vec<&Linear> = parts.iter().collect();
            Some(Linear::merged(&refs, proj, device)?)
        } else {
            None
        };
        Ok(Projections { parts, merged })
    }

    fn forward(
        &self,
        x: &Tensor,
        tau: f32,
        tap: &mut Option<&mut dyn LinearTap>,
    ) -> Result<Vec<Tensor>> {
        let x = Linear::sparsify(x, tau)?;
        for p in &self.parts {
            p.show(&x, tap)?;
        }
        let rows = x.elem_count() / self.parts[0].in_features;
        let merged = self
            .merged
            .as_ref()
            .filter(|_| x.device().is_cpu() || rows <= CUDA_MAT_VEC_ROWS);
        let Some(m) = merged else {
            return self.parts.iter().map(|p| p.matmul(&x)).collect();
        };
        let y = m.matmul(&x)?;
        let mut at = 0;
        self.parts
            .iter()
            .map(|p| {
                let part = y.narrow(D::Minus1, at, p.out_features).map_err(me);
                at += p.out_features;
                part
            })
            .collect()
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

    /// `(a + b, norm(a + b))`: a residual add and this norm of its sum.
    fn after_add(&self, a: &Tensor, b: &Tensor, fuse: bool) -> Result<(Tensor, Tensor)> {
        fused::add_rms_norm(a, b, &self.weight, self.eps as f32, fuse)
    }
}

struct Block {
    /// Attends over the sliding window with the local RoPE table (Gemma 3's local layers).
    local: bool,
    /// Gemma 3's extra norms.
    gemma: Option<GemmaNorms>,
    attn_norm: RmsNorm,
    /// q, k, v.
    qkv: Projections,
    o: Linear,
    ffn_norm: RmsNorm,
    /// gate, up.
    gate_up: Projections,
    down: Linear,
    kv: Option<KvCache>,
}

/// Gemma 3's norms beyond llama's: of each head's queries and keys (before RoPE), and of
/// the attention and feed-forward outputs (before the residual add).
struct GemmaNorms {
    q: RmsNorm,
    k: RmsNorm,
    post_attn: RmsNorm,
    post_ffn: RmsNorm,
}

/// Keys and values of the positions so far, [batch, kv_heads, positions, head_dim]: either
/// exactly that long (rebuilt by concatenation each step) or the first `len` positions of
/// a preallocated capacity written in place (`Opt::InplaceKv`; doubled when full), or a
/// capacity reserved for static decode steps (`fixed`: written in place, never moved,
/// since a captured CUDA graph holds its address).
struct KvCache {
    k: Tensor,
    v: Tensor,
    len: usize,
    fixed: bool,
}

/// Where a forward pass puts its keys and values.
enum KvWrite<'a> {
    /// After the cached positions (a host count): prefill and the plain decode step, which
    /// with a `span` attends over that many positions (zeros after the cached ones).
    Append { in_place: bool, span: Option<usize> },
    /// At the position a device tensor `pos` ([1] u32) holds, also given as `index`,
    /// `[batch, heads, 1, head_dim]` copies of it (what `scatter_set` takes): the static
    /// step. Attention then spans the whole reserved capacity, later positions masked.
    At { pos: &'a Tensor, index: &'a Tensor },
    /// Into row `slot` of a reserved cache, at the positions `index` holds ([1, heads, s,
    /// head_dim] copies of them), attending over that row alone: one sequence's prefill
    /// into its row (`forward_prefill_row`).
    Row { slot: usize, index: &'a Tensor },
}

impl KvCache {
    /// Capacity a new in-place cache starts with, in positions.
    const FIRST_CAPACITY: usize = 256;

    /// Append this step's k and v (the first step when `cache` is None); returns all keys
    /// and values so far.
    fn append(
        cache: &mut Option<KvCache>,
        k: Tensor,
        v: Tensor,
        in_place: bool,
    ) -> Result<(Tensor, Tensor)> {
        let s = k.dim(2).map_err(me)?;
        let in_place = in_place || cache.as_ref().is_some_and(|c| c.fixed);
        let next = match cache.take() {
            None if !in_place => KvCache {
                k,
                v,
                len: s,
                fixed: false,
            },
            Some(c) if !in_place => KvCache {
                k: Tensor::cat(&[&c.k, &k], 2).map_err(me)?,
                v: Tensor::cat(&[&c.v, &v], 2).map_err(me)?,
                len: c.len + s,
                fixed: false,
            },
            old => {
                let len = old.as_ref().map_or(0, |c| c.len);
                let mut c = match old {
                    Some(c) if len + s <= c.k.dim(2).map_err(me)? => c,
                    Some(c) if c.fixed => {
                        return Err(Error::Model(format!(
                            "KV cache reserved for {} positions, {} needed",
                            c.k.dim(2).map_err(me)?,
                            len + s
                        )))
                    }
                    old => Self::with_capacity(old, &k, (len + s).max(Self::FIRST_CAPACITY))?,
                };
                c.k.slice_set(&k, 2, len).map_err(me)?;
                c.v.slice_set(&v, 2, len).map_err(me)?;
                c.len = len + s;
                c
            }
        };
        let out = (
            next.k.narrow(2, 0, next.len).map_err(me)?,
            next.v.narrow(2, 0, next.len).map_err(me)?,
        );
        *cache = Some(next);
        Ok(out)
    }

    /// Write this step's k and v [b, kv_heads, 1, d] at a device-held position
    /// (`KvWrite::At`) into this reserved cache, each KV head `rep` times (one kernel under
    /// `fuse`); returns the whole capacity.
    fn write_at(
        &self,
        (k, v): (&Tensor, &Tensor),
        (pos, index): (&Tensor, &Tensor),
        rep: usize,
        fuse: bool,
    ) -> Result<(Tensor, Tensor)> {
        if !fused::kv_write(&self.k, &self.v, k, v, pos, rep, fuse)? {
            self.k
                .scatter_set(index, &repeat_kv(k, rep)?, 2)
                .map_err(me)?;
            self.v
                .scatter_set(index, &repeat_kv(v, rep)?, 2)
                .map_err(me)?;
        }
        Ok((self.k.clone(), self.v.clone()))
    }

    /// The cached keys and values over `span` positions: those of the cache's capacity
    /// (not yet written after `len`: zeros, or a reserved cache's masked leftovers), or
    /// zeros appended to a cache of exactly its length.
    fn spanning(&self, span: usize) -> Result<(Tensor, Tensor)> {
        let (b, h, cap, d) = self.k.dims4().map_err(me)?;
        if span < self.len {
            return Err(Error::Model(format!(
                "decode span {span} is shorter than the {} cached positions",
                self.len
            )));
        }
        if cap >= span {
            let first = |t: &Tensor| t.narrow(2, 0, span).map_err(me);
            return Ok((first(&self.k)?, first(&self.v)?));
        }
        let zeros =
            Tensor::zeros((b, h, span - cap, d), self.k.dtype(), self.k.device()).map_err(me)?;
        let pad = |t: &Tensor| Tensor::cat(&[t, &zeros], 2).map_err(me);
        Ok((pad(&self.k)?, pad(&self.v)?))
    }

    /// An empty cache of `cap` positions for `b` sequences of `h` heads of `d` values.
    fn zeros(
        (b, h, cap, d): (usize, usize, usize, usize),
        dtype: DType,
        device: &Device,
    ) -> Result<KvCache> {
        let zeros = || Tensor::zeros((b, h, cap, d), dtype, device).map_err(me);
        Ok(KvCache {
            k: zeros()?,
            v: zeros()?,
            len: 0,
            fixed: false,
        })
    }

    /// A preallocated cache of at least `need` positions (a power of two) holding `old`'s.
    fn with_capacity(old: Option<KvCache>, like: &Tensor, need: usize) -> Result<KvCache> {
        let (b, h, _, d) = like.dims4().map_err(me)?;
        let c = Self::zeros(
            (b, h, need.next_power_of_two(), d),
            like.dtype(),
            like.device(),
        )?;
        if let Some(o) = old.filter(|o| o.len > 0) {
            let keep = |t: &Tensor| t.narrow(2, 0, o.len)?.contiguous();
            c.k.slice_set(&keep(&o.k).map_err(me)?, 2, 0).map_err(me)?;
            c.v.slice_set(&keep(&o.v).map_err(me)?, 2, 0).map_err(me)?;
            return Ok(KvCache { len: o.len, ..c });
        }
        Ok(c)
    }
}

/// The decoder family of a GGUF (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    Llama,
    Gemma3,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Gemma3 => "gemma3",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub arch: Arch,
    /// `general.name` of the GGUF (what reports call the model).
    pub name: String,
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
    /// Gemma 3: local layers see the last `sliding_window` positions (themselves included),
    /// with RoPE base `local_rope_base`; every sixth layer is global.
    pub sliding_window: Option<usize>,
    pub local_rope_base: f32,
}

impl Config {
    /// Whether layer `l` attends over the sliding window.
    fn is_local(&self, l: usize) -> bool {
        self.sliding_window.is_some() && (l + 1) % 6 != 0
    }

    /// Width of the attention's heads together (Gemma 3: not the embedding width).
    fn attn_width(&self) -> usize {
        self.n_head * self.head_dim
    }
}

pub struct Llama {
    pub config: Config,
    pub precision: Precision,
    pub opts: Opts,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    output: Linear,
    /// RoPE tables by base: the model's, then (Gemma 3) the local layers'.
    ropes: Vec<Rope>,
    /// Activation sparsity threshold (0 = off).
    pub tau: f32,
    /// Decode steps attend over this many positions, those after the cached ones masked
    /// (None: over the cached ones only). `perfwatt infer` sets it on CUDA to the run's
    /// prompt + new tokens, which the static step of `Opt::Graphs` must span: every decode
    /// step, plain or static, then multiplies the same shapes, and cuBLAS, which picks its
    /// kernels by shape, sums the same way whatever the knobs.
    pub decode_span: Option<usize>,
    /// Where the model takes its tokens: the embedding's (and first layer's) device.
    pub device: Device,
    /// Partial offload: layers 0..L on CUDA, the rest on the CPU (None: all on `device`).
    pub gpu_layers: Option<usize>,
}

impl Config {
    /// The llama hyperparameters of a GGUF file's metadata (`vocab` comes from the
    /// embedding's rows).
    fn from_gguf(ct: &gguf_file::Content) -> Result<Config> {
        let arch = match ct
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
        {
            Some(a) if a == "llama" => Arch::Llama,
            Some(a) if a == "gemma3" => Arch::Gemma3,
            Some(a) => {
                return Err(Error::Model(format!(
                    "GGUF architecture '{a}' unsupported (llama or gemma3)"
                )))
            }
            None => Arch::Llama,
        };
        let key = |k: &str| format!("{}.{k}", arch.name());
        let u = |k: &str| -> Result<usize> {
            ct.metadata
                .get(&key(k))
                .and_then(|v| v.to_u32().ok())
                .map(|v| v as usize)
                .ok_or_else(|| Error::Model(format!("GGUF lacks {}", key(k))))
        };
        let f = |k: &str, d: f32| {
            ct.metadata
                .get(&key(k))
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(d)
        };
        let (n_embd, n_head) = (u("embedding_length")?, u("attention.head_count")?);
        let gemma = arch == Arch::Gemma3;
        Ok(Config {
            arch,
            name: ct
                .metadata
                .get("general.name")
                .and_then(|v| v.to_string().ok())
                .cloned()
                .unwrap_or_else(|| arch.name().to_string()),
            n_layer: u("block_count")?,
            n_embd,
            n_head,
            n_kv_head: u("attention.head_count_kv")?,
            head_dim: u("attention.key_length").unwrap_or(n_embd / n_head),
            n_ff: u("feed_forward_length")?,
            vocab: 0,
            rope_base: f("rope.freq_base", 10000.0),
            rms_eps: f("attention.layer_norm_rms_epsilon", 1e-5) as f64,
            context: u("context_length").unwrap_or(2048),
            // llama.cpp's and transformers' defaults where the GGUF does not say.
            sliding_window: match gemma {
                true => Some(u("attention.sliding_window").unwrap_or(512)),
                false => None,
            },
            local_rope_base: f("rope.local_freq_base", 10000.0),
        })
    }
}

/// A GGUF file's tensors, each read onto the device of its layer.
struct Weights<'a, R> {
    ct: &'a gguf_file::Content,
    r: &'a mut R,
}

impl<R: std::io::Read + std::io::Seek> Weights<'_, R> {
    fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        self.ct
            .tensor(self.r, name, device)
            .map_err(|e| Error::Model(format!("{name}: {e}")))
    }

    fn norm(&mut self, name: &str, eps: f64, device: &Device) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: self.tensor(name, device)?.dequantize(device).map_err(me)?,
            eps,
        })
    }

    /// Layer `l` on `device`: its projections in `precision` (merged where `merged-proj`
    /// applies) and its norms.
    fn block(
        &mut self,
        l: usize,
        config: &Config,
        precision: Precision,
        opts: Opts,
        device: &Device,
    ) -> Result<Block> {
        let mut lin = |suffix: &str, proj: &'static str| -> Result<Linear> {
            Linear::new(
                LinearId {
                    layer: Some(l),
                    proj,
                },
                self.tensor(&format!("blk.{l}.{suffix}.weight"), device)?,
                precision,
                device,
            )
        };
        // On CUDA only quantized weights are merged, for the mat-vec kernel's row
        // counts (`CUDA_MAT_VEC_ROWS`); dense ones go to cuBLAS at every row count.
        let merge =
            opts.has(Opt::MergedProj) && (device.is_cpu() || precision.dense_dtype().is_none());
        let qkv = vec![
            lin("attn_q", "q")?,
            lin("attn_k", "k")?,
            lin("attn_v", "v")?,
        ];
        let gate_up = vec![lin("ffn_gate", "gate")?, lin("ffn_up", "up")?];
        let o = lin("attn_output", "o")?;
        let down = lin("ffn_down", "down")?;
        let eps = config.rms_eps;
        let mut norm = |name: &str| self.norm(&format!("blk.{l}.{name}.weight"), eps, device);
        let gemma = match config.arch {
            Arch::Gemma3 => Some(GemmaNorms {
                q: norm("attn_q_norm")?,
                k: norm("attn_k_norm")?,
                post_attn: norm("post_attention_norm")?,
                post_ffn: norm("post_ffw_norm")?,
            }),
            Arch::Llama => None,
        };
        Ok(Block {
            local: config.is_local(l),
            gemma,
            attn_norm: norm("attn_norm")?,
            ffn_norm: norm("ffn_norm")?,
            qkv: Projections::new(qkv, "qkv", merge, device)?,
            o,
            gate_up: Projections::new(gate_up, "gate_up", merge, device)?,
            down,
            kv: None,
        })
    }
}

impl Llama {
    /// The model of a GGUF file: its metadata, every layer's weights in `precision` on
    /// `device`, the output head, the RoPE tables. With `gpu_layers` = Some(L) below the
    /// layer count on a CUDA `device` (partial offload), the embedding and layers 0..L
    /// are on that device and layers L.., the output norm and the head on the CPU; the
    /// hidden state crosses once per forward pass (`forward_with`).
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        r: &mut R,
        precision: Precision,
        opts: Opts,
        device: &Device,
        gpu_layers: Option<usize>,
    ) -> Result<Self> {
        candle_core::quantized::set_q4_1_tiles(opts.has(Opt::Tiles));
        let config = Config::from_gguf(ct)?;
        // On a CPU `device` both sides are the CPU: the split's code path, which tests run.
        let split = gpu_layers.filter(|&l| l < config.n_layer);
        let cpu = Device::Cpu;
        let on = |l: usize| match split {
            Some(s) if l >= s => &cpu,
            _ => device,
        };
        let (input_device, head_device) = (on(0), on(config.n_layer));
        let mut w = Weights { ct, r };
        let embed = w
            .tensor("token_embd.weight", input_device)?
            .dequantize(input_device)
            .map_err(me)?;
        let vocab = embed.dim(0).map_err(me)?;
        let blocks = (0..config.n_layer)
            .map(|l| w.block(l, &config, precision, opts, on(l)))
            .collect::<Result<Vec<_>>>()?;
        let out_norm = w.norm("output_norm.weight", config.rms_eps, head_device)?;
        // The output head: output.weight if present, else tied to the embedding. Quantized
        // variants keep it as shipped (Q8_0), like llama.cpp keeps the head at high precision.
        let head_q = w
            .tensor("output.weight", head_device)
            .or_else(|_| w.tensor("token_embd.weight", head_device))?;
        let head_precision = if precision.dense_dtype().is_some() {
            precision
        } else {
            Precision::Gguf
        };
        let output = Linear::new(
            LinearId {
                layer: None,
                proj: "output",
            },
            head_q,
            head_precision,
            head_device,
        )?;
        let mut bases = vec![config.rope_base];
        if config.sliding_window.is_some() {
            bases.push(config.local_rope_base);
        }
        let ropes = bases
            .into_iter()
            .map(|base| Rope::new(&config, base, opts.has(Opt::Fused), input_device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Llama {
            config: Config { vocab, ..config },
            precision,
            opts,
            embed,
            blocks,
            norm: out_norm,
            output,
            ropes,
            tau: 0.0,
            decode_span: None,
            device: input_device.clone(),
            gpu_layers: split,
        })
    }

    /// Parameters in the projections (what the matmuls multiply by).
    pub fn linear_params(&self) -> usize {
        self.blocks
            .iter()
            .map(|b| {
                b.qkv
                    .parts
                    .iter()
                    .chain(&b.gate_up.parts)
                    .chain([&b.o, &b.down])
                    .map(|l| l.params())
                    .sum::<usize>()
            })
            .sum::<usize>()
            + self.output.params()
    }

    /// `n` greedy tokens after `prompt` (one sequence, from an empty cache): one prefill,
    /// then a decode step per token. What reference checks compare.
    pub fn greedy(&mut self, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        self.clear_kv_cache();
        let (mut out, mut pos, mut input) = (Vec::new(), 0, prompt.to_vec());
        for _ in 0..n {
            let t = Tensor::new(input.as_slice(), &self.device)
                .and_then(|t| t.unsqueeze(0))
                .map_err(me)?;
            let next = argmax(&self.forward(&t, pos, None)?)?[0];
            pos += input.len();
            out.push(next);
            input = vec![next];
        }
        Ok(out)
    }

    pub fn clear_kv_cache(&mut self) {
        for b in &mut self.blocks {
            b.kv = None;
        }
    }

    /// Preallocate every layer's KV cache for `capacity` positions of `batch` sequences,
    /// for static decode steps (`StaticStep`), each KV head repeated for the query heads
    /// that read it; an existing reservation of that size is kept and emptied. Returns
    /// whether buffers were allocated: a CUDA graph captured on the old ones must then be
    /// captured again.
    pub fn reserve_kv(&mut self, batch: usize, capacity: usize) -> Result<bool> {
        let c = &self.config;
        let dims = (batch, c.n_head, capacity, c.head_dim);
        let mut allocated = false;
        for b in &mut self.blocks {
            match &mut b.kv {
                Some(kv) if kv.fixed && kv.k.dims4().ok() == Some(dims) => kv.len = 0,
                kv => {
                    let mut new = KvCache::zeros(dims, DType::F32, b.attn_norm.weight.device())?;
                    new.fixed = true;
                    *kv = Some(new);
                    allocated = true;
                }
            }
        }
        Ok(allocated)
    }

    /// The RoPE rows of a pass's positions, which `rows` picks from each table.
    fn rope_rows(&self, rows: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Vec<Rope>> {
        self.ropes.iter().map(|r| r.map(&rows)).collect()
    }

    /// The local layers' additive mask (`shape`), where a query of this pass is `window`
    /// or more positions past a key it could otherwise see; None where the window hides
    /// nothing (the global mask serves).
    fn window_mask(
        &self,
        queries: &[usize],
        keys: usize,
        shape: &[usize],
    ) -> Result<Option<Tensor>> {
        match self.config.sliding_window {
            Some(w) if queries.iter().any(|&q| q >= w) => {
                Ok(Some(self.mask(queries, keys, shape, Some(w))?))
            }
            _ => Ok(None),
        }
    }

    /// The additive mask (`shape`) of `mask_values` on this model's device.
    fn mask(
        &self,
        queries: &[usize],
        keys: usize,
        shape: &[usize],
        window: Option<usize>,
    ) -> Result<Tensor> {
        let m = mask_values(queries, keys, window);
        Tensor::from_vec(m, shape, &self.device).map_err(me)
    }

    /// Logits of the last position for each sequence: [batch, vocab].
    pub fn forward(
        &mut self,
        tokens: &Tensor,
        pos: usize,
        tap: Option<&mut dyn LinearTap>,
    ) -> Result<Tensor> {
        let (b, s) = tokens.dims2().map_err(me)?;
        let queries: Vec<usize> = (pos..pos + s).collect();
        let (keys, shape) = match (s, self.decode_span) {
            (1, None) => (pos + 1, vec![pos + 1]),
            (1, Some(span)) => (span, vec![span]),
            _ => (pos + s, vec![s, pos + s]),
        };
        let mask = match (s, self.decode_span) {
            (1, None) => None,
            _ => Some(self.mask(&queries, keys, &shape, None)?),
        };
        let inputs = StepInputs {
            ropes: self.rope_rows(|t| t.narrow(0, pos, s).map_err(me))?,
            local_mask: self.window_mask(&queries, keys, &shape)?,
            mask,
            kv: KvWrite::Append {
                in_place: self.opts.has(Opt::InplaceKv),
                span: self.decode_span.filter(|_| s == 1),
            },
            per_row: false,
        };
        self.forward_with(&tokens.flatten_all().map_err(me)?, (b, s), &inputs, tap)
    }

    /// Logits [batch, vocab] of one decode step whose shapes and buffers are the same at
    /// every position: tokens and position are read from device tensors, keys and values
    /// go into the reserved cache (`reserve_kv`), attention spans all of it, masked.
    pub(crate) fn forward_static(&mut self, at: &StaticInputs) -> Result<Tensor> {
        let c = &self.config;
        let b = at.tokens.dim(0).map_err(me)?;
        let index = at
            .pos
            .reshape((1, 1, 1, 1))
            .and_then(|p| p.broadcast_as((b, c.n_head, 1, c.head_dim)))
            .and_then(|p| p.contiguous())
            .map_err(me)?;
        let cap = at.key_pos.dim(0).map_err(me)?;
        if let Some(w) = c.sliding_window.filter(|&w| cap > w) {
            return Err(Error::Model(format!(
                "static decode steps span {cap} positions, past the sliding window of {w}: run without --opt graphs"
            )));
        }
        let inputs = StepInputs {
            ropes: self.rope_rows(|t| t.index_select(&at.pos, 0).map_err(me))?,
            local_mask: None,
            mask: Some(
                at.key_pos
                    .broadcast_le(&at.pos)
                    .and_then(|seen| seen.where_cond(&at.open, &at.shut))
                    .map_err(me)?,
            ),
            kv: KvWrite::At {
                pos: &at.pos,
                index: &index,
            },
            per_row: false,
        };
        self.forward_with(&at.tokens, (b, 1), &inputs, None)
    }

    /// Logits [rows, vocab] of one step in which row r is a sequence of its own: token
    /// `tokens[r]` at position `positions[r]`, its keys and values written into row r of the
    /// reserved cache (`reserve_kv(rows, capacity)`), attending over its own positions
    /// 0..=positions[r] only. What continuous batching steps: a row's sequence starts at
    /// position 0 when a request takes the row (its prompt one token a step), and the rows
    /// of other requests, at other positions, neither see it nor change its arithmetic.
    pub fn forward_rows(&mut self, tokens: &[u32], positions: &[usize]) -> Result<Tensor> {
        let c = &self.config;
        let b = tokens.len();
        let (rows, cap) = self.reserved()?;
        if rows != b {
            return Err(Error::Model(format!(
                "forward_rows: {b} tokens for a cache reserved for {rows} rows"
            )));
        }
        if positions.len() != b || positions.iter().any(|&p| p >= cap) {
            return Err(Error::Model(format!(
                "forward_rows: {} positions for {b} rows, each below the capacity {cap}: {positions:?}",
                positions.len()
            )));
        }
        let dev = &self.device;
        let p32: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
        let pos = Tensor::new(p32.as_slice(), dev).map_err(me)?;
        let index = pos
            .reshape((b, 1, 1, 1))
            .and_then(|p| p.broadcast_as((b, c.n_head, 1, c.head_dim)))
            .and_then(|p| p.contiguous())
            .map_err(me)?;
        let half = c.head_dim / 2;
        let inputs = StepInputs {
            ropes: self.rope_rows(|t| {
                t.index_select(&pos, 0)
                    .and_then(|r| r.reshape((b, 1, half)))
                    .map_err(me)
            })?,
            local_mask: self.window_mask(positions, cap, &[b, 1, 1, cap])?,
            mask: Some(self.mask(positions, cap, &[b, 1, 1, cap], None)?),
            kv: KvWrite::At {
                pos: &pos,
                index: &index,
            },
            per_row: true,
        };
        let tokens = Tensor::new(tokens, dev).map_err(me)?;
        self.forward_with(&tokens, (b, 1), &inputs, None)
    }

    /// (rows, positions) of the reserved KV cache (`reserve_kv`).
    fn reserved(&self) -> Result<(usize, usize)> {
        match self.blocks.first().and_then(|blk| blk.kv.as_ref()) {
            Some(kv) if kv.fixed => Ok((kv.k.dim(0).map_err(me)?, kv.k.dim(2).map_err(me)?)),
            _ => Err(Error::Model("reserve_kv(rows, capacity) first".into())),
        }
    }

    /// Logits [1, vocab] of the last of `tokens`, a chunk of one sequence's prompt at
    /// positions start.., written into row `slot` of the reserved cache (causal within the
    /// chunk, over the row's earlier positions): a joining request's prefill in one pass,
    /// beside rows that `forward_rows` steps.
    pub fn forward_prefill_row(
        &mut self,
        slot: usize,
        tokens: &[u32],
        start: usize,
    ) -> Result<Tensor> {
        let c = &self.config;
        let s = tokens.len();
        let (rows, cap) = self.reserved()?;
        if slot >= rows || s == 0 || start + s > cap {
            return Err(Error::Model(format!(
                "forward_prefill_row: row {slot} of {rows}, positions {start}..{} of {cap}",
                start + s
            )));
        }
        let dev = &self.device;
        let idx: Vec<u32> = (start..start + s).map(|p| p as u32).collect();
        let index = Tensor::new(idx.as_slice(), dev)
            .and_then(|t| t.reshape((1, 1, s, 1)))
            .and_then(|t| t.broadcast_as((1, c.n_head, s, c.head_dim)))
            .and_then(|t| t.contiguous())
            .map_err(me)?;
        let queries: Vec<usize> = (start..start + s).collect();
        let inputs = StepInputs {
            ropes: self.rope_rows(|t| t.narrow(0, start, s).map_err(me))?,
            local_mask: self.window_mask(&queries, cap, &[s, cap])?,
            mask: Some(self.mask(&queries, cap, &[s, cap], None)?),
            kv: KvWrite::Row {
                slot,
                index: &index,
            },
            per_row: true,
        };
        let tokens = Tensor::new(tokens, dev).map_err(me)?;
        self.forward_with(&tokens, (1, s), &inputs, None)
    }

    /// The decoder over flat token ids of `b` sequences of `s` positions.
    fn forward_with(
        &mut self,
        tokens: &Tensor,
        (b, s): (usize, usize),
        inputs: &StepInputs,
        mut tap: Option<&mut dyn LinearTap>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let mut h = self
            .embed
            .index_select(&tokens.to_device(&self.device).map_err(me)?, 0)
            .map_err(me)?
            .reshape((b, s, c.n_embd))
            .map_err(me)?;
        if c.arch == Arch::Gemma3 {
            h = (h * (c.n_embd as f64).sqrt()).map_err(me)?;
        }
        let (tau, fuse) = (self.tau, self.opts.has(Opt::Fused));
        let at = Attention {
            config: c,
            inputs,
            fuse: fuse && !inputs.per_row,
        };
        // Partial offload: the CPU layers' copy of the pass's RoPE rows and masks.
        let cpu_inputs = match self.gpu_layers {
            Some(_) => Some(inputs.to_cpu()?),
            None => None,
        };
        let cpu_at = cpu_inputs.as_ref().map(|inputs| Attention {
            config: c,
            inputs,
            fuse: false,
        });
        // Each residual add goes with the RMSNorm after it (one kernel under `fuse`): the
        // next block's attention norm, or the output norm after the last block.
        let mut x = self.blocks[0].attn_norm.forward(&h)?;
        for i in 0..self.blocks.len() {
            let at = match (&cpu_at, self.gpu_layers) {
                (Some(cpu_at), Some(l)) if i >= l => cpu_at,
                _ => &at,
            };
            let a = at.forward(&mut self.blocks[i], &x, tau, &mut tap)?;
            let blk = &self.blocks[i];
            let post = |n: Option<&RmsNorm>, y: Tensor| match n {
                Some(n) => n.forward(&y),
                None => Ok(y),
            };
            let a = post(blk.gemma.as_ref().map(|g| &g.post_attn), a)?;
            let (h1, x1) = blk.ffn_norm.after_add(&h, &a, fuse)?;
            // Feed-forward: SwiGLU (llama), GELU-tanh gating (Gemma).
            let [g, u] = <[Tensor; 2]>::try_from(blk.gate_up.forward(&x1, tau, &mut tap)?)
                .map_err(|_| Error::Model("gate_up: two projections expected".into()))?;
            let gated = match c.arch {
                Arch::Llama => fused::silu_mul(&g, &u, fuse)?,
                Arch::Gemma3 => (g.gelu().map_err(me)? * u).map_err(me)?,
            };
            let d = blk.down.forward(&gated, tau, &mut tap)?;
            let d = post(blk.gemma.as_ref().map(|g| &g.post_ffn), d)?;
            let next = self.blocks.get(i + 1).map_or(&self.norm, |b| &b.attn_norm);
            (h, x) = match self.gpu_layers == Some(i + 1) {
                false => next.after_add(&h1, &d, fuse)?,
                // Partial offload: the residual sum crosses to the CPU, once a pass.
                true => {
                    let h = (h1 + d)
                        .and_then(|h| h.to_device(next.weight.device()))
                        .map_err(me)?;
                    let x = next.forward(&h)?;
                    (h, x)
                }
            };
        }
        // Normalized per row: the last position's row is what its own norm would give.
        let x = x
            .narrow(1, s - 1, 1)
            .map_err(me)?
            .contiguous()
            .map_err(me)?;
        // The output head is not subject to activation sparsity (it picks the token).
        self.output
            .forward(&x, 0.0, &mut tap)?
            .squeeze(1)
            .map_err(me)
    }
}

/// The device tensors a static decode step reads (`Llama::forward_static`); the step's
/// owner (`StaticStep`) writes the next tokens and position into them.
pub(crate) struct StaticInputs {
    /// [batch] u32: this step's tokens.
    pub tokens: Tensor,
    /// [1] u32: their position.
    pub pos: Tensor,
    /// [capacity] u32: 0, 1, ... (the key positions the mask compares with `pos`).
    pub key_pos: Tensor,
    /// [capacity] f32 zeros and -inf: the mask's two values.
    pub open: Tensor,
    pub shut: Tensor,
}

/// What a forward pass needs besides its tokens: RoPE rows of its positions, the additive
/// mask (None: one new position sees every cached one) and where keys and values go.
struct StepInputs<'a> {
    /// Rows of each RoPE table (`Llama::ropes`).
    ropes: Vec<Rope>,
    mask: Option<Tensor>,
    /// The local layers' mask where the sliding window hides keys (else `mask`).
    local_mask: Option<Tensor>,
    kv: KvWrite<'a>,
    /// Each row at its own position (`forward_rows`): the fused attention kernels, which
    /// take one position for the batch, are not used.
    per_row: bool,
}

impl StepInputs<'_> {
    /// This pass's inputs on the CPU, for the layers a partial offload leaves there. Only
    /// plain passes cross devices: static steps and reserved-row passes read their
    /// positions from device tensors of one device (and a CUDA graph spans one device).
    fn to_cpu(&self) -> Result<StepInputs<'static>> {
        let KvWrite::Append { in_place, span } = self.kv else {
            return Err(Error::Model(
                "--gpu-layers runs plain forward passes only: not with --opt graphs' static step or serve's rows".into(),
            ));
        };
        let cpu = |t: &Tensor| t.to_device(&Device::Cpu).map_err(me);
        let opt = |t: &Option<Tensor>| t.as_ref().map(cpu).transpose();
        Ok(StepInputs {
            ropes: self
                .ropes
                .iter()
                .map(|r| r.map(&cpu))
                .collect::<Result<_>>()?,
            mask: opt(&self.mask)?,
            local_mask: opt(&self.local_mask)?,
            kv: KvWrite::Append { in_place, span },
            per_row: self.per_row,
        })
    }
}

/// One block's self-attention at the positions of this forward pass.
struct Attention<'a> {
    config: &'a Config,
    inputs: &'a StepInputs<'a>,
    /// `Opt::Fused`: mask and softmax as one kernel.
    fuse: bool,
}

impl Attention<'_> {
    /// The attention output of `x` (normalized, [b, s, n_embd]) projected by `o`: what
    /// the residual stream adds.
    fn forward(
        &self,
        blk: &mut Block,
        x: &Tensor,
        tau: f32,
        tap: &mut Option<&mut dyn LinearTap>,
    ) -> Result<Tensor> {
        let c = self.config;
        let (b, s, _) = x.dims3().map_err(me)?;
        let [q, k, v] = <[Tensor; 3]>::try_from(blk.qkv.forward(x, tau, tap)?)
            .map_err(|_| Error::Model("qkv: three projections expected".into()))?;
        let heads = |t: Tensor, n: usize| -> Result<Tensor> {
            t.reshape((b, s, n, c.head_dim))
                .map_err(me)?
                .transpose(1, 2)
                .map_err(me)?
                .contiguous()
                .map_err(me)
        };
        let at = self.inputs;
        let table = &at.ropes[usize::from(blk.local)];
        // GGUF llama weights are permuted for interleaved pairs; Gemma's are not (NeoX).
        let rope = |t: &Tensor, (cos, sin): (&Tensor, &Tensor)| match c.arch {
            Arch::Llama => candle_nn::rotary_emb::rope_i(t, cos, sin).map_err(me),
            Arch::Gemma3 => candle_nn::rotary_emb::rope(t, cos, sin).map_err(me),
        };
        let (mut q, mut k) = (heads(q, c.n_head)?, heads(k, c.n_kv_head)?);
        if let Some(g) = &blk.gemma {
            (q, k) = (g.q.forward(&q)?, g.k.forward(&k)?);
        }
        let q_table = table
            .q
            .as_ref()
            .map_or((&table.cos, &table.sin), |(c, s)| (c, s));
        let q = rope(&q, q_table)?;
        let k = rope(&k, (&table.cos, &table.sin))?;
        let v = heads(v, c.n_kv_head)?;
        // A reserved cache (static steps) holds each KV head once per query head that reads
        // it: the new position is repeated once, not the whole cache at every step.
        let rep = c.n_head / c.n_kv_head;
        let fixed = blk.kv.as_ref().is_some_and(|kv| kv.fixed);
        let repeat =
            |k: &Tensor, v: &Tensor| Ok::<_, Error>((repeat_kv(k, rep)?, repeat_kv(v, rep)?));
        let (k, v) = match at.kv {
            KvWrite::Append { in_place, span } => {
                let (k, v) = if fixed { repeat(&k, &v)? } else { (k, v) };
                let (k, v) = KvCache::append(&mut blk.kv, k, v, in_place)?;
                let (k, v) = match (span, &blk.kv) {
                    (Some(span), Some(kv)) => kv.spanning(span)?,
                    _ => (k, v),
                };
                if fixed {
                    (k, v)
                } else {
                    repeat(&k, &v)?
                }
            }
            KvWrite::At { pos, index } => match &blk.kv {
                Some(kv) if kv.fixed => kv.write_at((&k, &v), (pos, index), rep, self.fuse)?,
                _ => {
                    return Err(Error::Model(
                        "static step without a reserved KV cache".into(),
                    ))
                }
            },
            KvWrite::Row { slot, index } => match &blk.kv {
                Some(kv) if kv.fixed => {
                    // Views of the row share the cache's storage: the scatter writes there.
                    let row = |t: &Tensor| t.narrow(0, slot, 1).map_err(me);
                    let (kr, vr) = (row(&kv.k)?, row(&kv.v)?);
                    kr.scatter_set(index, &repeat_kv(&k, rep)?, 2).map_err(me)?;
                    vr.scatter_set(index, &repeat_kv(&v, rep)?, 2).map_err(me)?;
                    (kr, vr)
                }
                _ => {
                    return Err(Error::Model(
                        "row prefill without a reserved KV cache".into(),
                    ))
                }
            },
        };
        let mask = match blk.local {
            true => at.local_mask.as_ref().or(at.mask.as_ref()),
            false => at.mask.as_ref(),
        };
        let y = self
            .softmax_attend(&q, &k, &v, mask)?
            .transpose(1, 2)
            .map_err(me)?
            .reshape((b, s, c.attn_width()))
            .map_err(me)?;
        blk.o.forward(&y, tau, tap)
    }

    /// softmax(q k^T / sqrt(d) + mask) v over matching leading dims (q already scaled
    /// when its RoPE tables carry the scale).
    fn softmax_attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = self.config;
        let att = q.matmul(&k.t().map_err(me)?).map_err(me)?;
        // Every table carries the scale or none does (`Rope::new`).
        let att = match self.inputs.ropes[0].q {
            Some(_) => att,
            None => (att / (c.head_dim as f64).sqrt()).map_err(me)?,
        };
        let att = fused::masked_softmax(&att, mask, self.fuse)?;
        att.matmul(v).map_err(me)
    }
}

/// Each KV head `rep` times in a row, [b, kv_heads * rep, positions, d]: the query heads
/// that share it. On the CPU as candle's `repeat_kv` (concatenation, which copies in
/// contiguous runs); on CUDA one strided-copy kernel instead of one kernel per repeat.
fn repeat_kv(x: &Tensor, rep: usize) -> Result<Tensor> {
    if x.device().is_cpu() {
        return candle_transformers::utils::repeat_kv(x.clone(), rep)
            .and_then(|t| t.contiguous())
            .map_err(me);
    }
    let (b, h, s, d) = x.dims4().map_err(me)?;
    x.unsqueeze(2)
        .and_then(|t| t.broadcast_as((b, h, rep, s, d)))
        .and_then(|t| t.contiguous())
        .and_then(|t| t.reshape((b, h * rep, s, d)))
        .map_err(me)
}

/// One RoPE table, [positions, head_dim / 2] (or the rows of a pass's positions), and the
/// queries' copy times 1/sqrt(head_dim) (`Opt::Fused`, where that is a power of two): the
/// attention scores then come out scaled.
struct Rope {
    cos: Tensor,
    sin: Tensor,
    q: Option<(Tensor, Tensor)>,
}

impl Rope {
    /// Every table of this one through `f` (rows of it, or a copy on another device).
    fn map(&self, f: &impl Fn(&Tensor) -> Result<Tensor>) -> Result<Rope> {
        Ok(Rope {
            cos: f(&self.cos)?,
            sin: f(&self.sin)?,
            q: match &self.q {
                Some((c, s)) => Some((f(c)?, f(s)?)),
                None => None,
            },
        })
    }

    fn new(config: &Config, base: f32, fused: bool, device: &Device) -> Result<Self> {
        let (head_dim, max_len) = (config.head_dim, config.context.min(8192));
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
        let (cos, sin) = (freqs.cos().map_err(me)?, freqs.sin().map_err(me)?);
        let scale = (head_dim as f64).sqrt();
        let exact = scale.fract() == 0.0 && (scale as u64).is_power_of_two();
        let q = match fused && exact {
            true => Some(((&cos / scale).map_err(me)?, (&sin / scale).map_err(me)?)),
            false => None,
        };
        Ok(Rope { cos, sin, q })
    }
}

/// Additive mask values, a row of `keys` per query position: -inf over the keys after it
/// and, with a sliding `window`, over those `window` or more positions before it.
fn mask_values(queries: &[usize], keys: usize, window: Option<usize>) -> Vec<f32> {
    queries
        .iter()
        .flat_map(|&q| {
            (0..keys).map(move |j| {
                let hidden = j > q || window.is_some_and(|w| q - j >= w);
                if hidden {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect()
}

/// Index of the largest logit per row: greedy decoding.
pub fn argmax(logits: &Tensor) -> Result<Vec<u32>> {
    logits
        .argmax(D::Minus1)
        .map_err(me)?
        .to_vec1::<u32>()
        .map_err(me)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-place cache (across two doublings) holds what concatenation builds.
    #[test]
    fn in_place_kv_cache_equals_concatenation_across_growth() {
        let dev = Device::Cpu;
        let (mut cat, mut inplace) = (None, None);
        let mut pos = 0;
        for step in [100usize, 1, 155, 1, 3, 300, 1] {
            let n = 2 * 3 * step * 4;
            let k = Tensor::arange(pos as f32, (pos + n) as f32, &dev)
                .unwrap()
                .reshape((2, 3, step, 4))
                .unwrap();
            let v = (&k * -1.0).unwrap();
            let a = KvCache::append(&mut cat, k.clone(), v.clone(), false).unwrap();
            let b = KvCache::append(&mut inplace, k, v, true).unwrap();
            pos += n;
            for (x, y) in [(&a.0, &b.0), (&a.1, &b.1)] {
                assert_eq!(x.dims(), y.dims());
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(flat(x), flat(y), "after appending {step}");
            }
        }
        let cap = inplace.as_ref().unwrap().k.dim(2).unwrap();
        assert_eq!((inplace.unwrap().len, cap), (561, 1024));
    }
}
