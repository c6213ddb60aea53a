// Block-wide max (NaN-propagating): every thread of the block gets the result. Same contract as
// block_sum in block_reduce.cuh.
#pragma once
#include "tk_numeric.cuh"

namespace tk {

// max that returns NaN if either argument is NaN (fmaxf would drop it).
__device__ __forceinline__ float max_nan(float a, float b) { return (is_nan(a) || is_nan(b)) ? quiet_nan() : fmaxf(a, b); }

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = max_nan(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

__device__ __forceinline__ float block_max(float v) {
    __shared__ float partial[32];
    __shared__ float total;
    unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float m = lane < (blockDim.x + 31) / 32 ? partial[lane] : negative_infinity();
        m = warp_max(m);
        if (lane == 0) total = m;
    }
    __syncthreads();
    return total;
}

}  // namespace tk
