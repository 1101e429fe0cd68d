//! Operand capture: what the model's matmuls really multiply, in the format they multiply it.
//!
//! In: every projection input the model computes during a capture run (a run of its own,
//! after the measured runs), and the projection's weight as stored. Out: an
//! `OperandStream` of (activation, weight) pairs in the order one MAC computing
//! y_j = sum_i x_i w_ji consumes them, in the kernel's own integers:
//!   q4_1: u4 weight nibbles x q8_1 activations (int8, one scale per 32 elements);
//!   q4_0: i4 weights (nibble - 8) x q8_0 activations; q8_0: int8 x q8_0 activations;
//!   q5_0: i5 weights (5-bit value - 16, held in int8) x q8_0 activations;
//!   q4_k: u4 weight nibbles (6-bit scale and min per 32) x q8_k activations (int8, one
//!   scale per 256); q6_k: i6 weights (6-bit value - 32, held in int8) x q8_k activations.
//! The activations are quantized as candle's CPU kernels quantize them (q8_0/q8_1: scale =
//! max |x| / 127 per 32-element block; q8_k: -127 / the signed extreme per 256; round half
//! away from zero), the weights are read from the GGUF blocks themselves. A model whose
//! projections mix formats (Gemma's GGUF) gives a stream of int8 containers; each
//! segment's metadata names its own format. Dense precisions are captured as floats: bf16 and f16
//! as the bit patterns the matmul multiplies; f32 as bf16 (rounded to nearest even: the
//! .ops format holds 16-bit elements and perfwatt's float datapaths are bf16), and the
//! stream's `format.arithmetic` says so. Formats whose blocks perfwatt does not read (q5_1,
//! q2_k, ...) are captured as int8 (activations per 32-element block, weights per row);
//! width 16 keeps per-tensor int16.
//!
//! Which vectors: a seeded reservoir sample per (layer, projection) over the whole capture
//! run, so the pairs spread over prompts, batch rows, positions past the chat template
//! (the template's positions are skipped: every prompt shares them) and decode steps.

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Tensor};

use super::CaptureSpec;
use crate::error::{Error, Result};
use crate::model::llama::me;
use crate::model::{LinearId, LinearTap, WeightView};
use crate::stats::Rng;
use crate::trace::{ElemFormat, OperandStream};

/// How a segment's operands are encoded.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Encoding {
    /// The integers of a quantized kernel whose weights are GGUF blocks of this type.
    Kernel(GgmlDType),
    /// int8: activations per 32-element block, weights per row (no kernel of that format).
    Int8Blocks,
    /// int16, one scale per tensor (capture width 16).
    Int16Tensor,
    /// Float bit patterns (bf16 or f16) of a dense matmul; `from_f32` when the model
    /// computed in f32 and the values were rounded to this format.
    Float { format: ElemFormat, from_f32: bool },
}

impl Encoding {
    fn formats(self) -> (ElemFormat, ElemFormat) {
        match self {
            Encoding::Kernel(GgmlDType::Q4_1 | GgmlDType::Q4K) => (ElemFormat::I8, ElemFormat::U4),
            Encoding::Kernel(GgmlDType::Q4_0) => (ElemFormat::I8, ElemFormat::I4),
            Encoding::Int16Tensor => (ElemFormat::I16, ElemFormat::I16),
            Encoding::Float { format, .. } => (format, format),
            _ => (ElemFormat::I8, ElemFormat::I8),
        }
    }

