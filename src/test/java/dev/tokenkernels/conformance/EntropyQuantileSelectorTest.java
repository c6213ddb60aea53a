package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.methods.EntropyQuantileSelector;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.Arrays;
import java.util.SplittableRandom;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import org.junit.jupiter.api.Test;

/** EntropyQuantileSelector against a sort-based float64 reference on random batches, and its bad inputs. */
class EntropyQuantileSelectorTest {

    /**
     * keep_t = masked and H_t >= torch.quantile(H over the mask, 1 - rho) (linear interpolation at
     * position (1 - rho)(n - 1) of the sorted entropies): at or above the lower order statistic when
     * the position is whole, strictly above it otherwise (the interpolated value lies above it and
     * at most at the next one).
     */
    static boolean[] reference(float[] h, boolean[] mask, double rho) {
        double[] counted = new double[h.length];
        int n = 0;
        for (int t = 0; t < h.length; t++) {
            if (mask == null || mask[t]) {
                counted[n++] = h[t];
            }
        }
        boolean[] keep = new boolean[h.length];
        if (n == 0) {
            return keep;
        }
        double[] sorted = Arrays.copyOf(counted, n);
        Arrays.sort(sorted);
        // the position in exact decimal: 1 - 0.7 is 0.3, and 0.3 * 10 is 3, a whole rank
        java.math.BigDecimal position = java.math.BigDecimal.ONE.subtract(new java.math.BigDecimal(Double.toString(rho)))
                .multiply(java.math.BigDecimal.valueOf(n - 1));
        int below = position.setScale(0, java.math.RoundingMode.FLOOR).intValue();
        boolean whole = position.compareTo(java.math.BigDecimal.valueOf(below)) == 0;
        boolean between = !whole && sorted[Math.min(n - 1, below + 1)] > sorted[below];
        for (int t = 0; t < h.length; t++) {
            keep[t] = (mask == null || mask[t]) && (between ? h[t] > sorted[below] : h[t] >= sorted[below]);
        }
        return keep;
    }

    @Property(tries = 60)
    void keepsTheTokensAtOrAboveTheQuantile(@ForAll("sizes") int size, @ForAll("rhos") double rho,
                                           @ForAll boolean masked, @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] h = new float[size];
        boolean[] m = masked ? new boolean[size] : null;
        for (int t = 0; t < size; t++) {
            // continuous entropies with ties (0 and a few repeated values); NaN only where not counted
            h[t] = switch (random.nextInt(8)) {
                case 0 -> 0f;
                case 1 -> 1.5f;
                default -> (float) Math.exp(random.nextGaussian() * 2 - 1);
            };
            if (m != null) {
                m[t] = random.nextInt(3) != 0;
                if (!m[t] && random.nextInt(4) == 0) {
                    h[t] = Float.NaN;
                }
            }
        }
        boolean[] expected = reference(h, m, rho);
        int n = 0;
        int kept = 0;
        for (int t = 0; t < size; t++) {
            n += m == null || m[t] ? 1 : 0;
            kept += expected[t] ? 1 : 0;
        }
        // without ties floor(1 + rho (n - 1)) are kept; ties only add (the 1e-9: rho's float64 product)
        assertTrue(kept >= Math.min(n, Math.floor(1 + rho * (n - 1) + 1e-9)), "the reference keeps about rho n");
        try (Tensor entropy = Tensor.of(h, size); Tensor mask = m == null ? null : TokenSelectionTest.maskOf(m)) {
            for (Backend backend : ConformanceBackends.all()) {
                try (Tensor keep = new EntropyQuantileSelector(rho, backend).keep(entropy, mask)) {
                    assertArrayEquals(expected, TokenSelectionTest.read(keep),
                            backend + " N=" + size + " rho=" + rho + " masked=" + masked);
                }
            }
        }
    }

    @Provide
    Arbitrary<Integer> sizes() {
        return Arbitraries.oneOf(Arbitraries.integers().between(1, 40), Arbitraries.integers().between(41, 5000),
                Arbitraries.of(1, 16, 17, 65537));
    }

    @Provide
    Arbitrary<Double> rhos() {
        return Arbitraries.oneOf(Arbitraries.of(0.2, 1.0, 0.5, 1e-6), Arbitraries.doubles().between(1e-3, 1).ofScale(4));
    }

    @Test
    void badInputsAreClearErrors() {
        EntropyQuantileSelector selector = EntropyQuantileSelector.defaults();
        try (Tensor nan = Tensor.of(new float[] {1f, Float.NaN, 2f}, 3); Tensor ok = Tensor.of(new float[] {1f, 2f, 3f}, 3);
             Tensor ints = Tensor.ofInts(new int[3], 3); Tensor matrix = Tensor.of(new float[4], 2, 2);
             Tensor shortMask = TokenSelectionTest.maskOf(new boolean[2]);
             Tensor skipNan = TokenSelectionTest.maskOf(new boolean[] {true, false, true});
             Tensor floatMask = Tensor.of(new float[3], 3)) {
            expect(() -> new EntropyQuantileSelector(0, null), "rho");
            expect(() -> new EntropyQuantileSelector(1.5, null), "rho");
            expect(() -> new EntropyQuantileSelector(Double.NaN, null), "rho");
            expect(() -> selector.keep(null, null), "entropy");
            expect(() -> selector.keep(nan, null), "entropy[1]: expected a number");
            expect(() -> selector.keep(ints, null), "entropy: expected dtype");
            expect(() -> selector.keep(matrix, null), "entropy: expected rank 1");
            expect(() -> selector.keep(ok, shortMask), "mask: expected dimension 0 = 3");
            expect(() -> selector.keep(ok, floatMask), "mask: expected dtype");
            // a NaN where the mask does not count is not read
            try (Tensor keep = selector.keep(nan, skipNan)) {
                assertArrayEquals(new boolean[] {false, false, true}, TokenSelectionTest.read(keep));
            }
        }
    }

    /**
     * Worked examples of torch.quantile's linear rule: of 10 distinct entropies at rho = 0.2 the
     * quantile interpolates at position 7.2, so the top 2 are kept (the nearest-rank rule kept 3);
     * of 11 the position is 8.0, a whole rank, and the top 3 are kept; at rho = 0.7 of 11, 8.
     */
    @Test
    void keepsWhatTorchQuantileKeeps() {
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor ten = Tensor.of(new float[] {5f, 1f, 9f, 3f, 7f, 2f, 8f, 4f, 6f, 0f}, 10);
                 Tensor eleven = Tensor.of(new float[] {5f, 1f, 9f, 3f, 7f, 2f, 8f, 4f, 6f, 0f, 10f}, 11);
                 Tensor keepTen = new EntropyQuantileSelector(0.2, backend).keep(ten, null);
                 Tensor keepEleven = new EntropyQuantileSelector(0.2, backend).keep(eleven, null);
                 Tensor keepSeventy = new EntropyQuantileSelector(0.7, backend).keep(eleven, null)) {
                assertArrayEquals(new boolean[] {false, false, true, false, false, false, true, false, false, false},
                        TokenSelectionTest.read(keepTen), backend.toString());
                assertArrayEquals(new boolean[] {false, false, true, false, false, false, true, false, false, false, true},
                        TokenSelectionTest.read(keepEleven), backend.toString());
                // rho = 0.7 of 11: position 0.3 * 10 = 3, whole, so the 8 tokens >= 3 (float64's 1 - 0.7 kept 7)
                assertArrayEquals(new boolean[] {true, false, true, true, true, false, true, true, true, false, true},
                        TokenSelectionTest.read(keepSeventy), backend.toString());
            }
        }
    }
}
