// Kernels that test the cuda-emu emulator itself (CudaEmuTest). Each one gives a wrong answer, or
// no answer, unless the feature it names works as on hardware. They also compile with NVRTC.

// Reverses each block's slice through shared memory: without a real barrier a thread reads its
// partner's slot before the partner wrote it.
extern "C" __global__ void barrier_reverse(const float* in, float* out) {
    __shared__ float slots[1024];
    unsigned t = threadIdx.x;
    long long base = (long long)blockIdx.x * blockDim.x;
    slots[t] = in[base + t];
    __syncthreads();
    out[base + t] = slots[blockDim.x - 1 - t];
}

// Per-block tree reduction with a barrier per level, over a 2-D grid of blocks.
extern "C" __global__ void block_sum(const float* in, float* out, long long n) {
    __shared__ float partial[1024];
    unsigned t = threadIdx.x;
    long long block = (long long)blockIdx.y * gridDim.x + blockIdx.x;
    long long i = block * blockDim.x + t;
    partial[t] = i < n ? in[i] : 0.0f;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) partial[t] += partial[t + s];
        __syncthreads();
    }
    if (t == 0) out[block] = partial[0];
}

// Warp shuffles: per lane, [0] butterfly sum, [1] down-reduction (lane 0 holds the sum),
// [2] inclusive scan with shfl_up, [3] broadcast of lane 7, [4] xor sum within width-8 segments,
// [5] the value of lane (lane + 3) via shfl_idx with width 16.
extern "C" __global__ void warp_shuffles(const float* in, float* out) {
    unsigned t = threadIdx.x;
    unsigned lane = t % 32;
    float v = in[t];
    float butterfly = v;
    for (int o = 16; o > 0; o >>= 1) butterfly += __shfl_xor_sync(0xffffffffu, butterfly, o);
    float down = v;
    for (int o = 16; o > 0; o >>= 1) down += __shfl_down_sync(0xffffffffu, down, o);
    float scan = v;
    for (int o = 1; o < 32; o <<= 1) {
        float up = __shfl_up_sync(0xffffffffu, scan, o);
        if (lane >= (unsigned)o) scan += up;
    }
    float broadcast = __shfl_sync(0xffffffffu, v, 7);
    float segment = v;
    for (int o = 4; o > 0; o >>= 1) segment += __shfl_xor_sync(0xffffffffu, segment, o, 8);
    float rotated = __shfl_sync(0xffffffffu, v, (int)(lane + 3), 16);
    out[6 * t + 0] = butterfly;
    out[6 * t + 1] = down;
    out[6 * t + 2] = scan;
    out[6 * t + 3] = broadcast;
    out[6 * t + 4] = segment;
    out[6 * t + 5] = rotated;
}

// Votes: per lane, ballot / any / all of (in > 0) over the full warp, and the ballot of the odd
// lanes only (a partial mask, taken by the odd lanes alone).
extern "C" __global__ void warp_votes(const float* in, unsigned* out) {
    unsigned t = threadIdx.x;
    int p = in[t] > 0.0f;
    out[4 * t + 0] = __ballot_sync(0xffffffffu, p);
    out[4 * t + 1] = (unsigned)__any_sync(0xffffffffu, p);
    out[4 * t + 2] = (unsigned)__all_sync(0xffffffffu, p);
    out[4 * t + 3] = (t & 1) ? __ballot_sync(0xaaaaaaaau, p) : 0u;
}

// Match: per lane, the full warp's lanes holding the same int key, the same double (64-bit
// compare: keys that differ only in their high word must not match), and, on the even lanes
// only (a partial mask), the even lanes with the same int key.
extern "C" __global__ void warp_match(const int* keys, unsigned* out) {
    unsigned t = threadIdx.x;
    int k = keys[t];
    double wide = (double)(k & 1) * 4294967296.0 + (double)(k >> 1);
    out[3 * t + 0] = __match_any_sync(0xffffffffu, k);
    out[3 * t + 1] = __match_any_sync(0xffffffffu, wide);
    out[3 * t + 2] = (t & 1) ? 0u : __match_any_sync(0x55555555u, k);
}

