package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.select.TokenSelection;
import dev.tokenkernels.ops.select.TokenSelection.Order;
import dev.tokenkernels.ops.select.TokenSelection.Rank;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.ValueLayout;
import org.junit.jupiter.api.Test;

/** Worked examples, ties, special values, empty masks and bad inputs of TokenSelection, on every backend. */
class TokenSelectionTest {

    static Tensor maskOf(boolean[] m) {
        Tensor t = Tensor.allocate(DType.U8, m.length);
        for (int i = 0; i < m.length; i++) {
            t.segment().set(ValueLayout.JAVA_BYTE, i, (byte) (m[i] ? 1 : 0));
        }
        return t;
    }

    static boolean[] read(Tensor mask) {
        boolean[] out = new boolean[(int) mask.dim(0)];
        for (int i = 0; i < out.length; i++) {
            byte b = mask.segment().get(ValueLayout.JAVA_BYTE, i);
            assertTrue(b == 0 || b == 1, "mask bytes are 0 or 1, got " + b + " at " + i);
            out[i] = b == 1;
        }
        return out;
    }

    /** Scores 3, 1, 4, 1, 5, 9, 2, 6: sorted 1(1) 1(3) 2 3 4 5 6 9. */
    @Test
    void piDigitsByHand() {
        float[] s = {3, 1, 4, 1, 5, 9, 2, 6};
        for (Backend backend : ConformanceBackends.all()) {
            TokenSelection.Options o = TokenSelection.Options.defaults().on(backend);
            try (Tensor scores = Tensor.of(s, 8)) {
                assertEquals(1, TokenSelection.kth(scores, null, 1, Order.SMALLEST, o).index(), backend + " smallest: the lower of the two 1s");
                assertEquals(3, TokenSelection.kth(scores, null, 2, Order.SMALLEST, o).index(), backend + " second smallest: the other 1");
                TokenSelection.Element top = TokenSelection.kth(scores, null, 1, Order.LARGEST, o);
                assertEquals(5, top.index(), backend.toString());
                assertEquals(9f, top.value(), backend.toString());
                // q = 0.5 of 8: rank ceil(4) = 4 -> 3 (index 0); ROUND_LINEAR: 1 + rint(3.5) = 5 -> 4 (index 2)
                assertEquals(0, TokenSelection.quantile(scores, null, 0.5, Rank.NEAREST_RANK, o).index(), backend.toString());
                assertEquals(2, TokenSelection.quantile(scores, null, 0.5, Rank.ROUND_LINEAR, o).index(), backend.toString());
                assertEquals(1, TokenSelection.quantile(scores, null, 0, Rank.NEAREST_RANK, o).index(), backend + " q = 0: the smallest");
                assertEquals(5, TokenSelection.quantile(scores, null, 1, Rank.NEAREST_RANK, o).index(), backend + " q = 1: the largest");
                try (Tensor top3 = TokenSelection.topK(scores, null, 3, o);
                     Tensor bottom2 = TokenSelection.keep(scores, null, 2, Order.SMALLEST, o);
                     Tensor upper = TokenSelection.atLeastQuantile(scores, null, 0.75, Rank.NEAREST_RANK, o)) {
                    assertArrayEquals(new boolean[] {false, false, false, false, true, true, false, true}, read(top3), backend.toString());
                    assertArrayEquals(new boolean[] {false, true, false, true, false, false, false, false}, read(bottom2), backend.toString());
                    // rank ceil(6) = 6 -> 5: keep 5, 9, 6
                    assertArrayEquals(new boolean[] {false, false, false, false, true, true, false, true}, read(upper), backend.toString());
                }
            }
        }
    }

