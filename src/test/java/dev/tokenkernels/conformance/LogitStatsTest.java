package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.LogitStats;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.BackendUnavailableException;
import dev.tokenkernels.runtime.Backends;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import org.junit.jupiter.api.Test;

/** Worked examples, the documented special rows, and bad inputs of LogitStats. */
class LogitStatsTest {

    @Test
    void workedExample() {
        // Row 0: p = (1/4, 3/4): lse = ln 4, H = -(1/4 ln 1/4 + 3/4 ln 3/4). Row 1 at T = 2 halves the logits.
        float ln3 = (float) Math.log(3);
        try (Tensor z = Tensor.of(new float[] {0, ln3, 0, 2 * ln3}, 2, 2);
             Tensor y = Tensor.ofLongs(new long[] {1, 0}, 2)) {
            for (Backend backend : ConformanceBackends.all()) {
                try (var r = LogitStats.compute(z, y, LogitStats.Options.defaults().on(backend))) {
                    double h = -(0.25 * Math.log(0.25) + 0.75 * Math.log(0.75));
                    Approx.assertClose("lse", Math.log(4), r.lse().getFloat(0), 1e-6);
                    Approx.assertClose("entropy", h, r.entropy().getFloat(0), 1e-6);
                    Approx.assertClose("logProb", Math.log(0.75), r.logProb().getFloat(0), 1e-6);
                    Approx.assertClose("max", 2 * Math.log(3), r.max().getFloat(1), 1e-6);
                    assertEquals(2, r.validTargets());
                }
                try (var r = LogitStats.compute(z, y, LogitStats.Options.defaults().withTemperature(2f).on(backend))) {
                    Approx.assertClose("lse at T=2", Math.log(4), r.lse().getFloat(1), 1e-6);
                    Approx.assertClose("logProb at T=2", Math.log(0.25), r.logProb().getFloat(1), 1e-6);
                }
            }
        }
    }

    @Test
    void fullyMaskedRowIsDefined() {
        float inf = Float.NEGATIVE_INFINITY;
        try (Tensor z = Tensor.of(new float[] {inf, inf, inf, 1, inf, 1}, 2, 3);
             Tensor y = Tensor.ofInts(new int[] {2, 1}, 2)) {
            for (Backend backend : ConformanceBackends.all()) {
                try (var r = LogitStats.compute(z, y, LogitStats.Options.defaults().on(backend))) {
                    assertEquals(inf, r.max().getFloat(0));
                    assertEquals(inf, r.lse().getFloat(0));
                    assertEquals(0f, r.entropy().getFloat(0));
                    assertEquals(inf, r.logProb().getFloat(0));
                    // A masked class in an ordinary row has probability 0.
                    Approx.assertClose("lse", 1 + Math.log(2), r.lse().getFloat(1), 1e-6);
                    Approx.assertClose("entropy", Math.log(2), r.entropy().getFloat(1), 1e-6);
                    assertEquals(inf, r.logProb().getFloat(1));
                }
            }
        }
    }

    @Test
    void positiveInfinityGivesInfiniteMaxAndNaNStatistics() {
        try (Tensor z = Tensor.of(new float[] {0, Float.POSITIVE_INFINITY, 1}, 1, 3)) {
            for (Backend backend : ConformanceBackends.all()) {
                try (var r = LogitStats.compute(z, null, LogitStats.Options.defaults().on(backend))) {
                    assertEquals(Float.POSITIVE_INFINITY, r.max().getFloat(0));
                    assertTrue(Float.isNaN(r.lse().getFloat(0)));
                    assertTrue(Float.isNaN(r.entropy().getFloat(0)));
                    assertEquals(null, r.logProb());
                }
            }
        }
    }

    @Test
    void ignoredTargetsGiveZeroAndAreNotCounted() {
        try (Tensor z = Tensor.of(new float[] {1, 2, 3, 4, 5, 6}, 2, 3);
             Tensor y = Tensor.ofInts(new int[] {7, 2}, 2)) {
            var options = LogitStats.Options.defaults().withIgnoreIndex(7);
            try (var r = LogitStats.compute(z, y, options)) {
                assertEquals(0f, r.logProb().getFloat(0));
                assertEquals(1, r.validTargets());
            }
        }
    }

