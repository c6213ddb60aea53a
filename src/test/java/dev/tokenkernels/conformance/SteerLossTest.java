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

    /** Omega per counted token in float64, then the map to [lo, hi]. */
    private static float[] expectedWeights(double[][] z, float[] old, float[] a, SteerLoss.Mapping mapping,
                                           double lo, double hi) {
        double[] omega = new double[ROWS];
        double min = Double.POSITIVE_INFINITY;
        double max = Double.NEGATIVE_INFINITY;
        for (int t = 0; t < ROWS; t++) {
            if (Y[t] < 0) {
                continue;
            }
            double[] logSoftmax = DivergenceReference.logSoftmax(z[t], 1);
            double entropy = 0;
            for (double l : logSoftmax) {
                entropy -= Math.exp(l) * l;
            }
            double x = Math.min(1 - 1e-8, Math.max(1e-8, Math.exp(logSoftmax[Y[t]])));
            omega[t] = Math.abs(a[t] / Math.exp(old[t]) * x * (1 - x) * (Math.log(x) + entropy));
            min = Math.min(min, omega[t]);
            max = Math.max(max, omega[t]);
        }
        float[] w = new float[ROWS];
        for (int t = 0; t < ROWS; t++) {
            if (Y[t] >= 0) {
                double u = max > min ? (omega[t] - min) / (max - min) : 0.5;
                w[t] = (float) (mapping == SteerLoss.Mapping.LINEAR ? lo + (hi - lo) * u : lo * Math.pow(hi / lo, u));
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

    /** Equal Omega everywhere (all advantages 0): the midpoint, arithmetic or geometric. */
    @Test
    void equalOmegaGivesTheMidpoint() {
        try (Tensor logits = Tensor.of(new float[] {0f, 1f, 2f, 1f}, 2, 2); Tensor targets = Tensor.ofInts(new int[] {0, 1}, 2);
             Tensor o = Tensor.of(new float[] {-1f, -1f}, 2); Tensor a = Tensor.of(new float[2], 2);
             Tensor linear = SteerLoss.defaults().weights(logits, targets, o, a);
             Tensor exponential = new SteerLoss(0.2f, 3f, 0.8f, 1.2f, SteerLoss.Mapping.EXPONENTIAL, 1f, null)
                     .weights(logits, targets, o, a)) {
            assertEquals(1.0f, linear.getFloat(0), 1e-7);
            assertEquals(1.0f, linear.getFloat(1), 1e-7);
            assertEquals(Math.sqrt(0.8 * 1.2), exponential.getFloat(1), 1e-6);
        }
    }

    @Test
    void badSettingsAreClearErrors() {
        expect(() -> new SteerLoss(0.2f, 3f, 1.3f, 1.2f, SteerLoss.Mapping.LINEAR, 1f, null), "maxWeight");
        expect(() -> new SteerLoss(0.2f, 3f, 0f, 1.2f, SteerLoss.Mapping.EXPONENTIAL, 1f, null), "minWeight");
        expect(() -> new SteerLoss(0.2f, 3f, 0.8f, 1.2f, null, 1f, null), "mapping");
        try (Tensor logits = Tensor.of(new float[4], 2, 2); Tensor targets = Tensor.ofInts(new int[] {0, 1}, 2);
             Tensor o = Tensor.of(new float[2], 2); Tensor a = Tensor.of(new float[3], 3)) {
            expect(() -> SteerLoss.defaults().compute(logits, targets, o, a, new int[] {0, 2}, 1f), "advantages");
        }
    }
}
