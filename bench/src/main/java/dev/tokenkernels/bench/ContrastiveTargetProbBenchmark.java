package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.DType;

/**
 * cDPO's contrastive target probability over two logits tensors, and the scalar baseline:
 * {@code ./tokenkernels jmh ContrastiveTargetProbBenchmark}.
 */
public class ContrastiveTargetProbBenchmark extends WorkloadBenchmark {

    @Override
    Workload workload(int rows, int vocab, DType dtype) {
        return new ContrastiveTargetProbWorkload(rows, vocab, dtype);
    }
}
