package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.select.TokenGroupAdvantage;
import dev.tokenkernels.runtime.Tensor;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;

/** HAPO's token-level group average advantage: by hand, the GRPO fallback, masks, bad inputs. */
class TokenGroupAdvantageTest {

    /**
     * One group: rewards 1, 0 with 3 and 1 tokens. mu = 3/4, sigma = sqrt((3 (1/4)^2 + (3/4)^2)/4)
     * = sqrt(3)/4; A = (1/4)/(sqrt(3)/4) = 1/sqrt 3 and -(3/4)/(sqrt(3)/4) = -sqrt 3.
     */
    @Test
    void lengthWeightedByHand() {
        try (TokenGroupAdvantage.Result r = TokenGroupAdvantage.compute(new float[] {1f, 0f}, new int[] {0, 3, 4},
                new int[] {0, 2}, null)) {
            double s = 1e-6;
            assertEquals(0.25 / (Math.sqrt(3) / 4 + s), r.sequenceAdvantages()[0], 1e-6);
            assertEquals(-0.75 / (Math.sqrt(3) / 4 + s), r.sequenceAdvantages()[1], 1e-6);
            assertFalse(r.fellBack()[0]);
            for (int t = 0; t < 3; t++) {
                assertEquals(r.sequenceAdvantages()[0], r.tokenAdvantages().getFloat(t));
            }
            assertEquals(r.sequenceAdvantages()[1], r.tokenAdvantages().getFloat(3));
        }
    }

    /**
     * Rewards 1, 0, 0 with lengths 1, 100, 100: the rewarded response is 1/201 of the tokens, so
     * its token-level advantage exceeds 5 and the group falls back to GRPO (sample std 1/sqrt 3 ...).
     */
    @Test
    void fallsBackToGrpo() {
        try (TokenGroupAdvantage.Result r = TokenGroupAdvantage.compute(new float[] {1f, 0f, 0f, 2f},
                new int[] {0, 1, 101, 201, 205}, new int[] {0, 3, 4}, null)) {
            assertTrue(r.fellBack()[0]);
            double mean = 1.0 / 3;
            double std = Math.sqrt(((1 - mean) * (1 - mean) + 2 * mean * mean) / 2);
            assertEquals((1 - mean) / (std + 1e-6), r.sequenceAdvantages()[0], 1e-6);
            assertEquals(-mean / (std + 1e-6), r.sequenceAdvantages()[1], 1e-6);
            // a group of one: token-level sigma = 0 gives A = 0, no fallback
            assertFalse(r.fellBack()[1]);
            assertEquals(0f, r.sequenceAdvantages()[3]);
        }
    }

    @Test
    void maskedTokensSetTheWeightsAndGetZero() {
        boolean[] m = {true, false, false, true, true};
        try (Tensor mask = TokenSelectionTest.maskOf(m);
             TokenGroupAdvantage.Result masked = TokenGroupAdvantage.compute(new float[] {1f, 0f}, new int[] {0, 3, 5},
                     new int[] {0, 2}, mask);
             TokenGroupAdvantage.Result equal = TokenGroupAdvantage.compute(new float[] {1f, 0f}, new int[] {0, 2, 4},
                     new int[] {0, 2}, null);
             TokenGroupAdvantage.Result empty = TokenGroupAdvantage.compute(new float[] {1f, 0f}, new int[] {0, 0, 0},
                     new int[] {0, 2}, null)) {
            // lengths 1 and 2 under the mask: mu = 1/3, sigma = sqrt(2)/3
            assertEquals((2.0 / 3) / (Math.sqrt(2) / 3 + 1e-6), masked.sequenceAdvantages()[0], 1e-6);
            assertEquals(0f, masked.tokenAdvantages().getFloat(1));
            assertEquals(0f, masked.tokenAdvantages().getFloat(2));
            assertEquals(masked.sequenceAdvantages()[1], masked.tokenAdvantages().getFloat(4));
            // equal lengths: token-level = population GRPO
            assertEquals(0.5 / (0.5 + 1e-6), equal.sequenceAdvantages()[0], 1e-6);
            assertTrue(empty.fellBack()[0], "no tokens: GRPO");
            assertArrayEquals(new float[0], empty.tokenAdvantages().toFloatArray());
        }
    }

