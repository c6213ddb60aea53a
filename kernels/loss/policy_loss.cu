// The clipped policy loss of PPO/GRPO/DAPO, with token weights, HAPO's zones and Lp-Reg, and its gradient,
// fused per row (ops: dev.tokenkernels.ops.loss.PolicyLoss, which states the formulas; CPU twin: PolicyLossCpu).
//
// One block of 256 threads per row: an online softmax gives the log-sum-exp and the entropy (both
// relative to the max); thread 0 computes logp, the token's loss and slope dl/dlogp (in fp64, as
// the CPU does) and shares the gradient's coefficient; with a gradient, one more sweep (from L2)
// writes c (onehot - p).
// Rows that do not count (target -1) are not read: gradient 0. The gradient is F32, F16 or BF16
// (grad_dtype), formed in fp32 and rounded once (tk::FloatRow). It may be the logits themselves:
// every read of the row (the lse, thread 0's target) comes before the barrier, and after it each
// thread reads element j before it writes it.
#include "block_reduce.cuh"
#include "online_softmax.cuh"
#include "tk_numeric.cuh"

namespace {

constexpr double kLogRatioClamp = 20.0;  // PolicyLoss.LOG_RATIO_CLAMP
constexpr double kLpRegKlCap = 10.0;     // PolicyLoss.LP_REG_KL_CAP
constexpr double kLpRegLogRatioLimit = 20.0;  // PolicyLoss.LP_REG_LOG_RATIO_LIMIT: k3 > cap there

struct Token {
    double loss, slope, ratio;
};

// The per-token settings of one row (PolicyLoss.PolicyRows).
struct TokenArgs {
    float old, a, a_outside, eps_low, eps_high, reference, weight, lp_proxy;
    bool regularized;
};

// PolicyLoss.token: the formulas of the class doc for one counted token.
__device__ Token policy_token(float logp, const TokenArgs& k, float dual_clip, float cap, float beta, float lp_beta) {
    double log_ratio = static_cast<double>(logp) - k.old;
    bool clamped = fabs(log_ratio) > kLogRatioClamp;
    double r = exp(fmax(-kLogRatioClamp, fmin(kLogRatioClamp, log_ratio)));
    double dr = clamped ? 0.0 : r;
    if (r > cap) {
        r = cap;
        dr = 0.0;
    }
    // HAPO's neutral zone picks the advantage (PolicyLoss.zoneAdvantage)
    bool inside = 1.0 - 0.5 * k.eps_low < r && r < 1.0 + 0.5 * k.eps_high;
    double a = inside ? k.a : k.a_outside;
    double loss, slope;
    if (k.regularized) {  // Lp-Reg: the plain importance-weighted term
        loss = -r * a;
        slope = -a * dr;
    } else {
        double low = 1.0 - static_cast<double>(k.eps_low), high = 1.0 + static_cast<double>(k.eps_high);
        double clipped = fmax(low, fmin(high, r));
        double d_clipped = (r < low || r > high) ? 0.0 : dr;
        double unclipped_term = r * a, clipped_term = clipped * a;
        if (unclipped_term <= clipped_term) {
            loss = -unclipped_term;
            slope = -a * dr;
        } else {
            loss = -clipped_term;
            slope = -a * d_clipped;
        }
        if (dual_clip > 0.0f && a < 0.0 && loss > -static_cast<double>(dual_clip) * a) {
            loss = -static_cast<double>(dual_clip) * a;
            slope = 0.0;
        }
    }
    loss *= k.weight;
    slope *= k.weight;
    if (k.regularized) {  // Lp-Reg's k3, capped at 10 (slope 0 there); e clamped so logp = -inf gives no inf - inf
        double e = fmax(-kLpRegLogRatioLimit, fmin(kLpRegLogRatioLimit, static_cast<double>(k.lp_proxy) - logp));
        double k3 = exp(e) - e - 1.0;
        if (k3 > kLpRegKlCap) {
            loss += static_cast<double>(lp_beta) * kLpRegKlCap;
        } else {
            loss += lp_beta * k3;
            slope += lp_beta * (1.0 - exp(e));
        }
    }
    if (beta != 0.0f) {  // k3, d clamped as the log-ratio (slope 0 beyond): a masked target gives no inf - inf
        double d = static_cast<double>(k.reference) - logp;
        double clamped_d = fmax(-kLogRatioClamp, fmin(kLogRatioClamp, d));
        loss += beta * (exp(clamped_d) - clamped_d - 1.0);
        if (clamped_d == d) slope += beta * (1.0 - exp(d));
    }
    return Token{loss, slope, r};
}

}  // namespace

