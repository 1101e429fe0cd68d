//! The kernels a roofline measures: matrix-product peaks, a device-to-device copy, and an
//! LLM's kernels (linear, attention, RMSNorm, SiLU, RoPE, embedding, quantized matmul) at
//! the shipped model's shapes and a 7B model's, each with its FLOPs and bytes.
//!
//! In: a config (preset, dtype) and a candle device. Out: `Kernel`s, each a closure that
//! launches it once on inputs allocated when it was built.

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{DType, Device, Module, Tensor};

use super::{parse_dtype, Preset, RooflineConfig};
use crate::error::Result;

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

/// One kernel to measure: its cost model and a closure launching it once.
pub(super) struct Kernel {
    pub(super) name: String,
    pub(super) category: &'static str,
    pub(super) model: &'static str,
    pub(super) shape: String,
    pub(super) dtype: String,
    /// Dtype whose matmul peak is this kernel's compute roof; None: the device's highest
    /// measured peak (quantized matmuls, whose int8 / dequantizing kernels have no peak of
    /// their own here).
    pub(super) roof_dtype: Option<DType>,
    pub(super) flops: f64,
    pub(super) bytes: f64,
    pub(super) run: Launch,
}

/// Launches a kernel once on inputs allocated when it was built.
pub(super) type Launch = Box<dyn Fn() -> candle_core::Result<Tensor>>;

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
pub(super) fn kernels(cfg: &RooflineConfig, dev: &Device) -> Result<Vec<Kernel>> {
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
