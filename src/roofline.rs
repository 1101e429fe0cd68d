//! Roofline: a device's measured peaks and where LLM kernels sit under them.
//!
//! In: a device (cpu, or cuda with the `cuda` feature) and a size preset. Out: a
//! `RooflineReport`: peak FLOP/s per dtype (the best of square matrix products), peak
//! bandwidth (a device-to-device copy, bytes read plus written), ridge points, and per
//! kernel (linear layers, attention, RMSNorm, SiLU, RoPE, embedding, quantized matmul at
//! the shipped model's shapes and a 7B model's) the latency over N repeats (CUDA events on
//! the GPU, the wall clock on the CPU), FLOPs, bytes, arithmetic intensity, achieved FLOP/s
//! and bytes/s, the fraction of the roof reached, and NVML energy per launch over many
//! back-to-back launches. Written as JSON + CSV (after every kernel, atomically) and a plot.
//!
//! FLOPs count 2 per multiply-add plus the elementwise operations named on each kernel;
//! bytes count what candle's (unfused) implementation reads and writes, inputs once, except
//! for quantized matmuls, whose bytes are the packed weights plus activations (what a fused
//! kernel must move; candle's CUDA kernels quantize activations to q8_1 on the way).
//! Roofs: a kernel's compute roof is the matmul peak of its dtype; quantized matmuls (int8
//! dot products on the GPU, no peak of their own here) use the highest measured peak.
//! GPU latency by events includes candle's host-side launch work whenever the GPU waits
//! for it, as a candle user sees it: small kernels show that floor (7-20 us on an H100).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{DType, Device, Module, Tensor};
use serde::Serialize;

use crate::energy::GpuMeter;
use crate::error::{write_atomic, Error, Result};
use crate::model::llama::me;
use crate::stats::percentile;

/// Sizes of the kernels to time: `Quick` for tests and CI, `Full` for a real measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Quick,
    Full,
}

#[derive(Debug, Clone, Serialize)]
pub struct RooflineConfig {
    pub device: String,
    pub preset: Preset,
    /// Kernel dtype (peaks are measured for f32, f16 and bf16 regardless).
    pub dtype: String,
    pub warmup: usize,
    pub repeats: usize,
    /// Stop repeating a kernel after this long (at least 5 repeats).
    pub seconds_per_kernel: f64,
    /// Back-to-back launches for the energy of one kernel last at least this long.
    pub energy_seconds: f64,
}

impl RooflineConfig {
    /// Defaults for a device: bf16 kernels and big shapes on the GPU, f32 on the CPU.
    pub fn new(device: &str, preset: Preset) -> Self {
        let gpu = device != "cpu";
        RooflineConfig {
            device: device.into(),
            preset,
            dtype: if gpu { "bf16" } else { "f32" }.into(),
            warmup: if gpu { 5 } else { 2 },
            repeats: match preset {
                Preset::Quick => 10,
                Preset::Full => 50,
            },
            seconds_per_kernel: match preset {
                Preset::Quick => 0.2,
                Preset::Full => 1.0,
            },
            energy_seconds: 1.0,
        }
    }
}

/// Model dimensions the kernels are sized from.
#[derive(Debug, Clone, Copy)]
struct ModelShape {
    name: &'static str,
    hidden: usize,
    ffn: usize,
    heads: usize,
    head_dim: usize,
    vocab: usize,
}

/// SmolLM2-135M (the shipped model) and Llama-2-7B.
const SMOLLM2: ModelShape = ModelShape {
    name: "smollm2-135m",
    hidden: 576,
    ffn: 1536,
    heads: 9,
    head_dim: 64,
    vocab: 49152,
};
const LLAMA7B: ModelShape = ModelShape {
    name: "llama-7b",
    hidden: 4096,
    ffn: 11008,
    heads: 32,
    head_dim: 128,
    vocab: 32000,
};

/// What one preset measures on one kind of device.
struct Sizes {
    matmul: Vec<usize>,
    copy_bytes: usize,
    models: Vec<ModelShape>,
    /// Rows (tokens) of linear layers.
    ms: Vec<usize>,
    /// Sequence lengths of attention.
    seq: Vec<usize>,
    /// Tokens of the elementwise kernels (RMSNorm, SiLU, RoPE, embedding).
    tokens: Vec<usize>,
}

