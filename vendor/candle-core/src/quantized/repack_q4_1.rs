//! Q4_1 weights repacked for x86 (added for perfwatt, see PERFWATT.md): 16 weight rows per
//! tile, so that one vpdpbusd (AVX512-VNNI), or maddubs + madd (AVX2), multiplies 4 nibbles
//! of each of 16 rows by 4 broadcast int8 activations, and a prefill's activation rows
//! (up to `MAX_MT` at a time) reuse every tile they load.
//!
//! Bit-identical to the unpacked path (`vec_dot_q4_1_q8_1`, and the scalar code it copies):
//! activations are quantized by the same `BlockQ8_1::from_float`; each row's integer block
//! sum is exact whatever the order; its float part, `acc + ((sumi * dx) * dy + mx * sy)`,
//! is computed op for op (no fused multiply-add) and block after block in a lane of its
//! own. So the repack can be switched off (`set_q4_1_tiles(false)`) without changing a
//! greedy token.

use super::k_quants::{BlockQ4_1, BlockQ8_1, GgmlType, QK4_1};
use super::QuantizedType;
use half::f16;
use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) const ROWS: usize = 16;
/// Activation rows per unit of work: every tile loaded serves this many rows.
const MAX_MT: usize = 4;
/// One 32-value block of 16 rows.
const GROUPS: usize = QK4_1 / 8;

#[repr(C)]
pub(crate) struct TileQ4_1 {
    d: [f16; ROWS],
    m: [f16; ROWS],
    /// [group (4)][row (16)][4 bytes]: group g holds bytes 4g..4g+4 of each row's block,
    /// whose low nibbles meet activations 4g..4g+4 and high nibbles 16+4g..16+4g+4.
    qs: [u8; QK4_1 / 2 * ROWS],
}

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Switch the repacked Q4_1 kernels on or off for this process (on by default): a knob for
/// measuring what they do. Results are the same either way.
pub(crate) fn set_q4_1_tiles(on: bool) {
    ENABLED.store(on, Ordering::Relaxed)
}

pub(crate) fn q4_1_tiles() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn select(n: usize, k: usize) -> bool {
    q4_1_tiles()
        && super::repack_x86::level().is_some()
        && is_x86_feature_detected!("f16c")
        && k > 0
        && k.is_multiple_of(QK4_1)
        && n.is_multiple_of(ROWS)
}

pub(crate) fn pack(storage: &dyn QuantizedType, n: usize, k: usize) -> Vec<TileQ4_1> {
    let blocks = unsafe {
        std::slice::from_raw_parts(
            storage.as_ptr() as *const BlockQ4_1,
            storage.storage_size_in_bytes() / std::mem::size_of::<BlockQ4_1>(),
        )
    };
    let kb = k / QK4_1;
    let mut out = Vec::with_capacity(n / ROWS * kb);
    for t in 0..n / ROWS {
        for b in 0..kb {
            let mut tile = TileQ4_1 {
                d: [f16::ZERO; ROWS],
                m: [f16::ZERO; ROWS],
                qs: [0; QK4_1 / 2 * ROWS],
            };
            for r in 0..ROWS {
                let blk = &blocks[(t * ROWS + r) * kb + b];
                tile.d[r] = blk.d;
                tile.m[r] = blk.m;
                for g in 0..GROUPS {
                    let at = (g * ROWS + r) * 4;
                    tile.qs[at..at + 4].copy_from_slice(&blk.qs[g * 4..g * 4 + 4]);
                }
            }
            out.push(tile);
        }
    }
    out
}

/// dst[m][n] = lhs[m][k] x W[n][k]^T over the tiles of W.
pub(crate) fn matmul(
    tiles: &[TileQ4_1],
    (m, k, n): (usize, usize, usize),
    lhs: &[f32],
    dst: &mut [f32],
) {
    assert!(lhs.len() >= m * k && dst.len() >= m * n && tiles.len() == n / ROWS * (k / QK4_1));
    let kb = k / QK4_1;
    let pool = crate::utils::barrier_pool();
    let mut acts = vec![BlockQ8_1::zeros(); m * kb];
    let acts_ptr = acts.as_mut_ptr() as usize;
    pool.execute_chunked(m, |rows| {
        for r in rows {
            // SAFETY: each row's blocks are written by one work item.
            let out =
                unsafe { std::slice::from_raw_parts_mut((acts_ptr as *mut BlockQ8_1).add(r * kb), kb) };
            BlockQ8_1::from_float(&lhs[r * k..(r + 1) * k], out);
        }
    });
    let wide = super::repack_x86::level() == Some(super::repack_x86::X86Level::Avx512Vnni);
    let m_units = m.div_ceil(MAX_MT);
    let dst_ptr = dst.as_mut_ptr() as usize;
    let acts = &acts;
    // Units walk the activation rows of one tile column before the next column, so a
    // column's tiles stay in cache while every row meets them.
    pool.execute_chunked(n / ROWS * m_units, |units| {
        for unit in units {
            let (nt, m0) = (unit / m_units, (unit % m_units) * MAX_MT);
            let job = Unit {
                tiles: &tiles[nt * kb..(nt + 1) * kb],
                acts: &acts[m0 * kb..(m0 + (m - m0).min(MAX_MT)) * kb],
                kb,
                // SAFETY: every (row, column) of dst is written by exactly one unit.
                dst: unsafe { (dst_ptr as *mut f32).add(m0 * n + nt * ROWS) },
                dst_stride: n,
            };
            unsafe {
                if wide {
                    job.run_512()
                } else {
                    job.run_256()
                }
            }
        }
    });
}

