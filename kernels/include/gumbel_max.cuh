// Sampling by an exponential race with Philox noise (equivalent in distribution to Gumbel-max),
// identical on every backend (ops: TokenSampler, whose javadoc argues the method; CPU twin:
// TokenSamplerCpu). Sample k of a row at position p, with m the row's largest x, is
//   argmin_v ( E * r_v ),  E = -log u,  r_v = 1 / e^(x_v - m),
// u from word k % 4 of Philox4x32-10(counter (v, k / 4, p_lo, p_hi), key seed), ties to the lowest
// index. x_v = z_v * inv_t, E and r_v are computed by the same correctly rounded operations as the
// Java code (twin_log, twin_exp_nonpositive), and (score, index) pairs combine in a total order, so
// neither the thread split nor the warp order can change a sample.
#pragma once
#include "online_softmax.cuh"
#include "philox.cuh"
#include "tk_numeric.cuh"
#include "vector_math.cuh"

namespace tk {

constexpr int kNoIndex = 0x7fffffff;

// Whether (s, i) beats (best, best_i): higher score, or the same score at a lower index.
__device__ __forceinline__ bool gumbel_better(float s, int i, float best, int best_i) {
    return s > best || (s == best && i < best_i);
}

// The four samples of `group` (only the first `count`) at entry j with r = 1 / e^(x - m): each
// thread visits its entries in increasing j, so a strict < keeps a thread's lowest index.
__device__ __forceinline__ void race_update(float r, long long j, int group, int count, unsigned pos_lo,
                                            unsigned pos_hi, unsigned key0, unsigned key1, float best[4],
                                            int best_i[4]) {
    const Philox4 r4 = philox4x32_10((unsigned)j, (unsigned)group, pos_lo, pos_hi, key0, key1);
#pragma unroll
    for (int w = 0; w < 4; w++) {
        if (w < count) {
            const float score = __fmul_rn(-twin_log(philox_uniform(r4.v[w])), r);  // E * r
            if (score < best[w]) {
                best[w] = score;
                best_i[w] = (int)j;
            }
        }
    }
}

// The block's best (score, index): valid in thread 0. Every thread must call; calls may follow
// each other (each begins with a barrier that protects the previous call's slots).
__device__ __forceinline__ int block_argmax(float score, int index) {
    __shared__ float slot_score[32];
    __shared__ int slot_index[32];
    const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int offset = 16; offset > 0; offset >>= 1) {
        float s = __shfl_xor_sync(0xffffffffu, score, offset);
        int i = __shfl_xor_sync(0xffffffffu, index, offset);
        if (gumbel_better(s, i, score, index)) {
            score = s;
            index = i;
        }
    }
    __syncthreads();
    if (lane == 0) {
        slot_score[warp] = score;
        slot_index[warp] = index;
    }
    __syncthreads();
    if (warp == 0) {
        const bool used = lane < (blockDim.x + 31) / 32;
        score = used ? slot_score[lane] : negative_infinity();
        index = used ? slot_index[lane] : kNoIndex;
        for (int offset = 16; offset > 0; offset >>= 1) {
            float s = __shfl_xor_sync(0xffffffffu, score, offset);
            int i = __shfl_xor_sync(0xffffffffu, index, offset);
            if (gumbel_better(s, i, score, index)) {
                score = s;
                index = i;
            }
        }
    }
    return index;
}

// No exponential -log u is below kMinExponential (about 5.96e-8 at u = 1 - 2^-24; TwinLogTest
// checks all 2^23). An entry with d = x - m < -(log(T / kMinExponential) + kRaceMargin), where T
// is a score the top entry reaches in every sample of the group, has kMinExponential * r > T (the
// margin covers the rounding of e^d, 1 / w and the product many times over), so by monotone
// rounding it scores above every winner and can neither win nor tie (TokenSamplerCpu skips the
// same entries; the cut need not be bit-identical, only safe).
constexpr float kMinExponential = 5.9e-8f;
constexpr float kRaceMargin = 0.01f;