fn sizes(preset: Preset, gpu: bool) -> Sizes {
    match (preset, gpu) {
        (Preset::Quick, _) => Sizes {
            matmul: vec![128, 256],
            copy_bytes: 32 << 20,
            models: vec![SMOLLM2],
            ms: vec![1, 32],
            seq: vec![64],
            tokens: vec![1, 128],
        },
        (Preset::Full, false) => Sizes {
            matmul: vec![256, 512, 1024],
            copy_bytes: 256 << 20,
            models: vec![SMOLLM2, LLAMA7B],
            ms: vec![1, 128],
            seq: vec![256],
            tokens: vec![1, 512],
        },
        (Preset::Full, true) => Sizes {
            matmul: vec![2048, 4096, 8192],
            copy_bytes: 1 << 30,
            models: vec![SMOLLM2, LLAMA7B],
            ms: vec![1, 128, 2048],
            seq: vec![512, 2048],
            tokens: vec![1, 2048],
        },
    }
}

/// Latency over repeats, seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub median_s: f64,
    pub p5_s: f64,
    pub p95_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    pub repeats: usize,
}

impl Timing {
    fn of(xs: &[f64]) -> Option<Timing> {
        Some(Timing {
            median_s: percentile(xs, 50.0)?,
            p5_s: percentile(xs, 5.0)?,
            p95_s: percentile(xs, 95.0)?,
            min_s: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max_s: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            repeats: xs.len(),
        })
    }
}

/// NVML energy of back-to-back launches of one kernel.
#[derive(Debug, Clone, Serialize)]
pub struct KernelEnergy {
    pub launches: usize,
    pub seconds: f64,
    pub j_per_launch: f64,
    /// Above the card's idle draw over the same time.
    pub j_per_launch_above_idle: Option<f64>,
    pub avg_w: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelResult {
    pub name: String,
    /// peak-matmul, peak-copy, linear, attention, attention-decode, rmsnorm, silu, rope,
    /// embedding, qmatmul.
    pub category: String,
    pub model: String,
    pub shape: String,
    pub dtype: String,
    pub flops: f64,
    pub bytes: f64,
    pub intensity: f64,
    pub timing: Option<Timing>,
    pub flop_per_s: Option<f64>,
    pub bytes_per_s: Option<f64>,
    /// min(peak FLOP/s of the roof dtype, intensity x peak bandwidth).
    pub roof_flop_per_s: Option<f64>,
    /// Whose compute peak the roof is (the kernel's dtype; the highest peak for quantized).
    pub roof_dtype: Option<String>,
    pub roof_fraction: Option<f64>,
    /// "memory" left of the ridge point, "compute" right of it.
    pub bound: Option<&'static str>,
    pub energy: Option<KernelEnergy>,
    /// Why this kernel has no timing (e.g. a dtype the backend does not support).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Peak {
    pub dtype: String,
    pub flop_per_s: f64,
    /// Matrix size n of the n x n x n product that reached it.
    pub at_n: usize,
    /// FLOP per byte where the compute roof meets the bandwidth roof.
    pub ridge_flop_per_byte: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RooflineReport {
    pub schema: &'static str,
    pub config: RooflineConfig,
    pub device_name: String,
    pub peaks: Vec<Peak>,
    pub bandwidth_bytes_per_s: Option<f64>,
    pub idle_w: Option<f64>,
    pub energy_reason: Option<String>,
    pub kernels: Vec<KernelResult>,
}

/// One kernel to measure: its cost model and a closure launching it once.
struct Kernel {
    name: String,
    category: &'static str,
    model: &'static str,
    shape: String,
    dtype: String,
    /// Dtype whose matmul peak is this kernel's compute roof; None: the device's highest
    /// measured peak (quantized matmuls, whose int8 / dequantizing kernels have no peak of
    /// their own here).
    roof_dtype: Option<DType>,
    flops: f64,
    bytes: f64,
    run: Launch,
}

/// Launches a kernel once on inputs allocated when it was built.
type Launch = Box<dyn Fn() -> candle_core::Result<Tensor>>;

/// Times one launch: CUDA events on the device's stream, or the wall clock on the CPU.
enum Timer {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(std::sync::Arc<cudarc::driver::CudaStream>),
}

impl Timer {
    fn for_device(device: &Device) -> Timer {
        match device {
            #[cfg(feature = "cuda")]
            Device::Cuda(d) => Timer::Cuda(d.cuda_stream()),
            _ => Timer::Cpu,
        }
    }

    fn once(&self, f: &dyn Fn() -> candle_core::Result<Tensor>) -> Result<f64> {
        match self {
            Timer::Cpu => {
                let t = Instant::now();
                let out = f().map_err(me)?;
                let s = t.elapsed().as_secs_f64();
                drop(out);
                Ok(s)
            }
            #[cfg(feature = "cuda")]
            Timer::Cuda(stream) => {
                let ev = || {
                    stream
                        .record_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
                        .map_err(|e| Error::Model(format!("cuda event: {e}")))
                };
                let start = ev()?;
                let out = f().map_err(me)?;
                let end = ev()?;
                let ms = start
                    .elapsed_ms(&end)
                    .map_err(|e| Error::Model(format!("cuda event: {e}")))?;
                drop(out);
                Ok(ms as f64 / 1e3)
            }
        }
    }
}

pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        o => Err(Error::Config(format!("dtype '{o}': f32, f16 or bf16"))),
    }
}

