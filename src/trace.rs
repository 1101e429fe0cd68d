//! Operand streams: the pairs (a, b) one MAC unit consumes, in order.
//!
//! In: `.ops` files (written by `capture`, or by `OperandStream::write_ops`) or CSV with
//! header `a,b`. Out: an `OperandStream` for `sim`.
//!
//! `.ops` layout (little-endian):
//!   magic    8 bytes  "PWOPS\r\n\x1a" (catches text-mode mangling, like PNG's)
//!   version  u16      1
//!   width    u8       operand bits: 8 or 16
//!   reserved u8       0
//!   count    u64      number of pairs
//!   meta_len u32      length of the JSON metadata
//!   meta     JSON     where the operands came from (model, layer, projection, scales...)
//!                     and `format`: {"a": FMT, "b": FMT, "arithmetic": "..."}, the number
//!                     format of each operand as the kernel multiplies it (i4, u4, i8,
//!                     i16, bf16, f16). Files without it (all before 2026-11-23) hold
//!                     signed integers of `width` bits in both operands.
//!   pairs    count * 2 * (width/8) bytes: a0 b0 a1 b1 ... as signed integers, or for
//!            bf16/f16 the 16-bit patterns (width 16)
//!   crc32    u32      CRC-32 (IEEE) of every byte before it
//!
//! By convention `a` is the activation and `b` the weight.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::files::write_atomic;

pub const OPS_MAGIC: &[u8; 8] = b"PWOPS\r\n\x1a";
pub const OPS_VERSION: u16 = 1;
const FIXED_HEADER: usize = 8 + 2 + 1 + 1 + 8 + 4;

/// The number format of one operand, as the kernel multiplies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElemFormat {
    /// Signed 4-bit integer (-8..=7), stored in one byte.
    I4,
    /// Unsigned 4-bit integer (0..=15): GGUF q4_1's nibbles, stored in one byte.
    U4,
    I8,
    I16,
    /// bfloat16 bit patterns.
    Bf16,
    /// IEEE half-precision bit patterns.
    F16,
}

impl ElemFormat {
    pub const ALL: [ElemFormat; 6] = [
        ElemFormat::I4,
        ElemFormat::U4,
        ElemFormat::I8,
        ElemFormat::I16,
        ElemFormat::Bf16,
        ElemFormat::F16,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ElemFormat::I4 => "i4",
            ElemFormat::U4 => "u4",
            ElemFormat::I8 => "i8",
            ElemFormat::I16 => "i16",
            ElemFormat::Bf16 => "bf16",
            ElemFormat::F16 => "f16",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }

    /// The signed integer format of a storage width (what files without a format hold).
    pub fn int_of_width(width: u8) -> Self {
        if width == 16 {
            ElemFormat::I16
        } else {
            ElemFormat::I8
        }
    }

    /// Bits of storage per value in a stream: 8 for formats up to 8 bits, else 16.
    pub fn storage_width(self) -> u8 {
        match self {
            ElemFormat::I4 | ElemFormat::U4 | ElemFormat::I8 => 8,
            _ => 16,
        }
    }

    /// The value range of an integer format; None for floating point.
    pub fn int_range(self) -> Option<(i32, i32)> {
        match self {
            ElemFormat::I4 => Some((-8, 7)),
            ElemFormat::U4 => Some((0, 15)),
            ElemFormat::I8 => Some((-128, 127)),
            ElemFormat::I16 => Some((-32768, 32767)),
            ElemFormat::Bf16 | ElemFormat::F16 => None,
        }
    }