    @Test
    void emptyBatchIsFine() {
        try (Tensor z = Tensor.allocate(DType.F32, 0, 5); var r = LogitStats.compute(z)) {
            assertEquals(0, r.lse().elementCount());
        }
    }

    // ---- bad inputs -------------------------------------------------------------------------

    @Test
    void rejectsWrongRank() {
        try (Tensor z = Tensor.of(new float[] {1, 2, 3}, 3)) {
            var e = assertThrows(IllegalArgumentException.class, () -> LogitStats.compute(z));
            assertEquals("logits: expected rank 2 [N, V], got shape [3]", e.getMessage());
        }
    }

    @Test
    void rejectsZeroColumns() {
        try (Tensor z = Tensor.allocate(DType.F32, 2, 0)) {
            var e = assertThrows(IllegalArgumentException.class, () -> LogitStats.compute(z));
            assertTrue(e.getMessage().startsWith("logits: expected 1 <= V"), e.getMessage());
        }
    }

    @Test
    void rejectsIntegerLogits() {
        try (Tensor z = Tensor.ofInts(new int[] {1, 2}, 1, 2)) {
            var e = assertThrows(IllegalArgumentException.class, () -> LogitStats.compute(z));
            assertEquals("logits: expected dtype one of [F32, F16, BF16], got I32", e.getMessage());
        }
    }

    @Test
    void rejectsTargetsOfTheWrongLengthOrType() {
        try (Tensor z = Tensor.of(new float[6], 2, 3);
             Tensor shortTargets = Tensor.ofInts(new int[] {0}, 1);
             Tensor floatTargets = Tensor.of(new float[] {0, 1}, 2)) {
            var e = assertThrows(IllegalArgumentException.class,
                    () -> LogitStats.compute(z, shortTargets, LogitStats.Options.defaults()));
            assertEquals("targets: expected dimension 0 = 2 (N, the rows of logits), got shape [1]", e.getMessage());
            e = assertThrows(IllegalArgumentException.class,
                    () -> LogitStats.compute(z, floatTargets, LogitStats.Options.defaults()));
            assertEquals("targets: expected dtype one of [I32, I64], got F32", e.getMessage());
        }
    }

    @Test
    void rejectsTargetsOutOfRange() {
        try (Tensor z = Tensor.of(new float[6], 2, 3);
             Tensor tooLarge = Tensor.ofInts(new int[] {0, 3}, 2);
             Tensor negative = Tensor.ofLongs(new long[] {-1, 0}, 2)) {
            var e = assertThrows(IllegalArgumentException.class,
                    () -> LogitStats.compute(z, tooLarge, LogitStats.Options.defaults()));
            assertEquals("targets[1]: expected a class index in [0, 3) or ignoreIndex -100, got 3", e.getMessage());
            e = assertThrows(IllegalArgumentException.class,
                    () -> LogitStats.compute(z, negative, LogitStats.Options.defaults()));
            assertEquals("targets[0]: expected a class index in [0, 3) or ignoreIndex -100, got -1", e.getMessage());
        }
    }

    /** Equal huge logits: lse = x + log n and entropy log n, with x = fp32(z / T) (see DivergenceTest). */
    @Test
    void hugeScaledLogits() {
        float invT = 1 / 0.7f;
        try (Tensor z = Tensor.of(new float[] {1e10f, 1e10f, 1e10f, 3e9f, 3e9f, 3e9f}, 2, 3)) {
            for (Backend backend : ConformanceBackends.all()) {
                try (var r = LogitStats.compute(z, null, LogitStats.Options.defaults().withTemperature(0.7f).on(backend))) {
                    for (int row = 0; row < 2; row++) {
                        double x = (double) ((row == 0 ? 1e10f : 3e9f) * invT);
                        assertEquals(x + Math.log(3), r.lse().getFloat(row), 2e-6 * x, backend + " lse " + row);
                        assertEquals(Math.log(3), r.entropy().getFloat(row), 1e-5, backend + " entropy " + row);
                    }
                }
            }
        }
    }

