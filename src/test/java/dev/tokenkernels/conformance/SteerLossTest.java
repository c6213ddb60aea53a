package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.tokenkernels.conformance.PolicyLossReference.Settings;
import dev.tokenkernels.methods.SteerLoss;
import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.ops.loss.PolicyLoss.Aggregation;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** STEER's weights and weighted dual-clip loss against a float64 composition of its formulas. */
class SteerLossTest {
    private static final int ROWS = 9;
    private static final int VOCAB = 60;
    private static final int[] Y = {0, 59, -100, 7, 7, 30, 1, 44, 2};

    /**
     * STEER's weights written from the paper (Hao et al., 2025): Omega = |A / pi_old * f| with
     * f = x (1 - x)(log x + H), x = pi_theta(y) clamped to [1e-8, 1 - 1e-8] and pi_old floored at
     * 1e-8; linear: w = w_max - (Omega - Omega_min) (w_max - w_min) / (Omega_max - Omega_min), so
     * the largest Omega gets w_min; exponential: w = exp(-k Omega), k = -ln w_min / max(Omega_max,
     * 0.02), clamped to [w_min, 1].
     */
    private static float[] expectedWeights(double[][] z, float[] old, float[] a, SteerLoss.Mapping mapping,
                                           double wMin, double wMax) {
        double[] omega = new double[ROWS];
        double omegaMin = Double.MAX_VALUE;
        double omegaMax = -Double.MAX_VALUE;
        for (int t = 0; t < ROWS; t++) {
            if (Y[t] < 0) {
                continue;
            }
            double[] logSoftmax = DivergenceReference.logSoftmax(z[t], 1);
            double entropy = 0;
            for (double l : logSoftmax) {
                entropy -= Math.exp(l) * l;
            }
            double p = Math.exp(logSoftmax[Y[t]]);
            double x = p < 1e-8 ? 1e-8 : p > 1 - 1e-8 ? 1 - 1e-8 : p;
            double piOld = Math.exp(old[t]) < 1e-8 ? 1e-8 : Math.exp(old[t]);
            omega[t] = Math.abs(a[t] * x * (1 - x) * (Math.log(x) + entropy) / piOld);
            omegaMin = Math.min(omegaMin, omega[t]);
            omegaMax = Math.max(omegaMax, omega[t]);
        }
        float[] w = new float[ROWS];
        for (int t = 0; t < ROWS; t++) {
            if (Y[t] < 0) {
                continue;
            }
            if (mapping == SteerLoss.Mapping.LINEAR) {
                w[t] = (float) (wMax - (omega[t] - omegaMin) * (wMax - wMin) / (omegaMax - omegaMin));
            } else {
                double k = -Math.log(wMin) / Math.max(omegaMax, 0.02);
                w[t] = (float) Math.max(wMin, Math.min(1, Math.exp(-k * omega[t])));
            }
        }
        return w;
    }

