// One-token rollout (ops: dev.tokenkernels.ops.loss.OneTokenRollout; CPU twin: OneTokenRolloutCpu):
// per counted row K exponential-race draws from softmax(z / T) (bit-identical to TokenSampler's on every
// backend), their log-probabilities, and the gradient c ((sum_k r_k) softmax(x) - sum_{k: a_k = v} r_k)
// with r_k = 1 for a draw of the ground truth, -beta otherwise, and c = gradScale w / (T K).
//
// One block of 256 threads per row: the log-sum-exp and a sweep per group of four draws
// (gumbel_max.cuh), then one sweep writes the dense part of the gradient and thread 0 takes the
// draws' rewards off at their columns (in draw order, as the CPU does).
#include "gumbel_max.cuh"
#include "tk_numeric.cuh"

extern "C" __global__ void __launch_bounds__(256)
    one_token_rollout(const void* logits, int dtype, const int* targets, const float* coefficient, float* grad,
                      int has_grad, int* samples, float* log_prob, long long vocab, float inv_t, int k, float beta,
                      long long first_position, long long seed) {
    const long long row = blockIdx.x;
    const long long base = row * vocab;
    const int target = targets[row];
    int* drawn = samples + row * k;
    float* lp = log_prob + row * k;
    float* g = has_grad ? grad + base : nullptr;

    if (target < 0) {  // does not count: not read
        for (int s = threadIdx.x; s < k; s += blockDim.x) {
            drawn[s] = -1;
            lp[s] = 0.0f;
        }
        if (g)
            for (long long j = threadIdx.x; j < vocab; j += blockDim.x) g[j] = 0.0f;
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
        if (isfinite(lse)) {
            const float x = __fmul_rn(tk::load_float(logits, dtype, base + j), inv_t);
            value = expf(fminf(x - lse, 0.0f)) * scale;
        }
        g[j] = value;
    }
    __syncthreads();  // the dense part is written before the draws' columns are corrected
    if (threadIdx.x == 0 && isfinite(lse))
        for (int s = 0; s < k; s++) g[drawn[s]] -= c * (drawn[s] == target ? 1.0f : -beta);
}
