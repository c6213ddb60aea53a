package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.DType;

/**
 * One-token rollout on peaked logits (most entries too far below the top to win a draw), and the
 * scalar baseline: {@code ./tokenkernels jmh OneTokenRolloutPeakedBenchmark}.
 */
public class OneTokenRolloutPeakedBenchmark extends WorkloadBenchmark {

    @Override
    Workload workload(int rows, int vocab, DType dtype) {
        return new OneTokenRolloutWorkload(rows, vocab, dtype, true);
    }
}
