//! Operand patterns for GEMMs of a fixed shape: C = A B^T, A [M, K] (activations), B [N, K]
//! (weights), both row-major so that K is contiguous, as in a linear layer.
//!
//! In: a pattern name, a dtype, a shape and a seed (and for the real ones, a source of LLM
//! matrices). Out: `Operands`: the exact values the GEMM multiplies, int8 integers or
//! bf16/f16 bit patterns, stored as i16. Four families: value distribution, bit
//! similarity, placement and sparsity, plus real LLM operands and user matrices.
//! Everything is deterministic for a seed.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::stats::Rng;
use crate::trace::ElemFormat;

/// The element type a GEMM multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// int8 x int8, int32 accumulation (cuBLAS IMMA on the GPU).
    Int8,
    /// bfloat16 x bfloat16, fp32 accumulation.
    Bf16,
    /// IEEE half x half, fp32 accumulation.
    F16,
}

impl crate::choice::Choice for Dtype {
    const WHAT: &'static str = "GEMM dtype";
    const ALL: &'static [Self] = &[Dtype::Int8, Dtype::Bf16, Dtype::F16];
    fn name(self) -> &'static str {
        Dtype::name(self)
    }
    fn about(self) -> &'static str {
        match self {
            Dtype::Int8 => "int8 x int8, int32 accumulation (cuBLAS IMMA on the GPU)",
            Dtype::Bf16 => "bfloat16 x bfloat16, fp32 accumulation",
            Dtype::F16 => "IEEE half x half, fp32 accumulation",
        }
    }
}
crate::choice_str!(Dtype);

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Int8 => "int8",
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
        }
    }

    pub fn format(self) -> ElemFormat {
        match self {
            Dtype::Int8 => ElemFormat::I8,
            Dtype::Bf16 => ElemFormat::Bf16,
            Dtype::F16 => ElemFormat::F16,
        }
    }

    /// Bits of one element.
    pub fn bits(self) -> u32 {
        match self {
            Dtype::Int8 => 8,
            _ => 16,
        }
    }

    /// The stored form of a real value: int8 rounds and saturates (values are in int8
    /// units), the float types round to nearest even.
    pub fn encode(self, v: f32) -> i16 {
        match self {
            Dtype::Int8 => v.round().clamp(-128.0, 127.0) as i16,
            Dtype::Bf16 => f32_to_bf16(v) as i16,
            Dtype::F16 => f32_to_f16(v) as i16,
        }
    }
}

/// f32 -> bfloat16 bits, round to nearest even (NaN stays NaN).
pub fn f32_to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    ((b + round) >> 16) as u16
}

/// f32 -> IEEE half bits, round to nearest even, through candle's `half` dependency.
pub fn f32_to_f16(v: f32) -> u16 {
    half::f16::from_f32(v).to_bits()
}

/// A GEMM's shape: C [M, N] = A [M, K] B[N, K]^T.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

impl Shape {
    pub fn macs(&self) -> f64 {
        self.m as f64 * self.k as f64 * self.n as f64
    }
}

/// The operands of one GEMM, exactly as multiplied.
#[derive(Debug, Clone)]
pub struct Operands {
    pub dtype: Dtype,
    pub shape: Shape,
    /// [M, K] row-major.
    pub a: Vec<i16>,
    /// [N, K] row-major.
    pub b: Vec<i16>,
}

impl Operands {
    /// The same GEMM with K permuted: column `perm[j]` of A and of B moves to position j.
    /// For integer operands the product is bit-identical (integer addition commutes).
    pub fn permute_k(&self, perm: &[usize]) -> Operands {
        let k = self.shape.k;
        let apply = |x: &[i16]| -> Vec<i16> {
            x.chunks_exact(k)
                .flat_map(|row| perm.iter().map(move |&p| row[p]))
                .collect()
        };
        Operands {
            dtype: self.dtype,
            shape: self.shape,
            a: apply(&self.a),
            b: apply(&self.b),
        }
    }
}

