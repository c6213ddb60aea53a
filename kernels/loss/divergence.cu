// Divergences between student and teacher logits with the gradient w.r.t. the student
// (ops: dev.tokenkernels.ops.loss.Divergence; CPU twin: DivergenceCpu).
//
// One block of 256 threads per row, three phases over the row (re-read from L2 on a GPU):
//   A. log-sum-exp of the student and the teacher row (online softmax, merged across the block);
//   B. the divergence and the sum the gradient needs (sum_v p_v g_v), block-reduced;
//   C. the gradient coef * (p - q) for forward KL, coef * p (g - sum p g) for the others.
// Each thread writes only elements it has just read, so the gradient may alias the student
// logits (in-place update). Rows of weight 0 are not read: loss 0, gradient 0. A row without a
// distribution on either side (NaN, +inf, all -inf) gets NaN. The gradient is F32, F16 or BF16
// (grad_dtype), formed in fp32 and rounded once (tk::FloatRow).
// With a teacher filter (filter_mode >= 0) the teacher is first replaced by its Lp-Reg proxy: the
// classes ProxyDistribution drops read as -inf (same rule and arithmetic as proxy_distribution.cu).
#include "block_reduce.cuh"
#include "online_softmax.cuh"
#include "tk_numeric.cuh"

namespace {

// Values of Divergence.Kind, as the Java side passes them (dtype codes: tk_numeric.cuh).
constexpr int kForwardKl = 0, kReverseKl = 1, kJsd = 2, kTotalVariation = 3;
constexpr int kNoFilter = -1, kFilterFixed = 1;  // ProxyDistribution.Mode: MIN_P 0, FIXED 1

// 0 when the probability is 0, so that 0 * log 0 = 0.
__device__ __forceinline__ float weighted(float probability, float value) {
    return probability == 0.0f ? 0.0f : probability * value;
}

// log(beta q + (1 - beta) p); where the mixture underflows to 0 although one side is not 0 (tiny
// beta or 1 - beta), the larger of log(beta) + log q and log(1 - beta) + log p stands in for it.
__device__ __forceinline__ float log_mixture(float p, float q, float ls, float lt, float beta, float log_beta,
                                             float log_one_minus_beta) {
    float m = beta * q + (1.0f - beta) * p;
    return m != 0.0f ? logf(m) : fmaxf(lt + log_beta, ls + log_one_minus_beta);
}

// The teacher's x at column j, -inf for the classes the proxy filter drops. NaN passes, so the
// row becomes NaN.
__device__ __forceinline__ float teacher_x(const void* teacher, int dtype, long long i, float inv_t, int filter_mode,
                                           float t_ref, float t_max, float cut, const void* reference,
                                           int reference_dtype, float alpha) {
    float z = tk::load_float(teacher, dtype, i);
    // AlignDistil's extrapolated teacher z + alpha (z - z_ref), as the CPU rounds it; a class masked
    // (-inf) in the teacher or the reference is masked.
    if (reference) {
        float r = tk::load_float(reference, reference_dtype, i);
        z = (z == tk::negative_infinity() || r == tk::negative_infinity()) ? tk::negative_infinity() : fmaf(alpha, z - r, z);
    }
    float x = __fmul_rn(z, inv_t);
    if (filter_mode != kNoFilter && !(x - t_ref >= cut || x - t_max >= 0.0f) && !tk::is_nan(x))
        x = tk::negative_infinity();
    return x;
}

__device__ __forceinline__ float half_sign(float d) { return d > 0.0f ? 0.5f : (d < 0.0f ? -0.5f : 0.0f); }

}  // namespace

