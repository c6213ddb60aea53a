// K samples per row from softmax(z / T) by an exponential race with Philox noise, and their
// log-probabilities (ops: dev.tokenkernels.ops.loss.TokenSampler; CPU twin: TokenSamplerCpu).
// One block of 256 threads per row; the samples are bit-identical to the CPU's (gumbel_max.cuh).
#include "gumbel_max.cuh"
#include "tk_numeric.cuh"

extern "C" __global__ void __launch_bounds__(256)
    token_sampler(const void* logits, int dtype, const int* drawn, int* samples, float* log_prob, long long vocab,
                  float inv_t, int k, long long first_position, long long seed) {
    const long long row = blockIdx.x;
    const long long base = row * vocab;
    int* out = samples + row * k;
    float* lp = log_prob + row * k;
    if (!drawn[row]) {
        for (int s = threadIdx.x; s < k; s += blockDim.x) {
            out[s] = -1;
            lp[s] = 0.0f;
        }
        return;
    }
    const unsigned long long position = (unsigned long long)first_position + (unsigned long long)row;
    const float lse = tk::block_sample_row(logits, dtype, base, vocab, inv_t, k, position, (unsigned)seed,
                                           (unsigned)((unsigned long long)seed >> 32), out);
    for (int s = threadIdx.x; s < k; s += blockDim.x) {
        const int a = out[s];
        lp[s] = a < 0 ? tk::quiet_nan() : __fsub_rn(__fmul_rn(tk::load_float(logits, dtype, base + a), inv_t), lse);
    }
}
