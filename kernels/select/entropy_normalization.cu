// HAPO's normalized token entropy h_hat (ops: dev.tokenkernels.ops.select.EntropyNormalization;
// CPU twin: EntropyNormalizationCpu). The pivot token comes from token_selection.cu.
//
// entropy_stats: a grid-stride sweep; per block the sum of (e - pivot)^2 and the max and min of
// e - pivot over the masked tokens, written to partials[3 * block] for the host to combine in
// float64 (a fixed order, so the result does not depend on scheduling). entropy_normalize: one
// thread per token writes h_hat. Every e, the pivot's included, comes from the same logf, so a
// token whose entropy equals the pivot's gets exactly 0.
#include "block_reduce.cuh"
#include "tk_numeric.cuh"

namespace {

__device__ __forceinline__ float log_entropy(float h) { return logf(fmaxf(h, 1e-8f)); }

}  // namespace

extern "C" __global__ void __launch_bounds__(256)
    entropy_stats(const float* entropy, const unsigned char* mask, int has_mask, long long n, long long pivot_index,
                  float* partials) {
    const float pivot = log_entropy(entropy[pivot_index]);
    float sum = 0.0f, hi = tk::negative_infinity(), lo = tk::positive_infinity();
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        if (has_mask && !mask[i]) continue;
        const float d = __fadd_rn(log_entropy(entropy[i]), -pivot);
        sum = __fadd_rn(sum, __fmul_rn(d, d));
        hi = fmaxf(hi, d);
        lo = fminf(lo, d);
    }
    sum = tk::block_sum(sum);
    hi = tk::block_max(hi);
    lo = -tk::block_max(-lo);
    if (threadIdx.x == 0) {
        partials[3 * blockIdx.x] = sum;
        partials[3 * blockIdx.x + 1] = hi;
        partials[3 * blockIdx.x + 2] = lo;
    }
}

// h = (e - pivot) / s; h_hat = h / p for h > 0, h / negative_scale otherwise (q, or -q for the
// released code's signs); 0 outside the mask.
extern "C" __global__ void __launch_bounds__(256)
    entropy_normalize(const float* entropy, const unsigned char* mask, int has_mask, long long n,
                      long long pivot_index, float s, float p, float negative_scale, float* out) {
    const float pivot = log_entropy(entropy[pivot_index]);
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float value = 0.0f;
        if (!has_mask || mask[i]) {
            const float h = __fadd_rn(log_entropy(entropy[i]), -pivot) / s;
            value = h > 0.0f ? h / p : h / negative_scale;
        }
        out[i] = value;
    }
}
