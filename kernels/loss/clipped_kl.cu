// DAC-KL's clipped KL with the gradients w.r.t. the student logits and the band's bounds l, u
// (ops: dev.tokenkernels.ops.loss.ClippedKl, which states the rule; CPU twin: ClippedKlCpu).
//
// One block of 256 threads per row:
//   A. max and log-sum-exp of both rows (online softmax, merged across the block);
//   B. the teacher mass per bucket of max - x (fp64: a flat teacher puts thousands of classes in
//      one bucket, and an fp32 running sum of them is off by ~1e-5, which a gate of slope
//      1 / (4 gamma) magnifies; each warp first sums its lanes of one bucket, so a bucket takes one
//      shared atomic per warp, not one per class), each bucket's start (a scan, normalized by the
//      fp64 total), the buckets whose classes need their exact order, and every other bucket's gate;
//   C. the classes of those buckets gathered into shared memory and ranked:
//      c = bucket start + mass of the gathered classes of the bucket before them, O(w^2 / 256);
//   D. the kept masses and the divergence sum; E. the gradient and the bound gradients.
// Rows with more than kRanked such classes stop after C in the first launch (pass 0) and say so
// in overflow_rows; the host launches them again (pass 1), each block with a slice of global
// scratch where C sorts the gathered (key, class) pairs instead (bitonic, O(w log^2 w / 256) per
// thread) and takes c as a segmented fp64 prefix sum over the sorted classes.
// Each thread writes only gradient elements it has just read, so the gradient may alias the
// student logits (in-place update). The gradient is F32, F16 or BF16 (grad_dtype), formed in fp32
// and rounded once (tk::FloatRow).
#include "block_reduce.cuh"
#include "online_softmax.cuh"
#include "tk_numeric.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int kBuckets = 1024;        // ClippedKl.BUCKETS
constexpr float kPerUnit = 8.0f;      // ClippedKl.BUCKETS_PER_UNIT
constexpr float kCutoff = 20.0f;      // ClippedKl.GATE_CUTOFF
constexpr int kRanked = 1024;         // ClippedKl.KERNEL_RANKED_CLASSES
constexpr double kOrderMass = 0x1p-22;  // ClippedKlCpu.REFINE_MASS
constexpr float kTinySum = 0x1p-40f;    // ClippedKlCpu.TINY_SUM: band sums below it are taken again

struct Gate {
    float g, dl, du;  // the gate and its derivatives w.r.t. l and u
};

__device__ __forceinline__ int bucket_of(float max, float x) {
    float d = (max - x) * kPerUnit;
    return d < kBuckets - 1 ? static_cast<int>(d) : kBuckets - 1;
}

// Whether a bucket of mass m starting at c needs its classes in exact order (ClippedKlCpu.needsOrder).
// Hard rule: its classes have c <= c_j < c + m, so a bound at c or past c + m splits nothing.
__device__ __forceinline__ bool needs_order(double c, double m, float l, float u, float gamma) {
    if (gamma == 0.0f) return m > 0.0 && ((c < l && l < c + m) || (u < 1.0f && c < u && u < c + m));
    double reach = static_cast<double>(kCutoff) * gamma;
    return m > kOrderMass * gamma && ((c <= l + reach && l - reach <= c + m) || (c <= u + reach && u - reach <= c + m));
}

__device__ __forceinline__ Gate gate_at(float c, float l, float u, float gamma) {
    // u = 1 passes every class of non-zero teacher probability (c < 1 in exact arithmetic, whatever
    // the rounding of c near 1); the caller gives the classes of probability 0 gate 0.
    if (gamma == 0.0f) return Gate{(l <= c && (c < u || u >= 1.0f)) ? 1.0f : 0.0f, 0.0f, 0.0f};
    float a = (c - l) / gamma, b = (u - c) / gamma;
    if (a < -kCutoff || b < -kCutoff) return Gate{0.0f, 0.0f, 0.0f};
    float ea = expf(-a), eb = expf(-b);
    float sa = 1.0f / (1.0f + ea), sb = 1.0f / (1.0f + eb);
    float g = sa * sb;
    return Gate{g, -g * (ea * sa) / gamma, g * (eb * sb) / gamma};  // 1 - s = e s, without cancellation
}

