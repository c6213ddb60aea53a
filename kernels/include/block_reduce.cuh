// Block-wide sums: every thread of the block gets the total. Warps reduce by butterfly shuffles,
// then warp 0 adds the warps' partial sums from shared memory. blockDim.x must be a multiple of
// 32 (at most 1024); every thread must call; calls may follow each other (each starts with a
// barrier that protects the previous call's slots).
#pragma once

namespace tk {

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    __shared__ float total;
    unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < (blockDim.x + 31) / 32 ? partial[lane] : 0.0f;
        s = warp_sum(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    return total;
}

}  // namespace tk
