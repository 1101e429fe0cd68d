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

// h = a + b and y = rmsnorm(h) * alpha, rows of ncols < 1024 values; candle launches its
// rmsnorm_f32 there as one warp per row, lane t summing the squares of columns t, t + 32,
// ... in that order, then adding the lanes by xor shuffles, each lane scaling its own
// columns by its own result. Here one thread per column loads (one round of memory
// latency instead of one per 32 columns: candle's RMSNorm was the slowest kernel of a
// decode step, ~10 us where the others take 2-4), and the first warp sums from shared
// memory in candle's order; the block is a multiple of 32 threads.
extern "C" __global__ void add_rmsnorm_f32(
    const float *__restrict__ a, const float *__restrict__ b, float *__restrict__ h,
    float *__restrict__ y, const float *__restrict__ alpha, const int ncols,
    const float eps) {
    __shared__ float xs[1024];
    __shared__ float scales[WARP];
    const int row = blockIdx.x;
    const int col = threadIdx.x;
    const int at = row * ncols + col;
    float xi = 0.0f;
    if (col < ncols) {
        xi = a[at] + b[at];
        h[at] = xi;
        xs[col] = xi;
    }
    __syncthreads();
    if (col < WARP) {
        float tmp = 0.0f;
        for (int c = col; c < ncols; c += WARP) {
            const float v = xs[c];
            tmp += v * v;
        }
        tmp = warp_sum(tmp);
        const float mean = tmp / ncols;
        scales[col] = rsqrtf(mean + eps);
    }
    __syncthreads();
    if (col < ncols) {
        y[at] = scales[col % WARP] * xi * alpha[col];
    }
}

// This decode step's keys and values [b, kv_heads, 1, d] into a reserved cache
// [b, kv_heads * rep, cap, d] at the position *pos, each KV head into the rep query heads
// that read it: what a strided copy (the repeat) and a scatter did, for k and for v.
extern "C" __global__ void kv_write_f32(
    const float *__restrict__ k, const float *__restrict__ v,
    const unsigned int *__restrict__ pos, float *__restrict__ kc, float *__restrict__ vc,
    const int b, const int kv_heads, const int rep, const int cap, const int d) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int heads = kv_heads * rep;
    if (i >= b * heads * d) {
        return;
    }
    const int e = i % d;
    const int bh = i / d;
    const int head = bh % heads;
    const int bi = bh / heads;
    const int src = (bi * kv_heads + head / rep) * d + e;
    const long dst = ((long)(bi * heads + head) * cap + pos[0]) * d + e;
    kc[dst] = k[src];
    vc[dst] = v[src];
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

// The index of the largest value of each row, as candle's fast_argmax picks it: a block of
// blockDim threads per row, thread t keeping the first largest (strict >) of columns t,
// t + blockDim, ..., then a tree over shared memory in which the lower thread's index wins
// ties. The same choices, without candle's strided-index arithmetic per element (that
// made its argmax over the 49,152 logits the longest kernel of a decode step).
extern "C" __global__ void argmax_f32(
    const float *__restrict__ x, unsigned int *__restrict__ dst, const int ncols) {
    __shared__ float shr[1024];
    __shared__ unsigned int shr_index[1024];
    const int tid = threadIdx.x;
    const float *xr = x + (long)blockIdx.x * ncols;
    float best = NEG_INF;
    unsigned int best_i = 0xFFFFFFFF;
    bool not_set = true;
#pragma unroll 8
    for (int c = tid; c < ncols; c += blockDim.x) {
        const float v = xr[c];
        if (not_set || v > best) {
            best = v;
            best_i = c;
            not_set = false;
        }
    }
    shr[tid] = best;
    shr_index[tid] = best_i;
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        __syncthreads();
        if (tid < s && shr[tid + s] > shr[tid]) {
            shr[tid] = shr[tid + s];
            shr_index[tid] = shr_index[tid + s];
        }
    }
    if (tid == 0) {
        dst[blockIdx.x] = shr_index[0];
    }
}
