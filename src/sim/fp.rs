//! The Rust references of the bf16 datapaths, bit for bit. In: the pairs of one dot
//! product (bf16 bit patterns). Out: the accumulator's fp32 bits.
//!
//! `mac_bf16` (rtl/mac_bf16.v): bf16 x bf16 products (exact in fp32), accumulated in fp32
//! with one round-to-nearest-even per addition, subnormals flushed to signed zero, every
//! NaN canonical (0x7fc00000).
//!
//! `dot_bf16` (rtl/dot_bf16.v): a K-slice of LANES products per step, fused with the
//! accumulator tensor-core style: every term aligned to the largest exponent with
//! `BF16_DOT_EXTRA` bits below fp32's 24, truncated, summed exactly, rounded once.

const QNAN: u32 = 0x7fc0_0000;

/// Flush a subnormal to a zero of its sign; make a NaN canonical.
fn tidy(v: f32) -> f32 {
    if v.is_nan() {
        f32::from_bits(QNAN)
    } else if v.is_subnormal() {
        0f32.copysign(v)
    } else {
        v
    }
}

/// A bf16 bit pattern as the MAC reads it (subnormals as zeros).
pub fn bf16(bits: i16) -> f32 {
    tidy(f32::from_bits((bits as u16 as u32) << 16))
}

/// The accumulator after `pairs`, starting from +0.
pub fn mac_bf16(pairs: &[(i16, i16)]) -> u32 {
    pairs
        .iter()
        .fold(0f32, |acc, &(a, b)| tidy(acc + tidy(bf16(a) * bf16(b))))
        .to_bits()
}

/// One term of a fused sum: sign, exponent of its leading bit (fp32-biased: 1.0 has 127;
/// products reach beyond fp32's range), significand with its leading bit at bit F-1.
#[derive(Clone, Copy)]
struct Term {
    neg: bool,
    exp: i32,
    sig: u64,
}

/// What a fused step sees: the finite nonzero terms, and whether a NaN, +inf, -inf or
/// only negative zeros were among them.
#[derive(Default)]
struct Terms {
    finite: Vec<Term>,
    nan: bool,
    pos_inf: bool,
    neg_inf: bool,
    all_neg_zero: bool,
}

impl Terms {
    /// A bf16 x bf16 product (subnormal operands read as zero, as `bf16` does).
    fn push_product(&mut self, a: i16, b: i16, f: u32) {
        let (a, b) = (a as u16, b as u16);
        let exp = |v: u16| (v >> 7 & 0xff) as i32;
        let man = |v: u16| (v & 0x7f) as u64;
        let (ea, eb) = (exp(a), exp(b));
        let (a_nan, b_nan) = (ea == 255 && man(a) != 0, eb == 255 && man(b) != 0);
        let (a_inf, b_inf) = (ea == 255 && man(a) == 0, eb == 255 && man(b) == 0);
        let neg = (a ^ b) >> 15 == 1;
        if a_nan || b_nan || (a_inf && eb == 0) || (b_inf && ea == 0) {
            self.nan = true;
        } else if a_inf || b_inf {
            self.pos_inf |= !neg;
            self.neg_inf |= neg;
        } else if ea == 0 || eb == 0 {
            self.all_neg_zero &= neg;
        } else {
            let m = (0x80 | man(a)) * (0x80 | man(b)); // [2^14, 2^16)
            let top = (m >> 15) as i32;
            self.all_neg_zero = false;
            self.finite.push(Term {
                neg,
                exp: ea + eb - 127 + top,
                sig: m << (f - 15 - top as u32),
            });
        }
    }

    /// The fp32 accumulator as a term.
    fn push_acc(&mut self, acc: u32, f: u32) {
        let (e, m, neg) = (
            (acc >> 23 & 0xff) as i32,
            (acc & 0x7f_ffff) as u64,
            acc >> 31 == 1,
        );
        match e {
            255 if m != 0 => self.nan = true,
            255 => {
                self.pos_inf |= !neg;
                self.neg_inf |= neg;
            }
            0 => self.all_neg_zero &= neg,
            _ => {
                self.all_neg_zero = false;
                self.finite.push(Term {
                    neg,
                    exp: e,
                    sig: (0x80_0000 | m) << (f - 24),
                });
            }
        }
    }

