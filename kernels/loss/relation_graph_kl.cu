// Token relationship graph KL with the gradient w.r.t. the student features (ops:
// dev.tokenkernels.ops.loss.RelationGraphKl, which states the semantics; CPU twin:
// RelationGraphKlCpu). Two kernels, one block of 256 threads per (sequence, row), rows flat as
// b * tokens + i; no [L, L] matrix exists anywhere:
//   relation_graph_rows: row i's similarities on both sides, folded into online softmax
//     statistics as they come (no row buffer), then the row's KL and its log-sum-exps, which are
//     kept for the gradient;
//   relation_graph_grad: row k's similarities again, and per column
//     c_j = coef (P_s(k,j) - P_t(k,j) + P_s(j,k) - P_t(j,k)) / max(||h_j||, eps) (S(j,k) = S(k,j); row
//     j's log-sum-exps from the first kernel) into shared memory, kTile columns at a time; threads
//     over the features then add sum_j c_j h_j into the block's own gradient row, columns in
//     order (deterministic, no atomics), and finally project it off u_k.
// Warps take columns, lanes take features: a column's dot products with the row and its own
// squared norms come from one coalesced loop and one warp reduction, so no norm pass exists. A
// column's squared norm is computed by exactly the same code whichever row asks, and the row's
// own by that code too, so every block sees the same bits for a token's norm, and S(k,j) and
// S(j,k) are equal bit for bit (fmaf(a, b, acc) = fmaf(b, a, acc); the norms enter as a product).
#include "block_reduce.cuh"
#include "tk_numeric.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 64;              // RelationGraphKl.KERNEL_COLUMN_TILE
// Four resident blocks per SM cap the kernels at 64 registers, which they fit without spills;
// with no minimum, ptxas chose 48 registers for the gradient kernel on sm_80 and spilled.
constexpr int kBlocksPerSm = 4;
constexpr float kNormEpsilon = 1e-8f;  // RelationGraphKl.NORM_EPSILON

// One side's features: element d of token t (flat over the batch) is at t * dim + d.
struct Features {
    const void* base;
    int dtype;
    long long dim;

    __device__ __forceinline__ float at(long long token, long long d) const {
        return tk::load_float(base, dtype, token * dim + d);
    }
};

// For a row token r and a column token c: r . c and c . c, student then teacher.
struct Pair {
    float dot_s, norm2_s, dot_t, norm2_t;
};

// Sums the four values of every lane over the warp with 10 shuffles instead of 20: two halving
// exchanges leave each lane one value summed over 4 lanes (which one: lane bits 4 and 3), three
// butterfly steps finish the sums, and four broadcasts give every lane all four. The additions
// happen in the same order on every call.
__device__ __forceinline__ Pair warp_sum(Pair p) {
    const unsigned lane = threadIdx.x % 32;
    const bool upper = (lane & 16) != 0, odd = (lane & 8) != 0;
    float keep0 = upper ? p.dot_t : p.dot_s, keep1 = upper ? p.norm2_t : p.norm2_s;
    const float give0 = upper ? p.dot_s : p.dot_t, give1 = upper ? p.norm2_s : p.norm2_t;
    keep0 += __shfl_xor_sync(0xffffffffu, give0, 16);
    keep1 += __shfl_xor_sync(0xffffffffu, give1, 16);
    float keep = odd ? keep1 : keep0;
    keep += __shfl_xor_sync(0xffffffffu, odd ? keep0 : keep1, 8);
    for (int offset = 4; offset > 0; offset >>= 1) keep += __shfl_xor_sync(0xffffffffu, keep, offset);
    return Pair{__shfl_sync(0xffffffffu, keep, 0), __shfl_sync(0xffffffffu, keep, 8),
                __shfl_sync(0xffffffffu, keep, 16), __shfl_sync(0xffffffffu, keep, 24)};
}

// Row token r against column token c on both sides; the whole warp calls, every lane gets the sums.
__device__ __forceinline__ Pair pair_sums(const Features& s, const Features& t, long long r, long long c) {
    const long long lane = threadIdx.x % 32;
    Pair p{0.0f, 0.0f, 0.0f, 0.0f};
    for (long long d = lane; d < s.dim; d += 32) {
        const float a = s.at(r, d), b = s.at(c, d);
        p.dot_s = fmaf(a, b, p.dot_s);
        p.norm2_s = fmaf(b, b, p.norm2_s);
    }
    for (long long d = lane; d < t.dim; d += 32) {
        const float a = t.at(r, d), b = t.at(c, d);
        p.dot_t = fmaf(a, b, p.dot_t);
        p.norm2_t = fmaf(b, b, p.norm2_t);
    }
    return warp_sum(p);
}

