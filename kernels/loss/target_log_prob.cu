// The log-probability of each row's target and its gradient (c / T)(onehot(y) - softmax(x)),
// written or added to the gradient buffer (ops: dev.tokenkernels.ops.loss.TargetLogProb; CPU
// twin: TargetLogProbCpu).
//
// One block of 256 threads per row: an online softmax gives the log-sum-exp, then one sweep
// writes the gradient; the thread that owns the target column adds c / T there. Each thread
// writes only elements it has just read, so the gradient may alias the logits (not when adding).
// The gradient is F32, F16 or BF16 (grad_dtype), formed in fp32 and rounded once (tk::FloatRow).
#include "online_softmax.cuh"
#include "tk_numeric.cuh"

extern "C" __global__ void __launch_bounds__(256)
    target_log_prob(const void* logits, int dtype, const int* targets, const float* coefficients, void* grad,
                    int grad_dtype, float* log_prob, long long vocab, float inv_t, int has_grad, int accumulate) {
    const long long row = blockIdx.x;
    const long long base = row * vocab;
    const int target = targets[row];
    const tk::FloatRow g(has_grad ? grad : nullptr, grad_dtype, base);

    if (target < 0) {  // ignored: not read
        if (g && !accumulate)
            for (long long j = threadIdx.x; j < vocab; j += blockDim.x) g.set(j, 0.0f);
        if (threadIdx.x == 0) log_prob[row] = 0.0f;
        return;
    }

    const float lse = tk::block_row_lse(logits, dtype, base, vocab, inv_t);
    if (threadIdx.x == 0) {
        float x = __fmul_rn(tk::load_float(logits, dtype, base + target), inv_t);
        log_prob[row] = isfinite(lse) ? x - lse : lse;  // NaN, or -inf for a row of all -inf
    }
    if (!g) return;
    __syncthreads();  // thread 0 has read the target's logit before anyone overwrites it in place

    const float c = coefficients[row];
    if (c == 0.0f) {  // the row does not count: a zero gradient, even for a row without distribution
        if (!accumulate)
            for (long long j = threadIdx.x; j < vocab; j += blockDim.x) g.set(j, 0.0f);
        return;
    }
    for (long long j = threadIdx.x; j < vocab; j += blockDim.x) {
        float x = __fmul_rn(tk::load_float(logits, dtype, base + j), inv_t);
        float value = tk::quiet_nan();  // no distribution: nothing to differentiate
        if (isfinite(lse)) {
            value = -c * expf(fminf(x - lse, 0.0f));
            if (j == target) value += c;
            if (accumulate) value += g.get(j);
        }
        g.set(j, value);
    }
}