/// A device-to-device copy of `n` f32: cuMemcpyDtoDAsync on the GPU (cudarc), a candle
/// in-place copy on the CPU. Returns a token tensor: the copy itself makes none.
fn copy_kernel(n: usize, dev: &Device) -> candle_core::Result<Launch> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cd) = dev {
        let stream = cd.cuda_stream();
        let err =
            |e: cudarc::driver::DriverError| candle_core::Error::Msg(format!("cuda copy: {e}"));
        let src = stream.alloc_zeros::<f32>(n).map_err(err)?;
        let dst = std::cell::RefCell::new(stream.alloc_zeros::<f32>(n).map_err(err)?);
        let token = Tensor::zeros(1, DType::F32, dev)?;
        return Ok(Box::new(move || {
            stream
                .memcpy_dtod(&src, &mut *dst.borrow_mut())
                .map_err(err)?;
            Ok(token.clone())
        }));
    }
    // Ones, not zeros: a zeroed CPU buffer can be untouched pages that all read one cached page.
    let src = Tensor::ones((64, n / 64), DType::F32, dev)?;
    let dst = Tensor::ones((64, n / 64), DType::F32, dev)?;
    Ok(Box::new(move || {
        dst.slice_set(&src, 0, 0)?;
        Ok(dst.clone())
    }))
}

/// softmax(Q K^T / sqrt(d)) V for `lq` queries against `lkv` keys and values per head
/// (no mask; heads after the GQA repeat).
fn attention(
    heads: usize,
    lq: usize,
    lkv: usize,
    hd: usize,
    dt: DType,
    dev: &Device,
) -> candle_core::Result<Launch> {
    let q = randn(&[1, heads, lq, hd], dt, dev)?;
    let (k, v) = (
        randn(&[1, heads, lkv, hd], dt, dev)?,
        randn(&[1, heads, lkv, hd], dt, dev)?,
    );
    let scale = 1.0 / (hd as f64).sqrt();
    Ok(Box::new(move || {
        let s = (q.matmul(&k.t()?)? * scale)?;
        candle_nn::ops::softmax_last_dim(&s)?.matmul(&v)
    }))
}

fn randn(shape: &[usize], dt: DType, dev: &Device) -> candle_core::Result<Tensor> {
    Tensor::randn(0f32, 1f32, shape, dev)?.to_dtype(dt)
}

/// All kernels of a run, inputs allocated up front, in report order: the peaks, then per
/// model its projections (dense and quantized), attention, and elementwise kernels.
fn kernels(cfg: &RooflineConfig, dev: &Device) -> Result<Vec<Kernel>> {
    let sz = sizes(cfg.preset, !dev.is_cpu());
    let dt = parse_dtype(&cfg.dtype)?;
    let mut ks = peak_kernels(&sz, dev);
    for m in &sz.models {
        let (h, f) = (m.hidden, m.ffn);
        for (proj, k, n) in [("q", h, h), ("up", h, f), ("down", f, h)] {
            for &rows in &sz.ms {
                ks.push(linear_kernel(m, proj, rows, k, n, dt, dev));
            }
            // Quantized weights (Q4_1 as shipped), f32 activations, candle's QMatMul.
            if proj != "q" {
                for &rows in &sz.ms {
                    ks.push(qmatmul_kernel(m, proj, rows, k, n, dev));
                }
            }
        }
        for &l in &sz.seq {
            ks.extend(attention_kernels(m, l, dt, dev));
        }
        for &t in &sz.tokens {
            ks.extend(elementwise_kernels(m, t, dt, dev));
        }
    }
    Ok(ks)
}

/// A kernel whose inputs failed to allocate (e.g. a dtype the backend lacks) still gets a
/// row: its launch returns the error.
fn launch_or_error(run: candle_core::Result<Launch>) -> Launch {
    run.unwrap_or_else(|e| {
        let msg = e.to_string();
        Box::new(move || Err(candle_core::Error::Msg(msg.clone())))
    })
}