// A float sum with Kahan's compensation: offsets from a bucket's start add up to a thousand terms,
// and their rounding would move the gates (slope up to 1 / (4 gamma)).
struct CompensatedSum {
    float sum = 0.0f, carry = 0.0f;
    __device__ __forceinline__ void add(float v) {
        float y = v - carry;
        float t = sum + y;
        carry = (t - sum) - y;
        sum = t;
    }
    __device__ __forceinline__ double value() const { return static_cast<double>(sum) - carry; }
};

// Whether class (x_a, a) comes before (x_b, b): larger x first, ties by smaller index.
__device__ __forceinline__ bool before(float xa, int a, float xb, int b) {
    return xa > xb || (xa == xb && a < b);
}

// A key that sorts ascending as the teacher's order: x descending (-0.0 ties with 0.0), then the
// class index (ClippedKlCpu.descendingKey in the high word).
__device__ __forceinline__ unsigned long long order_key(float x, int j) {
    int bits = __float_as_int(x + 0.0f);
    unsigned ascending = static_cast<unsigned>(bits ^ ((bits >> 31) & 0x7fffffff)) ^ 0x80000000u;
    return (static_cast<unsigned long long>(~ascending) << 32) | static_cast<unsigned>(j);
}

// The sum of v over the lanes of `peers` (which holds the calling lane), in the group's lowest
// lane; the other lanes get partial sums. A tree over the group's ranks: in round k the lanes whose
// rank is a multiple of 2^(k+1) add the partial sum of the next remaining lane (rank + 2^k), and
// the lanes of rank bit k set drop out. Every lane of the warp must call.
__device__ __forceinline__ double sum_over_peers(unsigned peers, double v, int lane) {
    unsigned rank = __popc(peers & ((1u << lane) - 1u));
    unsigned above = peers & ~((2u << lane) - 1u);  // 2u << 31 wraps to 0: nothing above lane 31
    while (__any_sync(0xffffffffu, above != 0u)) {
        int next = __ffs(above) - 1;
        double other = __shfl_sync(0xffffffffu, v, next < 0 ? lane : next);
        if (next >= 0) v += other;
        above &= ~__ballot_sync(0xffffffffu, rank & 1u);
        rank >>= 1;
    }
    return v;
}

// One row's band as phases D and E read it: the bucket gates and the ordered classes' gates.
struct Band {
    const void* teacher;
    int teacher_dtype;
    long long base, vocab;
    float inv_t, t_max;
    long long target;
    const Gate* bucket_gate;
    const int* ranked_j;
    const float *ranked_g, *ranked_dl, *ranked_du;
    const unsigned long long* sorted_keys;  // pass 1: the ordered classes, sorted (else null)
    const float* sorted_gates;              // pass 1: their gates, 3 floats each
    int count;

    // Calls visit(j, x_t, gate) for every class once (this thread's share): first the classes
    // gated by their bucket, then the ordered ones. A class the teacher masks (x = -inf, probability
    // 0) has gate 0, whatever the rule; else a kept target has gate 1.
    template <typename Visit>
    __device__ __forceinline__ void for_each_class(Visit visit) const {
        for (long long j = threadIdx.x; j < vocab; j += kThreads) {
            float xt = x(j);
            Gate gt = bucket_gate[bucket_of(t_max, xt)];
            if (gt.g < 0.0f) continue;  // an ordered class: below
            visit(j, xt, settle(j, xt, gt));
        }
        for (int e = threadIdx.x; e < count; e += kThreads) {
            long long j;
            Gate gt;
            if (sorted_keys) {
                j = static_cast<long long>(sorted_keys[e] & 0xffffffffull);
                gt = Gate{sorted_gates[3 * e], sorted_gates[3 * e + 1], sorted_gates[3 * e + 2]};
            } else {
                j = ranked_j[e];
                gt = Gate{ranked_g[e], ranked_dl[e], ranked_du[e]};
            }
            float xt = x(j);
            visit(j, xt, settle(j, xt, gt));
        }
    }

    __device__ __forceinline__ Gate settle(long long j, float xt, Gate gt) const {
        if (xt == tk::negative_infinity()) return Gate{0.0f, 0.0f, 0.0f};
        return j == target ? Gate{1.0f, 0.0f, 0.0f} : gt;
    }

    __device__ __forceinline__ float x(long long j) const {
        return __fmul_rn(tk::load_float(teacher, teacher_dtype, base + j), inv_t);
    }
};

}  // namespace

