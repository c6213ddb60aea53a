// Block-wide reductions: every thread of the block gets the result. Warps reduce by butterfly
// shuffles, then warp 0 reduces the warps' partial results from shared memory. blockDim.x must
// be a multiple of 32 (at most 1024); every thread must call; calls may follow each other (each
// starts with a barrier that protects the previous call's slots).
#pragma once
#include "tk_numeric.cuh"

namespace tk {

struct Sum {
    static __device__ __forceinline__ float identity() { return 0.0f; }
    __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};

// max that returns NaN if either argument is NaN (fmaxf would drop it).
struct MaxNan {
    static __device__ __forceinline__ float identity() { return negative_infinity(); }
    __device__ __forceinline__ float operator()(float a, float b) const {
        return (is_nan(a) || is_nan(b)) ? quiet_nan() : fmaxf(a, b);
    }
};

template <typename Op>
__device__ __forceinline__ float warp_reduce(float v, Op op) {
    for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

template <typename Op>
__device__ __forceinline__ float block_reduce(float v, Op op) {
    __shared__ float partial[32];
    __shared__ float total;
    unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    v = warp_reduce(v, op);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float r = lane < (blockDim.x + 31) / 32 ? partial[lane] : Op::identity();
        r = warp_reduce(r, op);
        if (lane == 0) total = r;
    }
    __syncthreads();
    return total;
}

__device__ __forceinline__ float block_sum(float v) { return block_reduce(v, Sum{}); }
__device__ __forceinline__ float block_max(float v) { return block_reduce(v, MaxNan{}); }
__device__ __forceinline__ float max_nan(float a, float b) { return MaxNan{}(a, b); }

}  // namespace tk