// Inclusive prefix sum of one block in dynamic shared memory (Hillis-Steele, two barriers per step).
extern "C" __global__ void dynamic_shared_scan(const float* in, float* out) {
    extern __shared__ float buffer[];
    unsigned t = threadIdx.x;
    buffer[t] = in[t];
    __syncthreads();
    for (unsigned o = 1; o < blockDim.x; o <<= 1) {
        float add = t >= o ? buffer[t - o] : 0.0f;
        __syncthreads();
        buffer[t] += add;
        __syncthreads();
    }
    out[t] = buffer[t];
}

// Every thread of a large grid hits a few counters at once: atomicAdd (int, float), atomicMax,
// atomicMin, a CAS loop, and atomicExch.
extern "C" __global__ void atomics_contention(const int* values, long long n, int* histogram, int bins,
                                              int* extremes, float* float_sum, unsigned long long* cas_sum,
                                              int* exchanged) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int v = values[i];
    atomicAdd(&histogram[((v % bins) + bins) % bins], 1);
    atomicMax(&extremes[0], v);
    atomicMin(&extremes[1], v);
    atomicAdd(float_sum, 1.0f);
    unsigned long long old = *cas_sum, assumed;
    do {
        assumed = old;
        old = atomicCAS(cas_sum, assumed, assumed + (unsigned long long)(v & 0xff));
    } while (old != assumed);
    atomicExch(exchanged, 1);
}

// Ids in a 3-D grid of 3-D blocks: each thread writes its coordinates at its global linear index.
extern "C" __global__ void grid_ids(int* out) {
    long long block = ((long long)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    long long thread = ((long long)threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    long long g = block * (blockDim.x * blockDim.y * blockDim.z) + thread;
    int* o = out + 6 * g;
    o[0] = blockIdx.x;
    o[1] = blockIdx.y;
    o[2] = blockIdx.z;
    o[3] = threadIdx.x;
    o[4] = threadIdx.y;
    o[5] = threadIdx.z;
}

// __syncthreads_count / _and / _or of (in > 0), written by thread 0.
extern "C" __global__ void barrier_votes(const float* in, int* out) {
    int p = in[threadIdx.x] > 0.0f;
    int count = __syncthreads_count(p);
    int all = __syncthreads_and(p);
    int any = __syncthreads_or(p);
    if (threadIdx.x == 0) {
        out[0] = count;
        out[1] = all;
        out[2] = any;
    }
}

// Threads that returned early count as arrived at later barriers, as on current hardware.
extern "C" __global__ void barrier_after_exit(float* out, int active) {
    __shared__ float slots[1024];
    unsigned t = threadIdx.x;
    if ((int)t >= active) return;
    slots[t] = (float)t;
    __syncthreads();
    out[t] = slots[active - 1 - t];
}

// Lane 0 waits at the block barrier while lanes 1..31 wait for it at __syncwarp: a deadlock that
// the emulator must report instead of hanging.
extern "C" __global__ void deadlock(float* out) {
    if (threadIdx.x == 0) {
        __syncthreads();
    } else {
        __syncwarp();
    }
    out[threadIdx.x] = 1.0f;
}

// A shuffle with a `width` that is not a power of two in [1, 32]: the emulator must fail the
// launch, even though every thread then runs to its end. Valid widths split the warp into segments.
extern "C" __global__ void shuffle_width(float* out, int width) {
    out[threadIdx.x] = __shfl_sync(0xffffffffu, (float)threadIdx.x, 0, width);
}

// A warp collective whose mask leaves out the calling lane, which CUDA does not allow: the
// emulator must fail the launch instead of waiting for a group the lane is not in.
extern "C" __global__ void ballot_mask(unsigned* out, unsigned mask) {
    out[threadIdx.x] = __ballot_sync(mask, 1);
}

// Each thread allocates `bytes`. Device `new` gives null when that fails; the emulator's host
// `new` throws, and the exception must fail the launch, not unwind out of the emulator.
extern "C" __global__ void allocate(unsigned long long* out, long long bytes) {
    char* p = new char[bytes];
    out[threadIdx.x] = (unsigned long long)p;
    delete[] p;
}