/// Square matrix products in f32, f16 and bf16 (the compute peaks) and a copy (bandwidth).
fn peak_kernels(sz: &Sizes, dev: &Device) -> Vec<Kernel> {
    let mut ks = Vec::new();
    for mdt in [DType::F32, DType::F16, DType::BF16] {
        for &n in &sz.matmul {
            let run = (|| -> candle_core::Result<Launch> {
                let (a, b) = (randn(&[n, n], mdt, dev)?, randn(&[n, n], mdt, dev)?);
                Ok(Box::new(move || a.matmul(&b)))
            })();
            let nf = n as f64;
            ks.push(Kernel {
                name: format!("matmul {} n={n}", mdt.as_str()),
                category: "peak-matmul",
                model: "-",
                shape: format!("{n}x{n}x{n}"),
                dtype: mdt.as_str().into(),
                roof_dtype: Some(mdt),
                flops: 2.0 * nf.powi(3),
                bytes: 3.0 * nf * nf * mdt.size_in_bytes() as f64,
                run: launch_or_error(run),
            });
        }
    }
    // Copy into an existing buffer (no allocation): bytes read + written.
    ks.push(Kernel {
        name: "copy".into(),
        category: "peak-copy",
        model: "-",
        shape: format!("{} MiB", sz.copy_bytes >> 20),
        dtype: "f32".into(),
        roof_dtype: Some(DType::F32),
        flops: 0.0,
        bytes: 2.0 * sz.copy_bytes as f64,
        run: launch_or_error(copy_kernel(sz.copy_bytes / 4, dev)),
    });
    ks
}

/// x [rows, k] times W^T, W [n, k]: a dense projection.
fn linear_kernel(
    m: &ModelShape,
    proj: &str,
    rows: usize,
    k: usize,
    n: usize,
    dt: DType,
    dev: &Device,
) -> Kernel {
    let run = (|| -> candle_core::Result<Launch> {
        let (x, w) = (randn(&[rows, k], dt, dev)?, randn(&[n, k], dt, dev)?);
        Ok(Box::new(move || x.matmul(&w.t()?)))
    })();
    let (mf, kf, nf) = (rows as f64, k as f64, n as f64);
    model_kernel(
        m,
        dt,
        format!("linear {proj} M={rows}"),
        "linear",
        format!("M={rows} K={k} N={n}"),
        (
            2.0 * mf * kf * nf,
            dt.size_in_bytes() as f64 * (mf * kf + kf * nf + mf * nf),
        ),
        run,
    )
}

/// A kernel of model `m` in dtype `dt`, roofed by that dtype's peak; `cost` is (FLOPs, bytes).
fn model_kernel(
    m: &ModelShape,
    dt: DType,
    name: String,
    category: &'static str,
    shape: String,
    cost: (f64, f64),
    run: candle_core::Result<Launch>,
) -> Kernel {
    Kernel {
        name,
        category,
        model: m.name,
        shape,
        dtype: dt.as_str().into(),
        roof_dtype: Some(dt),
        flops: cost.0,
        bytes: cost.1,
        run: launch_or_error(run),
    }
}

/// The same projection with Q4_1 weights and f32 activations through candle's QMatMul;
/// bytes are the packed weights plus activations.
fn qmatmul_kernel(
    m: &ModelShape,
    proj: &str,
    rows: usize,
    k: usize,
    n: usize,
    dev: &Device,
) -> Kernel {
    let run = (|| -> candle_core::Result<Launch> {
        let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu)?;
        let q = crate::model::llama::quantize_onto(&w, GgmlDType::Q4_1, dev)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let qm = QMatMul::from_qtensor(q)?;
        let x = randn(&[rows, k], DType::F32, dev)?;
        Ok(Box::new(move || qm.forward(&x)))
    })();
    let (mf, kf, nf) = (rows as f64, k as f64, n as f64);
    let wbytes = kf * nf * GgmlDType::Q4_1.type_size() as f64 / GgmlDType::Q4_1.block_size() as f64;
    Kernel {
        name: format!("qmatmul q4_1 {proj} M={rows}"),
        category: "qmatmul",
        model: m.name,
        shape: format!("M={rows} K={k} N={n}"),
        dtype: "q4_1/f32".into(),
        roof_dtype: None,
        flops: 2.0 * mf * kf * nf,
        bytes: wbytes + 4.0 * (mf * kf + mf * nf),
        run: launch_or_error(run),
    }
}

/// Attention over `l` positions: prefill-like (L queries against L keys) and one decode
/// step (a query row against L cached keys and values).
fn attention_kernels(m: &ModelShape, l: usize, dt: DType, dev: &Device) -> [Kernel; 2] {
    let (nh, hd) = (m.heads, m.head_dim);
    let es = dt.size_in_bytes() as f64;
    let (hf, lf, df) = (nh as f64, l as f64, hd as f64);
    let kernel = |name, category, shape, flops, bytes, run| {
        model_kernel(m, dt, name, category, shape, (flops, bytes), run)
    };
    [
        kernel(
            format!("attention L={l}"),
            "attention",
            format!("H={nh} L={l} D={hd}"),
            // 2 matmuls + scale (1) + softmax (max, sub, exp, sum, div: 5) per score.
            4.0 * hf * lf * lf * df + 6.0 * hf * lf * lf,
            // q, k, v, out; scores written, scaled (r+w), softmaxed (r+w), read by AV.
            es * (4.0 * hf * lf * df + 6.0 * hf * lf * lf),
            attention(nh, l, l, hd, dt, dev),
        ),
        kernel(
            format!("attention decode L={l}"),
            "attention-decode",
            format!("H={nh} Lq=1 Lkv={l} D={hd}"),
            4.0 * hf * lf * df + 6.0 * hf * lf,
            es * (2.0 * hf * df + 2.0 * hf * lf * df + 6.0 * hf * lf),
            attention(nh, 1, l, hd, dt, dev),
        ),
    ]
}