// Two blocks per SM as the floor: left alone, ptxas for sm_80 spends 244 registers (one block per
// SM) on a kernel that waits on memory; at 126 it does not spill.
// pass 0: block i is row i; a row with more than kRanked ordered classes sets overflow_rows[row]
// to their count and writes nothing else. pass 1: block i is row row_list[i], with the keys
// sort_keys[sort_offsets[i] ..] and the gate floats sort_gates[3 sort_offsets[i] ..] as scratch,
// room for sort_offsets[i + 1] - sort_offsets[i] classes (the sort needs the count rounded up to a
// power of two; the host gives that of pass 0's count). The count may differ by a class in pass 1 (the fp64 bucket sums are atomic,
// so their rounding depends on the order): a row that no longer fits sets overflow_rows[row] to
// its count again, writes nothing else, and the host runs it once more with more room.
extern "C" __global__ void __launch_bounds__(kThreads, 2)
    clipped_kl(const void* student, int student_dtype, const void* teacher, int teacher_dtype, void* grad,
               int grad_dtype, float* row_loss, float* kept_mass, float* lower_grad, float* upper_grad,
               const float* weights, const float* grad_coef, const float* bound_coef, const float* lower,
               const float* upper,
               const int* targets, long long vocab, float inv_t, float gamma, int reverse, int has_grad, int pass,
               int* overflow_rows, const int* row_list, unsigned long long* sort_keys, float* sort_gates,
               const long long* sort_offsets) {
    __shared__ double start[kBuckets];            // mass per bucket, then each bucket's start
    __shared__ Gate bucket_gate[kBuckets];        // g < 0: the bucket's classes are ordered one by one
    __shared__ int ranked_j[kRanked];
    __shared__ float ranked_x[kRanked];           // then dg/dl
    __shared__ float ranked_p[kRanked];           // then dg/du
    __shared__ float ranked_g[kRanked];
    __shared__ double partial[kThreads];
    __shared__ double shared_total;
    __shared__ float shared_stats[4];
    __shared__ int ranked_count;

    const long long row = pass == 0 ? static_cast<long long>(blockIdx.x) : row_list[blockIdx.x];
    const long long base = row * vocab;
    const tk::FloatRow g_row(has_grad ? grad : nullptr, grad_dtype, base);
    const int tid = threadIdx.x, lane = tid & 31;
    const long long scratch_at = pass == 0 ? 0 : sort_offsets[blockIdx.x];
    const long long room = pass == 0 ? 0 : sort_offsets[blockIdx.x + 1] - scratch_at;
    unsigned long long* keys = pass == 0 ? nullptr : sort_keys + scratch_at;
    float* sorted_gates = pass == 0 ? nullptr : sort_gates + 3 * scratch_at;

    if (weights[row] == 0.0f) {
        if (g_row)
            for (long long j = tid; j < vocab; j += kThreads) g_row.set(j, 0.0f);
        if (tid == 0) {
            row_loss[row] = 0.0f;
            kept_mass[row] = 0.0f;
            if (has_grad) lower_grad[row] = upper_grad[row] = 0.0f;
        }
        return;
    }

    // A: log-sum-exp of both rows, and the teacher's max (the buckets' origin).
    tk::SoftmaxState s_state = tk::SoftmaxState::empty(), t_state = tk::SoftmaxState::empty();
    bool nan = false;
    for (long long j = tid; j < vocab; j += kThreads) {
        float xs = __fmul_rn(tk::load_float(student, student_dtype, base + j), inv_t);
        float xt = __fmul_rn(tk::load_float(teacher, teacher_dtype, base + j), inv_t);
        nan |= tk::is_nan(xs) || tk::is_nan(xt);
        s_state.add(xs);
        t_state.add(xt);
    }
    const int any_nan = __syncthreads_or(nan);
    s_state = tk::block_merge(s_state);
    t_state = tk::block_merge(t_state);
    if (tid == 0) {
        shared_stats[0] = s_state.max + logf(s_state.sum);
        shared_stats[1] = t_state.max + logf(t_state.sum);
        shared_stats[2] = t_state.max;
        shared_stats[3] = s_state.max;
        ranked_count = 0;
    }
    __syncthreads();
    const float lse_s = shared_stats[0], lse_t = shared_stats[1], t_max = shared_stats[2];
    if (any_nan || !isfinite(lse_s) || !isfinite(lse_t)) {  // no distribution on one side
        if (g_row)
            for (long long j = tid; j < vocab; j += kThreads) g_row.set(j, tk::quiet_nan());
        if (tid == 0) {
            row_loss[row] = kept_mass[row] = tk::quiet_nan();
            if (has_grad) lower_grad[row] = upper_grad[row] = tk::quiet_nan();
        }
        return;
    }
    const float l = lower[row], u = upper[row];
    const long long target = targets[row];
    auto teacher_x = [&](long long j) { return __fmul_rn(tk::load_float(teacher, teacher_dtype, base + j), inv_t); };

    // B: mass per bucket, then starts, order flags and gates (each thread scans kBuckets / kThreads).
    for (int b = tid; b < kBuckets; b += kThreads) start[b] = 0.0;
    __syncthreads();
    // Whole warps in step (lanes past the row add nothing), so the warp can match its buckets.
    for (long long j = tid; j - lane < vocab; j += kThreads) {
        const bool inside = j < vocab;
        float xt = inside ? teacher_x(j) : 0.0f;
        int b = inside ? bucket_of(t_max, xt) : -1;
        double p = inside ? static_cast<double>(expf(xt - lse_t)) : 0.0;
        unsigned peers = __match_any_sync(0xffffffffu, b);
        p = sum_over_peers(peers, p, lane);
        if (inside && lane == __ffs(peers) - 1) atomicAdd(&start[b], p);
    }
    __syncthreads();
    constexpr int kPerThread = kBuckets / kThreads;
    double local = 0.0;
    for (int k = 0; k < kPerThread; k++) local += start[tid * kPerThread + k];
    partial[tid] = local;
    __syncthreads();
    if (tid == 0) {
        double running = 0.0;
        for (int t = 0; t < kThreads; t++) {
            double m = partial[t];
            partial[t] = running;
            running += m;
        }
        shared_total = running;  // ~1; c is normalized by it, so the last class ends at 1
    }
    __syncthreads();
    const double inv_total = 1.0 / shared_total;
    double c = partial[tid];
    for (int k = 0; k < kPerThread; k++) {
        int b = tid * kPerThread + k;
        double m = start[b];
        start[b] = c * inv_total;
        bucket_gate[b] = needs_order(c * inv_total, m * inv_total, l, u, gamma)
                                 ? Gate{-1.0f, 0.0f, 0.0f}
                                 : gate_at(static_cast<float>(c * inv_total), l, u, gamma);
        c += m;
    }
    __syncthreads();

    // C: gather the classes of the ordered buckets: into shared memory (pass 0), or as sort keys
    // into the row's scratch (pass 1).
    for (long long j = tid; j < vocab; j += kThreads) {
        float xt = teacher_x(j);
        if (bucket_gate[bucket_of(t_max, xt)].g < 0.0f) {
            int slot = atomicAdd(&ranked_count, 1);
            if (keys) {
                if (slot < room) keys[slot] = order_key(xt, static_cast<int>(j));
            } else if (slot < kRanked) {
                ranked_j[slot] = static_cast<int>(j);
                ranked_x[slot] = xt;
                ranked_p[slot] = static_cast<float>(expf(xt - lse_t) * inv_total);
            }
        }
    }
    __syncthreads();
    const int count = ranked_count;
    long long padded = 1;  // the sort's length: a power of two
    while (padded < count) padded <<= 1;
    // The host runs the row again with scratch for the sort (or, in pass 1, with more of it).
    if ((!keys && count > kRanked) || (keys && padded > room)) {
        if (tid == 0) overflow_rows[row] = count;
        return;
    }
    if (!keys) {
        float rank_c[kRanked / kThreads];
        for (int e = tid, k = 0; e < count; e += kThreads, k++) {
            int b = bucket_of(t_max, ranked_x[e]);
            CompensatedSum offset;  // from the bucket's fp64 start
            for (int f = 0; f < count; f++)
                if (bucket_of(t_max, ranked_x[f]) == b && before(ranked_x[f], ranked_j[f], ranked_x[e], ranked_j[e]))
                    offset.add(ranked_p[f]);
            rank_c[k] = static_cast<float>(start[b] + offset.value());
        }
        __syncthreads();  // every rank read ranked_x and ranked_p: now they may hold the derivatives
        for (int e = tid, k = 0; e < count; e += kThreads, k++) {
            Gate gt = gate_at(rank_c[k], l, u, gamma);
            ranked_g[e] = gt.g;
            ranked_x[e] = gt.dl;
            ranked_p[e] = gt.du;
        }
    } else {
        // Bitonic sort of the keys, padded to a power of two with keys that sort last.
        for (long long e = count + tid; e < padded; e += kThreads) keys[e] = ~0ull;
        __syncthreads();
        for (long long size = 2; size <= padded; size <<= 1) {
            for (long long stride = size >> 1; stride > 0; stride >>= 1) {
                for (long long q = tid; q < padded / 2; q += kThreads) {
                    long long i = ((q & ~(stride - 1)) << 1) | (q & (stride - 1)), k = i | stride;
                    unsigned long long a = keys[i], b = keys[k];
                    if ((a > b) == ((i & size) == 0)) {  // ascending where bit `size` of i is clear
                        keys[i] = b;
                        keys[k] = a;
                    }
                }
                __syncthreads();
            }
        }
        // c of sorted class e: its bucket's start plus the mass of the sorted classes of its
        // bucket before it, an exclusive fp64 prefix sum P(e) less P at the bucket's first class.
        // Each thread takes a contiguous chunk: its sum, a scan of the sums, then two walks.
        const long long chunk = (count + kThreads - 1) / kThreads;
        const long long lo = min(static_cast<long long>(count), tid * chunk);
        const long long hi = min(static_cast<long long>(count), lo + chunk);
        auto sorted_x = [&](long long e) { return teacher_x(static_cast<long long>(keys[e] & 0xffffffffull)); };
        double sum = 0.0;
        for (long long e = lo; e < hi; e++) sum += static_cast<double>(expf(sorted_x(e) - lse_t)) * inv_total;
        partial[tid] = sum;
        __syncthreads();
        if (tid == 0) {
            double running = 0.0;
            for (int t = 0; t < kThreads; t++) {
                double m = partial[t];
                partial[t] = running;
                running += m;
            }
        }
        __syncthreads();
        double prefix = partial[tid];
        for (long long e = lo; e < hi; e++) {  // a bucket's first class: start[b] -= P(e)
            float xe = sorted_x(e);
            int b = bucket_of(t_max, xe);
            if (e == 0 || bucket_of(t_max, sorted_x(e - 1)) != b) start[b] -= prefix;
            prefix += static_cast<double>(expf(xe - lse_t)) * inv_total;
        }
        __syncthreads();
        prefix = partial[tid];
        for (long long e = lo; e < hi; e++) {
            float xe = sorted_x(e);
            Gate gt = gate_at(static_cast<float>(start[bucket_of(t_max, xe)] + prefix), l, u, gamma);
            sorted_gates[3 * e] = gt.g;
            sorted_gates[3 * e + 1] = gt.dl;
            sorted_gates[3 * e + 2] = gt.du;
            prefix += static_cast<double>(expf(xe - lse_t)) * inv_total;
        }
    }
    __syncthreads();

    const Band band{teacher, teacher_dtype, base, vocab, inv_t, t_max, target, bucket_gate, ranked_j, ranked_g,
                    ranked_x, ranked_p, keys, sorted_gates, count};

    // D: sums of e = exp(x - shift) over the band, shift the row's max: sum g e_t, sum g e_s, and
    // sum g e_t d (forward) or sum g e_s (-d) (reverse), d = (x_t - lse_t) - (x_s - lse_s); terms of
    // weight 0 add nothing. If a side's band sum is below 2^-40 there (its classes all ~28 or more
    // below the max, where e^x flushes to 0 below ~2^-124 and the band's own terms lose precision),
    // the band's own max becomes that side's shift and the sums are taken again (ClippedKlCpu's rule).
    float shift_s = shared_stats[3], shift_t = t_max;
    float kept_t = 0.0f, kept_s = 0.0f, acc = 0.0f;
    for (int attempt = 0; attempt < 2; attempt++) {
        kept_t = kept_s = acc = 0.0f;
        band.for_each_class([&](long long j, float xt, Gate gt) {
            float xs = __fmul_rn(tk::load_float(student, student_dtype, base + j), inv_t);
            // Classes outside the band may lie above a band shift: clamped, their weight 0 keeps them out.
            float gp = gt.g * expf(fminf(xt - shift_t, 0.0f)), gq = gt.g * expf(fminf(xs - shift_s, 0.0f));
            float d = (xt - lse_t) - (xs - lse_s);
            kept_t += gp;
            kept_s += gq;
            float w = reverse ? gq : gp;
            if (w != 0.0f) acc += reverse ? -w * d : w * d;
        });
        kept_t = tk::block_sum(kept_t);
        kept_s = tk::block_sum(kept_s);
        acc = tk::block_sum(acc);
        if (attempt == 1 || (kept_t >= kTinySum && kept_s >= kTinySum)) break;
        float band_s = tk::negative_infinity(), band_t = tk::negative_infinity();
        band.for_each_class([&](long long j, float xt, Gate gt) {
            if (gt.g == 0.0f) return;
            band_s = fmaxf(band_s, __fmul_rn(tk::load_float(student, student_dtype, base + j), inv_t));
            band_t = fmaxf(band_t, xt);
        });
        band_s = tk::block_max(band_s);
        band_t = tk::block_max(band_t);
        if (kept_s < kTinySum && band_s != tk::negative_infinity()) shift_s = band_s;
        if (kept_t < kTinySum && band_t != tk::negative_infinity()) shift_t = band_t;
    }

    if (kept_t == 0.0f || kept_s == 0.0f) {
        // No class of non-zero teacher probability in the band: loss 0. The student gives the band
        // no probability at all (-inf there): the divergence is +inf.
        const bool empty = kept_t == 0.0f;
        if (g_row)
            for (long long j = tid; j < vocab; j += kThreads) g_row.set(j, empty ? 0.0f : tk::quiet_nan());
        if (tid == 0) {
            row_loss[row] = empty ? 0.0f : tk::positive_infinity();
            kept_mass[row] = empty ? 0.0f : expf(logf(kept_t) + (shift_t - lse_t));
            if (has_grad) lower_grad[row] = upper_grad[row] = empty ? 0.0f : tk::quiet_nan();
        }
        return;
    }
    // log A = log(sum g e) + (shift - lse): the band's mass, without underflow. shift - lse first: added
    // to shift, log(sum g e) would round to the ulp of |shift| (at T = 0.01 the kept mass moved 3e-5).
    const float log_kept_t = logf(kept_t) + (shift_t - lse_t), log_kept_s = logf(kept_s) + (shift_s - lse_s);
    const float mean = reverse ? acc / kept_s : acc / kept_t;
    if (tid == 0) {
        kept_mass[row] = expf(log_kept_t);
        const float kl = reverse ? mean + log_kept_t - log_kept_s : mean + log_kept_s - log_kept_t;
        row_loss[row] = kl < 0.0f && kl > tk::negative_infinity() ? 0.0f : kl;  // rounding below 0; NaN, +-inf stay
    }
    if (!has_grad) return;

    // E: forward dL/dx_s = g (q / A_s - p / A_t), dL/dg = (p / A_t)(d - mean - 1) + q / A_s;
    // reverse (e = -d): dL/dx_s = (g q / A_s)(e - mean), dL/dg = (q / A_s)(e - mean - 1) + p / A_t.
    const float coef = grad_coef[row], inv_kept_t = 1.0f / kept_t, inv_kept_s = 1.0f / kept_s;
    float dl = 0.0f, du = 0.0f;
    band.for_each_class([&](long long j, float xt, Gate gt) {
        float xs = __fmul_rn(tk::load_float(student, student_dtype, base + j), inv_t);
        float pt = expf(fminf(xt - shift_t, 0.0f)) * inv_kept_t;  // p / A_t (clamped as in D: gate 0 there)
        float qs = expf(fminf(xs - shift_s, 0.0f)) * inv_kept_s;  // q / A_s
        float d = (xt - lse_t) - (xs - lse_s);
        float gradient, dldg;
        if (!reverse) {
            gradient = gt.g * (qs - pt);
            dldg = (pt == 0.0f ? 0.0f : pt * (d - mean - 1.0f)) + qs;
        } else {
            gradient = (qs == 0.0f || gt.g == 0.0f) ? 0.0f : gt.g * qs * (-d - mean);
            dldg = (qs == 0.0f ? 0.0f : qs * (-d - mean - 1.0f)) + pt;
        }
        g_row.set(j, gradient * coef);
        if (gt.dl != 0.0f) dl += dldg * gt.dl;
        if (gt.du != 0.0f) du += dldg * gt.du;
    });
    dl = tk::block_sum(dl);
    du = tk::block_sum(du);
    if (tid == 0) {
        lower_grad[row] = bound_coef[row] * dl;
        upper_grad[row] = bound_coef[row] * du;
    }
}
