package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.ops.loss.PolicyLoss.Aggregation;
import dev.tokenkernels.ops.loss.PolicyLoss.Options;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** Worked examples, the statistics, the ratio clamp and bad inputs of PolicyLoss, on every backend. */
class PolicyLossTest {

    /**
     * Two classes with logits (0, ln 3): p = (1/4, 3/4). Token 0 samples class 1 (logp = ln 3/4)
     * with old logp ln(3/4) - ln 1.5, so r = 1.5 > 1.2 and A = 1 clips: loss -1.2, no gradient.
     * Token 1 samples class 0 (logp = ln 1/4), r = 0.9 inside the range, A = -2: loss 1.8,
     * dL/dlogp = -A r = 1.8. Token mean: loss 0.3, gradient of token 1 (1.8 / 2)(onehot - p).
     */
    @Test
    void twoTokensByHand() {
        float ln3 = (float) Math.log(3);
        float[] z = {0f, ln3, 0f, ln3};
        float[] old = {(float) (Math.log(0.75) - Math.log(1.5)), (float) (Math.log(0.25) - Math.log(0.9))};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor logits = Tensor.of(z, 2, 2); Tensor y = Tensor.ofInts(new int[] {1, 0}, 2);
                 Tensor o = Tensor.of(old, 2); Tensor a = Tensor.of(new float[] {1f, -2f}, 2);
                 PolicyLoss.Result r = PolicyLoss.computeWithGradient(logits, y, o, a, null, new int[] {0, 2},
                         Options.defaults().on(backend), 1f)) {
                assertEquals(0.5 * (-1.2 + 1.8), r.loss(), 1e-5, backend + " loss");
                assertEquals(0f, r.gradient().getFloat(0), 1e-7, backend + " clipped token, no gradient");
                assertEquals(0f, r.gradient().getFloat(1), 1e-7, backend + " clipped token, no gradient");
                assertEquals(0.9 * (1 - 0.25), r.gradient().getFloat(2), 1e-5, backend + " token 1, its target");
                assertEquals(0.9 * (0 - 0.75), r.gradient().getFloat(3), 1e-5, backend + " token 1, the other class");
                assertEquals(0.5, r.clipFractionHigh(), 1e-12, backend + " one of two tokens clipped high");
                assertEquals(0.0, r.clipFractionLow(), 1e-12, backend + " none clipped low");
                assertEquals((1.5 + 0.9) / 2, r.meanRatio(), 1e-5, backend + " mean ratio");
                double entropy = -(0.25 * Math.log(0.25) + 0.75 * Math.log(0.75));
                assertEquals(entropy, r.meanEntropy(), 1e-5, backend + " mean entropy");
            }
        }
    }

    /** A log-ratio beyond 20 is clamped: the ratio is e^20 and the gradient through it is 0. */
    @Test
    void theLogRatioIsClamped() {
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor logits = Tensor.of(new float[] {0f, 0f}, 1, 2); Tensor y = Tensor.ofInts(new int[] {0}, 1);
                 Tensor o = Tensor.of(new float[] {-50f}, 1); Tensor a = Tensor.of(new float[] {-1f}, 1);
                 PolicyLoss.Result r = PolicyLoss.computeWithGradient(logits, y, o, a, null, new int[] {0, 1},
                         Options.defaults().on(backend), 1f)) {
                assertEquals(Math.exp(20), r.meanRatio(), 1e-3 * Math.exp(20), backend + " ratio");
                assertEquals((float) Math.exp(20), r.loss(), 1e-3f * (float) Math.exp(20), backend + " loss = -A r");
                assertEquals(0f, r.gradient().getFloat(0), backend + " no gradient through the clamp");
            }
        }
    }

    /**
     * The gradient written over the logits is the one a separate buffer gets, bit for bit, and the
     * loss and statistics do not change: rows with an ignored target, masked classes, a NaN, a
     * large shift and T != 1.
     */
    @Test
    void gradientInPlaceEqualsASeparateBuffer() {
        int rows = 7;
        int vocab = 1000;
        SplittableRandom random = new SplittableRandom(5);
        float[] z = new float[rows * vocab];
        for (int i = 0; i < z.length; i++) {
            z[i] = (float) (2 * random.nextGaussian());
        }
        for (int j = 0; j < vocab; j++) {
            z[vocab + j] += 300f; // row 1: large logits
            z[4 * vocab + j] = j % 2 == 0 ? Float.NEGATIVE_INFINITY : z[4 * vocab + j]; // row 4: masked classes
        }
        z[5 * vocab + 9] = Float.NaN; // row 5: no distribution
        int[] targets = {3, 999, -100, 0, 1, 7, 512}; // row 2 ignored
        float[] old = new float[rows];
        float[] advantages = new float[rows];
        for (int t = 0; t < rows; t++) {
            old[t] = (float) (-7 + random.nextGaussian());
            advantages[t] = (float) random.nextGaussian();
        }
        for (Backend backend : ConformanceBackends.all()) {
            Options options = Options.defaults().withTemperature(0.7f).on(backend);
            try (Tensor logits = Tensor.of(z, rows, vocab); Tensor y = Tensor.ofInts(targets, rows);
                 Tensor o = Tensor.of(old, rows); Tensor a = Tensor.of(advantages, rows);
                 Tensor separate = Tensor.allocate(DType.F32, rows, vocab);
                 PolicyLoss.Result expected = PolicyLoss.computeWithGradient(logits, y, o, a, null,
                         new int[] {0, 3, rows}, options, 1.5f, separate);
                 PolicyLoss.Result actual = PolicyLoss.computeWithGradient(logits, y, o, a, null,
                         new int[] {0, 3, rows}, options, 1.5f, logits)) {
                assertEquals(Float.floatToIntBits(expected.loss()), Float.floatToIntBits(actual.loss()), backend + " loss");
                assertEquals(expected.meanRatio(), actual.meanRatio(), backend + " mean ratio");
                assertEquals(expected.meanEntropy(), actual.meanEntropy(), backend + " mean entropy");
                for (long i = 0; i < (long) rows * vocab; i++) {
                    assertEquals(Float.floatToIntBits(separate.getFloat(i)), Float.floatToIntBits(logits.getFloat(i)),
                            backend + " gradient [" + i / vocab + ", " + i % vocab + "]");
                }
                assertTrue(Float.isNaN(logits.getFloat(5L * vocab)), backend + " the NaN row's gradient");
                assertEquals(0f, logits.getFloat(2L * vocab + 4), backend + " the ignored row's gradient");
            }
        }
    }

    private static final float LN3 = (float) Math.log(3);
    private static final double P0 = 0.25;
    private static final double P1 = 0.75;

    /** {@code rows} copies of the two-class row (0, ln 3), all sampling class 1 (logp = ln 3/4). */
    private static Tensor twoClassRows(int rows) {
        float[] z = new float[2 * rows];
        for (int t = 0; t < rows; t++) {
            z[2 * t + 1] = LN3;
        }
        return Tensor.of(z, rows, 2);
    }

    /** The old log-probabilities that give class 1 of the two-class row the ratios {@code r}. */
    private static Tensor oldForRatios(double... r) {
        float[] old = new float[r.length];
        for (int t = 0; t < r.length; t++) {
            old[t] = (float) (Math.log(P1) - Math.log(r[t]));
        }
        return Tensor.of(old, r.length);
    }

    private static Tensor classOne(int rows) {
        int[] y = new int[rows];
        java.util.Arrays.fill(y, 1);
        return Tensor.ofInts(y, rows);
    }

    private static void assertRowGradient(String at, double slope, PolicyLoss.Result r, int row) {
        assertEquals(slope * (0 - P0), r.gradient().getFloat(2L * row), 1e-5 * (1 + Math.abs(slope)), at + " class 0");
        assertEquals(slope * (1 - P1), r.gradient().getFloat(2L * row + 1), 1e-5 * (1 + Math.abs(slope)), at + " class 1");
    }

    /**
     * r = 0.9, A = -2: policy term 1.8 with slope 1.8; weight 0.25 scales it; the k3 reference KL
     * (beta 0.5, ref = logp + 0.3) is not weighted.
     */
    @Test
    void tokenWeightsScaleThePolicyTermNotTheKl() {
        double k3 = Math.exp(0.3) - 0.3 - 1;
        double slope = 0.25 * 1.8 + 0.5 * (1 - Math.exp(0.3));
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor z = twoClassRows(1); Tensor y = classOne(1); Tensor o = oldForRatios(0.9);
                 Tensor a = Tensor.of(new float[] {-2f}, 1);
                 Tensor ref = Tensor.of(new float[] {(float) (Math.log(P1) + 0.3)}, 1);
                 Tensor w = Tensor.of(new float[] {0.25f}, 1);
                 PolicyLoss.Result r = PolicyLoss.computeWithGradient(z, y, o, a, ref, new int[] {0, 1},
                         Options.defaults().withReferenceKl(0.5f).withTokenWeights(w).on(backend), 1f)) {
                assertEquals(0.25 * 1.8 + 0.5 * k3, r.loss(), 1e-5, backend + " loss");
                assertRowGradient(backend + " gradient", slope, r, 0);
            }
        }
    }

    /** Weights of 1 give bit for bit the loss and gradient of no weights (the default path). */
    @Test
    void unitWeightsChangeNothing() {
        java.util.SplittableRandom random = new java.util.SplittableRandom(7);
        int rows = 5;
        int vocab = 37;
        float[] values = new float[rows * vocab];
        float[] old = new float[rows];
        float[] adv = new float[rows];
        for (int k = 0; k < values.length; k++) {
            values[k] = (float) random.nextGaussian();
        }
        for (int t = 0; t < rows; t++) {
            old[t] = (float) (-Math.log(vocab) + random.nextDouble(-0.5, 0.5));
            adv[t] = (float) random.nextGaussian();
        }
        float[] ones = new float[rows];
        java.util.Arrays.fill(ones, 1f);
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor z = Tensor.of(values, rows, vocab); Tensor y = Tensor.ofInts(new int[] {0, 3, 36, 5, 9}, rows);
                 Tensor o = Tensor.of(old, rows); Tensor a = Tensor.of(adv, rows); Tensor w = Tensor.of(ones, rows);
                 PolicyLoss.Result plain = PolicyLoss.computeWithGradient(z, y, o, a, null, new int[] {0, 2, 5},
                         Options.defaults().withDualClip(3f).on(backend), 1f);
                 PolicyLoss.Result weighted = PolicyLoss.computeWithGradient(z, y, o, a, null, new int[] {0, 2, 5},
                         Options.defaults().withDualClip(3f).withTokenWeights(w).on(backend), 1f)) {
                assertEquals(plain.loss(), weighted.loss(), backend + " loss");
                for (int k = 0; k < rows * vocab; k++) {
                    assertEquals(plain.gradient().getFloat(k), weighted.gradient().getFloat(k), backend + " gradient " + k);
                }
            }
        }
    }

    /**
     * eps 0.2: the neutral zone is (0.9, 1.1). r = 1.05 is inside and uses A = 1 (loss -1.05);
     * r = 1.15 is outside the zone but inside the clip and uses Aout = 3 (loss -3.45, slope -3.45);
     * r = 1.3 with A = 1 would clip high, but uses Aout = -1: loss 1.3, slope 1.3, not clipped.
     */
    @Test
    void zoneAdvantagesApplyOutsideTheNeutralZone() {
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor z = twoClassRows(3); Tensor y = classOne(3); Tensor o = oldForRatios(1.05, 1.15, 1.3);
                 Tensor a = Tensor.of(new float[] {1f, 1f, 1f}, 3); Tensor out = Tensor.of(new float[] {5f, 3f, -1f}, 3);
                 PolicyLoss.Result r = PolicyLoss.computeWithGradient(z, y, o, a, null, new int[] {0, 3},
                         Options.defaults().withZoneAdvantages(out).on(backend), 1f)) {
                assertEquals((-1.05 - 3.45 + 1.3) / 3, r.loss(), 1e-5, backend + " loss");
                assertRowGradient(backend + " inside", -1.05 / 3, r, 0);
                assertRowGradient(backend + " outside", -3.45 / 3, r, 1);
                assertRowGradient(backend + " outside, negative", 1.3 / 3, r, 2);
                assertEquals(0.0, r.clipFractionHigh(), 1e-12, backend + " the zone's advantage decides the clip");
                assertEquals(0.0, r.clipFractionLow(), 1e-12, backend + " nothing clipped low");
            }
        }
    }

    /**
     * Lp-Reg, beta 2, seq-mean-token-sum over one sequence (weight 1 each); k3(e) = e^e - e - 1 of
     * e = lp - logp, capped at 10 with slope 0 there. Token 0: r = 1.5, A = 1, e = 0.5: no clip,
     * loss -1.5 + 2 k3(0.5), slope -1.5 + 2 (1 - e^0.5). Token 1: r = 0.5, A = -1, e = 3
     * (k3 = 16.1, capped): loss 0.5 + 20, slope 0.5. Token 2: not regularized, proxy -inf (not
     * read): r = 1.5 clips at 1.2, loss -1.2. Token 3: r = 0.9, A = -1, e = -2 (k3 = 1.14): loss
     * 0.9 + 2 k3(-2), slope 0.9 + 2 (1 - e^-2). Token 4: r = 1, A = 1, e = -12 (k3 = 11, capped):
     * loss -1 + 20, slope -1. Each token's loss is asserted alone, then the sum.
     */
    @Test
    void lpRegTokensAreUnclippedWithACappedKl() {
        double[] ratio = {1.5, 0.5, 1.5, 0.9, 1};
        float[] adv = {1f, -1f, 1f, -1f, 1f};
        float[] e = {0.5f, 3f, Float.NaN, -2f, -12f};
        double[] loss = {-1.5 + 2 * k3(0.5), 0.5 + 20, -1.2, 0.9 + 2 * k3(-2), -1 + 20};
        double[] slope = {-1.5 + 2 * (1 - Math.exp(0.5)), 0.5, 0, 0.9 + 2 * (1 - Math.exp(-2)), -1};
        float logp = (float) Math.log(P1);
        float[] lp = new float[5];
        int[] flags = new int[5];
        for (int t = 0; t < 5; t++) {
            flags[t] = Float.isNaN(e[t]) ? 0 : 1;
            lp[t] = flags[t] == 1 ? logp + e[t] : Float.NEGATIVE_INFINITY;
        }
        Options lpReg = Options.defaults().withAggregation(Aggregation.SEQ_MEAN_TOKEN_SUM);
        for (Backend backend : ConformanceBackends.all()) {
            for (int t = 0; t < 5; t++) {
                try (Tensor z = twoClassRows(1); Tensor y = classOne(1); Tensor o = oldForRatios(ratio[t]);
                     Tensor a = Tensor.of(new float[] {adv[t]}, 1); Tensor proxy = Tensor.of(new float[] {lp[t]}, 1);
                     Tensor mask = u8(flags[t]);
                     PolicyLoss.Result r = PolicyLoss.computeWithGradient(z, y, o, a, null, new int[] {0, 1},
                             lpReg.withLpReg(proxy, mask, 2f).on(backend), 1f)) {
                    assertEquals(loss[t], r.loss(), 2e-6 * (1 + Math.abs(loss[t])), backend + " token " + t + " loss");
                    assertRowGradient(backend + " token " + t, slope[t], r, 0);
                }
            }
            try (Tensor z = twoClassRows(5); Tensor y = classOne(5); Tensor o = oldForRatios(ratio);
                 Tensor a = Tensor.of(adv, 5); Tensor proxy = Tensor.of(lp, 5); Tensor mask = u8(flags);
                 PolicyLoss.Result r = PolicyLoss.computeWithGradient(z, y, o, a, null, new int[] {0, 5},
                         lpReg.withLpReg(proxy, mask, 2f).on(backend), 1f)) {
                assertEquals(java.util.Arrays.stream(loss).sum(), r.loss(), 2e-5, backend + " loss");
                for (int t = 0; t < 5; t++) {
                    assertRowGradient(backend + " token " + t + " in the batch", slope[t], r, t);
                }
                assertEquals(1.0 / 5, r.clipFractionHigh(), 1e-12, backend + " only the plain token clips");
                assertEquals(0.0, r.clipFractionLow(), 1e-12, backend + " regularized tokens are not clipped");
            }
        }
    }

    private static double k3(double e) {
        return Math.exp(e) - e - 1;
    }

    /**
     * A regularized token whose target logit is -inf (logp = -inf, e = +inf) takes the capped KL
     * 10 beta with slope 0, and the ratio's clamp: loss -A e^-20 + 10 beta, gradient 0, not NaN.
     */
    @Test
    void lpRegTokenWithMinusInfinityLogProbTakesTheCap() {
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor z = Tensor.of(new float[] {Float.NEGATIVE_INFINITY, 0f}, 1, 2);
                 Tensor y = Tensor.ofInts(new int[] {0}, 1); Tensor o = Tensor.of(new float[] {-3f}, 1);
                 Tensor a = Tensor.of(new float[] {-1f}, 1); Tensor proxy = Tensor.of(new float[] {-5f}, 1);
                 Tensor mask = u8(1);
                 PolicyLoss.Result r = PolicyLoss.computeWithGradient(z, y, o, a, null, new int[] {0, 1},
                         Options.defaults().withLpReg(proxy, mask, 0.5f).on(backend), 1f)) {
                assertEquals(Float.NEGATIVE_INFINITY, r.logProb().getFloat(0), backend + " logp");
                assertEquals(Math.exp(-20) + 5, r.loss(), 1e-6, backend + " loss");
                assertEquals(0.0, r.gradient().getFloat(0), 0.0, backend + " gradient, target");
                assertEquals(0.0, r.gradient().getFloat(1), 0.0, backend + " gradient, other class");
            }
        }
    }

    private static Tensor u8(int... flags) {
        Tensor t = Tensor.allocate(DType.U8, flags.length);
        for (int i = 0; i < flags.length; i++) {
            t.segment().set(java.lang.foreign.ValueLayout.JAVA_BYTE, i, (byte) flags[i]);
        }
        return t;
    }

    /**
     * DEGRPO, alpha 0.1, r = 1 so each token's loss is -A. Sequences [0,3), [3,4), [4,6) with
     * token 4 ignored: control tokens 0 and 3, later tokens 1, 2, 5.
     */
    @Test
    void degrpoSeparatesTheControlTokens() {
        float[] adv = {1f, 2f, 3f, 4f, 5f, 6f};
        double alpha = 0.1;
        double expected = alpha * -(1 + 4) / 2.0 - (2 + 3 + 6) / 3.0;
        int[] y = {1, 1, 1, 1, -100, 1};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor z = twoClassRows(6); Tensor targets = Tensor.ofInts(y, 6);
                 Tensor o = oldForRatios(1, 1, 1, 1, 1, 1); Tensor a = Tensor.of(adv, 6);
                 PolicyLoss.Result r = PolicyLoss.computeWithGradient(z, targets, o, a, null, new int[] {0, 3, 4, 6},
                         Options.defaults().withAggregation(Aggregation.DEGRPO).withControlTokenWeight(0.1f)
                                 .on(backend), 1f)) {
                assertEquals(expected, r.loss(), 1e-5, backend + " loss");
                assertRowGradient(backend + " control token 0", alpha / 2 * -1, r, 0);
                assertRowGradient(backend + " later token 2", -3 / 3.0, r, 2);
                assertRowGradient(backend + " control token 3", alpha / 2 * -4, r, 3);
                assertRowGradient(backend + " ignored token 4", 0, r, 4);
            }
        }
    }

    /** A part of DEGRPO with no token contributes 0: only control tokens, only later tokens, nothing counted. */
    @Test
    void degrpoEmptyPartsAreZero() {
        Options degrpo = Options.defaults().withAggregation(Aggregation.DEGRPO);
        try (Tensor z = twoClassRows(2); Tensor o = oldForRatios(1, 1); Tensor a = Tensor.of(new float[] {1f, 3f}, 2);
             Tensor both = classOne(2); Tensor firstIgnored = Tensor.ofInts(new int[] {-100, 1}, 2);
             Tensor none = Tensor.ofInts(new int[] {-100, -100}, 2);
             PolicyLoss.Result onlyControls = PolicyLoss.compute(z, both, o, a, null, new int[] {0, 1, 2}, degrpo);
             PolicyLoss.Result onlyLater = PolicyLoss.compute(z, firstIgnored, o, a, null, new int[] {0, 2}, degrpo);
             PolicyLoss.Result nothing = PolicyLoss.compute(z, none, o, a, null, new int[] {0, 2}, degrpo)) {
            assertEquals(0.001 * -(1 + 3) / 2.0, onlyControls.loss(), 1e-8, "two control tokens, no later token");
            assertEquals(-3.0, onlyLater.loss(), 1e-6, "no counted control token");
            assertEquals(0f, nothing.loss(), "no counted token");
        }
    }

    @Test
    void badInputsAreClearErrors() {
        try (Tensor z = Tensor.of(new float[6], 2, 3); Tensor y = Tensor.ofInts(new int[] {0, 2}, 2);
             Tensor o = Tensor.of(new float[2], 2); Tensor a = Tensor.of(new float[2], 2);
             Tensor nan = Tensor.of(new float[] {0f, Float.NaN}, 2); Tensor shortT = Tensor.of(new float[1], 1);
             Tensor negative = Tensor.of(new float[] {0.1f, -0.1f}, 2)) {
            int[] starts = {0, 2};
            Options d = Options.defaults();
            expect(() -> PolicyLoss.compute(z, y, nan, a, null, starts, d), "oldLogProb[1]");
            expect(() -> PolicyLoss.compute(z, y, o, shortT, null, starts, d), "advantages");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, new int[] {0, 1}, d), "sequenceStarts");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, new int[] {0, 2, 1, 2}, d), "sequenceStarts");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, null, d), "sequenceStarts");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withReferenceKl(0.1f)), "referenceLogProb");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withDualClip(0.5f)), "dualClip");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withRatioCap(0f)), "ratioCap");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withClip(-0.1f, 0.2f)), "epsLow");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withClipPerToken(negative, o)), "epsLowPerToken[1]");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withAggregation(Aggregation.TOKEN_MEAN, -1)),
                    "normalizer");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, null), "options");
            expect(() -> PolicyLoss.computeWithGradient(z, y, o, a, null, starts, d, Float.NaN), "gradScale");
            try (Tensor shifted = Tensor.of(z.segment().asSlice(4, 12), DType.BF16, 2, 3)) {
                expect(() -> PolicyLoss.computeWithGradient(z, y, o, a, null, starts, d, 1f, shifted),
                        "gradient: expected logits itself or a buffer that does not overlap logits");
            }
            expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withTokenWeights(negative)), "tokenWeights[1]");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withTokenWeights(nan)), "tokenWeights[1]");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withTokenWeights(shortT)), "tokenWeights");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withZoneAdvantages(nan)), "zoneAdvantages[1]");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withControlTokenWeight(-1f)),
                    "controlTokenWeight");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withTemperature(0f)), "temperature");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withTemperature(Float.NaN)), "temperature");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withTemperature(-1f)), "temperature");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withTemperature(0x1p-130f)), "reciprocal 1/T is finite");
            try (Tensor intLogits = Tensor.ofInts(new int[6], 2, 3);
                 Tensor byteLogits = Tensor.allocate(DType.U8, 2, 3);
                 Tensor noColumns = Tensor.allocate(DType.F32, 2, 0);
                 Tensor ignored = Tensor.ofInts(new int[] {-100, -100}, 2)) {
                expect(() -> PolicyLoss.compute(intLogits, y, o, a, null, starts, d), "logits");
                expect(() -> PolicyLoss.compute(byteLogits, y, o, a, null, starts, d), "logits");
                expect(() -> PolicyLoss.compute(noColumns, ignored, o, a, null, starts, d), "logits");
                expect(() -> PolicyLoss.computeWithGradient(noColumns, ignored, o, a, null, starts, d, 1f), "logits");
            }
            try (Tensor small = Tensor.allocate(DType.F32, 2, 2);
                 Tensor wide = Tensor.allocate(DType.F32, 2, 4);
                 Tensor tall = Tensor.allocate(DType.F32, 3, 4);
                 Tensor flat = Tensor.allocate(DType.F32, 6);
                 Tensor ints = Tensor.allocate(DType.I32, 2, 3)) {
                for (Tensor g : new Tensor[] {small, wide, tall, flat, ints}) {
                    for (Backend backend : ConformanceBackends.all()) {
                        expect(() -> PolicyLoss.computeWithGradient(z, y, o, a, null, starts, d.on(backend), 1f, g),
                                "gradient");
                    }
                }
            }
            try (Tensor flags = u8(1, 0); Tensor two = u8(2, 0); Tensor halfMask = Tensor.ofFloats(new float[] {1f, 0f},
                    DType.BF16, 2);
                 Tensor minusInf = Tensor.of(new float[] {Float.NEGATIVE_INFINITY, 0f}, 2);
                 Tensor infUnflagged = Tensor.of(new float[] {0f, Float.NEGATIVE_INFINITY}, 2)) {
                expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withLpReg(o, two, 1f)), "lpRegMask[0]");
                expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withLpReg(o, halfMask, 1f)), "lpRegMask");
                expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withLpReg(null, flags, 1f)),
                        "lpRegProxyLogProb");
                expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withLpReg(o, null, 1f)), "lpRegMask");
                expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withLpReg(shortT, flags, 1f)),
                        "lpRegProxyLogProb");
                expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withLpReg(o, flags, Float.NaN)), "lpRegBeta");
                expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withLpReg(o, flags, -1f)), "lpRegBeta");
                expect(() -> PolicyLoss.compute(z, y, o, a, null, starts, d.withLpReg(minusInf, flags, 1f)),
                        "lpRegProxyLogProb[0]");
                try (PolicyLoss.Result fine = PolicyLoss.compute(z, y, o, a, null, starts,
                        d.withLpReg(infUnflagged, flags, 1f))) {
                    assertTrue(Float.isFinite(fine.loss()), "-inf on a token that is not regularized is not read");
                }
            }
        }
    }

    /**
     * The reference KL's d is clamped as the log-ratio, with slope 0 beyond: a sampled token whose
     * logit is -inf (row 0) and one whose d is a finite 41 (row 2) each cost the finite
     * 0.1 k3(20) instead of inf - inf or k3(41), and, their log-ratios being clamped too, get a
     * zero gradient; row 1 keeps its own gradient (as if alone, at a third of the scale), on
     * every backend.
     */
    @Test
    void referenceKlIsClampedAsTheLogRatio() {
        float ninf = Float.NEGATIVE_INFINITY;
        for (Backend backend : ConformanceBackends.all()) {
            Options o = Options.defaults().withReferenceKl(0.1f).withAggregation(Aggregation.TOKEN_MEAN).on(backend);
            try (Tensor z = Tensor.of(new float[] {ninf, 1f, 2f, 0f, 1f, 2f, -40f, 1f, 2f}, 3, 3);
                 Tensor y = Tensor.ofInts(new int[] {0, 1, 0}, 3);
                 Tensor old = Tensor.of(new float[] {-1f, -1f, -1f}, 3); Tensor a = Tensor.of(new float[] {1f, 1f, 1f}, 3);
                 Tensor ref = Tensor.of(new float[] {-1f, -1f, -1f}, 3);
                 Tensor z1 = Tensor.of(new float[] {0f, 1f, 2f}, 1, 3); Tensor y1 = Tensor.ofInts(new int[] {1}, 1);
                 Tensor one = Tensor.of(new float[] {-1f}, 1); Tensor a1 = Tensor.of(new float[] {1f}, 1);
                 PolicyLoss.Result r = PolicyLoss.computeWithGradient(z, y, old, a, ref, new int[] {0, 3}, o, 1f);
                 PolicyLoss.Result alone = PolicyLoss.computeWithGradient(z1, y1, one, a1, one, new int[] {0, 1}, o,
                         1f / 3)) {
                double clampedKl = 0.1 * (Math.exp(20) - 21);
                double logp1 = 1 - Math.log(Math.exp(0) + Math.exp(1) + Math.exp(2));
                double r1 = Math.exp(logp1 + 1);
                double d1 = -1 - logp1;
                double row1 = -Math.min(r1, Math.max(0.8, Math.min(1.2, r1))) + 0.1 * (Math.exp(d1) - d1 - 1);
                double expected = (2 * (-Math.exp(-20) + clampedKl) + row1) / 3;
                assertEquals(expected, r.loss(), 1e-6 * expected, backend.toString());
                for (int j = 0; j < 3; j++) {
                    assertEquals(0f, Math.abs(r.gradient().getFloat(j)), backend + " row 0, class " + j);
                    assertEquals(0f, Math.abs(r.gradient().getFloat(6 + j)), backend + " row 2, class " + j);
                    float own = alone.gradient().getFloat(j);
                    assertEquals(own, r.gradient().getFloat(3 + j), 1e-6f * Math.abs(own), backend + " row 1, class " + j);
                }
            }
        }
    }

    /**
     * The entropy of a row of large logits stays accurate on every backend: at z = [300, 291.5]
     * the kernel once took -sum p (x - lse) with lse rounded at 300's scale, 0.5% off.
     */
    @Test
    void entropyOfLargeLogitsMatchesTheReference() {
        double p1 = Math.exp(-8.5) / (1 + Math.exp(-8.5));
        double p0 = 1 - p1;
        double expected = -(p0 * Math.log(p0) + p1 * Math.log(p1));
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor z = Tensor.of(new float[] {300f, 291.5f}, 1, 2); Tensor y = Tensor.ofInts(new int[] {0}, 1);
                 Tensor o = Tensor.of(new float[] {0f}, 1); Tensor a = Tensor.of(new float[] {1f}, 1);
                 PolicyLoss.Result r = PolicyLoss.compute(z, y, o, a, null, new int[] {0, 1}, Options.defaults().on(backend))) {
                assertEquals(expected, r.entropy().getFloat(0), 1e-4 * expected, backend + " entropy");
                assertEquals(expected, r.meanEntropy(), 1e-4 * expected, backend + " mean entropy");
            }
        }
    }

    /** A targets tensor of the wrong length is named against the logits, the op's own input. */
    @Test
    void targetsOfTheWrongLengthNameTheLogits() {
        try (Tensor z = Tensor.of(new float[6], 2, 3); Tensor y = Tensor.ofInts(new int[] {0}, 1);
             Tensor o = Tensor.of(new float[2], 2); Tensor a = Tensor.of(new float[2], 2)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> PolicyLoss.compute(z, y, o, a, null, new int[] {0, 2}, Options.defaults()));
            assertTrue(e.getMessage().contains("rows of logits"), e.getMessage());
        }
    }

    /**
     * An ignored token's per-token inputs are not read: NaN there (padding) gives the same loss,
     * statistics and gradient as zeros, on every backend; a NaN on a counted token is an error.
     */
    @Test
    void ignoredTokensInputsAreNotRead() {
        float nan = Float.NaN;
        float[] z = {0.5f, 1f, -1f, 2f, 0f, 1f, 3f, -2f, 0.5f};
        for (Backend backend : ConformanceBackends.all()) {
            Options o = Options.defaults().withReferenceKl(0.05f).on(backend);
            try (Tensor logits = Tensor.of(z, 3, 3); Tensor y = Tensor.ofInts(new int[] {1, -100, 2}, 3);
                 Tensor oldNan = Tensor.of(new float[] {-1f, nan, -0.5f}, 3);
                 Tensor oldZero = Tensor.of(new float[] {-1f, 0f, -0.5f}, 3);
                 Tensor aNan = Tensor.of(new float[] {1f, nan, -0.7f}, 3);
                 Tensor aZero = Tensor.of(new float[] {1f, 0f, -0.7f}, 3);
                 Tensor epsNan = Tensor.of(new float[] {0.2f, nan, 0.1f}, 3);
                 Tensor epsZero = Tensor.of(new float[] {0.2f, 0f, 0.1f}, 3);
                 PolicyLoss.Result padded = PolicyLoss.computeWithGradient(logits, y, oldNan, aNan, oldNan,
                         new int[] {0, 3}, o.withClipPerToken(epsNan, epsNan), 1f);
                 PolicyLoss.Result zeros = PolicyLoss.computeWithGradient(logits, y, oldZero, aZero, oldZero,
                         new int[] {0, 3}, o.withClipPerToken(epsZero, epsZero), 1f)) {
                assertEquals(zeros.loss(), padded.loss(), backend.toString());
                assertEquals(zeros.meanRatio(), padded.meanRatio(), backend.toString());
                // the ignored token's outputs are 0 (its kernel once left device memory unwritten)
                assertEquals(0f, padded.logProb().getFloat(1), backend + " logp of the ignored token");
                assertEquals(0f, padded.entropy().getFloat(1), backend + " entropy of the ignored token");
                for (int i = 0; i < 9; i++) {
                    assertEquals(zeros.gradient().getFloat(i), padded.gradient().getFloat(i), backend + " gradient " + i);
                }
                try (Tensor counted = Tensor.ofInts(new int[] {1, 0, 2}, 3)) {
                    expect(() -> PolicyLoss.compute(logits, counted, oldNan, aZero, null, new int[] {0, 3}, o),
                            "oldLogProb[1]");
                }
            }
        }
    }
}