/// RMSNorm, SiLU, RoPE and the embedding lookup over `t` tokens.
fn elementwise_kernels(m: &ModelShape, t: usize, dt: DType, dev: &Device) -> [Kernel; 4] {
    let (h, f, nh, hd) = (m.hidden, m.ffn, m.heads, m.head_dim);
    let es = dt.size_in_bytes() as f64;
    let (tf, hf, ff) = (t as f64, h as f64, f as f64);
    let kernel = |name, category, shape, flops, bytes, run| {
        model_kernel(m, dt, name, category, shape, (flops, bytes), run)
    };
    let rmsnorm = (|| -> candle_core::Result<Launch> {
        let (x, w) = (randn(&[t, h], dt, dev)?, randn(&[h], dt, dev)?);
        Ok(Box::new(move || candle_nn::ops::rms_norm(&x, &w, 1e-5)))
    })();
    let silu = (|| -> candle_core::Result<Launch> {
        let x = randn(&[t, f], dt, dev)?;
        Ok(Box::new(move || x.silu()))
    })();
    let rope = (|| -> candle_core::Result<Launch> {
        let x = randn(&[1, nh, t, hd], dt, dev)?;
        let (cos, sin) = (randn(&[t, hd / 2], dt, dev)?, randn(&[t, hd / 2], dt, dev)?);
        Ok(Box::new(move || {
            candle_nn::rotary_emb::rope(&x, &cos, &sin)
        }))
    })();
    let embedding = (|| -> candle_core::Result<Launch> {
        let table = randn(&[m.vocab, h], dt, dev)?;
        let ids = Tensor::new(
            (0..t as u32)
                .map(|i| (i * 7919) % m.vocab as u32)
                .collect::<Vec<_>>(),
            dev,
        )?;
        Ok(Box::new(move || table.index_select(&ids, 0)))
    })();
    let n = (nh * t * hd) as f64;
    [
        // square, sum, scale by rsqrt, multiply by weight.
        kernel(
            format!("rmsnorm T={t}"),
            "rmsnorm",
            format!("T={t} H={h}"),
            4.0 * tf * hf,
            es * (2.0 * tf * hf + hf),
            rmsnorm,
        ),
        // x / (1 + exp(-x)): negate, exp, add, divide.
        kernel(
            format!("silu T={t}"),
            "silu",
            format!("T={t} F={f}"),
            4.0 * tf * ff,
            es * 2.0 * tf * ff,
            silu,
        ),
        // 2 multiplies and an add per output element.
        kernel(
            format!("rope T={t}"),
            "rope",
            format!("H={nh} T={t} D={hd}"),
            3.0 * n,
            es * (2.0 * n + tf * hd as f64),
            rope,
        ),
        kernel(
            format!("embedding T={t}"),
            "embedding",
            format!("T={t} V={} H={h}", m.vocab),
            0.0,
            es * 2.0 * tf * hf + 4.0 * tf,
            embedding,
        ),
    ]
}

/// Progress and interruption hooks of a run.
pub struct Hooks<'a> {
    pub on_kernel: &'a mut dyn FnMut(usize, usize, &str),
    pub interrupted: &'a dyn Fn() -> bool,
}

