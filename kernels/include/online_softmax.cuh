// Online softmax statistics (Milakov & Gimelshein, 2018, extended with the entropy term): one pass
// over a row keeps the running max m, s = sum exp(x - m) and w = sum exp(x - m)(x - m), rescaling
// both when m rises. Then lse = m + log s and entropy = log s - w / s. States merge, so threads,
// warps and blocks each reduce their share and combine.
#pragma once
#include "tk_numeric.cuh"

namespace tk {

struct SoftmaxState {
    float max;       // running max of x; -inf while nothing finite-or-+inf was seen
    float sum;       // sum exp(x - max)
    float weighted;  // sum exp(x - max) (x - max)

    __device__ __forceinline__ static SoftmaxState empty() { return SoftmaxState{negative_infinity(), 0.0f, 0.0f}; }

    // Adds one element. -inf adds nothing (zero probability); NaN poisons the sums, so callers
    // track NaN separately and treat the row as special.
    __device__ __forceinline__ void add(float x) {
        if (x > max) {
            if (max != negative_infinity()) {
                float shift = max - x;
                float scale = expf(shift);
                weighted = (weighted + sum * shift) * scale;
                sum *= scale;
            }
            max = x;
            sum += 1.0f;
        } else if (x != negative_infinity()) {
            float d = x - max;
            float e = expf(d);
            sum += e;
            weighted += e * d;
        }
    }

    // Combines with another state (order-independent up to rounding).
    __device__ __forceinline__ void merge(const SoftmaxState& o) {
        float m = fmaxf(max, o.max);
        if (m == negative_infinity()) return;
        float s = 0.0f, w = 0.0f;
        if (max != negative_infinity()) {
            float shift = max - m;
            float scale = expf(shift);
            s += sum * scale;
            w += (weighted + sum * shift) * scale;
        }
        if (o.max != negative_infinity()) {
            float shift = o.max - m;
            float scale = expf(shift);
            s += o.sum * scale;
            w += (o.weighted + o.sum * shift) * scale;
        }
        max = m;
        sum = s;
        weighted = w;
    }
};

// Butterfly merge across a full warp: every lane ends with the warp's state.
__device__ __forceinline__ SoftmaxState warp_merge(SoftmaxState s) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        SoftmaxState other{__shfl_xor_sync(0xffffffffu, s.max, offset), __shfl_xor_sync(0xffffffffu, s.sum, offset),
                           __shfl_xor_sync(0xffffffffu, s.weighted, offset)};
        s.merge(other);
    }
    return s;
}

// Merge across the block (blockDim.x a multiple of 32, at most 1024): warps merge by shuffles,
// then warp 0 merges the warps' states from shared memory. The result is valid in thread 0.
// Every thread of the block must call it; it may be called again (it begins with a barrier).
__device__ __forceinline__ SoftmaxState block_merge(SoftmaxState s) {
    __shared__ float warp_max[32];
    __shared__ float warp_sum[32];
    __shared__ float warp_weighted[32];
    unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    s = warp_merge(s);
    __syncthreads();  // a previous call's readers are done with the slots
    if (lane == 0) {
        warp_max[warp] = s.max;
        warp_sum[warp] = s.sum;
        warp_weighted[warp] = s.weighted;
    }
    __syncthreads();
    if (warp == 0) {
        unsigned warps = (blockDim.x + 31) / 32;
        s = lane < warps ? SoftmaxState{warp_max[lane], warp_sum[lane], warp_weighted[lane]} : SoftmaxState::empty();
        s = warp_merge(s);
    }
    return s;
}

// The log-sum-exp and entropy of a row's softmax.
struct RowSoftmax {
    float lse;
    float entropy;
};

// The log-sum-exp and entropy (log s - w / s, relative to the max, so large logits do not cancel)
// of a row of x = z * inv_t (z of dtype code `dtype`, n elements from `base`), computed by the whole
// block and returned to every thread: NaN for both if an element is NaN or the max is +inf, lse -inf
// (entropy 0) for a row of all -inf. x is rounded as a product; the CPU sweeps take
// fp32(z - m) log2(e) inv_t instead (exact near the max), so the backends agree within tolerances, not bits.
__device__ __forceinline__ RowSoftmax block_row_softmax(const void* z, int dtype, long long base, long long n,
                                                        float inv_t) {
    __shared__ RowSoftmax row;
    SoftmaxState state = SoftmaxState::empty();
    bool nan = false;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) {
        float x = __fmul_rn(load_float(z, dtype, base + j), inv_t);
        nan |= is_nan(x);
        state.add(x);
    }
    const int any_nan = __syncthreads_or(nan);
    state = block_merge(state);  // complete in thread 0 (warp 0)
    if (threadIdx.x == 0) {
        if (any_nan || state.max == positive_infinity()) {
            row = RowSoftmax{quiet_nan(), quiet_nan()};
        } else if (state.max == negative_infinity()) {
            row = RowSoftmax{negative_infinity(), 0.0f};
        } else {
            float log_sum = logf(state.sum);
            row = RowSoftmax{state.max + log_sum, fmaxf(0.0f, log_sum - state.weighted / state.sum)};
        }
    }
    __syncthreads();
    return row;
}

// The log-sum-exp alone (block_row_softmax's).
__device__ __forceinline__ float block_row_lse(const void* z, int dtype, long long base, long long n, float inv_t) {
    return block_row_softmax(z, dtype, base, n, inv_t).lse;
}

}  // namespace tk
