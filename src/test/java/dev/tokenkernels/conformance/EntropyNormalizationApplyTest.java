package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.methods.HapoLoss;
import dev.tokenkernels.ops.select.EntropyNormalization;
import dev.tokenkernels.ops.select.EntropyNormalization.Options;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;

/**
 * {@link EntropyNormalization#apply}: a training batch's statistics applied to new tokens' entropies
 * (HAPO's released sampler), against a float64 composition; the batch's own h_hat back bit for bit;
 * and HapoLoss's sampling temperatures from stored statistics, clamped to [-1, 1].
 */
class EntropyNormalizationApplyTest {

    private static float[] logNormal(SplittableRandom random, int n) {
        float[] h = new float[n];
        for (int i = 0; i < n; i++) {
            h[i] = random.nextInt(10) == 0 ? 0f : (float) Math.exp(random.nextGaussian() * 2 - 1);
        }
        return h;
    }

    /** h_hat of {@code h} under the statistics, in float64 from their fp32 values. */
    private static double reference(float h, EntropyNormalization.Result s, boolean released) {
        double d = Math.log(Math.max(h, 1e-8f)) - Math.log(s.pivotEntropy());
        double t = d / s.std();
        return t > 0 ? t / s.positiveMax() : t / (released ? -s.negativeMax() : s.negativeMax());
    }

