package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.select.EntropyNormalization;
import dev.tokenkernels.ops.select.EntropyNormalization.Options;
import dev.tokenkernels.ops.select.TokenSelection;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.List;
import java.util.SplittableRandom;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import org.junit.jupiter.api.Test;

/** HAPO's normalized entropy: a worked example, degenerate cases, the released code's signs, random batches, bad inputs. */
class EntropyNormalizationTest {

    /**
     * Entropies e^-1, e^0, e^1, e^2, e^3 (e = -1..3), q = 0.8 -> rank 4, pivot e = 2; d = -3, -2, -1, 0, 1;
     * mean d^2 = 15/5 = 3, s = sqrt 3; P = 1/sqrt 3, Q = 3/sqrt 3: h_hat = -1, -2/3, -1/3, 0, 1.
     */
    @Test
    void fiveTokensByHand() {
        float[] h = new float[5];
        for (int i = 0; i < 5; i++) {
            h[i] = (float) Math.exp(i - 1);
        }
        double[] expected = {-1, -2.0 / 3, -1.0 / 3, 0, 1};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor entropy = Tensor.of(h, 5);
                 EntropyNormalization.Result r = EntropyNormalization.compute(entropy, null, Options.defaults().on(backend))) {
                assertEquals(3, r.pivotIndex(), backend.toString());
                assertEquals(Math.sqrt(3), r.std(), 1e-5, backend.toString());
                assertEquals(5, r.count());
                for (int i = 0; i < 5; i++) {
                    assertEquals(expected[i], r.normalized().getFloat(i), 2e-6, backend + " token " + i);
                }
                assertEquals(0f, r.normalized().getFloat(3), backend + " the pivot token is exactly 0");
            }
            try (Tensor entropy = Tensor.of(h, 5);
                 EntropyNormalization.Result r = EntropyNormalization.compute(entropy, null,
                         Options.defaults().withReleasedCodeSigns(true).on(backend))) {
                for (int i = 0; i < 5; i++) {
                    assertEquals(Math.abs(expected[i]), r.normalized().getFloat(i), 2e-6, backend + " released signs, token " + i);
                }
            }
        }
    }

    @Test
    void degenerateCasesHaveNoNan() {
        for (Backend backend : ConformanceBackends.all()) {
            Options o = Options.defaults().on(backend);
            try (Tensor equal = Tensor.of(new float[] {0.7f, 0.7f, 0.7f, 0.7f}, 4);
                 Tensor none = TokenSelectionTest.maskOf(new boolean[4]);
                 Tensor zeros = Tensor.of(new float[] {0f, 0f, -1f, 1e-12f}, 4);
                 Tensor belowPivotOnly = Tensor.of(new float[] {0.1f, 0.2f, 0.3f, 0.3f}, 4);
                 EntropyNormalization.Result a = EntropyNormalization.compute(equal, null, o);
                 EntropyNormalization.Result b = EntropyNormalization.compute(equal, none, o);
                 EntropyNormalization.Result c = EntropyNormalization.compute(zeros, null, o);
                 EntropyNormalization.Result d = EntropyNormalization.compute(belowPivotOnly, null, o.withPivotQuantile(1))) {
                for (int i = 0; i < 4; i++) {
                    assertEquals(0f, a.normalized().getFloat(i), backend + " all equal");
                    assertEquals(0f, b.normalized().getFloat(i), backend + " nothing masked");
                    assertEquals(0f, c.normalized().getFloat(i), backend + " all at the 1e-8 floor");
                    float v = d.normalized().getFloat(i);
                    assertTrue(v <= 0f && v >= -1f, backend + " no positive h: h_hat in [-1, 0], got " + v);
                }
                assertEquals(-1, b.pivotIndex());
                assertEquals(0, b.count());
                assertEquals(1e-4f, a.std(), 1e-9f, backend + " the variance floor");
                assertEquals(-1f, d.normalized().getFloat(0), 1e-6f, backend.toString());
            }
        }
    }

    @Test
    void unmaskedTokensAreNeutralAndMayHoldAnything() {
        float[] h = {0.5f, Float.NaN, 2f, Float.POSITIVE_INFINITY, 1f};
        boolean[] m = {true, false, true, false, true};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor entropy = Tensor.of(h, 5); Tensor mask = TokenSelectionTest.maskOf(m);
                 EntropyNormalization.Result r = EntropyNormalization.compute(entropy, mask,
                         Options.defaults().withPivotQuantile(0.5).on(backend))) {
                assertEquals(0f, r.normalized().getFloat(1));
                assertEquals(0f, r.normalized().getFloat(3));
                assertEquals(1f, r.normalized().getFloat(2), 1e-6f, backend + " the largest is 1");
                assertEquals(-1f, r.normalized().getFloat(0), 1e-6f, backend + " the smallest is -1");
                assertEquals(3, r.count());
            }
        }
    }

    /**
     * Many tokens tied with the pivot, over enough calls that the token loop is JIT-compiled while the
     * pivot's own log (taken once per call) is not: every tie must still get exactly 0 (a compiled
     * vector LOG and the interpreter's differ on a few percent of inputs), on every call and backend.
     */
    @Test
    void tiesWithThePivotAreExactlyZero() {
        SplittableRandom random = new SplittableRandom(7);
        int n = 20000;
        for (int round = 0; round < 40; round++) {
            float[] values = new float[64];
            for (int k = 0; k < values.length; k++) {
                values[k] = (float) Math.exp(random.nextGaussian() * 2);
            }
            float[] h = new float[n];
            for (int i = 0; i < n; i++) {
                h[i] = values[random.nextInt(values.length)];
            }
            for (Backend backend : round < 36 ? List.of(ConformanceBackends.all().getFirst())
                    : ConformanceBackends.all()) {
                for (boolean released : new boolean[] {false, true}) {
                    try (Tensor entropy = Tensor.of(h, n);
                         EntropyNormalization.Result r = EntropyNormalization.compute(entropy, null,
                                 Options.defaults().withReleasedCodeSigns(released).on(backend))) {
                        float pivot = h[(int) r.pivotIndex()];
                        int ties = 0;
                        for (int i = 0; i < n; i++) {
                            if (h[i] == pivot) {
                                ties++;
                                float v = r.normalized().getFloat(i);
                                assertTrue(v == 0f, backend + " round " + round + " token " + i + " tied with the pivot "
                                        + pivot + ": h_hat " + v);
                            }
                        }
                        assertTrue(ties > 1, "the test needs ties with the pivot");
                    }
                }
            }
        }
    }

    @Property(tries = 40)
    void matchesTheReference(@ForAll("sizes") int n, @ForAll boolean masked, @ForAll boolean released,
                             @ForAll boolean roundLinear, @ForAll("quantiles") double q, @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] h = new float[n];
        boolean[] m = masked ? new boolean[n] : null;
        for (int i = 0; i < n; i++) {
            // log-normal entropies with some exact ties and some at or below the floor
            h[i] = switch (random.nextInt(10)) {
                case 0 -> 0f;
                case 1 -> 0.25f;
                default -> (float) Math.exp(random.nextGaussian() * 2 - 1);
            };
            if (m != null) {
                m[i] = random.nextInt(4) != 0;
            }
        }
        double[] ref = EntropyNormalizationReference.compute(h, m, q, roundLinear, released);
        Options o = Options.defaults().withPivotQuantile(q).withReleasedCodeSigns(released)
                .withRank(roundLinear ? TokenSelection.Rank.ROUND_LINEAR : TokenSelection.Rank.NEAREST_RANK);
        try (Tensor entropy = Tensor.of(h, n); Tensor mask = m == null ? null : TokenSelectionTest.maskOf(m)) {
            for (Backend backend : ConformanceBackends.all()) {
                try (EntropyNormalization.Result r = EntropyNormalization.compute(entropy, mask, o.on(backend))) {
                    String at = backend + " n=" + n + " q=" + q + " released=" + released;
                    assertEquals((long) ref[n], r.pivotIndex(), at + " the same pivot token everywhere");
                    if (r.pivotIndex() < 0) {
                        continue;
                    }
                    double s = ref[n + 1];
                    double pivot = Math.abs(Math.log(Math.max(h[(int) ref[n]], 1e-8f)));
                    for (int i = 0; i < n; i++) {
                        double e = Math.abs(Math.log(Math.max(h[i], 1e-8f)));
                        double scale = ref[i] > 0 ? ref[n + 2] : ref[n + 3];
                        // e and the pivot are rounded to fp32 (and by each backend's log); d = e - pivot in fp32.
                        double tolerance = 6 * 0x1p-24 * (e + pivot + 1) / (s * scale) + 1e-5 * Math.abs(ref[i]) + 1e-6;
                        Approx.assertClose(at + " h_hat[" + i + "]", ref[i], r.normalized().getFloat(i), tolerance);
                    }
                }
            }
        }
    }

    @Provide
    Arbitrary<Integer> sizes() {
        return Arbitraries.oneOf(Arbitraries.integers().between(1, 40), Arbitraries.integers().between(41, 3000),
                Arbitraries.of(16, 17, 65537, 100000));
    }

    @Provide
    Arbitrary<Double> quantiles() {
        return Arbitraries.oneOf(Arbitraries.of(0.8, 0.5, 0.0, 1.0), Arbitraries.doubles().between(0, 1));
    }

    @Test
    void badInputsAreClearErrors() {
        try (Tensor h = Tensor.of(new float[] {1f, Float.NaN}, 2); Tensor inf = Tensor.of(new float[] {1f, Float.POSITIVE_INFINITY}, 2);
             Tensor ok = Tensor.of(new float[] {1f, 2f}, 2); Tensor shortMask = TokenSelectionTest.maskOf(new boolean[1]);
             Tensor matrix = Tensor.of(new float[4], 2, 2)) {
            Options o = Options.defaults();
            expect(() -> EntropyNormalization.compute(h, null, o), "entropy[1]: expected a finite entropy");
            expect(() -> EntropyNormalization.compute(inf, null, o), "entropy[1]");
            expect(() -> EntropyNormalization.compute(ok, shortMask, o), "mask: expected dimension 0 = 2");
            expect(() -> EntropyNormalization.compute(matrix, null, o), "entropy: expected rank 1");
            expect(() -> EntropyNormalization.compute(null, null, o), "entropy");
            expect(() -> EntropyNormalization.compute(ok, null, null), "options");
            expect(() -> EntropyNormalization.compute(ok, null, o.withPivotQuantile(1.2)), "pivotQuantile");
            expect(() -> EntropyNormalization.compute(ok, null, o.withRank(null)), "rank");
        }
    }

    /**
     * The pivot is the 'nearest' q-quantile as torch.quantile takes it (issue 5): of {1, 2, 3, 4}
     * at q = 0.8 rank 1 + rint(2.4) = 3, so the largest token has h_hat = 1; the nearest-rank rule
     * (ceil(3.2) = 4, selectable) picks the largest itself.
     */
    @Test
    void defaultPivotIsTorchsNearestQuantile() {
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor h = Tensor.of(new float[] {1f, 2f, 3f, 4f}, 4);
                 EntropyNormalization.Result r = EntropyNormalization.compute(h, null, Options.defaults().on(backend));
                 EntropyNormalization.Result rank = EntropyNormalization.compute(h, null,
                         Options.defaults().withRank(TokenSelection.Rank.NEAREST_RANK).on(backend))) {
                assertEquals(2, r.pivotIndex(), backend.toString());
                assertEquals(1f, r.normalized().getFloat(3), 1e-6f, backend.toString());
                assertEquals(3, rank.pivotIndex(), backend.toString());
            }
        }
    }
}