    /** Ties at the threshold go to the lower index, so exactly k are kept; the value mask keeps them all. */
    @Test
    void tiesAtTheThreshold() {
        float[] s = {2, 7, 7, 1, 7, 7, 0};
        boolean[] m = {true, true, false, true, true, true, true};
        for (Backend backend : ConformanceBackends.all()) {
            TokenSelection.Options o = TokenSelection.Options.defaults().on(backend);
            try (Tensor scores = Tensor.of(s, 7); Tensor mask = maskOf(m);
                 Tensor top2 = TokenSelection.topK(scores, mask, 2, o);
                 Tensor all7 = TokenSelection.atLeastQuantile(scores, mask, 1, Rank.NEAREST_RANK, o)) {
                assertArrayEquals(new boolean[] {false, true, false, false, true, false, false}, read(top2), backend + " index 2 is masked out");
                assertArrayEquals(new boolean[] {false, true, false, false, true, true, false}, read(all7), backend.toString());
                assertEquals(5, TokenSelection.kth(scores, mask, 3, Order.LARGEST, o).index(), backend.toString());
            }
        }
    }

    @Test
    void signedZerosInfinitiesAndMaskedNan() {
        float inf = Float.POSITIVE_INFINITY;
        float[] s = {0f, -0f, -inf, inf, Float.NaN, 1f};
        boolean[] m = {true, true, true, true, false, true};
        for (Backend backend : ConformanceBackends.all()) {
            TokenSelection.Options o = TokenSelection.Options.defaults().on(backend);
            try (Tensor scores = Tensor.of(s, 6); Tensor mask = maskOf(m)) {
                assertEquals(2, TokenSelection.kth(scores, mask, 1, Order.SMALLEST, o).index(), backend + " -inf first");
                assertEquals(1, TokenSelection.kth(scores, mask, 2, Order.SMALLEST, o).index(), backend + " -0 before +0");
                assertEquals(0, TokenSelection.kth(scores, mask, 3, Order.SMALLEST, o).index(), backend.toString());
                assertEquals(3, TokenSelection.kth(scores, mask, 1, Order.LARGEST, o).index(), backend + " +inf largest");
                assertEquals(0, TokenSelection.kth(scores, mask, 3, Order.LARGEST, o).index(), backend + " +0 before -0 descending");
                try (Tensor nonNegative = TokenSelection.atLeastQuantile(scores, mask, 0.6, Rank.NEAREST_RANK, o)) {
                    // 5 masked, rank ceil(3) = 3 -> +0: keeps +0, inf, 1 but not -0
                    assertArrayEquals(new boolean[] {true, false, false, true, false, true}, read(nonNegative), backend.toString());
                }
            }
        }
    }

    @Test
    void emptyMaskAndDegenerateCounts() {
        for (Backend backend : ConformanceBackends.all()) {
            TokenSelection.Options o = TokenSelection.Options.defaults().on(backend);
            try (Tensor scores = Tensor.of(new float[] {1, 2, 3}, 3); Tensor none = maskOf(new boolean[3]);
                 Tensor empty = Tensor.of(new float[0], 0)) {
                TokenSelection.Element e = TokenSelection.quantile(scores, none, 0.5, Rank.NEAREST_RANK, o);
                assertFalse(e.found(), backend.toString());
                assertEquals(-1, e.index());
                assertTrue(Float.isNaN(e.value()));
                assertEquals(0, e.count());
                assertFalse(TokenSelection.quantile(empty, null, 0.2, Rank.NEAREST_RANK, o).found());
                try (Tensor k0 = TokenSelection.topK(scores, null, 0, o); Tensor kBig = TokenSelection.topK(scores, null, 10, o);
                     Tensor q = TokenSelection.atLeastQuantile(scores, none, 0.5, Rank.NEAREST_RANK, o);
                     Tensor emptyTop = TokenSelection.topK(empty, null, 3, o)) {
                    assertArrayEquals(new boolean[3], read(k0), backend.toString());
                    assertArrayEquals(new boolean[] {true, true, true}, read(kBig), backend.toString());
                    assertArrayEquals(new boolean[3], read(q), backend.toString());
                    assertEquals(0, emptyTop.dim(0));
                }
            }
        }
    }

