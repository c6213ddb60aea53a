package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.DType;

/** AlignDistil's loss and gradient (three logits tensors): {@code ./tokenkernels jmh AlignDistilBenchmark.op}. */
public class AlignDistilBenchmark extends WorkloadBenchmark {
    @Override
    Workload workload(int rows, int vocab, DType dtype) {
        return new AlignDistilWorkload(rows, vocab, dtype);
    }
}
