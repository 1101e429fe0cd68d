//! The Rust reference of rtl/mac_bf16.v, bit for bit: bf16 x bf16 products (exact in fp32),
//! accumulated in fp32 with one round-to-nearest-even per addition, subnormals flushed to
//! signed zero, every NaN canonical (0x7fc00000). In: the pairs of one dot product (bf16
//! bit patterns). Out: the accumulator's fp32 bits.

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
}
