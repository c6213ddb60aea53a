package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.tokenkernels.methods.D3sSelector;
import dev.tokenkernels.methods.EntropyQuantileSelector;
import dev.tokenkernels.ops.select.TokenSelection;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.Arrays;
import java.util.SplittableRandom;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;

/** D^3S's two levels and schedule, entropy-quantile selection and masks as ignored targets. */
class D3sSelectorTest {

    private static double variance(float[] v, int[] idx) {
        double mean = 0;
        for (int i : idx) {
            mean += v[i];
        }
        mean /= idx.length;
        double s = 0;
        for (int i : idx) {
            s += (v[i] - mean) * (v[i] - mean);
        }
        return s / idx.length;
    }

    /** The search over "k largest + (m - k) smallest" reaches the brute-force maximum over all subsets. */
    @Property(tries = 300)
    void maxVarianceSubsetIsOptimal(@ForAll @IntRange(min = 1, max = 11) int size, @ForAll @IntRange(min = 1, max = 11) int m,
                                    @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] v = new float[size + 2];
        for (int i = 0; i < v.length; i++) {
            v[i] = random.nextBoolean() ? random.nextInt(3) : (float) random.nextGaussian();
        }
        int[] chosen = D3sSelector.maxVarianceSubset(v, 1, size + 1, m);
        int take = Math.min(m, size);
        assertEquals(take, chosen.length);
        double best = -1;
        for (int bits = 0; bits < 1 << size; bits++) {
            if (Integer.bitCount(bits) != take) {
                continue;
            }
            int[] subset = new int[take];
            int w = 0;
            for (int j = 0; j < size; j++) {
                if ((bits >> j & 1) != 0) {
                    subset[w++] = j + 1;
                }
            }
            best = Math.max(best, variance(v, subset));
        }
        assertEquals(best, variance(v, chosen), 1e-12, Arrays.toString(v) + " m=" + m + " chose " + Arrays.toString(chosen));
    }

    @Test
    void scheduleInterpolatesAndRounds() {
        D3sSelector.Schedule s = new D3sSelector.Schedule(4, 0.2, 8, 1.0);
        assertEquals(4, s.samplesAt(0));
        assertEquals(8, s.samplesAt(1));
        assertEquals(6, s.samplesAt(0.5));
        assertEquals(5, s.samplesAt(0.125)); // 4.5 rounds half up
        assertEquals(0.6, s.tokenFractionAt(0.5), 1e-12);
        expect(() -> s.samplesAt(1.5), "progress");
        expect(() -> new D3sSelector.Schedule(0, 0.2, 8, 1.0), "samplesStart");
        expect(() -> new D3sSelector.Schedule(4, 0, 8, 1.0), "tokenFractionStart");
        expect(() -> new D3sSelector.Schedule(4, 0.5, 8, 1.5), "tokenFractionEnd");
    }

    /**
     * The schedule in exact decimal: 4.5 samples round up (float64 has (1 - 0.7) 1 + 0.7 * 6 =
     * 4.499999999999999), and K = 0.07 of 100 tokens keeps 7 (float64 has 0.07 * 100 = 7.000000000000001).
     */
    @Test
    void scheduleCountsAreThoseOfTheDecimals() {
        assertEquals(5, new D3sSelector.Schedule(1, 0.5, 6, 0.5).samplesAt(0.7));
        assertEquals(4, new D3sSelector.Schedule(3, 0.5, 13, 0.5).samplesAt(0.05)); // 3.5
        assertEquals(0.07, new D3sSelector.Schedule(1, 0.05, 1, 0.09).tokenFractionAt(0.5));
        int n = 100;
        float[] advantages = new float[n];
        float[] entropy = new float[n];
        for (int i = 0; i < n; i++) {
            advantages[i] = 1f;
            entropy[i] = i + 1;
        }
        for (Backend backend : ConformanceBackends.all()) {
            D3sSelector d3s = new D3sSelector(new D3sSelector.Schedule(1, 0.07, 1, 0.07), backend);
            try (Tensor a = Tensor.of(advantages, n); Tensor h = Tensor.of(entropy, n);
                 D3sSelector.Selection s = d3s.select(new float[] {1f}, new int[] {0, n}, new int[] {0, 1}, a, h,
                         null, 0)) {
                long inMask = 0;
                for (int i = 0; i < n; i++) {
                    inMask += s.tokenMask().getLong(i);
                }
                assertEquals(7, s.keptTokens(), backend + " kept tokens");
                assertEquals(7, inMask, backend + " tokens in the mask");
                assertEquals(1, s.tokenMask().getLong(n - 1), backend + " the largest score is kept");
            }
        }
    }

    /** Ties in value go to the lower index on both ends: of {-10, 0, 6, 6} keep 2 gives {0, 2}; of three -1s and a 5, {0, 3}. */
    @Test
    void maxVarianceTiesGoToTheLowerIndex() {
        assertArrayEquals(new int[] {0, 2}, D3sSelector.maxVarianceSubset(new float[] {-10f, 0f, 6f, 6f}, 0, 4, 2));
        assertArrayEquals(new int[] {0, 3}, D3sSelector.maxVarianceSubset(new float[] {-1f, -1f, -1f, 5f}, 0, 4, 2));
        assertArrayEquals(new int[] {1, 2}, D3sSelector.maxVarianceSubset(new float[] {9f, 3f, 3f, 3f}, 1, 4, 2));
        // -0.0 == 0.0 is a tie too (the sort once put -0.0 first whatever its index)
        assertArrayEquals(new int[] {0, 2}, D3sSelector.maxVarianceSubset(new float[] {0f, -0f, 5f}, 0, 3, 2));
    }

    /**
     * Two groups of three responses, m = 2: group 0 (A = 1, 0, -1) keeps 0 and 2, group 1 (A = 0.5, 0.4, -2)
     * keeps 0 and 2. Their 8 tokens, K = 0.5: the 4 largest |A| H.
     */
    @Test
    void bothLevelsByHand() {
        float[] seqA = {1f, 0f, -1f, 0.5f, 0.4f, -2f};
        int[] starts = {0, 2, 4, 6, 8, 10, 12};
        float[] tokenA = new float[12];
        float[] h = {1f, 3f, 9f, 9f, 2f, 0.5f, 0.1f, 4f, 9f, 9f, 1f, 0.2f};
        for (int i = 0; i < 6; i++) {
            Arrays.fill(tokenA, starts[i], starts[i + 1], seqA[i]);
        }
        // scores of kept tokens: seq0 (1, 3), seq2 (2, 0.5), seq3 (0.05, 2), seq5 (2, 0.4): top 4 = 3, 2, 2, 2 (ties: lower index)
        boolean[] expected = {false, true, false, false, true, false, false, true, false, false, true, false};
        for (Backend backend : ConformanceBackends.all()) {
            D3sSelector d3s = new D3sSelector(new D3sSelector.Schedule(2, 0.5, 3, 1.0), backend);
            try (Tensor a = Tensor.of(tokenA, 12); Tensor entropy = Tensor.of(h, 12);
                 D3sSelector.Selection s = d3s.select(seqA, starts, new int[] {0, 3, 6}, a, entropy, null, 0)) {
                assertArrayEquals(new int[] {0, 2, 3, 5}, s.keptSequences(), backend.toString());
                assertEquals(4, s.keptTokens());
                assertArrayEquals(expected, TokenSelectionTest.read(s.tokenMask()), backend.toString());
            }
        }
    }

    @Test
    void entropyQuantileAndIgnoredTargets() {
        float[] h = {0.1f, 2f, 0.5f, 2f, 3f, 0f, 1f, 0.2f, 0.3f, 0.4f};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor entropy = Tensor.of(h, 10);
                 Tensor keep = new EntropyQuantileSelector(0.2, backend).keep(entropy, null);
                 Tensor targets = Tensor.ofInts(new int[] {5, 6, 7, 8, 9, 10, 11, -100, 13, 14}, 10);
                 Tensor ignored = TokenSelection.ignoreUnselected(targets, keep, -100)) {
                // q = 0.8, rank 8 of 10 = 2 (index 1): keeps 2, 2, 3
                assertArrayEquals(new boolean[] {false, true, false, true, true, false, false, false, false, false},
                        TokenSelectionTest.read(keep), backend.toString());
                assertEquals(-100, ignored.getLong(0));
                assertEquals(6, ignored.getLong(1));
                assertEquals(8, ignored.getLong(3));
                assertEquals(9, ignored.getLong(4));
                assertEquals(-100, ignored.getLong(7));
            }
        }
        try (Tensor t = Tensor.ofLongs(new long[] {1, 2}, 2); Tensor k = TokenSelectionTest.maskOf(new boolean[] {true, false});
             Tensor out = TokenSelection.ignoreUnselected(t, k, -1); Tensor f = Tensor.of(new float[2], 2);
             Tensor i32 = Tensor.ofInts(new int[] {1, 2}, 2); Tensor shortKeep = TokenSelectionTest.maskOf(new boolean[1])) {
            assertEquals(1, out.getLong(0));
            assertEquals(-1, out.getLong(1));
            expect(() -> TokenSelection.ignoreUnselected(f, k, -1), "targets: expected dtype");
            expect(() -> TokenSelection.ignoreUnselected(t, shortKeep, -1), "keep: expected dimension 0 = 2");
            expect(() -> TokenSelection.ignoreUnselected(i32, k, 1L << 40), "ignoreIndex");
        }
        expect(() -> new EntropyQuantileSelector(0, null), "rho");
    }

    @Test
    void badInputsAreClearErrors() {
        D3sSelector d3s = new D3sSelector(new D3sSelector.Schedule(2, 0.5, 2, 0.5), null);
        try (Tensor a = Tensor.of(new float[4], 4); Tensor h = Tensor.of(new float[] {1, 1, Float.NaN, 1}, 4)) {
            float[] seq = {1f, 0f};
            expect(() -> d3s.select(seq, new int[] {0, 2, 4}, new int[] {0, 2}, a, a, null, -0.1), "progress");
            expect(() -> d3s.select(seq, new int[] {0, 4}, new int[] {0, 2}, a, a, null, 0), "sequenceStarts");
            expect(() -> d3s.select(seq, new int[] {0, 2, 3}, new int[] {0, 2}, a, a, null, 0), "sequenceStarts: expected offsets from 0 to N = 4");
            expect(() -> d3s.select(seq, new int[] {0, 2, 4}, new int[] {0, 1}, a, a, null, 0), "groupStarts");
            expect(() -> d3s.select(seq, new int[] {0, 2, 4}, new int[] {0, 2}, a, h, null, 0), "entropy[2]");
            expect(() -> d3s.select(null, new int[] {0, 2, 4}, new int[] {0, 2}, a, a, null, 0), "sequenceAdvantages");
            // every offset is checked up front, not only those of the kept responses
            expect(() -> d3s.select(seq, new int[] {0, 10, 4}, new int[] {0, 2}, a, a, null, 0),
                    "sequenceStarts: expected non-decreasing offsets");
            expect(() -> d3s.select(new float[] {1f, 0f, 2f}, new int[] {0, 3, 1, 4}, new int[] {0, 3}, a, a, null, 0),
                    "sequenceStarts: expected non-decreasing offsets");
            expect(() -> d3s.select(new float[] {1f, 0f, 2f}, new int[] {0, 1, 2, 4}, new int[] {0, 2, 1, 3}, a, a, null, 0),
                    "groupStarts: expected non-decreasing offsets");
            expect(() -> d3s.select(new float[] {1f, Float.NaN, 2f}, new int[] {0, 1, 2, 4}, new int[] {0, 3}, a, a, null, 0),
                    "sequenceAdvantages[1]: expected a finite advantage");
            expect(() -> d3s.select(new float[] {1f, 0f, Float.POSITIVE_INFINITY}, new int[] {0, 1, 2, 4}, new int[] {0, 3},
                    a, a, null, 0), "sequenceAdvantages[2]");
        }
        expect(() -> new D3sSelector(null, null), "schedule");
        expect(() -> D3sSelector.maxVarianceSubset(null, 0, 0, 1), "values");
        expect(() -> D3sSelector.maxVarianceSubset(new float[] {0f, Float.NaN, 1f}, 0, 3, 2), "values[1]");
    }
}