    fn arithmetic(self, precision: &str) -> String {
        match self {
            Encoding::Kernel(GgmlDType::Q4_1) => "q4_1: u4 weight nibbles x q8_1 activations (int8, scale per 32)".into(),
            Encoding::Kernel(GgmlDType::Q4_0) => "q4_0: i4 weights (nibble - 8) x q8_0 activations (int8, scale per 32)".into(),
            Encoding::Kernel(GgmlDType::Q5_0) => "q5_0: i5 weights (5-bit value - 16, in int8) x q8_0 activations (int8, scale per 32)".into(),
            Encoding::Kernel(GgmlDType::Q4K) => "q4_k: u4 weight nibbles (6-bit scale and min per 32) x q8_k activations (int8, scale per 256)".into(),
            Encoding::Kernel(GgmlDType::Q6K) => "q6_k: i6 weights (6-bit value - 32, in int8; scale per 16) x q8_k activations (int8, scale per 256)".into(),
            Encoding::Kernel(_) => "q8_0: int8 weights x q8_0 activations (int8, scale per 32)".into(),
            Encoding::Int8Blocks => format!("{precision}: captured as int8 (activations per 32-element block, weights per row); perfwatt has no datapath of this format yet"),
            Encoding::Int16Tensor => format!("{precision}: captured as int16, one scale per tensor"),
            Encoding::Float { format, from_f32: false } => format!("{precision}: {f} weights x {f} activations, as the matmul multiplies them", f = format.name()),
            Encoding::Float { format, from_f32: true } => format!("{precision}: f32 weights and activations rounded to {} (nearest even) for perfwatt's {} datapaths", format.name(), format.name()),
        }
    }
}

/// Block size of the activation quantization (q8_0 / q8_1).
const QK: usize = 32;
/// Block size of the k-quants and of their activations (q8_k).
const QK_K: usize = 256;

impl Encoding {
    /// Elements per activation block: q8_k's for the k-quants, q8_0's otherwise.
    fn act_block(self) -> usize {
        match self {
            Encoding::Kernel(GgmlDType::Q4K | GgmlDType::Q6K) => QK_K,
            _ => QK,
        }
    }
}

/// int8 of a 256-element block as candle's q8_k `from_float` computes it: scale -127 / the
/// element of largest magnitude (signed), clamped to [-128, 127].
fn q8k_block(xs: &[f32], out: &mut Vec<i16>) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &x in xs {
        if amax < x.abs() {
            amax = x.abs();
            max = x;
        }
    }
    if amax == 0.0 {
        out.extend(xs.iter().map(|_| 0));
        return;
    }
    let iscale = -127f32 / max;
    out.extend(
        xs.iter()
            .map(|&x| (iscale * x).round().clamp(-128.0, 127.0) as i8 as i16),
    );
}

/// int8 of a 32-element block as candle's q8_0/q8_1 `from_float` computes it.
fn q8_block(xs: &[f32], out: &mut Vec<i16>) {
    let amax = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend(xs.iter().map(|&x| (x * id).round() as i8 as i16));
}

/// Bytes and elements of one GGUF block of the formats whose integers perfwatt reads.
fn block_shape(dt: GgmlDType) -> Option<(usize, usize)> {
    match dt {
        GgmlDType::Q4_1 => Some((20, QK)),
        GgmlDType::Q4_0 => Some((18, QK)),
        GgmlDType::Q5_0 => Some((22, QK)),
        GgmlDType::Q8_0 => Some((34, QK)),
        GgmlDType::Q4K => Some((144, QK_K)),
        GgmlDType::Q6K => Some((210, QK_K)),
        _ => None,
    }
}

/// The weight rows `rows` of a quantized tensor [n, k] as the kernel's integers, in
/// element order (the layouts of ggml's / candle's `to_float`).
fn kernel_rows(dt: GgmlDType, data: &[u8], k: usize, rows: &[usize]) -> Option<Vec<i16>> {
    let (bytes, elems) = block_shape(dt)?;
    if k % elems != 0 {
        return None;
    }
    let blocks = k / elems;
    let mut out = Vec::with_capacity(rows.len() * k);
    for &r in rows {
        for b in 0..blocks {
            block_ints(dt, &data[(r * blocks + b) * bytes..][..bytes], &mut out);
        }
    }
    Some(out)
}

