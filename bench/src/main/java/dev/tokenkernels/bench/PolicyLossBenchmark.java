package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.DType;

/** The clipped policy loss with its gradient, and the scalar baseline: {@code ./tokenkernels jmh PolicyLossBenchmark}. */
public class PolicyLossBenchmark extends WorkloadBenchmark {

    @Override
    Workload workload(int rows, int vocab, DType dtype) {
        return new PolicyLossWorkload(rows, vocab, dtype);
    }
}
