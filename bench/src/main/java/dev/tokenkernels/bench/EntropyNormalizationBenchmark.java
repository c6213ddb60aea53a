package dev.tokenkernels.bench;

/** HAPO's entropy normalization: {@code ./tokenkernels jmh EntropyNormalizationBenchmark}. */
public class EntropyNormalizationBenchmark extends TokenVectorBenchmark {

    @Override
    Workload workload(int tokens) {
        return new EntropyNormalizationWorkload(tokens);
    }
}
