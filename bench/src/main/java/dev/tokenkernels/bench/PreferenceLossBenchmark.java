package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.DType;

/** DPO with its gradients on chosen/rejected pairs: {@code ./tokenkernels jmh PreferenceLossBenchmark.op}. */
public class PreferenceLossBenchmark extends WorkloadBenchmark {

    @Override
    Workload workload(int rows, int vocab, DType dtype) {
        return new PreferenceLossWorkload(rows, vocab, dtype);
    }
}
