package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.DType;

/**
 * The clipped policy loss with its gradient stored as BF16 (half the gradient's bytes), for F32 and
 * BF16 logits; no scalar baseline (it writes F32): {@code ./tokenkernels jmh PolicyLossHalfGradientBenchmark.op}.
 */
public class PolicyLossHalfGradientBenchmark extends WorkloadBenchmark {

    @Override
    Workload workload(int rows, int vocab, DType dtype) {
        return new PolicyLossWorkload(rows, vocab, dtype, DType.BF16);
    }
}
