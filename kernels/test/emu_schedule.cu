// Kernels with bugs that cuda-emu's default order (every thread in index order to its next
// synchronization point, so all warps move in step) hides, for CudaEmuScheduleTest: two
// shared-memory races, a shuffle from lanes that do not exist, a divergent barrier. Under
// TOKENKERNELS_EMU_SCHEDULE=adversarial they must give wrong answers or fail. They also compile
// with NVRTC (wrong, not invalid).

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Two block sums through the same slots, with no barrier between the first sum's reads and the
// second sum's writes: a warp that runs ahead overwrites a slot another warp has yet to read.
// out[t] = the first sum as thread t read it.
extern "C" __global__ void reduction_reuse_without_barrier(const float* in, float* out) {
    __shared__ float slots[8];
    const unsigned t = threadIdx.x, warp = t / 32, lane = t % 32;
    float v = warp_sum(in[t]);
    if (lane == 0) slots[warp] = v;
    __syncthreads();
    float first = 0.0f;
    for (int w = 0; w < 8; w++) first += slots[w];
    // missing: __syncthreads();
    float second = warp_sum(2.0f * in[t]);
    if (lane == 0) slots[warp] = second;
    __syncthreads();
    out[t] = first;
}

// Lane 0 of each warp writes a slot and, with only warp shuffles (no __syncthreads) before the
// read, every thread reads the next warp's slot. out[t] = the slot thread t read.
extern "C" __global__ void handoff_without_barrier(const float* in, float* out) {
    __shared__ float slots[8];
    const unsigned t = threadIdx.x, warp = t / 32, lane = t % 32;
    if (lane == 0) slots[warp] = in[warp];
    const float spin = warp_sum(1.0f);  // a warp collective, not a block barrier
    out[t] = slots[(warp + 1) % 8] + 0.0f * spin;
}

// A max over a warp of 20 live lanes (the block has 52 threads), with a full mask: lanes 20..31
// of the second warp do not exist and a shuffle from them is undefined. out[t] = the warp max.
extern "C" __global__ void partial_warp_max(const float* in, float* out) {
    float v = in[threadIdx.x];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    out[threadIdx.x] = v;
}

// Half the block waits at one __syncthreads, half at another (undefined: a divergent barrier).
// out[t] = the slot of the thread 128 away.
extern "C" __global__ void divergent_barrier(const float* in, float* out) {
    __shared__ float slots[256];
    const unsigned t = threadIdx.x;
    slots[t] = in[t];
    if (t < 128) {
        __syncthreads();
        out[t] = slots[t + 128];
    } else {
        __syncthreads();
        out[t] = slots[t - 128];
    }
}
