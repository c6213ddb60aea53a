// Logit statistics (ops: dev.tokenkernels.ops.loss.LogitStats): per row of z [N, V], with
// x = z * inv_t (rounded, never contracted into an fma), the max, log-sum-exp, entropy, and optionally
// log p(target).
//
// One block of 256 threads per row. Each thread streams its strided share of the row with
// 16-byte loads (when the row is 16-byte aligned) into an online softmax state; states merge by
// warp shuffles, then across warps in shared memory. The row is read once; softmax is never
// stored. Special rows follow the op's contract: any NaN -> NaN statistics; +inf -> max +inf and
// NaN otherwise; all -inf -> max = lse = -inf, entropy 0.
#include "online_softmax.cuh"
#include "tk_numeric.cuh"

namespace {

template <typename T>
__device__ __forceinline__ void logit_stats_row(const T* __restrict__ logits, const long long* __restrict__ targets,
                                                float* __restrict__ max_out, float* __restrict__ lse_out,
                                                float* __restrict__ entropy_out, float* __restrict__ logprob_out,
                                                long long vocab, float inv_t, long long ignore_index, int has_targets) {
    const long long row = blockIdx.x;
    const T* z = logits + row * vocab;
    tk::SoftmaxState state = tk::SoftmaxState::empty();
    bool nan = false;

    long long done = 0;
    if (tk::aligned16(z)) {
        constexpr int kPack = tk::Pack16<T>::kCount;
        const long long packs = vocab / kPack;
        const uint4* packed = reinterpret_cast<const uint4*>(z);
        for (long long k = threadIdx.x; k < packs; k += blockDim.x) {
            uint4 bits = packed[k];
            const T* e = reinterpret_cast<const T*>(&bits);
#pragma unroll
            for (int i = 0; i < kPack; i++) {
                float x = __fmul_rn(tk::to_float(e[i]), inv_t);
                nan |= tk::is_nan(x);
                state.add(x);
            }
        }
        done = packs * kPack;
    }
    for (long long j = done + threadIdx.x; j < vocab; j += blockDim.x) {
        float x = __fmul_rn(tk::to_float(z[j]), inv_t);
        nan |= tk::is_nan(x);
        state.add(x);
    }

    const int any_nan = __syncthreads_or(nan);
    state = tk::block_merge(state);
    if (threadIdx.x != 0) return;

    float max = state.max, lse, entropy;
    if (any_nan) {
        max = lse = entropy = tk::quiet_nan();
    } else if (max == tk::positive_infinity()) {
        lse = entropy = tk::quiet_nan();
    } else if (max == tk::negative_infinity()) {
        lse = max;
        entropy = 0.0f;
    } else {
        float log_sum = logf(state.sum);
        lse = max + log_sum;
        entropy = fmaxf(0.0f, log_sum - state.weighted / state.sum);
    }
    max_out[row] = max;
    lse_out[row] = lse;
    entropy_out[row] = entropy;
    if (has_targets) {
        long long y = targets[row];
        float lp = 0.0f;
        if (y != ignore_index) {
            float x = __fmul_rn(tk::to_float(z[y]), inv_t);
            lp = (lse == tk::negative_infinity() && x == tk::negative_infinity()) ? x : x - lse;
        }
        logprob_out[row] = lp;
    }
}

}  // namespace

// Entry points, one per input dtype (written out: the emulator and the reports find entries by name).
extern "C" __global__ void __launch_bounds__(256)
    logit_stats_f32(const float* logits, const long long* targets, float* max_out, float* lse_out, float* entropy_out,
                    float* logprob_out, long long vocab, float inv_t, long long ignore_index, int has_targets) {
    logit_stats_row(logits, targets, max_out, lse_out, entropy_out, logprob_out, vocab, inv_t, ignore_index, has_targets);
}

extern "C" __global__ void __launch_bounds__(256)
    logit_stats_f16(const tk::f16* logits, const long long* targets, float* max_out, float* lse_out, float* entropy_out,
                    float* logprob_out, long long vocab, float inv_t, long long ignore_index, int has_targets) {
    logit_stats_row(logits, targets, max_out, lse_out, entropy_out, logprob_out, vocab, inv_t, ignore_index, has_targets);
}

extern "C" __global__ void __launch_bounds__(256)
    logit_stats_bf16(const tk::bf16* logits, const long long* targets, float* max_out, float* lse_out,
                     float* entropy_out, float* logprob_out, long long vocab, float inv_t, long long ignore_index,
                     int has_targets) {
    logit_stats_row(logits, targets, max_out, lse_out, entropy_out, logprob_out, vocab, inv_t, ignore_index, has_targets);
}
