package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.DType;

/**
 * The clipped policy loss with its gradient stored in the logits' dtype (BF16 logits, BF16
 * gradient: half the gradient's bytes): {@code ./tokenkernels jmh PolicyLossHalfGradientBenchmark}.
 */
public class PolicyLossHalfGradientBenchmark extends WorkloadBenchmark {

    @Override
    Workload workload(int rows, int vocab, DType dtype) {
        return new PolicyLossWorkload(rows, vocab, dtype, dtype);
    }
}