// 1 / max(|h|, eps) as rsqrt(max(|h|^2, eps^2)): within 2 ulp, and unlike an IEEE division or
// square root it has no slow-path subroutine, whose call made ptxas save the column loop's live
// registers to the stack (reported as spills).
__device__ __forceinline__ float inv_norm(float norm2) {
    return rsqrtf(fmaxf(norm2, kNormEpsilon * kNormEpsilon));
}

// S = (h_r . h_c) / (max(|h_r|, eps) max(|h_c|, eps)) / tau, symmetric in r and c.
__device__ __forceinline__ float similarity(float dot, float inv_norm_r, float inv_norm_c, float inv_t) {
    return __fmul_rn(dot * (inv_norm_r * inv_norm_c), inv_t);  // rounded: rows and their lse use the same S
}

// Online softmax statistics of a row on both sides (Milakov & Gimelshein, 2018): running maxima,
// sum exp(S - max) per side, and cross = sum exp(S_t - max_t)(S_t - S_s) for the KL. Plain data
// (it lives in shared memory); -inf maxima mean no column yet.
struct RowStats {
    float max_s, sum_s, max_t, sum_t, cross;

    __device__ __forceinline__ void add(float ss, float st) {
        if (ss > max_s) {
            sum_s = sum_s * expf(max_s - ss) + 1.0f;
            max_s = ss;
        } else {
            sum_s += expf(ss - max_s);
        }
        const float y = st - ss;
        if (st > max_t) {
            const float scale = expf(max_t - st);
            sum_t = sum_t * scale + 1.0f;
            cross = cross * scale + y;
            max_t = st;
        } else {
            const float e = expf(st - max_t);
            sum_t += e;
            cross = fmaf(e, y, cross);
        }
    }

    __device__ __forceinline__ void merge(const RowStats& o) {
        if (o.max_s > max_s) {
            sum_s = sum_s * expf(max_s - o.max_s) + o.sum_s;
            max_s = o.max_s;
        } else if (o.max_s != tk::negative_infinity()) {
            sum_s += o.sum_s * expf(o.max_s - max_s);
        }
        if (o.max_t > max_t) {
            const float scale = expf(max_t - o.max_t);
            sum_t = sum_t * scale + o.sum_t;
            cross = cross * scale + o.cross;
            max_t = o.max_t;
        } else if (o.max_t != tk::negative_infinity()) {
            const float scale = expf(o.max_t - max_t);
            sum_t += o.sum_t * scale;
            cross += o.cross * scale;
        }
    }
};

}  // namespace

// Pass 1: per valid row, loss = KL(P_t || P_s) and the log-sum-exps; padding rows get loss 0. A
// token of the sequence with a non-finite squared norm (either side) makes every row NaN.
extern "C" __global__ void __launch_bounds__(kThreads, kBlocksPerSm)
    relation_graph_rows(const void* student, int student_dtype, long long student_dim, const void* teacher,
                        int teacher_dtype, long long teacher_dim, const int* lengths, float* row_loss, float* lse_s,
                        float* lse_t, long long tokens, float inv_t, int self_loops) {
    __shared__ RowStats warp_stats[kWarps];
    const long long row = blockIdx.x, b = row / tokens, i = row - b * tokens;
    const long long n = lengths[b], first = b * tokens;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    if (i >= n) {
        if (tid == 0) {
            row_loss[row] = 0.0f;
            lse_s[row] = lse_t[row] = 0.0f;
        }
        return;
    }
    const Features s{student, student_dtype, student_dim}, t{teacher, teacher_dtype, teacher_dim};
    const Pair own = pair_sums(s, t, first + i, first + i);  // every warp: no barrier needed
    const float inv_norm_s = inv_norm(own.norm2_s), inv_norm_t = inv_norm(own.norm2_t);
    bool bad = !isfinite(own.norm2_s) || !isfinite(own.norm2_t);
    RowStats stats{tk::negative_infinity(), 0.0f, tk::negative_infinity(), 0.0f, 0.0f};
    for (long long j = warp; j < n; j += kWarps) {
        const Pair p = pair_sums(s, t, first + i, first + j);
        bad |= !isfinite(p.norm2_s) || !isfinite(p.norm2_t);
        if (j == i && !self_loops) continue;
        stats.add(similarity(p.dot_s, inv_norm_s, inv_norm(p.norm2_s), inv_t),
                  similarity(p.dot_t, inv_norm_t, inv_norm(p.norm2_t), inv_t));
    }
    if (lane == 0) warp_stats[warp] = stats;
    const int any_bad = __syncthreads_or(bad);  // also the barrier before warp_stats is read
    if (tid != 0) return;
    if (any_bad) {
        row_loss[row] = lse_s[row] = lse_t[row] = tk::quiet_nan();
        return;
    }
    RowStats all = warp_stats[0];
    for (int w = 1; w < kWarps; w++) all.merge(warp_stats[w]);
    if (all.max_t == tk::negative_infinity()) {  // no column: a lone token without self-loops
        row_loss[row] = 0.0f;
        lse_s[row] = lse_t[row] = tk::negative_infinity();
        return;
    }
    const float ls = all.max_s + logf(all.sum_s), lt = all.max_t + logf(all.sum_t);
    lse_s[row] = ls;
    lse_t[row] = lt;
    // sum_j P_t(j) ((S_t(j) - lse_t) - (S_s(j) - lse_s)) = cross / sum_t - (lse_t - lse_s).
    row_loss[row] = all.cross / all.sum_t - (lt - ls);
}

