//! The vendored candle-core's AVX2 Q4_1 x Q8_1 dot product (vendor/candle-core/PERFWATT.md)
//! is bit-identical to candle's scalar code, and so are the repacked Q4_1 tiles (here with
//! the CPU's widest kernel; tests/q4_1_tiles_avx2.rs forces the AVX2 one): greedy tokens
//! cannot change with either.

#[path = "common/q4_1_tiles.rs"]
mod q4_1_tiles;

use candle_core::quantized::k_quants::{BlockQ4_1, BlockQ5_0, BlockQ8_0, BlockQ8_1, GgmlType};

/// The same for the AVX2 Q5_0 x Q8_0 dot product (Gemma 3's GGUF), over every high-bit
/// pattern random weights give.
#[test]
fn avx2_q5_0_dot_is_bit_identical_to_the_scalar_one() {
    let mut r = perfwatt::stats::Rng::new(5);
    let mut next = |scale: f32| (r.unit() as f32 * 2.0 - 1.0) * scale;
    for (k, scale) in [(64, 1.0), (640, 0.05), (2048, 3.0), (8192, 100.0)] {
        for _ in 0..50 {
            let w: Vec<f32> = (0..k).map(|_| next(scale)).collect();
            let x: Vec<f32> = (0..k).map(|_| next(1.0)).collect();
            let mut wq = vec![BlockQ5_0::zeros(); k / 32];
            let mut xq = vec![BlockQ8_0::zeros(); k / 32];
            BlockQ5_0::from_float(&w, &mut wq);
            BlockQ8_0::from_float(&x, &mut xq);
            let fast = BlockQ5_0::vec_dot(k, &wq, &xq);
            let scalar = BlockQ5_0::vec_dot_unopt(k, &wq, &xq);
            assert_eq!(
                fast.to_bits(),
                scalar.to_bits(),
                "k = {k}: {fast} vs {scalar}"
            );
        }
    }
}

#[test]
fn avx2_q4_1_dot_is_bit_identical_to_the_scalar_one() {
    let mut r = perfwatt::stats::Rng::new(4);
    let mut next = |scale: f32| (r.unit() as f32 * 2.0 - 1.0) * scale;
    for (k, scale) in [(64, 1.0), (576, 0.05), (1536, 3.0), (8192, 100.0)] {
        for _ in 0..50 {
            let w: Vec<f32> = (0..k).map(|_| next(scale)).collect();
            let x: Vec<f32> = (0..k).map(|_| next(1.0)).collect();
            let mut wq = vec![BlockQ4_1::zeros(); k / 32];
            let mut xq = vec![BlockQ8_1::zeros(); k / 32];
            BlockQ4_1::from_float(&w, &mut wq);
            BlockQ8_1::from_float(&x, &mut xq);
            let fast = BlockQ4_1::vec_dot(k, &wq, &xq);
            let scalar = BlockQ4_1::vec_dot_unopt(k, &wq, &xq);
            assert_eq!(
                fast.to_bits(),
                scalar.to_bits(),
                "k = {k}: {fast} vs {scalar}"
            );
        }
    }
}

#[test]
fn repacked_q4_1_tiles_are_bit_identical_to_the_unpacked_matmul() {
    q4_1_tiles::tiles_equal_unpacked();
}