// Launch bounds with one block per SM as the floor: without it ptxas for sm_90 aims at full
// occupancy (32 registers) and spills; the kernel is bound by memory, not by occupancy.
extern "C" __global__ void __launch_bounds__(256, 1)
    divergence(const void* student, int student_dtype, const void* teacher, int teacher_dtype, void* grad,
               int grad_dtype, float* row_loss, const float* weights, const float* grad_coef, long long vocab,
               long long teacher_stride, float inv_t, float beta, int kind, int has_grad, int filter_mode,
               float filter_log_threshold, const void* reference, int reference_dtype, const float* alphas,
               int has_reference) {
    __shared__ float shared_lse[4];
    const long long row = blockIdx.x;
    const long long s_base = row * vocab;
    const long long t_base = row * teacher_stride;
    const tk::FloatRow g(has_grad ? grad : nullptr, grad_dtype, row * vocab);
    if (!has_reference) reference = nullptr;
    const float alpha = has_reference ? alphas[row] : 0.0f;

    if (weights[row] == 0.0f) {
        if (g)
            for (long long j = threadIdx.x; j < vocab; j += blockDim.x) g.set(j, 0.0f);
        if (threadIdx.x == 0) row_loss[row] = 0.0f;
        return;
    }

    // The proxy filter's reference points: the teacher's max, and for FIXED its log-sum-exp.
    float t_max = 0.0f, t_ref = 0.0f;
    if (filter_mode != kNoFilter) {
        float m = tk::negative_infinity();
        for (long long j = threadIdx.x; j < vocab; j += blockDim.x)
            m = tk::max_nan(m, teacher_x(teacher, teacher_dtype, t_base + j, inv_t, kNoFilter, 0.0f, 0.0f, 0.0f, reference,
                                         reference_dtype, alpha));
        t_max = t_ref = tk::block_max(m);
        if (filter_mode == kFilterFixed && isfinite(t_max)) {
            float sum = 0.0f;
            for (long long j = threadIdx.x; j < vocab; j += blockDim.x)
                sum += expf(teacher_x(teacher, teacher_dtype, t_base + j, inv_t, kNoFilter, 0.0f, 0.0f, 0.0f, reference,
                                      reference_dtype, alpha) - t_max);
            t_ref = t_max + logf(tk::block_sum(sum));
        }
    }

    // A: log-sum-exp of both rows.
    tk::SoftmaxState s_state = tk::SoftmaxState::empty(), t_state = tk::SoftmaxState::empty();
    bool nan = false;
    for (long long j = threadIdx.x; j < vocab; j += blockDim.x) {
        float xs = __fmul_rn(tk::load_float(student, student_dtype, s_base + j), inv_t);
        float xt = teacher_x(teacher, teacher_dtype, t_base + j, inv_t, filter_mode, t_ref, t_max, filter_log_threshold, reference,
                  reference_dtype, alpha);
        nan |= tk::is_nan(xs) || tk::is_nan(xt);
        s_state.add(xs);
        t_state.add(xt);
    }
    const int any_nan = __syncthreads_or(nan);
    s_state = tk::block_merge(s_state);
    t_state = tk::block_merge(t_state);
    if (threadIdx.x == 0) {
        shared_lse[0] = s_state.max;
        shared_lse[1] = logf(s_state.sum);
        shared_lse[2] = t_state.max;
        shared_lse[3] = logf(t_state.sum);
    }
    __syncthreads();
    // log p = (x - max) - log S, not x - lse: lse = max + log S would round log S to the ulp of
    // |max| (T = 1e-3: the teacher's row summed to 1 + 4.5e-5), while x - max is exact near the max.
    const float max_s = shared_lse[0], log_sum_s = shared_lse[1], max_t = shared_lse[2], log_sum_t = shared_lse[3];
    if (any_nan || !isfinite(max_s + log_sum_s) || !isfinite(max_t + log_sum_t)) {
        if (g)
            for (long long j = threadIdx.x; j < vocab; j += blockDim.x) g.set(j, tk::quiet_nan());
        if (threadIdx.x == 0) row_loss[row] = tk::quiet_nan();
        return;
    }

    // JSD's fallback when its mixture underflows (see log_mixture); computed once per thread.
    const float log_beta = kind == kJsd ? logf(beta) : 0.0f;
    const float log_one_minus_beta = kind == kJsd ? log1pf(-beta) : 0.0f;

    // B: the divergence and sum p g. Forward KL writes its gradient here: it needs nothing more.
    const float coef = has_grad ? grad_coef[row] : 0.0f;
    float first = 0.0f, second = 0.0f;
    for (long long j = threadIdx.x; j < vocab; j += blockDim.x) {
        float ls = (__fmul_rn(tk::load_float(student, student_dtype, s_base + j), inv_t) - max_s) - log_sum_s;
        float lt = (teacher_x(teacher, teacher_dtype, t_base + j, inv_t, filter_mode, t_ref, t_max, filter_log_threshold,
                              reference, reference_dtype, alpha) - max_t) - log_sum_t;
        float p = expf(ls), q = expf(lt);
        switch (kind) {
            case kForwardKl:
                first += weighted(q, lt - ls);
                if (g) g.set(j, (p - q) * coef);
                break;
            case kReverseKl: first += weighted(p, ls - lt); break;
            case kJsd: {
                float log_m = log_mixture(p, q, ls, lt, beta, log_beta, log_one_minus_beta);
                first += weighted(q, lt - log_m);
                second += weighted(p, ls - log_m);
                break;
            }
            case kTotalVariation:
            default:
                first += fabsf(p - q);
                second += p * half_sign(p - q);
                break;
        }
    }
    first = tk::block_sum(first);
    second = tk::block_sum(second);
    float loss, pg;
    switch (kind) {
        case kForwardKl: loss = pg = first; break;
        case kReverseKl: loss = pg = first; break;
        case kJsd:
            loss = beta * first + (1.0f - beta) * second;
            pg = (1.0f - beta) * second;
            break;
        case kTotalVariation:
        default:
            loss = 0.5f * first;
            pg = second;
            break;
    }
    // rounding below the lower bound 0; NaN, +inf and a -inf (a bug, not rounding) stay
    if (threadIdx.x == 0) row_loss[row] = loss < 0.0f && loss > tk::negative_infinity() ? 0.0f : loss;
    if (!g || kind == kForwardKl) return;

    // C: gradient coef * p (d(loss)/dp - sum p d(loss)/dp).
    for (long long j = threadIdx.x; j < vocab; j += blockDim.x) {
        float ls = (__fmul_rn(tk::load_float(student, student_dtype, s_base + j), inv_t) - max_s) - log_sum_s;
        float lt = (teacher_x(teacher, teacher_dtype, t_base + j, inv_t, filter_mode, t_ref, t_max, filter_log_threshold,
                              reference, reference_dtype, alpha) - max_t) - log_sum_t;
        float p = expf(ls), q = expf(lt);
        float dp;
        switch (kind) {
            case kReverseKl: dp = ls - lt; break;
            case kJsd: dp = (1.0f - beta) * (ls - log_mixture(p, q, ls, lt, beta, log_beta, log_one_minus_beta)); break;
            case kTotalVariation:
            default: dp = half_sign(p - q); break;
        }
        g.set(j, weighted(p, dp - pg) * coef);
    }
}
