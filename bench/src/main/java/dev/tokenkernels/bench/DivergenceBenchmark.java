package dev.tokenkernels.bench;

import dev.tokenkernels.ops.loss.Divergence;
import dev.tokenkernels.runtime.DType;
import org.openjdk.jmh.annotations.Param;

/**
 * Divergence with its gradient and the scalar baseline (forward KL only):
 * {@code ./tokenkernels jmh DivergenceBenchmark -p kind=FORWARD_KL,JSD}.
 */
public class DivergenceBenchmark extends WorkloadBenchmark {

    @Param({"FORWARD_KL"})
    public String kind;

    @Override
    Workload workload(int rows, int vocab, DType dtype) {
        return new DivergenceWorkload(rows, vocab, dtype, Divergence.Kind.valueOf(kind));
    }
}