// Pass 2: per valid row k, dL/dh_k = (g - (u_k . g) u_k) / |h_k| with g = sum_j c_j h_j (or g / eps
// below the norm floor); padding rows get 0, rows of a NaN sequence (NaN log-sum-exps) NaN.
extern "C" __global__ void __launch_bounds__(kThreads, kBlocksPerSm)
    relation_graph_grad(const void* student, int student_dtype, long long student_dim, const void* teacher,
                        int teacher_dtype, long long teacher_dim, const int* lengths, const float* lse_s,
                        const float* lse_t, float* grad, long long tokens, float inv_t, float coef, int self_loops) {
    __shared__ float column_coef[kTile];
    const long long row = blockIdx.x, b = row / tokens, k = row - b * tokens;
    const long long n = lengths[b], first = b * tokens;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    float* g = grad + row * student_dim;
    if (k >= n) {
        for (long long d = tid; d < student_dim; d += kThreads) g[d] = 0.0f;
        return;
    }
    const float row_lse_s = lse_s[row], row_lse_t = lse_t[row];
    if (tk::is_nan(row_lse_s) || tk::is_nan(row_lse_t)) {
        for (long long d = tid; d < student_dim; d += kThreads) g[d] = tk::quiet_nan();
        return;
    }
    const Features s{student, student_dtype, student_dim}, t{teacher, teacher_dtype, teacher_dim};
    const Pair own = pair_sums(s, t, first + k, first + k);
    const float inv_norm_s = inv_norm(own.norm2_s), inv_norm_t = inv_norm(own.norm2_t);
    for (long long tile = 0; tile < n; tile += kTile) {
        const int width = n - tile < kTile ? static_cast<int>(n - tile) : kTile;
        for (int e = warp; e < width; e += kWarps) {
            const long long j = tile + e;
            const Pair p = pair_sums(s, t, first + k, first + j);
            float c = 0.0f;
            if (j != k || self_loops) {  // a row without columns (lse = -inf) never gets here
                const float inv_norm_j = inv_norm(p.norm2_s);
                const float ss = similarity(p.dot_s, inv_norm_s, inv_norm_j, inv_t);
                const float st = similarity(p.dot_t, inv_norm_t, inv_norm(p.norm2_t), inv_t);
                const float forward = expf(ss - row_lse_s) - expf(st - row_lse_t);
                const float backward = expf(ss - lse_s[first + j]) - expf(st - lse_t[first + j]);
                c = coef * (forward + backward) * inv_norm_j;
            }
            if (lane == 0) column_coef[e] = c;
        }
        __syncthreads();
        // Each thread owns features d = tid + m * kThreads of the row: it alone reads and writes them.
        for (long long d = tid; d < student_dim; d += kThreads) {
            float acc = tile == 0 ? 0.0f : g[d];
            for (int e = 0; e < width; e++) acc = fmaf(column_coef[e], s.at(first + tile + e, d), acc);
            g[d] = acc;
        }
        __syncthreads();  // the next tile overwrites column_coef
    }
    float along = 0.0f;
    for (long long d = tid; d < student_dim; d += kThreads) along = fmaf(s.at(first + k, d), g[d], along);
    along = tk::block_sum(along) * inv_norm_s;  // u_k . g
    const bool projected = own.norm2_s >= kNormEpsilon * kNormEpsilon;
    for (long long d = tid; d < student_dim; d += kThreads) {
        float v = g[d];
        if (projected) v -= along * (s.at(first + k, d) * inv_norm_s);
        g[d] = v * inv_norm_s;
    }
}