/// One block's integers.
fn block_ints(dt: GgmlDType, blk: &[u8], out: &mut Vec<i16>) {
    // 16 bytes of nibbles: element j in the low nibble of byte j, element j + 16 in its
    // high one (q4_0, q4_1, q5_0's low bits).
    let low = |qs: &[u8], out: &mut Vec<i16>, offset: i16| {
        out.extend(qs.iter().map(|q| (q & 0x0f) as i16 - offset));
        out.extend(qs.iter().map(|q| (q >> 4) as i16 - offset));
    };
    match dt {
        // d (and m) f16, then the nibbles.
        GgmlDType::Q4_1 => low(&blk[4..], out, 0),
        GgmlDType::Q4_0 => low(&blk[2..], out, 8),
        GgmlDType::Q8_0 => out.extend(blk[2..].iter().map(|&q| q as i8 as i16)),
        // d f16, qh u32 (bit j: the fifth bit of element j), then the nibbles.
        GgmlDType::Q5_0 => {
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            let start = out.len();
            low(&blk[6..], out, 0);
            for (j, v) in out[start..].iter_mut().enumerate() {
                *v += (((qh >> j) & 1) << 4) as i16 - 16;
            }
        }
        // d, dmin f16, 12 bytes of 6-bit scales and mins, then per 64 elements 32 bytes:
        // elements 0..32 in the low nibbles, 32..64 in the high ones.
        GgmlDType::Q4K => {
            for qs in blk[16..].chunks_exact(32) {
                out.extend(qs.iter().map(|q| (q & 0x0f) as i16));
                out.extend(qs.iter().map(|q| (q >> 4) as i16));
            }
        }
        // ql[128], qh[64], scales[16], d: per 128 elements, 64 bytes of ql and 32 of qh;
        // element l + 32 i (i = 0..4) takes ql's nibble and qh's bit pair i.
        GgmlDType::Q6K => {
            let (ql, qh) = (&blk[..128], &blk[128..192]);
            for half in 0..2 {
                let (ql, qh) = (&ql[64 * half..][..64], &qh[32 * half..][..32]);
                for i in 0..4 {
                    out.extend((0..32).map(|l| {
                        let nib = match i {
                            0 => ql[l] & 0x0f,
                            1 => ql[l + 32] & 0x0f,
                            2 => ql[l] >> 4,
                            _ => ql[l + 32] >> 4,
                        };
                        (nib | (((qh[l] >> (2 * i)) & 3) << 4)) as i16 - 32
                    }));
                }
            }
        }
        _ => unreachable!("block_shape lists the formats block_ints reads"),
    }
}

struct Segment {
    id: LinearId,
    k: usize,
    rows: Vec<usize>,
    encoding: Encoding,
    /// The chosen weight rows, encoded, [rows.len() * k]; for Int16Tensor the f32 values
    /// (scaled at the end) are in `w_f32`.
    w: Vec<i16>,
    w_f32: Vec<f32>,
    w_absmax: f32,
    /// The reservoir of activation vectors, concatenated.
    xs: Vec<f32>,
    /// Vectors offered so far.
    seen: u64,
}

/// A `LinearTap` that samples activation vectors (a reservoir per projection) and keeps
/// the weight rows they meet, up to a pair budget split evenly across the chosen
/// (layer, projection)s.
pub struct OperandCapture {
    spec: CaptureSpec,
    segments: Vec<Segment>,
    per_segment: usize,
    /// Leading prefill positions not sampled (the chat template every prompt shares).
    skip_positions: usize,
    rng: Rng,
}

impl OperandCapture {
    pub fn new(spec: CaptureSpec, skip_positions: usize) -> Result<Self> {
        if spec.width != 8 && spec.width != 16 {
            return Err(Error::Config("capture width must be 8 or 16".into()));
        }
        let n = (spec.layers.len() * spec.projs.len()).max(1);
        let per_segment = spec.max_pairs / n;
        let rng = Rng::new(spec.seed);
        Ok(OperandCapture {
            spec,
            segments: Vec::new(),
            per_segment,
            skip_positions,
            rng,
        })
    }

    pub fn pairs(&self) -> usize {
        self.segments
            .iter()
            .map(|s| s.xs.len() / s.k * s.rows.len() * s.k)
            .sum()
    }

