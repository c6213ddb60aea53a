package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.DType;

/** Lp-Reg's min-p proxy and the scalar baseline: {@code ./tokenkernels jmh ProxyDistributionBenchmark}. */
public class ProxyDistributionBenchmark extends WorkloadBenchmark {
    @Override
    Workload workload(int rows, int vocab, DType dtype) {
        return new ProxyDistributionWorkload(rows, vocab, dtype);
    }
}
