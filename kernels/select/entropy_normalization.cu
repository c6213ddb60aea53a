// HAPO's normalized token entropy h_hat (ops: dev.tokenkernels.ops.select.EntropyNormalization;
// CPU twin: EntropyNormalizationCpu). The pivot token comes from token_selection.cu; the host passes
// its floored entropy f_p and pivot = ln f_p (or a stored batch's, for EntropyNormalization.apply).
//
// entropy_stats: a grid-stride sweep; per block the sum of (e - pivot)^2 and the max and min of
// e - pivot over the masked tokens, written to partials[3 * block] for the host to combine in
// float64 (a fixed order, so the result does not depend on scheduling). entropy_normalize: one
// thread per token writes h_hat. A token whose floored entropy equals the pivot's gets e - pivot = 0
// exactly (from the ratio, not by subtracting two logs), on every backend whatever its logf.
#include "block_reduce.cuh"
#include "tk_numeric.cuh"

namespace {

__device__ __forceinline__ float floored(float h) { return fmaxf(h, 1e-8f); }

// e_i - pivot as EntropyNormalizationCpu.centered forms it: from the ratio w = f / f_p,
// ln(w) u / (w - 1) with u = (f - f_p) / f_p (accurate to a few ulps of itself wherever w is a normal
// float, so clustered entropies keep their order; exactly 0 for a tie), else ln f - pivot (there
// |e - pivot| > 87).
__device__ __forceinline__ float centered(float h, float pivot_entropy, float pivot) {
    const float f = floored(h);
    const float w = __fdiv_rn(f, pivot_entropy);
    if (w >= 1.17549435e-38f && w <= 3.40282347e38f) {
        const float u = __fdiv_rn(__fadd_rn(f, -pivot_entropy), pivot_entropy);
        return w == 1.0f ? 0.0f : __fmul_rn(logf(w), __fdiv_rn(u, __fadd_rn(w, -1.0f)));
    }
    return __fadd_rn(logf(f), -pivot);
}

}  // namespace

extern "C" __global__ void __launch_bounds__(256)
    entropy_stats(const float* entropy, const unsigned char* mask, int has_mask, long long n, float pivot_entropy,
                  float pivot, float* partials) {
    float sum = 0.0f, hi = tk::negative_infinity(), lo = tk::positive_infinity();
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        if (has_mask && !mask[i]) continue;
        const float d = centered(entropy[i], pivot_entropy, pivot);
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
                      float pivot_entropy, float pivot, float s, float p, float negative_scale, float* out) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float value = 0.0f;
        if (!has_mask || mask[i]) {
            const float h = centered(entropy[i], pivot_entropy, pivot) / s;
            value = h > 0.0f ? h / p : h / negative_scale;
        }
        out[i] = value;
    }
}