/// Measure everything and write `roofline.json` and `roofline.csv` into `out` after every
/// kernel (a crash or Ctrl-C keeps what was measured), then the plot.
pub fn run_roofline(cfg: &RooflineConfig, out: &Path, hooks: Hooks<'_>) -> Result<RooflineReport> {
    let Hooks {
        on_kernel,
        interrupted,
    } = hooks;
    let dev = crate::model::device(&cfg.device)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let (meter, energy_reason) = match dev.is_cpu() {
        true => (
            None,
            Some("device is the CPU: NVML measures GPUs only; energy fields are null".to_string()),
        ),
        false => match GpuMeter::for_cuda(crate::model::cuda_ordinal(&cfg.device)?.unwrap_or(0)) {
            Ok(m) => (Some(m), None),
            Err(r) => (None, Some(r)),
        },
    };
    let idle_w = meter
        .as_ref()
        .and_then(|m| m.idle_power_w(Duration::from_secs(1)));
    let ks = kernels(cfg, &dev)?;
    let timer = Timer::for_device(&dev);
    let mut report = RooflineReport {
        schema: "perfwatt.roofline/1",
        config: cfg.clone(),
        device_name: meter
            .as_ref()
            .map_or_else(|| cfg.device.clone(), |m| m.name.clone()),
        peaks: Vec::new(),
        bandwidth_bytes_per_s: None,
        idle_w,
        energy_reason,
        kernels: Vec::new(),
    };
    let mut roof_dtypes = Vec::new();
    for (i, k) in ks.iter().enumerate() {
        if interrupted() {
            return Err(Error::Interrupted);
        }
        on_kernel(i, ks.len(), &k.name);
        let (timing, error) = match measure(cfg, &timer, &dev, &*k.run) {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let energy = match (&meter, &timing) {
            (Some(m), Some(_)) => launch_energy(m, &dev, idle_w, cfg.energy_seconds, &*k.run).ok(),
            _ => None,
        };
        let per_s = |x: f64| timing.as_ref().map(|t| x / t.median_s);
        report.kernels.push(KernelResult {
            name: k.name.clone(),
            category: k.category.into(),
            model: k.model.into(),
            shape: k.shape.clone(),
            dtype: k.dtype.clone(),
            flops: k.flops,
            bytes: k.bytes,
            intensity: if k.bytes > 0.0 {
                k.flops / k.bytes
            } else {
                0.0
            },
            flop_per_s: per_s(k.flops),
            bytes_per_s: per_s(k.bytes),
            timing,
            roof_flop_per_s: None,
            roof_dtype: None,
            roof_fraction: None,
            bound: None,
            energy,
            error,
        });
        roof_dtypes.push(k.roof_dtype);
        update_peaks(&mut report, &roof_dtypes);
        write_results(&report, out)?;
    }
    on_kernel(ks.len(), ks.len(), "plot");
    plot(&report, out)?;
    Ok(report)
}

fn measure(
    cfg: &RooflineConfig,
    timer: &Timer,
    dev: &Device,
    f: &dyn Fn() -> candle_core::Result<Tensor>,
) -> Result<Timing> {
    for _ in 0..cfg.warmup.max(1) {
        f().map_err(me)?;
    }
    dev.synchronize().map_err(me)?;
    let budget = Duration::from_secs_f64(cfg.seconds_per_kernel);
    let start = Instant::now();
    let mut xs = Vec::with_capacity(cfg.repeats);
    while xs.len() < cfg.repeats.max(1) && (xs.len() < 5 || start.elapsed() < budget) {
        xs.push(timer.once(f)?);
    }
    Timing::of(&xs).ok_or_else(|| Error::Model("no timings".into()))
}

/// Energy counter over back-to-back launches lasting at least `seconds` (20 at least).
fn launch_energy(
    m: &GpuMeter,
    dev: &Device,
    idle_w: Option<f64>,
    seconds: f64,
    f: &dyn Fn() -> candle_core::Result<Tensor>,
) -> Result<KernelEnergy> {
    dev.synchronize().map_err(me)?;
    let e0 = m
        .energy_mj()
        .ok_or_else(|| Error::Model("energy counter".into()))?;
    let t0 = Instant::now();
    let mut launches = 0;
    while launches < 20 || t0.elapsed().as_secs_f64() < seconds {
        f().map_err(me)?;
        launches += 1;
    }
    dev.synchronize().map_err(me)?;
    let secs = t0.elapsed().as_secs_f64();
    let e1 = m
        .energy_mj()
        .ok_or_else(|| Error::Model("energy counter".into()))?;
    let j = e1.saturating_sub(e0) as f64 / 1000.0;
    Ok(KernelEnergy {
        launches,
        seconds: secs,
        j_per_launch: j / launches as f64,
        j_per_launch_above_idle: idle_w.map(|w| (j - w * secs).max(0.0) / launches as f64),
        avg_w: j / secs,
    })
}

/// Peaks from the rows measured so far, then every row's roof and bound.
fn update_peaks(r: &mut RooflineReport, roof_dtypes: &[Option<DType>]) {
    r.bandwidth_bytes_per_s = r
        .kernels
        .iter()
        .filter(|k| k.category == "peak-copy")
        .filter_map(|k| k.bytes_per_s)
        .reduce(f64::max);
    let bw = r.bandwidth_bytes_per_s;
    r.peaks = [DType::F32, DType::F16, DType::BF16]
        .iter()
        .filter_map(|dt| {
            let best = r
                .kernels
                .iter()
                .filter(|k| k.category == "peak-matmul" && k.dtype == dt.as_str())
                .filter_map(|k| Some((k.flop_per_s?, k.shape.split('x').next()?.parse().ok()?)))
                .reduce(|a, b| if b.0 > a.0 { b } else { a })?;
            Some(Peak {
                dtype: dt.as_str().into(),
                flop_per_s: best.0,
                at_n: best.1,
                ridge_flop_per_byte: bw.map(|bw| best.0 / bw),
            })
        })
        .collect();
    let peaks = r.peaks.clone();
    let highest = peaks
        .iter()
        .reduce(|a, b| if b.flop_per_s > a.flop_per_s { b } else { a });
    for (k, dt) in r.kernels.iter_mut().zip(roof_dtypes) {
        let peak = match dt {
            Some(dt) => peaks.iter().find(|p| p.dtype == dt.as_str()),
            None => highest,
        };
        k.roof_dtype = peak.map(|p| p.dtype.clone());
        let (Some(p), Some(bw), Some(achieved)) = (peak, bw, k.flop_per_s) else {
            continue;
        };
        let roof = p.flop_per_s.min(k.intensity * bw);
        k.roof_flop_per_s = Some(roof);
        k.roof_fraction = (roof > 0.0).then(|| achieved / roof);
        k.bound = p.ridge_flop_per_byte.map(|ridge| {
            if k.intensity < ridge {
                "memory"
            } else {
                "compute"
            }
        });
    }
}

const CSV_HEADER: &str = "name,category,model,shape,dtype,flops,bytes,intensity_flop_per_byte,median_s,p5_s,p95_s,min_s,max_s,repeats,flop_per_s,bytes_per_s,roof_flop_per_s,roof_dtype,roof_fraction,bound,energy_launches,j_per_launch,j_per_launch_above_idle,avg_w,error";

/// One row per kernel; empty cells where a figure is not available.
pub fn to_csv(r: &RooflineReport) -> String {
    let o = |v: Option<f64>| v.map(|v| format!("{v:e}")).unwrap_or_default();
    let q = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for k in &r.kernels {
        let t = k.timing.as_ref();
        let e = k.energy.as_ref();
        let cells = [
            q(&k.name),
            k.category.clone(),
            k.model.clone(),
            q(&k.shape),
            q(&k.dtype),
            format!("{:e}", k.flops),
            format!("{:e}", k.bytes),
            format!("{:e}", k.intensity),
            o(t.map(|t| t.median_s)),
            o(t.map(|t| t.p5_s)),
            o(t.map(|t| t.p95_s)),
            o(t.map(|t| t.min_s)),
            o(t.map(|t| t.max_s)),
            t.map(|t| t.repeats.to_string()).unwrap_or_default(),
            o(k.flop_per_s),
            o(k.bytes_per_s),
            o(k.roof_flop_per_s),
            k.roof_dtype.clone().unwrap_or_default(),
            o(k.roof_fraction),
            k.bound.unwrap_or("").into(),
            e.map(|e| e.launches.to_string()).unwrap_or_default(),
            o(e.map(|e| e.j_per_launch)),
            o(e.and_then(|e| e.j_per_launch_above_idle)),
            o(e.map(|e| e.avg_w)),
            q(k.error.as_deref().unwrap_or("")),
        ];
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

fn write_results(r: &RooflineReport, out: &Path) -> Result<()> {
    write_atomic(
        &out.join("roofline.json"),
        (serde_json::to_string_pretty(r).expect("serializable") + "\n").as_bytes(),
    )?;
    write_atomic(&out.join("roofline.csv"), to_csv(r).as_bytes())
}

/// FLOP/s in TFLOP/s or, below one, GFLOP/s.
fn flops_str(f: f64) -> String {
    if f >= 1e12 {
        format!("{:.1} TFLOP/s", f / 1e12)
    } else {
        format!("{:.1} GFLOP/s", f / 1e9)
    }
}

/// A human summary: peaks, ridge points, and each kernel's latency, rate and energy.
pub fn to_table(r: &RooflineReport) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "roofline of {} ({} kernels, {})\n",
        r.device_name,
        r.config.dtype,
        r.kernels.len()
    );
    let bw = r
        .bandwidth_bytes_per_s
        .map_or("n/a".into(), |b| format!("{:.1} GB/s", b / 1e9));
    let _ = writeln!(s, "peak bandwidth (copy, read+write): {bw}");
    for p in &r.peaks {
        let ridge = p
            .ridge_flop_per_byte
            .map_or("n/a".into(), |x| format!("{x:.1}"));
        let _ = writeln!(
            s,
            "peak {:<5} {:>15} (n={})  ridge {ridge} FLOP/byte",
            p.dtype,
            flops_str(p.flop_per_s),
            p.at_n
        );
    }
    let _ = writeln!(
        s,
        "{:<34} {:<13} {:>9} {:>11} {:>11} {:>10} {:>7} {:>12}",
        "kernel", "model", "FLOP/B", "median us", "GFLOP/s", "GB/s", "roof%", "uJ/launch"
    );
    for k in &r.kernels {
        let Some(t) = &k.timing else {
            let _ = writeln!(
                s,
                "{:<34} {:<13} error: {}",
                k.name,
                k.model,
                k.error.as_deref().unwrap_or("?")
            );
            continue;
        };
        let _ = writeln!(
            s,
            "{:<34} {:<13} {:>9.2} {:>11.1} {:>11.1} {:>10.1} {:>7} {:>12}",
            k.name,
            k.model,
            k.intensity,
            t.median_s * 1e6,
            k.flop_per_s.unwrap_or(0.0) / 1e9,
            k.bytes_per_s.unwrap_or(0.0) / 1e9,
            k.roof_fraction
                .map_or("".into(), |f| format!("{:.0}", f * 100.0)),
            k.energy
                .as_ref()
                .map_or("n/a".into(), |e| format!("{:.1}", e.j_per_launch * 1e6)),
        );
    }
    if let Some(reason) = &r.energy_reason {
        let _ = writeln!(s, "energy: {reason}");
    }
    s
}

/// Log-log roofline: the bandwidth slope and each dtype's compute roof, kernels as points
/// by category (zero-FLOP kernels such as the embedding have no place on it: see the CSV).
pub fn plot(r: &RooflineReport, out: &Path) -> Result<PathBuf> {
    use crate::plot::{both, pe, render};
    use plotters::prelude::*;
    let pts: Vec<(&str, f64, f64)> = r
        .kernels
        .iter()
        .filter_map(|k| Some((k.category.as_str(), k.intensity, k.flop_per_s?)))
        .filter(|p| p.1 > 0.0 && p.2 > 0.0)
        .collect();
    let peak_max = r.peaks.iter().map(|p| p.flop_per_s).fold(0.0, f64::max);
    let (x0, x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (y0, y1) = pts
        .iter()
        .fold((f64::MAX, peak_max), |(a, b), p| (a.min(p.2), b.max(p.2)));
    if pts.is_empty() {
        return Err(Error::Model(
            "roofline plot: no kernel has a measured FLOP rate".into(),
        ));
    }
    let ridge_max = r
        .peaks
        .iter()
        .filter_map(|p| p.ridge_flop_per_byte)
        .fold(0.0, f64::max);
    let (x0, x1, y0, y1) = (
        x0 / 2.0,
        (x1 * 2.0).max(ridge_max * 4.0),
        y0 / 2.0,
        y1 * 2.0,
    );
    let cats = [
        "peak-matmul",
        "linear",
        "qmatmul",
        "attention",
        "attention-decode",
        "rmsnorm",
        "silu",
        "rope",
    ];
    let color = |c: &str| Palette99::pick(cats.iter().position(|x| *x == c).unwrap_or(9)).to_rgba();
    let title = format!("Roofline: {} ({})", r.device_name, r.config.dtype);
    render(
        out,
        "roofline",
        (1100, 750),
        both!(|root| {
            let mut chart = ChartBuilder::on(&root)
                .caption(&title, ("sans-serif", 22))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(90)
                .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
                .map_err(pe)?;
            chart
                .configure_mesh()
                .x_desc("arithmetic intensity (FLOP/byte)")
                .y_desc("achieved FLOP/s")
                .y_label_formatter(&|v| format!("{v:.0e}"))
                .x_label_formatter(&|v| format!("{v:.2}"))
                .draw()
                .map_err(pe)?;
            if let Some(bw) = r.bandwidth_bytes_per_s {
                // Roofs in greys, so they never share a colour with a kernel category.
                let greys = [
                    RGBColor(0, 0, 0),
                    RGBColor(110, 110, 110),
                    RGBColor(180, 180, 180),
                ];
                for (i, p) in r.peaks.iter().enumerate() {
                    let ridge = p.flop_per_s / bw;
                    let style = greys[i % greys.len()].stroke_width(2);
                    chart
                        .draw_series(LineSeries::new(
                            [(x0, x0 * bw), (ridge, p.flop_per_s), (x1, p.flop_per_s)],
                            style,
                        ))
                        .map_err(pe)?
                        .label(format!(
                            "roof {} {}, {:.0} GB/s",
                            p.dtype,
                            flops_str(p.flop_per_s),
                            bw / 1e9
                        ))
                        .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], style));
                }
            }
            for c in cats {
                let these: Vec<(f64, f64)> = pts
                    .iter()
                    .filter(|p| p.0 == c)
                    .map(|p| (p.1, p.2))
                    .collect();
                if these.is_empty() {
                    continue;
                }
                let col = color(c);
                chart
                    .draw_series(these.into_iter().map(|p| Circle::new(p, 5, col.filled())))
                    .map_err(pe)?
                    .label(c)
                    .legend(move |(x, y)| Circle::new((x + 5, y), 5, col.filled()));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.85))
                .draw()
                .map_err(pe)?;
            Ok(())
        }),
    )
}
