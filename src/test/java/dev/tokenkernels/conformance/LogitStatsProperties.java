package dev.tokenkernels.conformance;

import dev.tokenkernels.ops.loss.LogitStats;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;

/** LogitStats on random shapes and values, every backend, against the float64 reference. */
class LogitStatsProperties {

    @Property(tries = 120)
    void matchesReference(@ForAll @IntRange(min = 1, max = 6) int rows,
                          @ForAll("vocabularies") int vocab,
                          @ForAll("temperatures") float temperature,
                          @ForAll("magnitudes") float magnitude,
                          @ForAll("dtypes") DType dtype,
                          @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] values = randomLogits(random, rows, vocab, magnitude);
        int[] targets = new int[rows];
        for (int i = 0; i < rows; i++) {
            targets[i] = random.nextInt(5) == 0 ? -100 : random.nextInt(vocab);
        }
        try (Tensor logits = Tensor.ofFloats(values, dtype, rows, vocab);
             Tensor y = Tensor.ofInts(targets, rows)) {
            float[] z = logits.toFloatArray(); // the exactly decoded inputs the reference sees
            for (Backend backend : ConformanceBackends.all()) {
                var options = LogitStats.Options.defaults().withTemperature(temperature).on(backend);
                try (LogitStats.Result r = LogitStats.compute(logits, y, options)) {
                    checkRows(backend + " " + dtype, z, rows, vocab, temperature, targets, r);
                }
            }
        }
    }

    @Property(tries = 40)
    void nanPoisonsOnlyItsRow(@ForAll @IntRange(min = 2, max = 5) int rows,
                              @ForAll("vocabularies") int vocab,
                              @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] values = randomLogits(random, rows, vocab, 10f);
        int poisoned = random.nextInt(rows);
        values[poisoned * vocab + random.nextInt(vocab)] = Float.NaN;
        int[] targets = new int[rows];
        try (Tensor logits = Tensor.of(values, rows, vocab); Tensor y = Tensor.ofInts(targets, rows)) {
            for (Backend backend : ConformanceBackends.all()) {
                try (LogitStats.Result r = LogitStats.compute(logits, y, LogitStats.Options.defaults().on(backend))) {
                    checkRows(backend.toString(), values, rows, vocab, 1f, targets, r);
                    org.junit.jupiter.api.Assertions.assertTrue(Float.isNaN(r.lse().getFloat(poisoned)));
                }
            }
        }
    }

    /** Gaussian logits of the given scale, some -inf entries, and sometimes a fully masked row. */
    static float[] randomLogits(SplittableRandom random, int rows, int vocab, float magnitude) {
        float[] values = new float[rows * vocab];
        double maskedFraction = random.nextInt(3) == 0 ? random.nextDouble() * 0.9 : 0;
        for (int i = 0; i < values.length; i++) {
            values[i] = random.nextDouble() < maskedFraction ? Float.NEGATIVE_INFINITY
                    : (float) (magnitude * gaussian(random));
        }
        if (rows > 1 && random.nextInt(4) == 0) {
            java.util.Arrays.fill(values, 0, vocab, Float.NEGATIVE_INFINITY);
        }
        return values;
    }

    private static double gaussian(SplittableRandom random) {
        double u = 1 - random.nextDouble();
        return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random.nextDouble());
    }

    static void checkRows(String where, float[] z, int rows, int vocab, float temperature, int[] targets,
                          LogitStats.Result r) {
        long valid = 0;
        for (int i = 0; i < rows; i++) {
            int offset = i * vocab;
            double[] ref = LogitStatsReference.rowStats(z, offset, vocab, temperature);
            String row = where + " V=" + vocab + " T=" + temperature + " row " + i;
            Approx.assertClose(row + " max", ref[0], r.max().getFloat(i),
                    LogitStatsReference.tolerance(ref[0], z, offset, vocab, temperature));
            Approx.assertClose(row + " lse", ref[1], r.lse().getFloat(i),
                    LogitStatsReference.tolerance(ref[1], z, offset, vocab, temperature));
            Approx.assertClose(row + " entropy", ref[2], r.entropy().getFloat(i),
                    LogitStatsReference.tolerance(ref[2], z, offset, vocab, temperature));
            double lp = LogitStatsReference.logProb(z, offset, targets[i], -100, temperature, ref[1]);
            Approx.assertClose(row + " logProb", lp, r.logProb().getFloat(i),
                    LogitStatsReference.tolerance(lp, z, offset, vocab, temperature));
            if (targets[i] != -100) {
                valid++;
            }
        }
        org.junit.jupiter.api.Assertions.assertEquals(valid, r.validTargets(), where + " validTargets");
    }

    @Provide
    Arbitrary<Integer> vocabularies() {
        return Arbitraries.oneOf(
                Arbitraries.integers().between(1, 40),
                Arbitraries.integers().between(41, 5000),
                Arbitraries.integers().between(5001, 70000),
                Arbitraries.of(1, 15, 16, 17, 2047, 2048, 2049, 32000, 32001));
    }

    @Provide
    Arbitrary<Float> temperatures() {
        return Arbitraries.oneOf(Arbitraries.of(1f, 0.5f, 2f, 0.7f), Arbitraries.floats().between(0.05f, 20f));
    }

    @Provide
    Arbitrary<Float> magnitudes() {
        return Arbitraries.of(0f, 1e-3f, 1f, 5f, 30f, 1e3f, 1e4f);
    }

    @Provide
    Arbitrary<DType> dtypes() {
        return Arbitraries.of(DType.F32, DType.F16, DType.BF16);
    }
}
