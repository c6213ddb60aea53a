package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.conformance.PolicyLossReference.Settings;
import dev.tokenkernels.methods.LpRegLoss;
import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.ops.loss.PolicyLoss.Aggregation;
import dev.tokenkernels.ops.loss.ProxyDistribution;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** Lp-Reg's selection and loss against a float64 composition: proxy, bottom-rho negatives, regularized surrogate. */
class LpRegLossTest {

    @Test
    void matchesTheFloat64CompositionOnEveryBackend() {
        int rows = 24;
        int vocab = 40;
        float rho = 0.5f;
        float beta = 0.7f;
        SplittableRandom random = new SplittableRandom(23);
        float[] values = new float[rows * vocab];
        float[] oldValues = new float[rows * vocab];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) (random.nextGaussian() * 2);
            oldValues[i] = (float) (values[i] + random.nextGaussian() * 0.3);
        }
        double[][] z = PolicyLossReference.rows(values, rows, vocab);
        int[] y = new int[rows];
        float[] a = new float[rows];
        boolean[] counted = new boolean[rows];
        for (int t = 0; t < rows; t++) {
            y[t] = t % 7 == 3 ? -100 : sample(random, z[t]); // sampled as in a rollout
            counted[t] = y[t] >= 0;
            a[t] = (float) (random.nextInt(3) == 0 ? random.nextDouble(0.1, 1.5) : -random.nextDouble(0.1, 1.5));
        }
        // float64 composition: logp of the current policy, the min-p proxy of the old one, the selection
        double[] logp = new double[rows];
        float[] proxy = new float[rows];
        float[] logpF = new float[rows];
        for (int t = 0; t < rows; t++) {
            logp[t] = counted[t] ? PolicyLossReference.logProb(z[t], y[t], 1f) : 0;
            logpF[t] = (float) logp[t];
            proxy[t] = (float) ProxyDistributionReference.row(oldValues, t * vocab, vocab, ProxyDistribution.Mode.MIN_P,
                    0.02f, 1f, y[t], -100).logProb();
        }
        boolean[] regularized = bottomRho(logp, proxy, a, counted, rho);
        int selected = 0;
        for (boolean b : regularized) {
            selected += b ? 1 : 0;
        }
        assertTrue(selected >= 2, "the example regularizes some tokens: " + selected);
        assertArrayEquals(regularized, LpRegLoss.regularized(logpF, proxy, a, counted, rho), "the host selection");
        float[] old = PolicyLossReference.oldLogProbs(random, z, y, 1f, 0.8, 1.28);
        Settings s = new Settings(0.2f, 0.28f, 0f, Float.POSITIVE_INFINITY, 0f, 1f, Aggregation.TOKEN_MEAN, 0);
        PolicyLossReference.Tokens tokens = new PolicyLossReference.Tokens(y, counted, old, a, null, null, null, null,
                null, regularized, proxy, beta);
        double[][] gradient = new double[rows][vocab];
        double expected = PolicyLossReference.lossAndGradient(z, tokens, new int[] {0, 10, rows}, s, gradient);
        for (Backend backend : ConformanceBackends.all()) {
            LpRegLoss lpReg = new LpRegLoss(rho, 0.02f, beta, 0.2f, 0.28f, 1f, backend);
            try (Tensor logits = Tensor.of(values, rows, vocab); Tensor oldLogits = Tensor.of(oldValues, rows, vocab);
                 Tensor targets = Tensor.ofInts(y, rows); Tensor o = Tensor.of(old, rows); Tensor adv = Tensor.of(a, rows);
                 PolicyLoss.Result r = lpReg.compute(logits, oldLogits, targets, o, adv, new int[] {0, 10, rows}, 1f)) {
                PolicyLossReference.assertMatches(backend + " Lp-Reg", r, expected, gradient, 1f);
            }
        }
    }

    /** The paper's rule in float64: the floor(rho N_neg) lowest logp of the negatives (if > 1), where logp < lp. */
    private static boolean[] bottomRho(double[] logp, float[] proxy, float[] a, boolean[] counted, float rho) {
        java.util.List<Integer> negatives = new java.util.ArrayList<>();
        for (int t = 0; t < logp.length; t++) {
            if (counted[t] && a[t] < 0) {
                negatives.add(t);
            }
        }
        negatives.sort((i, j) -> Double.compare(logp[i], logp[j]));
        int k = (int) Math.floor(rho * negatives.size());
        boolean[] out = new boolean[logp.length];
        for (int i = 0; k > 1 && i < k; i++) {
            int t = negatives.get(i);
            out[t] = logp[t] < proxy[t];
        }
        return out;
    }

    private static int sample(SplittableRandom random, double[] z) {
        double[] logSoftmax = DivergenceReference.logSoftmax(z, 1);
        double u = random.nextDouble();
        for (int j = 0; j < z.length; j++) {
            u -= Math.exp(logSoftmax[j]);
            if (u <= 0) {
                return j;
            }
        }
        return z.length - 1;
    }

    /** Ties by index, a count of 1 selects nothing, a dropped (-inf) proxy never, ignored and positive tokens never. */
    @Test
    void selectionRule() {
        float[] logp = {-5f, -5f, -5f, -1f, -9f, -9f};
        float[] proxy = {-1f, -1f, -1f, -0.5f, Float.NEGATIVE_INFINITY, -1f};
        float[] a = {-1f, -1f, -1f, -1f, -1f, 1f};
        boolean[] counted = {true, true, true, true, true, true};
        // negatives 0..4 (N_neg 5); rho 0.6 -> k 3: rows 4 (dropped), 0, 1 by (logp, index)
        assertArrayEquals(new boolean[] {true, true, false, false, false, false},
                LpRegLoss.regularized(logp, proxy, a, counted, 0.6f));
        // rho 0.2 -> k 1: nothing
        assertArrayEquals(new boolean[6], LpRegLoss.regularized(logp, proxy, a, counted, 0.2f));
        boolean[] firstIgnored = {false, true, true, true, true, true};
        // negatives 1..4 (N_neg 4); rho 0.5 -> k 2: rows 4 (dropped) and 1
        assertArrayEquals(new boolean[] {false, true, false, false, false, false},
                LpRegLoss.regularized(logp, proxy, a, firstIgnored, 0.5f));
        // a NaN logp (no distribution) counts in N_neg but is never selected, as if sorted last:
        // negatives 0..4 (N_neg 5, row 4 NaN); rho 0.8 -> k 4: rows 0, 1, 2, 3 by (logp, index)
        float[] withNaN = {-5f, -5f, -5f, -1f, Float.NaN, -9f};
        assertArrayEquals(new boolean[] {true, true, true, true, false, false},
                LpRegLoss.regularized(withNaN, proxy, a, counted, 0.8f));
        try (Tensor z = Tensor.of(new float[6], 2, 3); Tensor zOld = Tensor.of(new float[4], 2, 2);
             Tensor y = Tensor.ofInts(new int[] {0, 1}, 2); Tensor o = Tensor.of(new float[2], 2)) {
            expect(() -> LpRegLoss.defaults().compute(z, zOld, y, o, o, new int[] {0, 2}, 1f), "oldLogits");
        }
        expect(() -> new LpRegLoss(0f, 0.02f, 1f, 0.2f, 0.28f, 1f, null), "rho");
        expect(() -> new LpRegLoss(0.01f, 0f, 1f, 0.2f, 0.28f, 1f, null), "kappa");
        expect(() -> new LpRegLoss(0.01f, 0.02f, -1f, 0.2f, 0.28f, 1f, null), "beta");
        expect(() -> new LpRegLoss(0.01f, 0.02f, 1f, -0.2f, 0.28f, 1f, null), "epsLow");
        expect(() -> new LpRegLoss(0.01f, 0.02f, 1f, 0.2f, Float.NaN, 1f, null), "epsHigh");
    }

    /**
     * int(rho N_neg) with rho the decimal it prints as: 200 negatives at rho = 1% select the two
     * lowest (the float 0.01f widened to double would give floor(1.99999996) = 1, so none), and
     * 300 select three.
     */
    @Test
    void selectionCountsRhoAsItsDecimal() {
        for (int rows : new int[] {200, 300}) {
            float[] logp = new float[rows];
            float[] proxy = new float[rows]; // 0, above every logp
            float[] a = new float[rows];
            boolean[] counted = new boolean[rows];
            for (int t = 0; t < rows; t++) {
                logp[t] = -1f - 0.01f * t;
                a[t] = -1f;
                counted[t] = true;
            }
            boolean[] selected = LpRegLoss.regularized(logp, proxy, a, counted, 0.01f);
            int n = 0;
            for (int t = 0; t < rows; t++) {
                n += selected[t] ? 1 : 0;
                assertEquals(t >= rows - rows / 100, selected[t], rows + " negatives, token " + t);
            }
            assertEquals(rows / 100, n, rows + " negatives");
        }
    }
}