    /// Encode and lay out the pairs: per segment, for each sampled vector, for each weight
    /// row j, for i in 0..k: (x_i, w_ji).
    pub fn into_stream(
        self,
        precision: &str,
        provenance: serde_json::Value,
    ) -> Result<OperandStream> {
        let encoding = self
            .segments
            .first()
            .map_or(Encoding::Int8Blocks, |s| s.encoding);
        let mixed = self.segments.iter().any(|s| s.encoding != encoding);
        let mut pairs = Vec::with_capacity(self.pairs());
        let mut segs = Vec::new();
        for s in &self.segments {
            let start = pairs.len();
            let (xq, wq, scales) = encode(s);
            for x in xq.chunks_exact(s.k) {
                for w in wq.chunks_exact(s.k) {
                    pairs.extend(x.iter().copied().zip(w.iter().copied()));
                }
            }
            let n = pairs.len() - start;
            let zeros = pairs[start..].iter().filter(|p| p.0 == 0).count();
            segs.push(serde_json::json!({
                "layer": s.id.layer, "proj": s.id.proj, "start": start, "pairs": n, "dot_len": s.k,
                "vectors": s.xs.len() / s.k, "vectors_seen": s.seen, "rows": s.rows, "scales": scales,
                "a_zero_fraction": if n > 0 { zeros as f64 / n as f64 } else { 0.0 },
                "arithmetic": s.encoding.arithmetic(precision),
            }));
        }
        let mut meta = provenance;
        meta["segments"] = serde_json::Value::Array(segs);
        meta["sampling"] = serde_json::json!(format!(
            "reservoir per projection, seed {}, over every vector of a capture run of its own (after the measured runs): prompts, batch rows, decode steps, prefill positions from {} on (the chat template's are skipped)",
            self.spec.seed, self.skip_positions
        ));
        meta["order"] = serde_json::json!("per segment: for each activation vector, for each weight row j, for i in 0..dot_len: (x_i, w_ji)");
        if mixed {
            // Every format here holds its integers in int8; the segments say which.
            let what = format!("{precision}: projections of several formats, each segment's integers in int8 (see the segments' arithmetic)");
            return OperandStream::with_formats(ElemFormat::I8, ElemFormat::I8, &what, pairs, meta);
        }
        let (fa, fb) = encoding.formats();
        OperandStream::with_formats(fa, fb, &encoding.arithmetic(precision), pairs, meta)
    }
}

/// A segment's activations and weights as integers, and a note of the scales used.
fn encode(s: &Segment) -> (Vec<i16>, Vec<i16>, serde_json::Value) {
    match s.encoding {
        Encoding::Int16Tensor => {
            let qmax = 32767f32;
            let x_absmax = s.xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let sx = if x_absmax > 0.0 { x_absmax / qmax } else { 1.0 };
            let sw = if s.w_absmax > 0.0 {
                s.w_absmax / qmax
            } else {
                1.0
            };
            let q = |v: f32, sc: f32| (v / sc).round().clamp(-qmax, qmax) as i16;
            let xq = s.xs.iter().map(|&v| q(v, sx)).collect();
            let wq = s.w_f32.iter().map(|&v| q(v, sw)).collect();
            (
                xq,
                wq,
                serde_json::json!({"a": sx, "b": sw, "per": "tensor"}),
            )
        }
        Encoding::Float { format, .. } => {
            let bits = |v: &[f32]| -> Vec<i16> {
                v.iter()
                    .map(|&x| match format {
                        ElemFormat::F16 => half::f16::from_f32(x).to_bits() as i16,
                        _ => half::bf16::from_f32(x).to_bits() as i16,
                    })
                    .collect()
            };
            (
                bits(&s.xs),
                bits(&s.w_f32),
                serde_json::json!({"a": "none (float)", "b": "none (float)"}),
            )
        }
        _ => {
            let n = s.encoding.act_block();
            let mut xq = Vec::with_capacity(s.xs.len());
            for b in s.xs.chunks_exact(n) {
                match n {
                    QK_K => q8k_block(b, &mut xq),
                    _ => q8_block(b, &mut xq),
                }
            }
            (
                xq,
                s.w.clone(),
                serde_json::json!({"a": format!("per {n}-element block"), "b": if s.encoding == Encoding::Int8Blocks { "per row" } else { "GGUF blocks" }}),
            )
        }
    }
}