// One block per SM as the launch bound's floor: with none, ptxas for sm_90 holds 40 registers and
// spills around the fp64 exp calls of the token math; the kernel waits on memory, not occupancy.
extern "C" __global__ void __launch_bounds__(256, 1)
    policy_loss(const void* logits, int dtype, const int* targets, const float* old_log_prob, const float* advantages,
                const float* outside_advantages, const float* reference, int has_reference, const float* eps_low,
                const float* eps_high, float dual_clip, float ratio_cap, float kl_beta, const float* token_weights,
                const int* regularized, const float* lp_proxy, float lp_beta, const double* coefficient_scale,
                void* grad, int grad_dtype, int has_grad, float* log_prob, float* entropy, double* token_loss,
                double* ratio, long long vocab, float inv_t) {
    __shared__ float shared_coefficient;
    const long long row = blockIdx.x;
    const long long base = row * vocab;
    const int target = targets[row];
    const tk::FloatRow g(has_grad ? grad : nullptr, grad_dtype, base);

    if (target < 0) {  // not counted: not read; its outputs are 0, as on the CPU
        if (g)
            for (long long j = threadIdx.x; j < vocab; j += blockDim.x) g.set(j, 0.0f);
        if (threadIdx.x == 0) {
            log_prob[row] = entropy[row] = 0.0f;
            token_loss[row] = ratio[row] = 0.0;
        }
        return;
    }

    const tk::RowSoftmax softmax = tk::block_row_softmax(logits, dtype, base, vocab, inv_t);
    const float lse = softmax.lse;
    if (threadIdx.x == 0) {
        float x = __fmul_rn(tk::load_float(logits, dtype, base + target), inv_t);
        float logp = isfinite(lse) ? x - lse : lse;  // NaN, or -inf for a row of all -inf
        log_prob[row] = logp;
        if (!isfinite(lse)) {  // no distribution: NaN loss, statistics and gradient
            token_loss[row] = ratio[row] = tk::quiet_nan();
            entropy[row] = tk::quiet_nan();
        } else {
            TokenArgs k;
            k.old = old_log_prob[row];
            k.a = advantages[row];
            k.a_outside = outside_advantages[row];
            k.eps_low = eps_low[row];
            k.eps_high = eps_high[row];
            k.reference = has_reference ? reference[row] : 0.0f;
            k.weight = token_weights[row];
            k.lp_proxy = lp_proxy[row];
            k.regularized = regularized[row] != 0;
            Token t = policy_token(logp, k, dual_clip, ratio_cap, kl_beta, lp_beta);
            token_loss[row] = t.loss;
            ratio[row] = t.ratio;
            shared_coefficient = static_cast<float>(coefficient_scale[row] * t.slope);
            entropy[row] = softmax.entropy;
        }
    }
    __syncthreads();
    if (!isfinite(lse)) {
        if (g)
            for (long long j = threadIdx.x; j < vocab; j += blockDim.x) g.set(j, tk::quiet_nan());
        return;
    }
    if (!g) return;
    const float c = shared_coefficient;
    for (long long j = threadIdx.x; j < vocab; j += blockDim.x) {
        float p = expf(fminf(__fmul_rn(tk::load_float(logits, dtype, base + j), inv_t) - lse, 0.0f));
        g.set(j, (j == target ? c : 0.0f) - c * p);
    }
}
