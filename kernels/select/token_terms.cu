// Per-token terms of the RL token-selection and HAPO methods, one thread per token (ops:
// dev.tokenkernels.ops.select.TokenTerms; CPU twin: TokenTermsCpu). The _rn intrinsics keep
// every product and sum rounded on its own (no contraction into FMA), as the Java side rounds.
#include "tk_numeric.cuh"

// HAPO's adaptive temperature t0 (1 + tau clamp(h_hat, -1, 1)).
extern "C" __global__ void __launch_bounds__(256)
    adaptive_temperature(const float* h_hat, long long n, float t0, float tau, float* out) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float h = fminf(fmaxf(h_hat[i], -1.0f), 1.0f);
        out[i] = __fmul_rn(t0, __fadd_rn(1.0f, __fmul_rn(tau, h)));
    }
}

// HAPO's asymmetric adaptive clipping and differential advantage redistribution:
// h <= 0: eps_low (1 - alpha h), eps_high, inside A (1 + beta h), outside A;
// h > 0:  eps_low, eps_high (1 + alpha h), inside A, outside A (1 + beta h).
extern "C" __global__ void __launch_bounds__(256)
    adaptive_clipping(const float* h_hat, const float* advantages, long long n, float eps_low, float eps_high,
                      float alpha, float beta, float* low_out, float* high_out, float* inside, float* outside) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float h = h_hat[i], a = advantages[i];
        const float a_ent = __fmul_rn(a, __fadd_rn(1.0f, __fmul_rn(beta, h)));
        if (h > 0.0f) {
            low_out[i] = eps_low;
            high_out[i] = __fmul_rn(eps_high, __fadd_rn(1.0f, __fmul_rn(alpha, h)));
            inside[i] = a;
            outside[i] = a_ent;
        } else {
            low_out[i] = __fmul_rn(eps_low, __fadd_rn(1.0f, -__fmul_rn(alpha, h)));
            high_out[i] = eps_high;
            inside[i] = a_ent;
            outside[i] = a;
        }
    }
}

// D^3S's token score |A| H.
extern "C" __global__ void __launch_bounds__(256)
    advantage_entropy_score(const float* advantages, const float* entropy, long long n, float* out) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = __fmul_rn(fabsf(advantages[i]), entropy[i]);
}
