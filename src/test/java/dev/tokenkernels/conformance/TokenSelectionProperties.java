package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.tokenkernels.ops.select.TokenSelection;
import dev.tokenkernels.ops.select.TokenSelection.Order;
import dev.tokenkernels.ops.select.TokenSelection.Rank;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.List;
import java.util.SplittableRandom;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;

/**
 * TokenSelection on random sizes, value distributions (many ties, signed zeros, infinities,
 * NaN outside the mask) and masks, on every backend: the same index as a sort, bit for bit.
 */
class TokenSelectionProperties {

    static float[] randomScores(SplittableRandom random, int n, int kind) {
        float[] s = new float[n];
        float[] specials = {0f, -0f, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, Float.MIN_VALUE, -Float.MAX_VALUE};
        for (int i = 0; i < n; i++) {
            s[i] = switch (kind) {
                case 0 -> (float) random.nextGaussian();
                case 1 -> random.nextInt(4); // many ties
                case 2 -> random.nextInt(8) == 0 ? specials[random.nextInt(specials.length)] : (float) random.nextGaussian() * 1e3f;
                default -> Float.intBitsToFloat(random.nextInt() & 0x7f7fffff | (random.nextBoolean() ? 0x80000000 : 0));
            };
        }
        return s;
    }

    @Property(tries = 60)
    void selectionMatchesASort(@ForAll("sizes") int n, @ForAll("kinds") int kind, @ForAll("densities") double density,
                               @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] s = randomScores(random, n, kind);
        boolean[] m = density >= 1 ? null : new boolean[n];
        int count = n;
        if (m != null) {
            count = 0;
            for (int i = 0; i < n; i++) {
                m[i] = random.nextDouble() < density;
                count += m[i] ? 1 : 0;
                if (!m[i] && random.nextInt(4) == 0) {
                    s[i] = Float.NaN; // ignored outside the mask
                }
            }
        }
        long k = count == 0 ? 1 : 1 + random.nextInt(count);
        long keepK = random.nextInt(count + 2);
        double q = random.nextInt(5) == 0 ? random.nextInt(2) : random.nextDouble();
        List<Integer> up = TokenSelectionReference.ordered(s, m, false);
        List<Integer> down = TokenSelectionReference.ordered(s, m, true);
        try (Tensor scores = Tensor.of(s, n); Tensor mask = m == null ? null : TokenSelectionTest.maskOf(m)) {
            for (Backend backend : ConformanceBackends.all()) {
                String at = backend + " n=" + n + " kind=" + kind + " masked=" + count + " k=" + k + " q=" + q;
                TokenSelection.Options o = TokenSelection.Options.defaults().on(backend);
                if (count == 0) {
                    assertEquals(-1, TokenSelection.quantile(scores, mask, q, Rank.NEAREST_RANK, o).index(), at);
                } else {
                    assertEquals((long) up.get((int) k - 1), TokenSelection.kth(scores, mask, k, Order.SMALLEST, o).index(), at + " smallest");
                    TokenSelection.Element top = TokenSelection.kth(scores, mask, k, Order.LARGEST, o);
                    assertEquals((long) down.get((int) k - 1), top.index(), at + " largest");
                    assertEquals(Float.floatToRawIntBits(s[down.get((int) k - 1)]), Float.floatToRawIntBits(top.value()), at);
                    for (boolean linear : new boolean[] {false, true}) {
                        long r = TokenSelectionReference.rank(q, count, linear);
                        TokenSelection.Element e = TokenSelection.quantile(scores, mask, q,
                                linear ? Rank.ROUND_LINEAR : Rank.NEAREST_RANK, o);
                        assertEquals((long) up.get((int) r - 1), e.index(), at + " quantile linear=" + linear);
                        assertEquals(r, e.rank(), at);
                    }
                }
                boolean largest = random.nextBoolean();
                try (Tensor kept = TokenSelection.keep(scores, mask, keepK, largest ? Order.LARGEST : Order.SMALLEST, o);
                     Tensor above = TokenSelection.atLeastQuantile(scores, mask, q, Rank.NEAREST_RANK, o)) {
                    assertArrayEquals(TokenSelectionReference.keep(s, m, keepK, largest), TokenSelectionTest.read(kept),
                            at + " keep " + keepK + " largest=" + largest);
                    boolean[] expected = count == 0 ? new boolean[n]
                            : TokenSelectionReference.atLeast(s, m, TokenSelectionReference.rank(q, count, false));
                    assertArrayEquals(expected, TokenSelectionTest.read(above), at + " at least the quantile");
                }
            }
        }
    }

    @Provide
    Arbitrary<Integer> sizes() {
        return Arbitraries.oneOf(Arbitraries.integers().between(0, 40), Arbitraries.integers().between(41, 5000),
                Arbitraries.of(1, 15, 16, 17, 255, 256, 257, 65535, 65536, 65537, 140000));
    }

    @Provide
    Arbitrary<Integer> kinds() {
        return Arbitraries.integers().between(0, 3);
    }

    @Provide
    Arbitrary<Double> densities() {
        return Arbitraries.of(1.0, 0.9, 0.5, 0.05, 0.0);
    }
}
