package dev.tokenkernels.bench;

/** HAPO's and D^3S's token terms: {@code ./tokenkernels jmh TokenTermsBenchmark}. */
public class TokenTermsBenchmark extends TokenVectorBenchmark {

    @Override
    Workload workload(int tokens) {
        return new TokenTermsWorkload(tokens);
    }
}