impl Segment {
    fn new(id: &LinearId, spec: &CaptureSpec, weight: &WeightView) -> Result<Segment> {
        let w = weight.f32()?;
        let (n, k) = w.dims2().map_err(me)?;
        let count = spec.rows.min(n);
        let rows: Vec<usize> = (0..count).map(|r| r * n / count).collect();
        let all = w.flatten_all().map_err(me)?.to_vec1::<f32>().map_err(me)?;
        let w_f32: Vec<f32> = rows
            .iter()
            .flat_map(|&r| all[r * k..(r + 1) * k].iter().copied())
            .collect();
        let w_absmax = all.iter().fold(0f32, |m, v| m.max(v.abs()));
        let kernel = match weight.blocks()? {
            Some((dt, data)) if spec.width == 8 => {
                kernel_rows(dt, &data, k, &rows).map(|w| (dt, w))
            }
            _ => None,
        };
        let float = match weight.dense_dtype() {
            Some(DType::BF16) => Some((ElemFormat::Bf16, false)),
            Some(DType::F16) => Some((ElemFormat::F16, false)),
            Some(_) => Some((ElemFormat::Bf16, true)),
            None => None,
        };
        let (encoding, w) = match (kernel, float) {
            (Some((dt, w)), _) => (Encoding::Kernel(dt), w),
            _ if spec.width == 16 => (Encoding::Int16Tensor, Vec::new()),
            (None, Some((format, from_f32))) => (Encoding::Float { format, from_f32 }, Vec::new()),
            (None, None) => {
                let mut q = Vec::with_capacity(w_f32.len());
                for row in w_f32.chunks_exact(k) {
                    let m = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let id = if m > 0.0 { 127.0 / m } else { 0.0 };
                    q.extend(row.iter().map(|&v| (v * id).round() as i16));
                }
                (Encoding::Int8Blocks, q)
            }
        };
        if encoding == Encoding::Int8Blocks && k % QK != 0 {
            return Err(Error::Config(format!(
                "capture: {}.{} has K = {k}, not a multiple of {QK}",
                id.layer.unwrap_or(0),
                id.proj
            )));
        }
        Ok(Segment {
            id: id.clone(),
            k,
            rows,
            encoding,
            w,
            w_f32,
            w_absmax,
            xs: Vec::new(),
            seen: 0,
        })
    }
}

impl LinearTap for OperandCapture {
    fn wants(&self, id: &LinearId) -> bool {
        id.layer.is_some_and(|l| self.spec.layers.contains(&l))
            && self.spec.projs.iter().any(|p| p == id.proj)
    }