    @Test
    void matchesTheFloat64CompositionOnEveryBackend() {
        SplittableRandom random = new SplittableRandom(19);
        float[] values = new float[ROWS * VOCAB];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) (random.nextGaussian() * 2.5);
        }
        float[] a = new float[ROWS];
        for (int t = 0; t < ROWS; t++) {
            a[t] = (float) (random.nextBoolean() ? random.nextDouble(0.2, 2) : -random.nextDouble(0.2, 2));
        }
        double[][] z = PolicyLossReference.rows(values, ROWS, VOCAB);
        // ratios up to 1.7 reach no dual clip of 3; pass 1.6 as the dual clip to have some tokens hit it
        float[] old = PolicyLossReference.oldLogProbs(random, z, Y, 1f, 0.8, 1.2, 1.6);
        boolean[] counted = new boolean[ROWS];
        for (int t = 0; t < ROWS; t++) {
            counted[t] = Y[t] >= 0;
        }
        int[] starts = {0, 5, 9};
        for (SteerLoss.Mapping mapping : SteerLoss.Mapping.values()) {
            float[] w = expectedWeights(z, old, a, mapping, 0.8, 1.2);
            Settings s = new Settings(0.2f, 0.2f, 1.6f, Float.POSITIVE_INFINITY, 0f, 1f, Aggregation.TOKEN_MEAN, 0);
            PolicyLossReference.Tokens tokens = new PolicyLossReference.Tokens(Y, counted, old, a, null, null, null, w,
                    null, null, null, 0f);
            double[][] gradient = new double[ROWS][VOCAB];
            double expected = PolicyLossReference.lossAndGradient(z, tokens, starts, s, gradient);
            for (Backend backend : ConformanceBackends.all()) {
                SteerLoss steer = new SteerLoss(0.2f, 1.6f, 0.8f, 1.2f, mapping, 1f, backend);
                try (Tensor logits = Tensor.of(values, ROWS, VOCAB); Tensor targets = Tensor.ofInts(Y, ROWS);
                     Tensor o = Tensor.of(old, ROWS); Tensor adv = Tensor.of(a, ROWS);
                     Tensor weights = steer.weights(logits, targets, o, adv);
                     PolicyLoss.Result r = steer.compute(logits, targets, o, adv, starts, 1f)) {
                    for (int t = 0; t < ROWS; t++) {
                        assertEquals(w[t], weights.getFloat(t), 1e-4, backend + " " + mapping + " weight " + t);
                    }
                    PolicyLossReference.assertMatches(backend + " STEER " + mapping, r, expected, gradient, 1f);
                }
            }
        }
    }

    /**
     * Two tokens of the same row with A = 1 and A = 3: the second's Omega is three times the
     * first's, so the linear map gives it w_min and the first w_max; exponential: the largest
     * Omega gets w_min and the other w_min^(1/3) (k Omega_max = -ln w_min).
     */
    @Test
    void theTokenThatMovesEntropyMostGetsTheSmallestWeight() {
        try (Tensor logits = Tensor.of(new float[] {0f, 1f, 2f, 0f, 1f, 2f}, 2, 3);
             Tensor targets = Tensor.ofInts(new int[] {1, 1}, 2); Tensor o = Tensor.of(new float[] {-1f, -1f}, 2);
             Tensor a = Tensor.of(new float[] {1f, 3f}, 2);
             Tensor linear = SteerLoss.defaults().weights(logits, targets, o, a);
             Tensor exponential = new SteerLoss(0.2f, 3f, 0.5f, 1.2f, SteerLoss.Mapping.EXPONENTIAL, 1f, null)
                     .weights(logits, targets, o, a)) {
            assertEquals(1.2f, linear.getFloat(0), 1e-6f, "least Omega: w_max");
            assertEquals(0.8f, linear.getFloat(1), 1e-6f, "largest Omega: w_min");
            assertEquals(Math.pow(0.5, 1.0 / 3), exponential.getFloat(0), 1e-6);
            assertEquals(0.5, exponential.getFloat(1), 1e-6);
        }
    }

    /**
     * Equal Omega everywhere (all advantages 0): the linear map's midpoint (issue 5: "equal Omega
     * gives the midpoint"), the exponential map's 1.
     */
    @Test
    void equalOmegaGivesTheMidpoint() {
        try (Tensor logits = Tensor.of(new float[] {0f, 1f, 2f, 1f}, 2, 2); Tensor targets = Tensor.ofInts(new int[] {0, 1}, 2);
             Tensor o = Tensor.of(new float[] {-1f, -1f}, 2); Tensor a = Tensor.of(new float[2], 2);
             Tensor linear = SteerLoss.defaults().weights(logits, targets, o, a);
             Tensor exponential = new SteerLoss(0.2f, 3f, 0.8f, 1.2f, SteerLoss.Mapping.EXPONENTIAL, 1f, null)
                     .weights(logits, targets, o, a);
             Tensor asymmetric = new SteerLoss(0.2f, 3f, 0.5f, 1.1f, SteerLoss.Mapping.LINEAR, 1f, null)
                     .weights(logits, targets, o, a)) {
            assertEquals(0.8f, asymmetric.getFloat(0), 1e-7);
            assertEquals(1f, linear.getFloat(0), 1e-7);
            assertEquals(1f, linear.getFloat(1), 1e-7);
            assertEquals(1f, exponential.getFloat(0), 1e-7);
            assertEquals(1f, exponential.getFloat(1), 1e-7);
        }
    }

    /**
     * pi_old below 1e-8 is floored (old logp -40 and -30 give the same Omega, so both get w_max
     * against a third token with a larger Omega), and a NaN logits row gets Omega 0, not an error.
     */
    @Test
    void tinyOldProbabilitiesAreFlooredAndNanOmegaIsZero() {
        float nan = Float.NaN;
        try (Tensor logits = Tensor.of(new float[] {0f, 1f, 0f, 1f, 0f, 1f, nan, 0f}, 4, 2);
             Tensor targets = Tensor.ofInts(new int[] {0, 0, 0, 0}, 4);
             Tensor o = Tensor.of(new float[] {-40f, -30f, -1f, -1f}, 4);
             Tensor a = Tensor.of(new float[] {1f, 1f, 1e9f, 1f}, 4);
             Tensor w = SteerLoss.defaults().weights(logits, targets, o, a)) {
            assertEquals(w.getFloat(0), w.getFloat(1), "both old probabilities floored at 1e-8");
            assertEquals(0.8f, w.getFloat(2), 1e-6f, "the largest Omega");
            assertEquals(1.2f, w.getFloat(3), 1e-6f, "NaN Omega is 0, the smallest");
        }
    }

    @Test
    void badSettingsAreClearErrors() {
        expect(() -> new SteerLoss(0.2f, 3f, 1.3f, 1.2f, SteerLoss.Mapping.LINEAR, 1f, null), "maxWeight");
        expect(() -> new SteerLoss(0.2f, 3f, 0f, 1.2f, SteerLoss.Mapping.EXPONENTIAL, 1f, null), "minWeight");
        expect(() -> new SteerLoss(0.2f, 3f, 0.8f, 1.2f, null, 1f, null), "mapping");
        expect(() -> new SteerLoss(0.2f, 0.5f, 0.8f, 1.2f, SteerLoss.Mapping.LINEAR, 1f, null), "dualClip");
        expect(() -> new SteerLoss(0.2f, Float.NaN, 0.8f, 1.2f, SteerLoss.Mapping.LINEAR, 1f, null), "dualClip");
        expect(() -> new SteerLoss(0.2f, 3f, 1.1f, 1.2f, SteerLoss.Mapping.EXPONENTIAL, 1f, null), "minWeight");
        try (Tensor logits = Tensor.of(new float[4], 2, 2); Tensor targets = Tensor.ofInts(new int[] {0, 1}, 2);
             Tensor o = Tensor.of(new float[2], 2); Tensor a = Tensor.of(new float[3], 3)) {
            expect(() -> SteerLoss.defaults().compute(logits, targets, o, a, new int[] {0, 2}, 1f), "advantages");
        }
    }
}