// One row, by the whole block: the log-sum-exp of x = z * inv_t (returned to every thread; NaN
// for a NaN or +inf in x, -inf for all -inf) and its k samples, written by thread 0 to `samples`
// (shared or global; -1 when the lse is not finite), visible to the block on return. A first
// sweep takes the lse and the row's first largest entry; each group of four samples then sweeps
// the row again (from L1/L2), drawing noise only for the entries that pass the skip rule above
// (on peaked rows, most of the vocabulary costs one comparison). Skipping changes no draw, so the samples stay bit-identical to the CPU's.
__device__ __forceinline__ float block_sample_row(const void* z, int dtype, long long base, long long n, float inv_t,
                                                  int k, unsigned long long position, unsigned key0, unsigned key1,
                                                  int* samples) {
    __shared__ float lse_shared;
    __shared__ int top_shared;
    const unsigned pos_lo = (unsigned)position, pos_hi = (unsigned)(position >> 32);
    SoftmaxState state = SoftmaxState::empty();
    bool nan = false;
    float top_x = negative_infinity();
    int top_i = kNoIndex;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) {
        const float x = __fmul_rn(load_float(z, dtype, base + j), inv_t);
        nan |= is_nan(x);
        state.add(x);
        if (x > top_x) {  // strict: a thread keeps its first index of its largest x
            top_x = x;
            top_i = (int)j;
        }
    }
    const int any_nan = __syncthreads_or(nan);
    state = block_merge(state);                 // complete in thread 0
    const int top = block_argmax(top_x, top_i);  // the first index of the largest x, in thread 0
    if (threadIdx.x == 0) {
        lse_shared = any_nan || state.max == positive_infinity() ? quiet_nan() : state.max + logf(state.sum);
        top_shared = top;
    }
    __syncthreads();
    const float lse = lse_shared;
    if (!isfinite(lse)) {  // no distribution: nothing to draw
        if (threadIdx.x == 0)
            for (int s = 0; s < k; s++) samples[s] = -1;
        __syncthreads();
        return lse;
    }
    const int top_index = top_shared;
    const float x_top = __fmul_rn(load_float(z, dtype, base + top_index), inv_t);
    for (int group = 0; group * 4 < k; group++) {
        const int count = k - group * 4 < 4 ? k - group * 4 : 4;
        // The largest score of the top entry over the group's samples: every winner scores at most this.
        const Philox4 r4 = philox4x32_10((unsigned)top_index, (unsigned)group, pos_lo, pos_hi, key0, key1);
        const float r_top = __fdiv_rn(1.0f, twin_exp_nonpositive(0.0f));
        float threshold = 0.0f;
#pragma unroll
        for (int w = 0; w < 4; w++) {
            if (w < count) threshold = fmaxf(threshold, __fmul_rn(-twin_log(philox_uniform(r4.v[w])), r_top));
        }
        const float cut = -(logf(threshold) - logf(kMinExponential) + kRaceMargin);
        float best[4] = {positive_infinity(), positive_infinity(), positive_infinity(), positive_infinity()};
        int best_i[4] = {kNoIndex, kNoIndex, kNoIndex, kNoIndex};
        for (long long j = threadIdx.x; j < n; j += blockDim.x) {
            const float d = __fsub_rn(__fmul_rn(load_float(z, dtype, base + j), inv_t), x_top);
            if (!(d >= cut)) continue;  // cannot win or tie (also skips -inf)
            race_update(__fdiv_rn(1.0f, twin_exp_nonpositive(d)), j, group, count, pos_lo, pos_hi, key0, key1, best,
                        best_i);
        }
#pragma unroll
        for (int w = 0; w < 4; w++) {
            if (w < count) {
                // -score is exact: the argmax of (-score, lowest index) is the argmin of (score, lowest index).
                const int winner = block_argmax(-best[w], best_i[w]);
                if (threadIdx.x == 0) samples[group * 4 + w] = winner;
            }
        }
    }
    __syncthreads();
    return lse;
}

}  // namespace tk
