package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.DType;

/** LogitStats on the CPU backend and the scalar baseline: {@code ./tokenkernels jmh LogitStatsBenchmark}. */
public class LogitStatsBenchmark extends WorkloadBenchmark {
    @Override
    Workload workload(int rows, int vocab, DType dtype) {
        return new LogitStatsWorkload(rows, vocab, dtype);
    }
}