/// The family a pattern belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Value,
    Bits,
    Placement,
    Sparsity,
    /// Patterns that separate the tile unit's traversal orders: operands that change
    /// along K only, across rows only, or both, in one operand or both.
    Order,
    Real,
    User,
}

/// One synthetic pattern: how each operand's values are drawn.
pub struct Pattern {
    pub name: &'static str,
    pub family: Family,
    pub about: &'static str,
    a: Gen,
    b: Gen,
}

/// How one operand matrix is generated. Scales are in int8 units for int8 and in real
/// units for the float types (`(int8, float)` pairs).
#[derive(Clone, Copy)]
enum Gen {
    Const(f32, f32),
    Normal(f32, f32),
    Uniform(f32, f32),
    Laplace(f32, f32),
    /// Values in 0..=3 (int8); random powers of two 2^-4..2^3 with random signs (float):
    /// few set bits.
    LowBits,
    /// +-m with random signs.
    SignOnly(f32, f32),
    /// +-m alternating along K.
    Alternating(f32, f32),
    /// Normal values sorted ascending along K within each row.
    SortedK(f32, f32),
    /// One normal value per row, repeated along K.
    RowConstant(f32, f32),
    /// Normal values with a fraction of exact zeros at random positions.
    Sparse(f32, f32, f64),
    /// Normal values, 2 of every 4 consecutive K elements zero (2:4 structured sparsity).
    TwoFour(f32, f32),
    /// One row drawn from the inner generator, repeated in every row.
    SameRows(&'static Gen),
    /// Rows alternate +m / -(m+1) (int8 85 / -86: 01010101 / 10101010, every bit flips;
    /// float +-m), constant along K.
    AltRows(f32, f32),
    /// +-v alternating along K, v drawn per row (normal).
    AltKPerRow(f32, f32),
    /// +m / -(m+1) alternating along K, the phase flipping from row to row.
    Checker(f32, f32),
}

const NORMAL: Gen = Gen::Normal(40.0, 1.0);
const SORTED: Gen = Gen::SortedK(40.0, 1.0);
const PLUS_MINUS: Gen = Gen::AltRows(85.0, 1.5);
const ROW_CONSTANT: Gen = Gen::RowConstant(40.0, 1.0);

/// A pattern of the order family.
const fn order(name: &'static str, about: &'static str, a: Gen, b: Gen) -> Pattern {
    Pattern {
        name,
        family: Family::Order,
        about,
        a,
        b,
    }
}

/// Every synthetic pattern, in report order.
pub const PATTERNS: &[Pattern] = &[
    Pattern {
        name: "zeros",
        family: Family::Value,
        about: "all zero",
        a: Gen::Const(0.0, 0.0),
        b: Gen::Const(0.0, 0.0),
    },
    Pattern {
        name: "ones",
        family: Family::Value,
        about: "all one",
        a: Gen::Const(1.0, 1.0),
        b: Gen::Const(1.0, 1.0),
    },
    Pattern {
        name: "constant",
        family: Family::Value,
        about: "one non-trivial constant (-91 = 0xa5; 1.3)",
        a: Gen::Const(-91.0, 1.3),
        b: Gen::Const(-91.0, 1.3),
    },
    Pattern {
        name: "normal-narrow",
        family: Family::Value,
        about: "normal, sd 4 (int8) / 0.05",
        a: Gen::Normal(4.0, 0.05),
        b: Gen::Normal(4.0, 0.05),
    },
    Pattern {
        name: "normal",
        family: Family::Value,
        about: "normal, sd 40 (int8) / 1 (standard normal)",
        a: NORMAL,
        b: NORMAL,
    },
    Pattern {
        name: "uniform-full",
        family: Family::Value,
        about: "uniform over [-128, 127] (int8) / [-4, 4]",
        a: Gen::Uniform(128.0, 4.0),
        b: Gen::Uniform(128.0, 4.0),
    },
    Pattern {
        name: "uniform-narrow",
        family: Family::Value,
        about: "uniform over [-8, 8] (int8) / [-0.1, 0.1]",
        a: Gen::Uniform(8.0, 0.1),
        b: Gen::Uniform(8.0, 0.1),
    },
    Pattern {
        name: "laplace",
        family: Family::Value,
        about: "Laplacian, scale 16 (int8) / 0.5",
        a: Gen::Laplace(16.0, 0.5),
        b: Gen::Laplace(16.0, 0.5),
    },
    Pattern {
        name: "low-bits",
        family: Family::Bits,
        about: "few set bits: 0..3 (int8) / +-powers of two",
        a: Gen::LowBits,
        b: Gen::LowBits,
    },
    Pattern {
        name: "sign-only",
        family: Family::Bits,
        about: "random signs, fixed magnitude 64 / 1.0",
        a: Gen::SignOnly(64.0, 1.0),
        b: Gen::SignOnly(64.0, 1.0),
    },
    Pattern {
        name: "alternating",
        family: Family::Bits,
        about: "+-85 / +-1.5 alternating along K",
        a: Gen::Alternating(85.0, 1.5),
        b: Gen::Alternating(85.0, 1.5),
    },
    Pattern {
        name: "normal-a-zeros-b",
        family: Family::Bits,
        about: "normal activations, zero weights",
        a: NORMAL,
        b: Gen::Const(0.0, 0.0),
    },
    Pattern {
        name: "sorted-k",
        family: Family::Placement,
        about: "normal values sorted along K",
        a: Gen::SortedK(40.0, 1.0),
        b: Gen::SortedK(40.0, 1.0),
    },
    Pattern {
        name: "row-constant",
        family: Family::Placement,
        about: "one normal value per row, repeated along K",
        a: Gen::RowConstant(40.0, 1.0),
        b: Gen::RowConstant(40.0, 1.0),
    },
    Pattern {
        name: "sorted-a",
        family: Family::Placement,
        about: "activations sorted along K, normal weights",
        a: Gen::SortedK(40.0, 1.0),
        b: NORMAL,
    },
    Pattern {
        name: "sparse50-a",
        family: Family::Sparsity,
        about: "normal, 50% of activations zero",
        a: Gen::Sparse(40.0, 1.0, 0.5),
        b: NORMAL,
    },
    Pattern {
        name: "sparse90-a",
        family: Family::Sparsity,
        about: "normal, 90% of activations zero",
        a: Gen::Sparse(40.0, 1.0, 0.9),
        b: NORMAL,
    },
    Pattern {
        name: "sparse50-both",
        family: Family::Sparsity,
        about: "normal, 50% of both operands zero",
        a: Gen::Sparse(40.0, 1.0, 0.5),
        b: Gen::Sparse(40.0, 1.0, 0.5),
    },
    Pattern {
        name: "sparse90-b",
        family: Family::Sparsity,
        about: "normal, 90% of weights zero",
        a: NORMAL,
        b: Gen::Sparse(40.0, 1.0, 0.9),
    },
    Pattern {
        name: "2:4-b",
        family: Family::Sparsity,
        about: "normal, weights 2:4 structured sparse along K",
        a: NORMAL,
        b: Gen::TwoFour(40.0, 1.0),
    },
    Pattern {
        name: "2:4-both",
        family: Family::Sparsity,
        about: "normal, both operands 2:4 structured sparse",
        a: Gen::TwoFour(40.0, 1.0),
        b: Gen::TwoFour(40.0, 1.0),
    },
    order(
        "same-rows",
        "every row the same normal vector: random along K, none across rows",
        Gen::SameRows(&NORMAL),
        Gen::SameRows(&NORMAL),
    ),
    order(
        "rows-alternating",
        "rows alternate +85 / -86 (every bit), constant along K",
        PLUS_MINUS,
        PLUS_MINUS,
    ),
    order(
        "alternating-k-per-row",
        "+-v alternating along K, v normal per row",
        Gen::AltKPerRow(40.0, 1.0),
        Gen::AltKPerRow(40.0, 1.0),
    ),
    order(
        "sorted-same-rows",
        "one ascending normal vector in every row",
        Gen::SameRows(&SORTED),
        Gen::SameRows(&SORTED),
    ),
    order(
        "checker",
        "+85 / -86 alternating along K and across rows",
        Gen::Checker(85.0, 1.5),
        Gen::Checker(85.0, 1.5),
    ),
    order(
        "rows-alternating-a",
        "A: rows alternate +85 / -86; B: one constant",
        PLUS_MINUS,
        Gen::Const(-91.0, 1.3),
    ),
    order(
        "rows-alternating-b",
        "A: one constant; B: rows alternate +85 / -86",
        Gen::Const(-91.0, 1.3),
        PLUS_MINUS,
    ),
    order(
        "alternating-a-normal-b",
        "A: +-85 along K, rows identical; B: normal",
        Gen::Alternating(85.0, 1.5),
        NORMAL,
    ),
    order(
        "row-constant-a-normal-b",
        "A: one normal value per row; B: normal",
        ROW_CONSTANT,
        NORMAL,
    ),
    order(
        "normal-a-row-constant-b",
        "A: normal; B: one normal value per row",
        NORMAL,
        ROW_CONSTANT,
    ),
    order(
        "same-rows-a-normal-b",
        "A: every row the same normal vector; B: normal",
        Gen::SameRows(&NORMAL),
        NORMAL,
    ),
    order(
        "normal-a-same-rows-b",
        "A: normal; B: every row the same normal vector",
        NORMAL,
        Gen::SameRows(&NORMAL),
    ),
    order(
        "zeros-a-normal-b",
        "A all zero (every product zero); B normal",
        Gen::Const(0.0, 0.0),
        NORMAL,
    ),
];

pub fn find(name: &str) -> Option<&'static Pattern> {
    PATTERNS.iter().find(|p| p.name == name)
}