    /**
     * Logits far from 0 at T = 1: lse within 2 ulp and the entropy within 2e-6 on every backend
     * (the rounding of each logit's exponent at |z| = 1000 averages out in both sums; the
     * per-class check of this is SoftmaxRowCpuTest's).
     */
    @Test
    void logitsFarFromZeroKeepTheirPrecision() {
        int vocab = 5000;
        java.util.SplittableRandom random = new java.util.SplittableRandom(9);
        float[] z = new float[vocab];
        for (int i = 0; i < vocab; i++) {
            z[i] = (float) (random.nextGaussian() * 2 + 1000);
        }
        double max = Double.NEGATIVE_INFINITY;
        for (float v : z) {
            max = Math.max(max, v);
        }
        double sum = 0;
        double weighted = 0;
        for (float v : z) {
            sum += Math.exp(v - max);
            weighted += Math.exp(v - max) * (v - max);
        }
        double lse = max + Math.log(sum);
        double entropy = Math.log(sum) - weighted / sum;
        try (Tensor t = Tensor.of(z, 1, vocab)) {
            for (Backend backend : ConformanceBackends.all()) {
                try (var r = LogitStats.compute(t, null, LogitStats.Options.defaults().on(backend))) {
                    assertEquals(lse, r.lse().getFloat(0), 2 * Math.ulp((float) lse), backend + " lse");
                    assertEquals(entropy, r.entropy().getFloat(0), 2e-6 * entropy, backend + " entropy");
                }
            }
        }
    }

    @Test
    void rejectsBadTemperatures() {
        try (Tensor z = Tensor.of(new float[] {1, 2}, 1, 2)) {
            for (float t : new float[] {0f, -1f, Float.NaN, Float.POSITIVE_INFINITY, 0x1p-130f, 3.5e-39f}) {
                var e = assertThrows(IllegalArgumentException.class,
                        () -> LogitStats.compute(z, null, LogitStats.Options.defaults().withTemperature(t)));
                assertEquals("temperature: expected a finite value > 0 whose reciprocal 1/T is finite, log2(e)/T too"
                        + " (T > about 4.2e-39), got "
                        + t, e.getMessage());
            }
        }
    }

    @Test
    void rejectsClosedTensors() {
        Tensor z = Tensor.of(new float[] {1, 2}, 1, 2);
        z.close();
        var e = assertThrows(IllegalStateException.class, () -> LogitStats.compute(z));
        assertTrue(e.getMessage().contains("closed"), e.getMessage());
        try (Tensor open = Tensor.of(new float[] {1, 2}, 1, 2)) {
            Tensor y = Tensor.ofInts(new int[] {0}, 1);
            y.close();
            assertThrows(IllegalStateException.class,
                    () -> LogitStats.compute(open, y, LogitStats.Options.defaults()));
        }
    }

    @Test
    void rejectsNullArguments() {
        var e = assertThrows(IllegalArgumentException.class, () -> LogitStats.compute(null));
        assertEquals("logits: expected a tensor, got null", e.getMessage());
        try (Tensor z = Tensor.of(new float[] {1, 2}, 1, 2)) {
            e = assertThrows(IllegalArgumentException.class, () -> LogitStats.compute(z, null, null));
            assertTrue(e.getMessage().startsWith("options: expected Options"), e.getMessage());
        }
    }

    @Test
    void anUnavailableBackendIsAnErrorWithItsReason() {
        var status = Backends.status().stream().filter(s -> !s.available()).findFirst();
        status.ifPresent(s -> {
            var e = assertThrows(BackendUnavailableException.class, () -> Backends.named(s.name()));
            assertTrue(e.getMessage().contains(s.unavailableReason()), e.getMessage());
        });
        var e = assertThrows(IllegalArgumentException.class, () -> Backends.named("tpu"));
        assertTrue(e.getMessage().startsWith("backend: expected one of [cpu"), e.getMessage());
    }
}