/// One tile column (16 output columns) against up to MAX_MT activation rows.
struct Unit<'a> {
    tiles: &'a [TileQ4_1],
    acts: &'a [BlockQ8_1],
    kb: usize,
    dst: *mut f32,
    dst_stride: usize,
}

impl Unit<'_> {
    fn mt(&self) -> usize {
        self.acts.len() / self.kb
    }

    #[inline(always)]
    fn bcast4(y: &BlockQ8_1, at: usize) -> i32 {
        i32::from_le_bytes([
            y.qs[at] as u8,
            y.qs[at + 1] as u8,
            y.qs[at + 2] as u8,
            y.qs[at + 3] as u8,
        ])
    }

    #[target_feature(enable = "avx512f,avx512vnni,avx512bw")]
    unsafe fn run_512(&self) {
        use core::arch::x86_64::*;
        let mask = _mm512_set1_epi8(0x0F);
        let mt = self.mt();
        let mut acc = [_mm512_setzero_ps(); MAX_MT];
        for (b, t) in self.tiles.iter().enumerate() {
            // Low and high nibbles in separate chains: half the dpbusd latency per block.
            let mut lo_sum = [_mm512_setzero_si512(); MAX_MT];
            let mut hi_sum = [_mm512_setzero_si512(); MAX_MT];
            for g in 0..GROUPS {
                let w = _mm512_loadu_si512(t.qs.as_ptr().add(g * ROWS * 4) as *const _);
                let lo = _mm512_and_si512(w, mask);
                let hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), mask);
                for i in 0..mt {
                    let y = &self.acts[i * self.kb + b];
                    let ylo = _mm512_set1_epi32(Self::bcast4(y, 4 * g));
                    let yhi = _mm512_set1_epi32(Self::bcast4(y, 16 + 4 * g));
                    lo_sum[i] = _mm512_dpbusd_epi32(lo_sum[i], lo, ylo);
                    hi_sum[i] = _mm512_dpbusd_epi32(hi_sum[i], hi, yhi);
                }
            }
            let dx = _mm512_cvtph_ps(_mm256_loadu_si256(t.d.as_ptr() as *const _));
            let mx = _mm512_cvtph_ps(_mm256_loadu_si256(t.m.as_ptr() as *const _));
            for i in 0..mt {
                let y = &self.acts[i * self.kb + b];
                let sumi = _mm512_cvtepi32_ps(_mm512_add_epi32(lo_sum[i], hi_sum[i]));
                let dot = _mm512_mul_ps(_mm512_mul_ps(sumi, dx), _mm512_set1_ps(y.d.to_f32()));
                let min = _mm512_mul_ps(mx, _mm512_set1_ps(y.s.to_f32()));
                acc[i] = _mm512_add_ps(acc[i], _mm512_add_ps(dot, min));
            }
        }
        for (i, a) in acc.iter().enumerate().take(mt) {
            _mm512_storeu_ps(self.dst.add(i * self.dst_stride), *a);
        }
    }

    /// The same on AVX2, a tile as two halves of 8 rows; maddubs cannot saturate here
    /// (|15 * -128 * 2| < 32768), so the integer sums are exact as with vpdpbusd.
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn run_256(&self) {
        use core::arch::x86_64::*;
        let mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mt = self.mt();
        let mut acc = [[_mm256_setzero_ps(); 2]; MAX_MT];
        for (b, t) in self.tiles.iter().enumerate() {
            for h in 0..2 {
                let mut sum = [_mm256_setzero_si256(); MAX_MT];
                for g in 0..GROUPS {
                    let at = t.qs.as_ptr().add(g * ROWS * 4 + h * 32);
                    let w = _mm256_loadu_si256(at as *const _);
                    let lo = _mm256_and_si256(w, mask);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), mask);
                    for (i, s) in sum.iter_mut().enumerate().take(mt) {
                        let y = &self.acts[i * self.kb + b];
                        let ylo = _mm256_set1_epi32(Self::bcast4(y, 4 * g));
                        let yhi = _mm256_set1_epi32(Self::bcast4(y, 16 + 4 * g));
                        let p = _mm256_add_epi16(
                            _mm256_maddubs_epi16(lo, ylo),
                            _mm256_maddubs_epi16(hi, yhi),
                        );
                        *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p, ones));
                    }
                }
                let dx = _mm256_cvtph_ps(_mm_loadu_si128(t.d.as_ptr().add(8 * h) as *const _));
                let mx = _mm256_cvtph_ps(_mm_loadu_si128(t.m.as_ptr().add(8 * h) as *const _));
                for i in 0..mt {
                    let y = &self.acts[i * self.kb + b];
                    let sumi = _mm256_cvtepi32_ps(sum[i]);
                    let dot =
                        _mm256_mul_ps(_mm256_mul_ps(sumi, dx), _mm256_set1_ps(y.d.to_f32()));
                    let min = _mm256_mul_ps(mx, _mm256_set1_ps(y.s.to_f32()));
                    acc[i][h] = _mm256_add_ps(acc[i][h], _mm256_add_ps(dot, min));
                }
            }
        }
        for (i, a) in acc.iter().enumerate().take(mt) {
            _mm256_storeu_ps(self.dst.add(i * self.dst_stride), a[0]);
            _mm256_storeu_ps(self.dst.add(i * self.dst_stride + 8), a[1]);
        }
    }
}