    @Test
    void rankFormulas() {
        assertEquals(1, TokenSelection.rank(0, 10, Rank.NEAREST_RANK));
        assertEquals(9, TokenSelection.rank(0.8, 10, Rank.LINEAR_CEILING)); // 1 + ceil(7.2)
        assertEquals(9, TokenSelection.rank(0.8, 11, Rank.LINEAR_CEILING)); // 1 + 8, a whole position
        assertEquals(1, TokenSelection.rank(0, 10, Rank.LINEAR_CEILING));
        assertEquals(10, TokenSelection.rank(1, 10, Rank.LINEAR_CEILING));
        // q as its decimal: 0.07 * 100 = 7 exactly (float64 gives 7.000000000000001, whose ceiling is 8)
        assertEquals(8, TokenSelection.rank(0.07, 101, Rank.LINEAR_CEILING));
        assertEquals(7, TokenSelection.rank(0.07, 100, Rank.NEAREST_RANK));
        assertEquals(5, TokenSelection.rank(1 - 0.7, 11, Rank.LINEAR_CEILING)); // 0.30000000000000004 itself
        assertEquals(8, TokenSelection.rank(0.8, 10, Rank.NEAREST_RANK));
        assertEquals(9, TokenSelection.rank(0.81, 10, Rank.NEAREST_RANK));
        assertEquals(10, TokenSelection.rank(1, 10, Rank.NEAREST_RANK));
        assertEquals(1, TokenSelection.rank(0, 10, Rank.ROUND_LINEAR));
        assertEquals(8, TokenSelection.rank(0.8, 10, Rank.ROUND_LINEAR)); // 1 + rint(7.2)
        assertEquals(3, TokenSelection.rank(0.5, 4, Rank.ROUND_LINEAR)); // 1 + rint(1.5) = 1 + 2 (ties to even)
        assertEquals(1, TokenSelection.rank(0.5, 2, Rank.ROUND_LINEAR)); // 1 + rint(0.5) = 1 + 0 (ties to even, as Python round)
    }

    @Test
    void badInputsAreClearErrors() {
        try (Tensor s = Tensor.of(new float[] {1, Float.NaN, 3}, 3); Tensor ok = Tensor.of(new float[] {1, 2, 3}, 3);
             Tensor m = maskOf(new boolean[] {true, true, false}); Tensor shortMask = maskOf(new boolean[2]);
             Tensor intMask = Tensor.ofInts(new int[] {1, 1, 1}, 3); Tensor matrix = Tensor.of(new float[4], 2, 2);
             Tensor half = Tensor.ofFloats(new float[3], DType.BF16, 3)) {
            TokenSelection.Options o = TokenSelection.Options.defaults();
            expect(() -> TokenSelection.kth(s, null, 1, Order.SMALLEST, o), "scores[1]");
            expect(() -> TokenSelection.kth(s, m, 1, Order.SMALLEST, o), "NaN");
            expect(() -> TokenSelection.kth(ok, null, 0, Order.SMALLEST, o), "k: expected a rank in [1, 3]");
            expect(() -> TokenSelection.kth(ok, null, 4, Order.LARGEST, o), "k: expected a rank in [1, 3]");
            expect(() -> TokenSelection.kth(ok, null, 1, null, o), "order");
            expect(() -> TokenSelection.kth(null, null, 1, Order.SMALLEST, o), "scores");
            expect(() -> TokenSelection.kth(ok, null, 1, Order.SMALLEST, null), "options");
            expect(() -> TokenSelection.kth(matrix, null, 1, Order.SMALLEST, o), "scores: expected rank 1");
            expect(() -> TokenSelection.kth(half, null, 1, Order.SMALLEST, o), "scores: expected dtype F32");
            expect(() -> TokenSelection.kth(ok, shortMask, 1, Order.SMALLEST, o), "mask: expected dimension 0 = 3");
            expect(() -> TokenSelection.kth(ok, intMask, 1, Order.SMALLEST, o), "mask: expected dtype U8");
            expect(() -> TokenSelection.quantile(ok, null, 1.5, Rank.NEAREST_RANK, o), "q: expected a quantile in [0, 1]");
            expect(() -> TokenSelection.quantile(ok, null, Double.NaN, Rank.NEAREST_RANK, o), "q:");
            expect(() -> TokenSelection.quantile(ok, null, 0.5, null, o), "rank");
            expect(() -> TokenSelection.topK(ok, null, -1, o), "k: expected a count >= 0");
            expect(() -> TokenSelection.atLeastQuantile(ok, null, -0.1, Rank.NEAREST_RANK, o), "q:");
        }
    }
}
