package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.DType;

/** Target log-probabilities with the gradient, and the scalar baseline: {@code ./tokenkernels jmh TargetLogProbBenchmark}. */
public class TargetLogProbBenchmark extends WorkloadBenchmark {

    @Override
    Workload workload(int rows, int vocab, DType dtype) {
        return new TargetLogProbWorkload(rows, vocab, dtype);
    }
}
