package dev.tokenkernels.bench;

import org.openjdk.jmh.annotations.Benchmark;

/** Exact top-k token selection and its sort-based baseline: {@code ./tokenkernels jmh TokenSelectionBenchmark}. */
public class TokenSelectionBenchmark extends TokenVectorBenchmark {

    @Override
    Workload workload(int tokens) {
        return new TokenSelectionWorkload(tokens);
    }

    /** Sort-based plain Java, single thread (the threads parameter does not apply). */
    @Benchmark
    public void scalarBaseline() {
        workload.runScalar();
    }
}
