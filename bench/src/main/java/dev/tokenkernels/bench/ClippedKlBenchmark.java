package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.DType;
import org.openjdk.jmh.annotations.Param;

/**
 * DAC-KL's band-clipped KL with its gradients: {@code ./tokenkernels jmh ClippedKlBenchmark.op -p gamma=0,0.01}.
 * It has no scalar baseline; compare with {@link DivergenceBenchmark} on the same shape.
 */
public class ClippedKlBenchmark extends WorkloadBenchmark {

    @Param({"0", "0.01"})
    public float gamma;

    @Override
    Workload workload(int rows, int vocab, DType dtype) {
        return new ClippedKlWorkload(rows, vocab, dtype, gamma);
    }
}