    @Property(tries = 30)
    void newTokensFollowTheStoredStatistics(@ForAll @IntRange(min = 1, max = 3000) int n,
                                            @ForAll @IntRange(min = 1, max = 400) int m, @ForAll boolean masked,
                                            @ForAll boolean released, @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] batch = logNormal(random, n);
        float[] fresh = logNormal(random, m);
        boolean[] keep = new boolean[m];
        for (int i = 0; i < m; i++) {
            keep[i] = !masked || random.nextInt(4) != 0;
        }
        Options o = Options.defaults().withReleasedCodeSigns(released);
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor b = Tensor.of(batch, n); Tensor f = Tensor.of(fresh, m);
                 Tensor mask = masked ? TokenSelectionTest.maskOf(keep) : null;
                 EntropyNormalization.Result stats = EntropyNormalization.compute(b, null, o.on(backend));
                 Tensor hHat = EntropyNormalization.apply(f, mask, stats, o.on(backend))) {
                for (int i = 0; i < m; i++) {
                    double expected = keep[i] ? reference(fresh[i], stats, released) : 0;
                    // fp32 logs and divisions: a few ulps of ln f (up to ~18) over s and P or Q
                    double tolerance = 1e-6 * (Math.abs(expected) + 20 / (stats.std()
                            * Math.min(stats.positiveMax(), stats.negativeMax())));
                    Approx.assertClose(backend + " n=" + n + " m=" + m + " h_hat[" + i + "]", expected,
                            hHat.getFloat(i), tolerance);
                }
            }
        }
    }

    @Test
    void appliedToItsOwnBatchGivesItsHHatBitForBit() {
        SplittableRandom random = new SplittableRandom(7);
        int n = 777;
        float[] h = logNormal(random, n);
        boolean[] keep = new boolean[n];
        for (int i = 0; i < n; i++) {
            keep[i] = random.nextInt(5) != 0;
        }
        for (boolean released : new boolean[] {false, true}) {
            Options o = Options.defaults().withReleasedCodeSigns(released);
            for (Backend backend : ConformanceBackends.all()) {
                try (Tensor e = Tensor.of(h, n); Tensor mask = TokenSelectionTest.maskOf(keep);
                     EntropyNormalization.Result r = EntropyNormalization.compute(e, mask, o.on(backend));
                     Tensor again = EntropyNormalization.apply(e, mask, r, o.on(backend))) {
                    assertArrayEquals(r.normalized().toFloatArray(), again.toFloatArray(), backend + " released=" + released);
                }
            }
        }
    }

    @Test
    void statisticsOfABatchWithoutTokensLeaveEveryTokenNeutral() {
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor empty = Tensor.of(new float[] {1f, 2f}, 2);
                 Tensor none = TokenSelectionTest.maskOf(new boolean[] {false, false});
                 EntropyNormalization.Result r = EntropyNormalization.compute(empty, none, Options.defaults().on(backend));
                 Tensor f = Tensor.of(new float[] {0.5f, 3f, 7f}, 3);
                 Tensor hHat = EntropyNormalization.apply(f, null, r, Options.defaults().on(backend))) {
                assertArrayEquals(new float[3], hHat.toFloatArray(), backend.toString());
            }
        }
    }

    @Test
    void samplingTemperaturesFromStoredStatisticsAreClamped() {
        // batch e = -1..3 (the worked example): pivot e = 2, s = sqrt 3, P = 1/sqrt 3, Q = 3/sqrt 3
        float[] batch = new float[5];
        for (int i = 0; i < 5; i++) {
            batch[i] = (float) Math.exp(i - 1);
        }
        int[] targets = {1, 2, 3, 4, 5};
        // new tokens: e = 2 (the pivot: 1), e = 2.5 (h_hat 0.5), e = 10 (8, clamped to 1), e = -7 (-3, clamped to -1)
        float[] fresh = {(float) Math.exp(2), (float) Math.exp(2.5), (float) Math.exp(10), (float) Math.exp(-7)};
        double[] expected = {1, 1 + 0.05 * 0.5, 1.05, 0.95};
        for (Backend backend : ConformanceBackends.all()) {
            HapoLoss hapo = new HapoLoss(0.2f, 0.2f, 1f, 1f, 10f, false, backend);
            try (Tensor b = Tensor.of(batch, 5); Tensor y = Tensor.ofInts(targets, 5);
                 EntropyNormalization.Result stats = hapo.entropyStatistics(b, y);
                 Tensor f = Tensor.of(fresh, 4);
                 Tensor t = hapo.samplingTemperatures(f, null, stats, 1f, 0.05f)) {
                assertEquals(5, stats.count());
                for (int i = 0; i < 4; i++) {
                    assertEquals(expected[i], t.getFloat(i), 1e-6, backend + " token " + i);
                }
            }
        }
    }

    @Test
    void badStatisticsAreClearErrors() {
        try (Tensor f = Tensor.of(new float[] {1f, 2f}, 2); Tensor shortMask = TokenSelectionTest.maskOf(new boolean[] {true})) {
            Options o = Options.defaults();
            expect(() -> EntropyNormalization.apply(f, null, null, o).close(), "statistics");
            EntropyNormalization.Result nanStd = new EntropyNormalization.Result(f, 0, 1f, 0f, Float.NaN, 1f, 1f, 2);
            expect(() -> EntropyNormalization.apply(f, null, nanStd, o).close(), "statistics.std");
            EntropyNormalization.Result floorless = new EntropyNormalization.Result(f, 0, 0f, 0f, 1f, 1f, 1f, 2);
            expect(() -> EntropyNormalization.apply(f, null, floorless, o).close(), "statistics.pivotEntropy");
            EntropyNormalization.Result zeroScale = new EntropyNormalization.Result(f, 0, 1f, 0f, 1f, 0f, 1f, 2);
            expect(() -> EntropyNormalization.apply(f, null, zeroScale, o).close(), "statistics.positiveMax");
            EntropyNormalization.Result fine = new EntropyNormalization.Result(f, 0, 1f, 0f, 1f, 1f, 1f, 2);
            expect(() -> EntropyNormalization.apply(f, shortMask, fine, o).close(), "mask");
            try (Tensor nan = Tensor.of(new float[] {1f, Float.NaN}, 2)) {
                expect(() -> EntropyNormalization.apply(nan, null, fine, o).close(), "entropy[1]");
            }
            assertTrue(!f.isClosed());
        }
    }
}