/// A standard normal draw (Box-Muller).
fn normal(r: &mut Rng) -> f32 {
    let (u1, u2) = (r.unit().max(1e-300), r.unit());
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

impl Gen {
    /// Fill a [rows, k] matrix.
    fn fill(self, dtype: Dtype, rows: usize, k: usize, r: &mut Rng) -> Vec<i16> {
        let int = dtype == Dtype::Int8;
        let pick = |i: f32, f: f32| if int { i } else { f };
        let enc = |v: f32| dtype.encode(v);
        if let Gen::SameRows(inner) = self {
            let row = inner.fill(dtype, 1, k, r);
            return (0..rows).flat_map(|_| row.iter().copied()).collect();
        }
        // int8: +m / -(m+1), complementary bit patterns; floats: +-m.
        let flip = |i: f32, f: f32, neg: bool| -> f32 {
            match (neg, int) {
                (false, true) => i,
                (true, true) => -(i + 1.0),
                (false, false) => f,
                (true, false) => -f,
            }
        };
        let mut out = Vec::with_capacity(rows * k);
        for row in 0..rows {
            let start = out.len();
            match self {
                Gen::Const(i, f) => out.extend(std::iter::repeat_n(enc(pick(i, f)), k)),
                Gen::Normal(i, f) => out.extend((0..k).map(|_| enc(pick(i, f) * normal(r)))),
                Gen::Uniform(i, f) => {
                    let s = pick(i, f);
                    out.extend((0..k).map(|_| enc(s * (2.0 * r.unit() as f32 - 1.0))))
                }
                Gen::Laplace(i, f) => {
                    let s = pick(i, f);
                    out.extend((0..k).map(|_| {
                        let u = r.unit() as f32 - 0.5;
                        enc(-s * u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln())
                    }))
                }
                Gen::LowBits if int => out.extend((0..k).map(|_| (r.next_u64() % 4) as i16)),
                Gen::LowBits => out.extend((0..k).map(|_| {
                    let e = (r.next_u64() % 8) as i32 - 4;
                    let s = if r.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
                    enc(s * 2f32.powi(e))
                })),
                Gen::SignOnly(i, f) => out.extend((0..k).map(|_| {
                    enc(if r.next_u64() & 1 == 0 {
                        pick(i, f)
                    } else {
                        -pick(i, f)
                    })
                })),
                Gen::Alternating(i, f) => out
                    .extend((0..k).map(|j| enc(if j % 2 == 0 { pick(i, f) } else { -pick(i, f) }))),
                Gen::SortedK(i, f) => {
                    let mut v: Vec<f32> = (0..k).map(|_| pick(i, f) * normal(r)).collect();
                    v.sort_by(f32::total_cmp);
                    out.extend(v.into_iter().map(enc));
                }
                Gen::RowConstant(i, f) => {
                    let v = enc(pick(i, f) * normal(r));
                    out.extend(std::iter::repeat_n(v, k));
                }
                Gen::Sparse(i, f, zero) => out.extend((0..k).map(|_| {
                    let v = pick(i, f) * normal(r);
                    enc(if r.unit() < zero { 0.0 } else { v })
                })),
                Gen::SameRows(_) => unreachable!("filled above"),
                Gen::AltRows(i, f) => {
                    out.extend(std::iter::repeat_n(enc(flip(i, f, row % 2 == 1)), k))
                }
                Gen::AltKPerRow(i, f) => {
                    let v = pick(i, f) * normal(r);
                    out.extend((0..k).map(|j| enc(if j % 2 == 0 { v } else { -v })))
                }
                Gen::Checker(i, f) => {
                    out.extend((0..k).map(|j| enc(flip(i, f, (j + row) % 2 == 1))))
                }
                Gen::TwoFour(i, f) => {
                    for g in 0..k.div_ceil(4) {
                        // Two distinct kept positions of the four, at random.
                        let keep1 = (r.next_u64() % 4) as usize;
                        let keep2 = (keep1 + 1 + (r.next_u64() % 3) as usize) % 4;
                        for j in 0..4.min(k - 4 * g) {
                            let v = pick(i, f) * normal(r);
                            out.push(enc(if j == keep1 || j == keep2 { v } else { 0.0 }));
                        }
                    }
                }
            }
            debug_assert_eq!(out.len() - start, k);
        }
        out
    }
}

impl Pattern {
    /// The operands of this pattern for `dtype` and `shape`, from `seed`.
    pub fn operands(&self, dtype: Dtype, shape: Shape, seed: u64) -> Operands {
        let mut r = Rng::new(seed ^ fnv(self.name));
        Operands {
            dtype,
            shape,
            a: self.a.fill(dtype, shape.m, shape.k, &mut r),
            b: self.b.fill(dtype, shape.n, shape.k, &mut r),
        }
    }
}

/// FNV-1a of a name: a stable per-pattern seed offset.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// A real matrix (f32, row-major [rows, cols]) from a model.
pub struct RealMatrix {
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f32>,
}

impl RealMatrix {
    /// Encoded for `dtype`: int8 quantized symmetric per row (absmax -> 127, as per-token
    /// activation and per-channel weight quantization do), floats rounded.
    fn encoded(&self, dtype: Dtype) -> Vec<i16> {
        let mut out = Vec::with_capacity(self.values.len());
        for row in self.values.chunks_exact(self.cols) {
            let scale = match dtype {
                Dtype::Int8 => {
                    let m = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                    if m > 0.0 {
                        127.0 / m
                    } else {
                        1.0
                    }
                }
                _ => 1.0,
            };
            out.extend(row.iter().map(|&v| dtype.encode(v * scale)));
        }
        out
    }

    /// Tiled to `rows x k`: the encoded matrix read row after row, wrapping, so every
    /// original row stays contiguous along K (a row of 576 fills K = 8192 14.2 times).
    pub fn tiled(&self, dtype: Dtype, rows: usize, k: usize) -> Vec<i16> {
        let enc = self.encoded(dtype);
        (0..rows * k).map(|i| enc[i % enc.len()]).collect()
    }
}

/// Operands of a real pattern: activations tiled into A, weights into B.
pub fn real_operands(dtype: Dtype, shape: Shape, x: &RealMatrix, w: &RealMatrix) -> Operands {
    Operands {
        dtype,
        shape,
        a: x.tiled(dtype, shape.m, shape.k),
        b: w.tiled(dtype, shape.n, shape.k),
    }
}

/// Check user-supplied operands: A [M, K] and B [K, N] (numpy's convention for A @ B),
/// converted to this module's B [N, K].
pub fn user_operands(
    dtype: Dtype,
    a: &crate::gemm_energy::npy::Array,
    b: &crate::gemm_energy::npy::Array,
) -> Result<Operands> {
    let (&[m, k], &[k2, n]) = (a.shape.as_slice(), b.shape.as_slice()) else {
        return Err(Error::Config(format!(
            "--operands: A and B must be 2-D (A is M x K, B is K x N); got shapes {:?} and {:?}",
            a.shape, b.shape
        )));
    };
    if k != k2 {
        return Err(Error::Config(format!(
            "--operands: A is {m} x {k} but B is {k2} x {n}: the inner dimensions differ"
        )));
    }
    let enc = |arr: &crate::gemm_energy::npy::Array| arr.encoded(dtype);
    let (av, bv) = (enc(a)?, enc(b)?);
    // B^T: [N, K].
    let bt = (0..n * k).map(|i| bv[(i % k) * n + i / k]).collect();
    Ok(Operands {
        dtype,
        shape: Shape { m, k, n },
        a: av,
        b: bt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(-2.0), 0xc000);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_f16(1.0), 0x3c00);
    }

    #[test]
    fn patterns_are_deterministic_and_shaped() {
        let s = Shape { m: 8, k: 64, n: 4 };
        for p in PATTERNS {
            for d in [Dtype::Int8, Dtype::Bf16] {
                let o = p.operands(d, s, 7);
                assert_eq!((o.a.len(), o.b.len()), (8 * 64, 4 * 64), "{}", p.name);
                let again = p.operands(d, s, 7);
                assert_eq!((o.a.clone(), o.b.clone()), (again.a, again.b), "{}", p.name);
            }
        }
        // 2:4: exactly two non-zeros (or fewer, by chance zeros) in every group of four.
        let o = find("2:4-b").unwrap().operands(Dtype::Int8, s, 1);
        assert!(o
            .b
            .chunks(4)
            .all(|g| g.iter().filter(|&&v| v != 0).count() <= 2));
        let z = find("sparse90-a").unwrap().operands(
            Dtype::Int8,
            Shape {
                m: 64,
                k: 256,
                n: 1,
            },
            2,
        );
        let frac = z.a.iter().filter(|&&v| v == 0).count() as f64 / z.a.len() as f64;
        assert!((0.85..0.95).contains(&frac), "{frac}");
        assert!(PATTERNS.len() >= 20);
    }

    #[test]
    fn permuting_k_moves_columns_of_both() {
        let s = Shape { m: 2, k: 4, n: 1 };
        let o = Operands {
            dtype: Dtype::Int8,
            shape: s,
            a: vec![1, 2, 3, 4, 5, 6, 7, 8],
            b: vec![9, 10, 11, 12],
        };
        let p = o.permute_k(&[3, 0, 2, 1]);
        assert_eq!(p.a, vec![4, 1, 3, 2, 8, 5, 7, 6]);
        assert_eq!(p.b, vec![12, 9, 11, 10]);
    }
}