    /// Is the stored value a zero (for floats: +0 or -0)?
    pub fn is_zero(self, v: i16) -> bool {
        match self.int_range() {
            Some(_) => v == 0,
            None => v & 0x7fff == 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OperandStream {
    /// Storage width in bits (8 or 16): each value is a signed integer of this width, or a
    /// 16-bit float pattern.
    pub width: u8,
    /// Number formats of the activation (a) and the weight (b).
    pub a_format: ElemFormat,
    pub b_format: ElemFormat,
    pub pairs: Vec<(i16, i16)>,
    /// Provenance. Known keys: `source`, `dot_len` (pairs per dot product: the MAC clears
    /// its accumulator every `dot_len` pairs), `scale_a`, `scale_b`, `format` (see the
    /// module header; kept equal to `a_format`/`b_format`).
    pub meta: serde_json::Value,
}

impl OperandStream {
    /// Signed integers of `width` bits in both operands, unless `meta.format` says otherwise.
    pub fn new(width: u8, pairs: Vec<(i16, i16)>, meta: serde_json::Value) -> Result<Self> {
        let (a_format, b_format) = formats_of(&meta, width)?;
        let s = OperandStream {
            width,
            a_format,
            b_format,
            pairs,
            meta,
        };
        s.validate()?;
        Ok(s)
    }

    /// A stream in the given formats; `arithmetic` names the kernel's arithmetic, e.g.
    /// "q4_1: u4 weights x q8_1 activations". Recorded in `meta.format`.
    pub fn with_formats(
        a_format: ElemFormat,
        b_format: ElemFormat,
        arithmetic: &str,
        pairs: Vec<(i16, i16)>,
        mut meta: serde_json::Value,
    ) -> Result<Self> {
        let width = a_format.storage_width().max(b_format.storage_width());
        if let Some(m) = meta.as_object_mut() {
            m.insert(
                "format".into(),
                serde_json::json!({"a": a_format.name(), "b": b_format.name(), "arithmetic": arithmetic}),
            );
        }
        Self::new(width, pairs, meta)
    }

    /// "i8 x u4" (activation x weight).
    pub fn format_name(&self) -> String {
        format!("{} x {}", self.a_format.name(), self.b_format.name())
    }

    /// Both operands integers (what the integer datapaths take)?
    pub fn is_integer(&self) -> bool {
        self.a_format.int_range().is_some() && self.b_format.int_range().is_some()
    }

    pub fn range(width: u8) -> (i32, i32) {
        (-(1 << (width - 1)), (1 << (width - 1)) - 1)
    }

    fn validate(&self) -> Result<()> {
        if self.width != 8 && self.width != 16 {
            return Err(Error::Trace(format!(
                "operand width {} unsupported (8 or 16)",
                self.width
            )));
        }
        for f in [self.a_format, self.b_format] {
            if f.storage_width() > self.width {
                return Err(Error::Trace(format!(
                    "format {} needs {}-bit storage, the stream has {} bits",
                    f.name(),
                    f.storage_width(),
                    self.width
                )));
            }
        }
        let fits = |v: i16, f: ElemFormat| {
            f.int_range()
                .is_none_or(|(lo, hi)| (lo..=hi).contains(&(v as i32)))
        };
        if let Some((i, &(a, b))) = self
            .pairs
            .iter()
            .enumerate()
            .find(|(_, &(a, b))| !fits(a, self.a_format) || !fits(b, self.b_format))
        {
            return Err(Error::Trace(format!(
                "pair {i} ({a}, {b}) does not fit the stream's formats {}",
                self.format_name()
            )));
        }
        Ok(())
    }

    /// Pairs per dot product (accumulator clear period) when the stream has one.
    pub fn dot_len(&self) -> Option<usize> {
        self.meta
            .get("dot_len")
            .and_then(|v| v.as_u64())
            .filter(|&n| n > 0)
            .map(|n| n as usize)
    }

    /// Per pair: does a new dot product start here (the MAC clears its accumulator)?
    /// From `meta.segments` (`[{"pairs": N, "dot_len": K}, ...]`, one per captured
    /// projection), else `meta.dot_len`, else only at pair 0.
    pub fn dot_starts(&self) -> Vec<bool> {
        let n = self.pairs.len();
        let mut flags = vec![false; n];
        if let Some(segs) = self.meta.get("segments").and_then(|s| s.as_array()) {
            let mut at = 0usize;
            for seg in segs {
                let len = seg.get("pairs").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
                let k = seg
                    .get("dot_len")
                    .and_then(|v| v.as_u64())
                    .filter(|&k| k > 0)
                    .unwrap_or(len.max(1) as u64) as usize;
                for i in (at..(at + len).min(n)).step_by(k) {
                    flags[i] = true;
                }
                at += len;
            }
        } else if let Some(k) = self.dot_len() {
            for i in (0..n).step_by(k) {
                flags[i] = true;
            }
        }
        if let Some(f) = flags.first_mut() {
            *f = true;
        }
        flags
    }

    /// The pairs of the last dot product (see `dot_starts`): what an accumulator holds at
    /// the end of the stream.
    pub fn last_dot(&self) -> &[(i16, i16)] {
        let start = self.dot_starts().iter().rposition(|&f| f).unwrap_or(0);
        &self.pairs[start.min(self.pairs.len())..]
    }

    /// The last dot product (`last_dot`), wrapped to `acc_w` bits and read back as signed:
    /// what an integer MAC's accumulator must hold at the end.
    pub fn expected_acc(&self, acc_w: u32) -> i64 {
        let sum = self
            .last_dot()
            .iter()
            .fold(0i64, |s, &(a, b)| s.wrapping_add(a as i64 * b as i64));
        wrap_signed(sum as u64, acc_w)
    }

    pub fn zero_fraction(&self) -> f64 {
        if self.pairs.is_empty() {
            return 0.0;
        }
        self.pairs
            .iter()
            .filter(|&&(a, b)| self.a_format.is_zero(a) || self.b_format.is_zero(b))
            .count() as f64
            / self.pairs.len() as f64
    }

    pub fn to_ops_bytes(&self) -> Vec<u8> {
        let meta = serde_json::to_vec(&self.meta).expect("json");
        let bytes = (self.width / 8) as usize;
        let mut out =
            Vec::with_capacity(FIXED_HEADER + meta.len() + self.pairs.len() * 2 * bytes + 4);
        out.extend_from_slice(OPS_MAGIC);
        out.extend_from_slice(&OPS_VERSION.to_le_bytes());
        out.push(self.width);
        out.push(0);
        out.extend_from_slice(&(self.pairs.len() as u64).to_le_bytes());
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        for &(a, b) in &self.pairs {
            if bytes == 1 {
                out.push(a as i8 as u8);
                out.push(b as i8 as u8);
            } else {
                out.extend_from_slice(&a.to_le_bytes());
                out.extend_from_slice(&b.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Write atomically (temp file + rename).
    pub fn write_ops(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_ops_bytes())
    }

    pub fn from_ops_bytes(data: &[u8], name: &str) -> Result<Self> {
        let bad = |m: String| Error::Trace(format!("{name}: {m}"));
        if data.len() < 8 || &data[..8] != OPS_MAGIC {
            return Err(bad("not an .ops operand stream (bad magic)".into()));
        }
        if data.len() < FIXED_HEADER + 4 {
            return Err(bad(format!(
                "truncated: {} bytes, header alone needs {}",
                data.len(),
                FIXED_HEADER + 4
            )));
        }
        let version = u16::from_le_bytes([data[8], data[9]]);
        if version != OPS_VERSION {
            return Err(bad(format!(
                "version {version} unsupported (this perfwatt reads {OPS_VERSION})"
            )));
        }
        let width = data[10];
        if width != 8 && width != 16 {
            return Err(bad(format!("operand width {width} unsupported (8 or 16)")));
        }
        let count = u64::from_le_bytes(data[12..20].try_into().unwrap());
        let meta_len = u32::from_le_bytes(data[20..24].try_into().unwrap()) as u64;
        let bytes = (width / 8) as u64;
        let expect = (FIXED_HEADER as u64)
            .checked_add(meta_len)
            .and_then(|n| count.checked_mul(2 * bytes).and_then(|p| n.checked_add(p)))
            .and_then(|n| n.checked_add(4));
        match expect {
            Some(n) if n == data.len() as u64 => {}
            Some(n) if n > data.len() as u64 => {
                return Err(bad(format!("truncated: header promises {count} pairs ({n} bytes), file has {}", data.len())))
            }
            _ => return Err(bad(format!("corrupt header: {count} pairs and {meta_len} bytes of metadata do not match the file size {}", data.len()))),
        }
        let body = &data[..data.len() - 4];
        let stored = u32::from_le_bytes(data[data.len() - 4..].try_into().unwrap());
        let crc = crc32fast::hash(body);
        if crc != stored {
            return Err(bad(format!(
                "corrupt: CRC32 {crc:08x} != stored {stored:08x}"
            )));
        }
        let m0 = FIXED_HEADER;
        let m1 = m0 + meta_len as usize;
        let meta: serde_json::Value = serde_json::from_slice(&body[m0..m1])
            .map_err(|e| bad(format!("metadata is not JSON: {e}")))?;
        let p = &body[m1..];
        let pairs = if width == 8 {
            p.chunks_exact(2)
                .map(|c| (c[0] as i8 as i16, c[1] as i8 as i16))
                .collect()
        } else {
            p.chunks_exact(4)
                .map(|c| {
                    (
                        i16::from_le_bytes([c[0], c[1]]),
                        i16::from_le_bytes([c[2], c[3]]),
                    )
                })
                .collect()
        };
        OperandStream::new(width, pairs, meta).map_err(|e| bad(e.to_string()))
    }

    /// CSV with header `a,b`, one pair per row of signed integers of `width` bits.
    pub fn from_csv(text: &str, width: u8, name: &str) -> Result<Self> {
        Self::from_csv_as(text, ElemFormat::int_of_width(width), name)
    }

    /// CSV with header `a,b`, one pair per row, both columns in `format`: integers in its
    /// range, or for bf16/f16 decimal numbers (`1.5`, `-2e-3`, `inf`, `nan`), rounded to
    /// the format to nearest even; a finite value beyond the format's range is an error.
    pub fn from_csv_as(text: &str, format: ElemFormat, name: &str) -> Result<Self> {
        let mut lines = text.lines().enumerate();
        let header = lines
            .next()
            .map(|(_, l)| l.trim().replace(' ', ""))
            .unwrap_or_default();
        if header != "a,b" {
            return Err(Error::Parse {
                file: name.into(),
                line: 1,
                offset: 0,
                msg: format!("expected header 'a,b', found '{header}'"),
            });
        }
        let mut pairs = Vec::new();
        let mut offset = text.lines().next().map(|l| l.len() + 1).unwrap_or(0) as u64;
        for (i, line) in lines {
            let row = line.trim();
            let here = offset;
            offset += line.len() as u64 + 1;
            if row.is_empty() {
                continue;
            }
            let err = |msg: String| Error::Parse {
                file: name.into(),
                line: i as u64 + 1,
                offset: here,
                msg,
            };
            let mut f = row.split(',');
            let (Some(a), Some(b), None) = (f.next(), f.next(), f.next()) else {
                return Err(err(format!("expected two fields 'a,b', found '{row}'")));
            };
            let parse = |s: &str| parse_value(s.trim(), format).map_err(&err);
            pairs.push((parse(a)?, parse(b)?));
        }
        let meta = serde_json::json!({"source": name});
        if format.int_range().is_some()
            && format == ElemFormat::int_of_width(format.storage_width())
        {
            OperandStream::new(format.storage_width(), pairs, meta)
        } else {
            let what = format!("{}: imported from CSV", format.name());
            OperandStream::with_formats(format, format, &what, pairs, meta)
        }
    }

    /// Read `.ops` or `.csv` (by extension). CSV holds signed integers of `csv_width` bits.
    pub fn read(path: &Path, csv_width: u8) -> Result<Self> {
        Self::read_as(path, ElemFormat::int_of_width(csv_width))
    }

    /// Read `.ops` or `.csv` (by extension). CSV holds values of `csv_format`.
    pub fn read_as(path: &Path, csv_format: ElemFormat) -> Result<Self> {
        let name = path.display().to_string();
        let data = std::fs::read(path).at(path)?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            let text = String::from_utf8(data)
                .map_err(|_| Error::Trace(format!("{name}: not UTF-8 text")))?;
            Self::from_csv_as(&text, csv_format, &name)
        } else {
            Self::from_ops_bytes(&data, &name)
        }
    }

    pub fn write_csv(&self, w: &mut impl Write) -> std::io::Result<()> {
        writeln!(w, "a,b")?;
        for (a, b) in &self.pairs {
            writeln!(w, "{a},{b}")?;
        }
        Ok(())
    }
}

/// One CSV field as the stored value of `format` (see `from_csv_as`).
fn parse_value(s: &str, format: ElemFormat) -> std::result::Result<i16, String> {
    if let Some((lo, hi)) = format.int_range() {
        let v: i64 = s.parse().map_err(|_| format!("'{s}' is not an integer"))?;
        if v < lo as i64 || v > hi as i64 {
            return Err(format!(
                "{v} does not fit in {} ({lo}..={hi})",
                format.name()
            ));
        }
        return Ok(v as i16);
    }
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number ({} column)", format.name()))?;
    let (bits, inf) = match format {
        ElemFormat::F16 => {
            let h = half::f16::from_f64(v);
            (h.to_bits(), h.is_infinite())
        }
        _ => {
            let h = half::bf16::from_f64(v);
            (h.to_bits(), h.is_infinite())
        }
    };
    if inf && v.is_finite() {
        return Err(format!("{s} is beyond the range of {}", format.name()));
    }
    Ok(bits as i16)
}

/// The operand formats a stream's metadata names (`format.a`, `format.b`), else signed
/// integers of the storage width.
fn formats_of(meta: &serde_json::Value, width: u8) -> Result<(ElemFormat, ElemFormat)> {
    let Some(f) = meta.get("format") else {
        let i = ElemFormat::int_of_width(width);
        return Ok((i, i));
    };
    let one = |k: &str| {
        let name = f.get(k).and_then(|v| v.as_str()).unwrap_or("");
        ElemFormat::parse(name).ok_or_else(|| {
            Error::Trace(format!(
                "metadata format.{k} = '{name}': expected one of i4, u4, i8, i16, bf16, f16"
            ))
        })
    };
    Ok((one("a")?, one("b")?))
}

/// Low `bits` of `v`, sign-extended.
pub fn wrap_signed(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        return v as i64;
    }
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// Synthetic streams for tests, benchmarks and the README table. Deterministic (seeded).
pub mod synth {
    use super::OperandStream;
    use crate::stats::Rng;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    pub enum Kind {
        /// Uniform over the full signed range.
        Random,
        /// Uniform, with half of the activations (a) set to zero.
        HalfZero,
        /// Activations Laplacian-distributed with 40% exact zeros; weights Gaussian-like.
        ActivationLike,
    }

    impl crate::choice::Choice for Kind {
        const WHAT: &'static str = "synthetic stream";
        const ALL: &'static [Self] = &[Kind::Random, Kind::HalfZero, Kind::ActivationLike];
        fn name(self) -> &'static str {
            match self {
                Kind::Random => "random",
                Kind::HalfZero => "half-zero",
                Kind::ActivationLike => "activation-like",
            }
        }
        fn about(self) -> &'static str {
            match self {
                Kind::Random => "uniform over the full signed range",
                Kind::HalfZero => "uniform, with half of the activations (a) set to zero",
                Kind::ActivationLike => {
                    "activations Laplacian-distributed with 40% exact zeros; weights Gaussian-like"
                }
            }
        }
    }
    crate::choice_str!(Kind);

    /// Values are symmetric, -(2^(W-1)-1) ..= 2^(W-1)-1, like symmetric quantization (and
    /// so every value has a sign-magnitude encoding).
    pub fn stream(kind: Kind, n: usize, width: u8, seed: u64) -> OperandStream {
        let mut r = Rng::new(seed);
        let (_, hi) = OperandStream::range(width);
        let lo = -hi;
        let span = (hi - lo + 1) as u64;
        let clamp = |v: f64| v.round().clamp(lo as f64, hi as f64) as i16;
        let pairs = (0..n)
            .map(|_| {
                let uni = |r: &mut Rng| (lo as i64 + (r.next_u64() % span) as i64) as i16;
                match kind {
                    Kind::Random => (uni(&mut r), uni(&mut r)),
                    Kind::HalfZero => {
                        let a = if r.unit() < 0.5 { 0 } else { uni(&mut r) };
                        (a, uni(&mut r))
                    }
                    Kind::ActivationLike => {
                        let scale = hi as f64 / 8.0;
                        let a = if r.unit() < 0.4 {
                            0
                        } else {
                            let u = r.unit() - 0.5;
                            clamp(-scale * u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln())
                        };
                        // Sum of 4 uniforms: roughly Gaussian weights, sd about hi/6.
                        let g: f64 =
                            (0..4).map(|_| r.unit() - 0.5).sum::<f64>() * (hi as f64 / 6.0) / 0.577;
                        (a, clamp(g))
                    }
                }
            })
            .collect();
        let meta = serde_json::json!({"source": format!("synthetic:{kind:?}"), "seed": seed});
        OperandStream::new(width, pairs, meta).expect("synthetic values fit their width")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_signed_cases() {
        assert_eq!(wrap_signed(0xFFFF_FFFF, 32), -1);
        assert_eq!(wrap_signed(0x8000_0000, 32), i32::MIN as i64);
        assert_eq!(wrap_signed(5, 32), 5);
    }
}
