package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.DType;

/** One-token rollout with its gradient, and the scalar baseline: {@code ./tokenkernels jmh OneTokenRolloutBenchmark}. */
public class OneTokenRolloutBenchmark extends WorkloadBenchmark {

    @Override
    Workload workload(int rows, int vocab, DType dtype) {
        return new OneTokenRolloutWorkload(rows, vocab, dtype);
    }
}