    fn record(&mut self, id: &LinearId, x: &Tensor, weight: &WeightView) -> Result<()> {
        let idx = match self.segments.iter().position(|s| &s.id == id) {
            Some(i) => i,
            None => {
                self.segments.push(Segment::new(id, &self.spec, weight)?);
                self.segments.len() - 1
            }
        };
        let (batch, seq, _) = x.dims3().map_err(me)?;
        let flat = x
            .to_dtype(candle_core::DType::F32)
            .map_err(me)?
            .flatten_all()
            .map_err(me)?
            .to_vec1::<f32>()
            .map_err(me)?;
        let s = &mut self.segments[idx];
        let cap = (self.per_segment / (s.rows.len() * s.k).max(1)).max(1);
        // A prefill starts at position 0: its template positions are skipped.
        let skip = if seq > 1 {
            self.skip_positions.min(seq)
        } else {
            0
        };
        for b in 0..batch {
            for p in skip..seq {
                let v = &flat[(b * seq + p) * s.k..][..s.k];
                s.seen += 1;
                let have = s.xs.len() / s.k;
                if have < cap {
                    s.xs.extend_from_slice(v);
                } else {
                    let j = (self.rng.next_u64() % s.seen) as usize;
                    if j < cap {
                        s.xs[j * s.k..(j + 1) * s.k].copy_from_slice(v);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_1_nibbles_in_element_order() {
        // One block: d, m (f16, 4 bytes), then byte j = (element j+16) << 4 | element j.
        let mut blk = vec![0u8; 4];
        blk.extend((0..16u8).map(|j| ((15 - j) << 4) | j));
        let w = kernel_rows(GgmlDType::Q4_1, &blk, 32, &[0]).unwrap();
        assert_eq!(&w[..16], &(0..16).collect::<Vec<i16>>()[..]);
        assert_eq!(&w[16..], &(0..16).rev().collect::<Vec<i16>>()[..]);
        let w0 = kernel_rows(GgmlDType::Q4_0, &blk[2..], 32, &[0]).unwrap();
        assert_eq!((w0[0], w0[15], w0[16]), (-8, 7, 7));
    }

    /// The integers of every block format perfwatt reads, against candle's own
    /// dequantization: within each group that shares a scale (32 elements; 16 for q6_k),
    /// the dequantized values are one affine function of the integers (scale, and min).
    #[test]
    fn kernel_integers_are_what_candle_dequantizes() {
        use candle_core::quantized::QTensor;
        use candle_core::Device;
        let mut rng = Rng::new(7);
        let (n, k) = (3, 512);
        let xs: Vec<f32> = (0..n * k)
            .map(|_| (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let t = Tensor::from_vec(xs, (n, k), &Device::Cpu).unwrap();
        for (dt, group) in [
            (GgmlDType::Q4_0, 32),
            (GgmlDType::Q4_1, 32),
            (GgmlDType::Q5_0, 32),
            (GgmlDType::Q8_0, 32),
            (GgmlDType::Q4K, 32),
            (GgmlDType::Q6K, 16),
        ] {
            let q = QTensor::quantize(&t, dt).unwrap();
            let deq = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let ints = kernel_rows(dt, &q.data().unwrap(), k, &[0, 1, 2]).unwrap();
            assert_eq!(ints.len(), deq.len());
            let (lo, hi) = ints
                .iter()
                .fold((i16::MAX, i16::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            assert!(hi - lo >= 14, "{dt:?}: integers span {lo}..{hi}");
            for (g, (is, ds)) in ints.chunks(group).zip(deq.chunks(group)).enumerate() {
                // Fit d = a * i + b on the two most distant integers, check every element.
                let (imin, imax) = (0..group).fold((0, 0), |(a, b), j| {
                    (
                        if is[j] < is[a] { j } else { a },
                        if is[j] > is[b] { j } else { b },
                    )
                });
                if is[imin] == is[imax] {
                    continue;
                }
                let a = (ds[imax] - ds[imin]) / (is[imax] - is[imin]) as f32;
                let b = ds[imin] - a * is[imin] as f32;
                for j in 0..group {
                    let want = a * is[j] as f32 + b;
                    assert!(
                        (want - ds[j]).abs() <= 1e-4 + 1e-3 * ds[j].abs(),
                        "{dt:?} group {g} element {j}: {} vs {want}",
                        ds[j]
                    );
                }
            }
        }
    }

    #[test]
    fn q8k_blocks_as_candle_quantizes_them() {
        use candle_core::quantized::QTensor;
        use candle_core::Device;
        let xs: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
            .collect();
        let t = Tensor::from_vec(xs.clone(), (1, 256), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::Q8K).unwrap();
        // A q8_k block: d (f32), then the 256 int8s, then the sums of 16.
        let theirs: Vec<i16> = q.data().unwrap()[4..260]
            .iter()
            .map(|&v| v as i8 as i16)
            .collect();
        let mut ours = Vec::new();
        q8k_block(&xs, &mut ours);
        assert_eq!(ours, theirs);
    }

    #[test]
    fn q8_blocks_scale_each_block_to_127() {
        let xs: Vec<f32> = (0..32)
            .map(|i| i as f32 * 0.1)
            .chain((0..32).map(|i| -(i as f32)))
            .collect();
        let mut q = Vec::new();
        for b in xs.chunks_exact(32) {
            q8_block(b, &mut q);
        }
        assert_eq!((q[31], q[63], q[0]), (127, -127, 0));
        let d = xs[31] / 127.0;
        assert_eq!(q[16], (xs[16] * (1.0 / d)).round() as i16);
    }
}