    /**
     * Against the statistics taken the way the released code takes them: every counted token
     * carries its response's reward, and the group's mean and population std are over those tokens.
     */
    @Property(tries = 200)
    void matchesTokenByTokenStatistics(@ForAll @IntRange(min = 1, max = 6) int groups, @ForAll boolean binary,
                                       @ForAll boolean masked, @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        List<Integer> groupStarts = new ArrayList<>(List.of(0));
        List<Integer> seqStarts = new ArrayList<>(List.of(0));
        List<Float> rewards = new ArrayList<>();
        for (int g = 0; g < groups; g++) {
            int size = 1 + random.nextInt(6);
            for (int i = 0; i < size; i++) {
                rewards.add(binary ? random.nextInt(2) : (float) random.nextGaussian());
                seqStarts.add(seqStarts.get(seqStarts.size() - 1) + random.nextInt(random.nextInt(5) == 0 ? 300 : 20));
            }
            groupStarts.add(rewards.size());
        }
        int b = rewards.size();
        int n = seqStarts.get(b);
        float[] r = new float[b];
        for (int i = 0; i < b; i++) {
            r[i] = rewards.get(i);
        }
        boolean[] m = new boolean[n];
        for (int t = 0; t < n; t++) {
            m[t] = !masked || random.nextInt(3) != 0;
        }
        int[] ss = seqStarts.stream().mapToInt(Integer::intValue).toArray();
        int[] gs = groupStarts.stream().mapToInt(Integer::intValue).toArray();
        try (Tensor mask = TokenSelectionTest.maskOf(m);
             TokenGroupAdvantage.Result result = TokenGroupAdvantage.compute(r, ss, gs, masked ? mask : null)) {
            for (int g = 0; g < groups; g++) {
                List<Double> tokenRewards = new ArrayList<>();
                for (int i = gs[g]; i < gs[g + 1]; i++) {
                    for (int t = ss[i]; t < ss[i + 1]; t++) {
                        if (m[t]) {
                            tokenRewards.add((double) r[i]);
                        }
                    }
                }
                double mu = tokenRewards.stream().mapToDouble(Double::doubleValue).average().orElse(Double.NaN);
                double var = tokenRewards.stream().mapToDouble(x -> (x - mu) * (x - mu)).average().orElse(Double.NaN);
                double[] expected = new double[gs[g + 1] - gs[g]];
                boolean fallback = tokenRewards.isEmpty();
                for (int i = gs[g]; i < gs[g + 1] && !fallback; i++) {
                    expected[i - gs[g]] = (r[i] - mu) / (Math.sqrt(var) + 1e-6);
                    boolean hasTokens = false;
                    for (int t = ss[i]; t < ss[i + 1]; t++) {
                        hasTokens |= m[t];
                    }
                    fallback |= hasTokens && Math.abs(expected[i - gs[g]]) >= 5;
                }
                if (fallback) {
                    int size = expected.length;
                    double mean = 0;
                    for (int i = gs[g]; i < gs[g + 1]; i++) {
                        mean += r[i] / (double) size;
                    }
                    double ss2 = 0;
                    for (int i = gs[g]; i < gs[g + 1]; i++) {
                        ss2 += (r[i] - mean) * (r[i] - mean);
                    }
                    double std = size == 1 ? 1 : Math.sqrt(ss2 / (size - 1));
                    for (int i = gs[g]; i < gs[g + 1]; i++) {
                        expected[i - gs[g]] = (r[i] - (size == 1 ? 0 : mean)) / (std + 1e-6);
                    }
                }
                assertEquals(fallback, result.fellBack()[g], "group " + g);
                for (int i = gs[g]; i < gs[g + 1]; i++) {
                    double e = expected[i - gs[g]];
                    assertEquals(e, result.sequenceAdvantages()[i], 1e-6 * (1 + Math.abs(e)), "response " + i);
                    for (int t = ss[i]; t < ss[i + 1]; t++) {
                        assertEquals(m[t] ? result.sequenceAdvantages()[i] : 0f, result.tokenAdvantages().getFloat(t));
                    }
                }
            }
        }
    }

    @Test
    void badInputsAreClearErrors() {
        float[] r = {1f, 0f};
        expect(() -> TokenGroupAdvantage.compute(null, new int[] {0, 1, 2}, new int[] {0, 2}, null), "rewards");
        expect(() -> TokenGroupAdvantage.compute(new float[] {1f, Float.NaN}, new int[] {0, 1, 2}, new int[] {0, 2}, null), "rewards[1]");
        expect(() -> TokenGroupAdvantage.compute(r, new int[] {0, 1}, new int[] {0, 2}, null), "sequenceStarts: expected 3 offsets");
        expect(() -> TokenGroupAdvantage.compute(r, new int[] {0, 2, 1}, new int[] {0, 2}, null), "non-decreasing");
        expect(() -> TokenGroupAdvantage.compute(r, new int[] {0, 1, 2}, new int[] {0, 1}, null), "groupStarts: expected offsets ending at 2");
        try (Tensor shortMask = TokenSelectionTest.maskOf(new boolean[1])) {
            expect(() -> TokenGroupAdvantage.compute(r, new int[] {0, 1, 2}, new int[] {0, 2}, shortMask), "mask");
        }
    }
}
