package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.ProxyDistribution;
import dev.tokenkernels.ops.loss.ProxyDistribution.Mode;
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

/** ProxyDistribution on random shapes and values, every backend, against the reference. */
class ProxyDistributionProperties {

    @Property(tries = 120)
    void matchesReference(@ForAll @IntRange(min = 1, max = 6) int rows,
                          @ForAll("vocabularies") int vocab,
                          @ForAll Mode mode,
                          @ForAll("thresholds") float threshold,
                          @ForAll("temperatures") float temperature,
                          @ForAll("magnitudes") float magnitude,
                          @ForAll("dtypes") DType dtype,
                          @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] values = LogitStatsProperties.randomLogits(random, rows, vocab, magnitude);
        int[] targets = new int[rows];
        for (int i = 0; i < rows; i++) {
            targets[i] = random.nextInt(6) == 0 ? -100 : random.nextInt(vocab);
        }
        ProxyDistribution.Options options = (mode == Mode.MIN_P ? ProxyDistribution.Options.minP(threshold)
                : ProxyDistribution.Options.fixed(threshold)).withTemperature(temperature);
        try (Tensor logits = Tensor.ofFloats(values, dtype, rows, vocab); Tensor y = Tensor.ofInts(targets, rows)) {
            float[] z = logits.toFloatArray();
            for (Backend backend : ConformanceBackends.all()) {
                try (ProxyDistribution.Result r = ProxyDistribution.compute(logits, y, options.on(backend))) {
                    for (int i = 0; i < rows; i++) {
                        var ref = ProxyDistributionReference.row(z, i * vocab, vocab, mode, threshold, temperature,
                                targets[i], -100);
                        String where = backend + " " + mode + " " + threshold + " T=" + temperature + " " + dtype + " V="
                                + vocab + " row " + i;
                        check(where, ref, r.logProb().getFloat(i), r.keptLse().getFloat(i),
                                r.keptCount().segment().getAtIndex(java.lang.foreign.ValueLayout.JAVA_INT, i));
                    }
                }
            }
        }
    }

    static void check(String where, ProxyDistributionReference.Row ref, float logProb, float keptLse, int keptCount) {
        double tolerance = 1e-5 * (1 + Math.abs(ref.keptLse())) + 0x1p-21 * ref.maxAbsX();
        if (ref.ambiguous()) {
            // A class sits on the cut within rounding: only sanity is checked.
            assertTrue(keptCount >= 1 && Float.isFinite(keptLse), where + " (ambiguous row)");
            return;
        }
        assertEquals(ref.keptCount(), keptCount, where + " kept count");
        Approx.assertClose(where + " kept lse", ref.keptLse(), keptLse, tolerance);
        Approx.assertClose(where + " log-prob", ref.logProb(), logProb, tolerance);
    }

    @Provide
    Arbitrary<Integer> vocabularies() {
        return Arbitraries.oneOf(Arbitraries.integers().between(1, 40), Arbitraries.integers().between(41, 5000),
                Arbitraries.integers().between(5001, 40000), Arbitraries.of(1, 15, 16, 17, 255, 256, 257));
    }

    @Provide
    Arbitrary<Float> thresholds() {
        return Arbitraries.oneOf(Arbitraries.of(0.02f, 1e-4f, 0.1f, 0.5f, 1f), Arbitraries.floats().between(1e-6f, 1f).ofScale(7));
    }

    @Provide
    Arbitrary<Float> temperatures() {
        return Arbitraries.oneOf(Arbitraries.of(1f, 0.6f, 1.5f), Arbitraries.floats().between(0.1f, 10f));
    }

    @Provide
    Arbitrary<Float> magnitudes() {
        return Arbitraries.of(0f, 0.1f, 1f, 4f, 20f, 300f);
    }

    @Provide
    Arbitrary<DType> dtypes() {
        return Arbitraries.of(DType.F32, DType.F16, DType.BF16);
    }
}
