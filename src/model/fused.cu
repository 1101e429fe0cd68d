// perfwatt's fused kernels (`--opt fused`, src/model/fused.rs), compiled at run time by
// NVRTC. Each does the work of two of candle 0.11's kernels with the same float operations
// in the same order (candle-kernels src/reduce.cu rmsnorm and softmax, src/unary.cu silu,
// src/binary.cu add and mul), so its results are bit for bit theirs: one launch and one
// pass over memory instead of two.

#define WARP 32
#define NEG_INF (-__int_as_float(0x7f800000))

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int mask = 16; mask > 0; mask >>= 1) {
        x += __shfl_xor_sync(0xffffffff, x, mask, 32);
    }
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int mask = 16; mask > 0; mask >>= 1) {
        x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, mask, 32));
    }
    return x;
}

// h = a + b and y = rmsnorm(h) * alpha, rows of ncols < 1024 values, one warp per row (as
// candle launches rmsnorm_f32 there): lane t sums the squares of columns t, t + 32, ... in
// that order, the warp adds its lanes by xor shuffles. The loops are unrolled so that a
// lane's loads are in flight together; candle's loop waits on one load per column, which
// made its RMSNorm the slowest kernel of a decode step (~10 us of ~2 us kernels).
extern "C" __global__ void add_rmsnorm_f32(
    const float *__restrict__ a, const float *__restrict__ b, float *__restrict__ h,
    float *__restrict__ y, const float *__restrict__ alpha, const int ncols,
    const float eps) {
    const int row = blockIdx.x;
    const int tid = threadIdx.x;
    const float *ar = a + row * ncols;
    const float *br = b + row * ncols;
    float *hr = h + row * ncols;
    float *yr = y + row * ncols;
    float tmp = 0.0f;
#pragma unroll 4
    for (int col = tid; col < ncols; col += WARP) {
        const float xi = ar[col] + br[col];
        hr[col] = xi;
        tmp += xi * xi;
    }
    tmp = warp_sum(tmp);
    const float mean = tmp / ncols;
    const float scale = rsqrtf(mean + eps);
#pragma unroll 4
    for (int col = tid; col < ncols; col += WARP) {
        yr[col] = scale * hr[col] * alpha[col];
    }
}

// softmax(x + mask) along rows of ncols values; row r adds mask row r % mask_rows. One warp
// per row, as candle launches softmax_f32 (block (1, 32)): the same max, exponentials, sum
// and scaling (by 1 / sum in double, rounded to float) in the same order, on the same sums
// x + mask that candle's add kernel would have written.
extern "C" __global__ void masked_softmax_f32(
    const float *__restrict__ x, const float *__restrict__ mask, float *__restrict__ dst,
    const int ncols, const int mask_rows) {
    const int row = blockIdx.x;
    const int tid = threadIdx.x;
    const float *xr = x + row * ncols;
    const float *mr = mask + (row % mask_rows) * ncols;
    float *dr = dst + row * ncols;
    float max_val = NEG_INF;
#pragma unroll 4
    for (int col = tid; col < ncols; col += WARP) {
        max_val = fmaxf(max_val, xr[col] + mr[col]);
    }
    max_val = warp_max(max_val);
    float tmp = 0.;
#pragma unroll 4
    for (int col = tid; col < ncols; col += WARP) {
        const float val = expf((xr[col] + mr[col]) - max_val);
        tmp += val;
        dr[col] = val;
    }
    tmp = warp_sum(tmp);
    const float inv_tmp = 1. / tmp;
#pragma unroll 4
    for (int col = tid; col < ncols; col += WARP) {
        dr[col] *= inv_tmp;
    }
}

// out = silu(g) * u over rows of cols values; g and u rows may be strided (the two halves
// of one merged gate/up matmul), out is contiguous.
extern "C" __global__ void silu_mul_f32(
    const float *__restrict__ g, const float *__restrict__ u, float *__restrict__ out,
    const int rows, const int cols, const int ld_g, const int ld_u) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * cols) {
        return;
    }
    const int r = i / cols;
    const int c = i - r * cols;
    const float x = g[r * ld_g + c];
    const float s = x / (1.0f + expf(-x));
    out[i] = s * u[r * ld_u + c];
}