    /// Align to the largest exponent (truncating), sum exactly, round once to fp32.
    fn round(&self, f: u32) -> u32 {
        if self.nan || (self.pos_inf && self.neg_inf) {
            return QNAN;
        }
        if self.pos_inf || self.neg_inf {
            return if self.pos_inf {
                0x7f80_0000
            } else {
                0xff80_0000
            };
        }
        let Some(emax) = self.finite.iter().map(|t| t.exp).max() else {
            return (self.all_neg_zero as u32) << 31;
        };
        let sum: i64 = self
            .finite
            .iter()
            .map(|t| {
                let shift = (emax - t.exp) as u32;
                let m = if shift >= 64 {
                    0
                } else {
                    (t.sig >> shift) as i64
                };
                if t.neg {
                    -m
                } else {
                    m
                }
            })
            .sum();
        let (neg, mag) = (sum < 0, sum.unsigned_abs());
        if mag == 0 {
            return 0;
        }
        // The leading bit's position, then 24 bits with guard and sticky below them.
        let q = 63 - mag.leading_zeros() as i32;
        let mut e = emax + q - (f as i32 - 1);
        let mut m = if q >= 23 {
            let cut = (q - 23) as u32;
            let kept = mag >> cut;
            let rest = mag & ((1u64 << cut) - 1);
            let half = if cut == 0 { 0 } else { 1u64 << (cut - 1) };
            let up = cut > 0 && (rest > half || (rest == half && kept & 1 == 1));
            kept + up as u64
        } else {
            mag << (23 - q)
        };
        if m >> 24 == 1 {
            m >>= 1;
            e += 1;
        }
        let sign = (neg as u32) << 31;
        if e >= 255 {
            sign | 0x7f80_0000
        } else if e <= 0 {
            sign
        } else {
            sign | (e as u32) << 23 | (m as u32 & 0x7f_ffff)
        }
    }
}

/// The fused dot unit's accumulator after `pairs`, a K-slice of `lanes` pairs per step
/// (the last slice may be shorter), starting from +0.
pub fn dot_bf16(pairs: &[(i16, i16)], lanes: usize) -> u32 {
    let f = 24 + super::BF16_DOT_EXTRA;
    pairs.chunks(lanes).fold(0u32, |acc, slice| {
        let mut t = Terms {
            all_neg_zero: true,
            ..Terms::default()
        };
        for &(a, b) in slice {
            t.push_product(a, b, f);
        }
        t.push_acc(acc, f);
        t.round(f)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_values() {
        let one = 0x3f80u16 as i16;
        let inf = 0x7f80u16 as i16;
        let neg_zero = 0x8000u16 as i16;
        assert_eq!(mac_bf16(&[(one, one), (one, one)]), 2f32.to_bits());
        assert_eq!(mac_bf16(&[(inf, 0)]), QNAN);
        assert_eq!(mac_bf16(&[(inf, one), (inf, 0xbf80u16 as i16)]), QNAN);
        assert_eq!(mac_bf16(&[(neg_zero, one)]), 0); // +0 + -0 = +0
                                                     // A subnormal bf16 operand reads as zero.
        assert_eq!(mac_bf16(&[(0x0001, one)]), 0);
        // 2^-100 x 2^-100 is below the smallest normal: flushed.
        let tiny = 0x0d80u16 as i16;
        assert_eq!(mac_bf16(&[(tiny, tiny)]), 0);
    }

    #[test]
    fn fused_dot_rounds_once() {
        let one = 0x3f80u16 as i16;
        let h = |v: u16| v as i16;
        // 1 + 2^-24 + 2^-24: rounding after each add loses both halves, one rounding of
        // the exact sum keeps them (1 + 2^-23).
        let tiny = h(0x3380); // 2^-24
        let pairs = [(one, one), (tiny, one), (tiny, one)];
        assert_eq!(mac_bf16(&pairs), 1f32.to_bits());
        assert_eq!(dot_bf16(&pairs, 4), (1f32 + f32::EPSILON).to_bits());
        // Alignment truncates: a term 2^-30 below the largest vanishes (EXTRA = 3 bits).
        let pairs = [
            (one, one),
            (h(0x3080), one),
            (h(0x3080), one),
            (h(0x3080), one),
        ];
        assert_eq!(dot_bf16(&pairs, 4), 1f32.to_bits());
        // Exact cancellation gives +0; a slice of negative zeros onto +0 gives +0.
        assert_eq!(dot_bf16(&[(one, one), (h(0xbf80), one)], 4), 0);
        assert_eq!(dot_bf16(&[(h(0x8000), one)], 4), 0);
        // Specials.
        let inf = h(0x7f80);
        assert_eq!(dot_bf16(&[(inf, one), (h(0xff80), one)], 4), QNAN);
        assert_eq!(dot_bf16(&[(inf, 0)], 4), QNAN);
        assert_eq!(dot_bf16(&[(inf, one), (one, one)], 4), 0x7f80_0000);
        // A product past fp32's range (2^254) cancelled by another in the same slice does
        // not overflow; the 1 beside them was truncated away in the alignment, and comes
        // through when it is in a slice of its own.
        let big = h(0x7f00); // 2^127
        let pairs = [(big, big), (h(0xff00), big), (one, one)];
        assert_eq!(dot_bf16(&pairs, 4), 0);
        assert_eq!(dot_bf16(&pairs, 2), 1f32.to_bits());
        // Small exact sums agree with f64 arithmetic rounded to f32.
        let vals = [1.5f32, -2.25, 0.375, 3.0, -0.5, 7.0, 0.125, -1.0];
        let pairs: Vec<(i16, i16)> = vals
            .chunks(2)
            .map(|p| ((p[0].to_bits() >> 16) as i16, (p[1].to_bits() >> 16) as i16))
            .collect();
        let exact: f64 = vals.chunks(2).map(|p| p[0] as f64 * p[1] as f64).sum();
        assert_eq!(dot_bf16(&pairs, 4), (exact as f32).to_bits());
    }
}
