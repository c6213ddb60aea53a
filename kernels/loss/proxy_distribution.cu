// The filtered proxy distribution of Lp-Reg (ops: dev.tokenkernels.ops.loss.ProxyDistribution;
// CPU twin: ProxyDistributionCpu). One block of 256 threads per row of z [N, V], x = z * inv_t:
//   1. the row max (block max);
//   2. FIXED mode only: the row's log-sum-exp, the reference of the cut;
//   3. the kept classes (x - ref >= log_threshold, or x >= max) and the sum of exp(x - max) over
//      them, block-reduced; thread 0 writes the kept log-sum-exp, the count, and the target's
//      proxy log-probability (-inf if filtered, 0 if ignored).
// x is rounded as a product (__fmul_rn: no fused multiply-add) and compared as a difference, the
// same arithmetic as the CPU: MIN_P keeps the same classes on both backends; FIXED's reference (the
// lse, summed in another order here) may differ from the CPU's in its last bits, and with it the fate
// of a class on the cut (ProxyDistribution's doc).
#include "block_reduce.cuh"
#include "tk_numeric.cuh"

namespace {

constexpr int kFixed = 1;  // ProxyDistribution.Mode.FIXED; MIN_P is 0

}  // namespace

extern "C" __global__ void __launch_bounds__(256)
    proxy_distribution(const void* logits, int dtype, const long long* targets, float* log_prob, float* kept_lse,
                       int* kept_count, long long vocab, float inv_t, float log_threshold, int mode,
                       long long ignore_index) {
    const long long row = blockIdx.x;
    const long long base = row * vocab;

    float local_max = tk::negative_infinity();
    for (long long j = threadIdx.x; j < vocab; j += blockDim.x) local_max = tk::max_nan(local_max, tk::load_float(logits, dtype, base + j));
    const float max = __fmul_rn(tk::block_max(local_max), inv_t);
    const long long y = targets[row];
    if (tk::is_nan(max) || max == tk::positive_infinity() || max == tk::negative_infinity()) {
        if (threadIdx.x == 0) {
            bool none = max == tk::negative_infinity();  // all -inf: nothing is kept
            log_prob[row] = none ? (y == ignore_index ? 0.0f : max) : tk::quiet_nan();
            kept_lse[row] = none ? max : tk::quiet_nan();
            kept_count[row] = 0;
        }
        return;
    }

    float ref = max;
    if (mode == kFixed) {
        float sum = 0.0f;
        for (long long j = threadIdx.x; j < vocab; j += blockDim.x) sum += expf(__fmul_rn(tk::load_float(logits, dtype, base + j), inv_t) - max);
        ref = max + logf(tk::block_sum(sum));
    }

    float sum = 0.0f, count = 0.0f;
    for (long long j = threadIdx.x; j < vocab; j += blockDim.x) {
        float x = __fmul_rn(tk::load_float(logits, dtype, base + j), inv_t);
        if (x - ref >= log_threshold || x - max >= 0.0f) {
            sum += expf(x - max);
            count += 1.0f;
        }
    }
    sum = tk::block_sum(sum);
    count = tk::block_sum(count);
    if (threadIdx.x == 0) {
        float lse = max + logf(sum);
        kept_lse[row] = lse;
        kept_count[row] = (int)count;
        float lp = 0.0f;
        if (y != ignore_index) {
            float x = __fmul_rn(tk::load_float(logits, dtype, base + y), inv_t);
            lp = (x - ref >= log_threshold || x - max >= 0.0f) ? x - lse : tk::negative_infinity();
        }
        log_prob[row] = lp;
    }
}
