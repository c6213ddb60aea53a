// Gumbel-max sampling with Philox noise, identical on every backend (ops: TokenSampler, whose
// javadoc argues the method; CPU twin: TokenSamplerCpu). Sample k of a row at position p is
//   argmax_v ( x_v - log(-log u) ),  u from word k % 4 of Philox4x32-10(counter (v, k / 4, p_lo, p_hi), key seed),
// ties to the lowest index. x_v = z_v * inv_t and the noise are computed by the same correctly
// rounded operations as the Java code (twin_log), and (score, index) pairs combine in a total order,
// so neither the thread split nor the warp order can change a sample.
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

// The four samples of `group` (only the first `count`) at entry j with scaled logit x: each
// thread visits its entries in increasing j, so a strict > keeps a thread's lowest index.
__device__ __forceinline__ void gumbel_update(float x, long long j, int group, int count, unsigned pos_lo,
                                              unsigned pos_hi, unsigned key0, unsigned key1, float best[4],
                                              int best_i[4]) {
    if (x == negative_infinity()) return;  // never drawn (its score would be -inf)
    const Philox4 r = philox4x32_10((unsigned)j, (unsigned)group, pos_lo, pos_hi, key0, key1);
#pragma unroll
    for (int w = 0; w < 4; w++) {
        if (w < count) {
            const float log_e = twin_log(-twin_log(philox_uniform(r.v[w])));  // log of the exponential -log u
            const float score = __fsub_rn(x, log_e);
            if (score > best[w]) {
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

// One row, by the whole block: the log-sum-exp of x = z * inv_t (returned to every thread; NaN
// for a NaN or +inf in x, -inf for all -inf) and its k samples, written by thread 0 to `samples`
// (shared or global; -1 when the lse is not finite), visible to the block on return. The first
// group of four samples is drawn in the same sweep as the lse; each further group sweeps the row
// again (from L1/L2).
__device__ __forceinline__ float block_sample_row(const void* z, int dtype, long long base, long long n, float inv_t,
                                                  int k, unsigned long long position, unsigned key0, unsigned key1,
                                                  int* samples) {
    __shared__ float lse_shared;
    const unsigned pos_lo = (unsigned)position, pos_hi = (unsigned)(position >> 32);
    SoftmaxState state = SoftmaxState::empty();
    bool nan = false;
    for (int group = 0; group * 4 < k; group++) {
        const int count = k - group * 4 < 4 ? k - group * 4 : 4;
        float best[4] = {negative_infinity(), negative_infinity(), negative_infinity(), negative_infinity()};
        int best_i[4] = {kNoIndex, kNoIndex, kNoIndex, kNoIndex};
        for (long long j = threadIdx.x; j < n; j += blockDim.x) {
            const float x = __fmul_rn(load_float(z, dtype, base + j), inv_t);
            if (group == 0) {
                nan |= is_nan(x);
                state.add(x);
            }
            gumbel_update(x, j, group, count, pos_lo, pos_hi, key0, key1, best, best_i);
        }
        if (group == 0) {
            const int any_nan = __syncthreads_or(nan);
            state = block_merge(state);  // complete in thread 0
            if (threadIdx.x == 0)
                lse_shared = any_nan || state.max == positive_infinity() ? quiet_nan() : state.max + logf(state.sum);
        }
#pragma unroll
        for (int w = 0; w < 4; w++) {
            if (w < count) {
                const int winner = block_argmax(best[w], best_i[w]);
                if (threadIdx.x == 0) samples[group * 4 + w] = winner;
            }
        }
    }
    __syncthreads();
    const float lse = lse_shared;
    if (!isfinite(lse) && threadIdx.x == 0)
        for (int s = 0; s < k; s++) samples[s] = -1;
    __syncthreads();
    return lse;
}

}  // namespace tk
