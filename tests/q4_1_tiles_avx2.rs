//! The repacked Q4_1 tiles' AVX2 kernel (maddubs + madd), which machines without
//! AVX512-VNNI run, against candle's unpacked matmul. A test binary of its own: the kernel
//! level is chosen once per process, from MISTRALRS_FORCE_AVX2 (vendored candle's switch).

#[path = "common/q4_1_tiles.rs"]
mod q4_1_tiles;

#[test]
fn avx2_q4_1_tiles_are_bit_identical_to_the_unpacked_matmul() {
    // Before anything asks for the level; this binary has no other test.
    std::env::set_var("MISTRALRS_FORCE_AVX2", "1");
    q4_1_tiles::tiles_equal_unpacked();
}
