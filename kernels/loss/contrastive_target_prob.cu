// The probability of each row's target under the contrastive logits of two models,
// softmax(((1 + lambda) z_pos - lambda z_neg) / T)[y] (cDPO's critical-token score; ops:
// dev.tokenkernels.ops.loss.ContrastiveTargetProb, CPU twin: ContrastiveTargetProbCpu).
//
// One block of 256 threads per row. The combined logits are formed in registers as each element
// of the two rows is read, fed to an online softmax and never written: each tensor is read once.
// Thread 0 re-forms the target's combined logit (two elements) for log p.
#include "online_softmax.cuh"
#include "tk_numeric.cuh"

namespace {

// x = fma(lambda, zp - zn, zp) * inv_t, rounded as the CPU rounds it (zp * inv_t at lambda 0, where
// z_neg plays no part). A class masked (-inf) in z_pos is masked, and so is one masked in z_neg when
// lambda > 0: the contrast with an impossible class has no finite meaning. NaN or +inf in either
// input gives NaN, which makes the row NaN.
__device__ __forceinline__ float contrastive_logit(const void* positive, int positive_dtype, const void* negative,
                                                  int negative_dtype, long long i, float lambda, float inv_t) {
    float zp = tk::load_float(positive, positive_dtype, i);
    float zn = tk::load_float(negative, negative_dtype, i);
    if (tk::is_nan(zp) || tk::is_nan(zn) || zp == tk::positive_infinity() || zn == tk::positive_infinity()) {
        return tk::quiet_nan();
    }
    const bool contrast = lambda > 0.0f;
    bool masked = zp == tk::negative_infinity() || (contrast && zn == tk::negative_infinity());
    if (masked) return tk::negative_infinity();
    return contrast ? __fmul_rn(fmaf(lambda, zp - zn, zp), inv_t) : __fmul_rn(zp, inv_t);
}

}  // namespace

extern "C" __global__ void __launch_bounds__(256)
    contrastive_target_prob(const void* positive, int positive_dtype, const void* negative, int negative_dtype,
                            const int* targets, float* log_prob, float* prob, long long vocab, float lambda,
                            float inv_t) {
    const long long row = blockIdx.x;
    const long long base = row * vocab;
    const int target = targets[row];
    if (target < 0) {  // ignored: not read
        if (threadIdx.x == 0) {
            log_prob[row] = 0.0f;
            prob[row] = 0.0f;
        }
        return;
    }

    tk::SoftmaxState state = tk::SoftmaxState::empty();
    bool nan = false;
    for (long long j = threadIdx.x; j < vocab; j += blockDim.x) {
        float x = contrastive_logit(positive, positive_dtype, negative, negative_dtype, base + j, lambda, inv_t);
        nan |= tk::is_nan(x);
        state.add(x);
    }
    const int any_nan = __syncthreads_or(nan);
    state = tk::block_merge(state);  // complete in thread 0
    if (threadIdx.x == 0) {
        // NaN if an element is NaN or the max is +inf, -inf for a row with every class masked.
        float lse = any_nan || state.max == tk::positive_infinity() ? tk::quiet_nan() : state.max + logf(state.sum);
        float x = contrastive_logit(positive, positive_dtype, negative, negative_dtype, base + target, lambda, inv_t);
        float lp = isfinite(lse) ? fminf(x - lse, 0.0f) : lse;
        log_prob[row] = lp;
        prob[row] = expf(lp);
    }
}
