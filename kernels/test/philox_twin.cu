// The reusable blocks behind bit-identical sampling (PhiloxTwinTest): Philox4x32-10 of given
// counters and keys, and twin_log / twin_exp_nonpositive, the CUDA twins of VectorMath.log / expNonPositive.
#include "philox.cuh"
#include "vector_math.cuh"

// in: 6 words per case (counter c0..c3, key k0, k1); out: the 4 output words.
extern "C" __global__ void philox_cases(const unsigned* in, unsigned* out, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned* c = in + 6 * i;
    tk::Philox4 r = tk::philox4x32_10(c[0], c[1], c[2], c[3], c[4], c[5]);
    for (int w = 0; w < 4; w++) out[4 * i + w] = r.v[w];
}

extern "C" __global__ void twin_logs(const float* in, float* out, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = tk::twin_log(in[i]);
}

extern "C" __global__ void twin_exps(const float* in, float* out, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = tk::twin_exp_nonpositive(in[i]);
}
