// One-token rollout (ops: dev.tokenkernels.ops.loss.OneTokenRollout; CPU twin: OneTokenRolloutCpu):
// per counted row K exponential-race draws from softmax(z / T) (bit-identical to TokenSampler's on every
// backend), their log-probabilities, and the gradient c ((sum_k r_k) softmax(x) - sum_{k: a_k = v} r_k)
// with r_k = 1 for a draw of the ground truth, -beta otherwise, and c = gradScale w / (T K).
//
// One block of 256 threads per row: the log-sum-exp and a sweep per group of four draws
// (gumbel_max.cuh), then one sweep writes the dense part of the gradient and thread 0 rewrites the
// drawn columns: the dense value again, the draws' rewards taken off in draw order (as the CPU
// does), stored once. The gradient is F32, F16 or BF16 (grad_dtype), formed in fp32 and rounded
// once (tk::FloatRow).
#include "gumbel_max.cuh"
#include "tk_numeric.cuh"

// The dense part of column j's gradient, c (sum_k r_k) softmax(x)_j: the same bits wherever it is formed.
__device__ __forceinline__ float dense_gradient(const void* logits, int dtype, long long i, float inv_t, float lse,
                                                float scale) {
    const float x = __fmul_rn(tk::load_float(logits, dtype, i), inv_t);
    return expf(fminf(x - lse, 0.0f)) * scale;
}

extern "C" __global__ void __launch_bounds__(256)
    one_token_rollout(const void* logits, int dtype, const int* targets, const float* coefficient, void* grad,
                      int grad_dtype, int has_grad, int* samples, float* log_prob, long long vocab, float inv_t, int k, float beta,
                      long long first_position, long long seed) {
    const long long row = blockIdx.x;
    const long long base = row * vocab;
    const int target = targets[row];
    int* drawn = samples + row * k;
    float* lp = log_prob + row * k;
    const tk::FloatRow g(has_grad ? grad : nullptr, grad_dtype, base);

    if (target < 0) {  // does not count: not read
        for (int s = threadIdx.x; s < k; s += blockDim.x) {
            drawn[s] = -1;
            lp[s] = 0.0f;
        }
        if (g)
            for (long long j = threadIdx.x; j < vocab; j += blockDim.x) g.set(j, 0.0f);
        return;
    }

    const unsigned long long position = (unsigned long long)first_position + (unsigned long long)row;
    const float lse = tk::block_sample_row(logits, dtype, base, vocab, inv_t, k, position, (unsigned)seed,
                                           (unsigned)((unsigned long long)seed >> 32), drawn);
    float reward_sum = 0.0f;  // every thread sums the same rewards in the same order
    for (int s = 0; s < k; s++) reward_sum += drawn[s] == target ? 1.0f : -beta;
    for (int s = threadIdx.x; s < k; s += blockDim.x) {
        const int a = drawn[s];
        lp[s] = a < 0 ? tk::quiet_nan() : __fsub_rn(__fmul_rn(tk::load_float(logits, dtype, base + a), inv_t), lse);
    }
    if (!g) return;

    const float c = coefficient[row];
    const float scale = c * reward_sum;
    for (long long j = threadIdx.x; j < vocab; j += blockDim.x) {
        float value = tk::quiet_nan();  // no distribution: nothing to differentiate
        if (isfinite(lse)) value = dense_gradient(logits, dtype, base + j, inv_t, lse, scale);
        g.set(j, value);
    }
    __syncthreads();  // the dense part is written before the draws' columns are rewritten
    if (threadIdx.x != 0 || !isfinite(lse)) return;
    for (int s = 0; s < k; s++) {
        const int a = drawn[s];
        bool seen = false;  // a column drawn twice is rewritten once, at its first draw
        for (int t = 0; t < s; t++) seen |= drawn[t] == a;
        if (seen) continue;
        float value = dense_gradient(logits, dtype, base + a, inv_t, lse, scale);
        for (int t = s; t < k; t++)
            if (drawn[t] == a) value -= c * (a == target ? 1.0f : -beta);
        g.set(a, value);
    }
}
