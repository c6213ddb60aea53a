package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.tokenkernels.methods.AlignDistilLoss;
import dev.tokenkernels.ops.loss.Divergence.Kind;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** AlignDistil against a float64 composition of the paper's formulas, on every backend. */
class AlignDistilLossTest {
    private static final int ROWS = 7;
    private static final int VOCAB = 200;

    @Test
    void adaptiveModeMatchesTheFormulas() {
        check(false, 0f);
    }

    @Test
    void fixedWeightModeMatchesTheFormulas() {
        check(true, 0.7f);
    }

    private static void check(boolean fixed, float w) {
        SplittableRandom random = new SplittableRandom(fixed ? 5 : 6);
        float[] policy = new float[ROWS * VOCAB];
        float[] dpo = new float[ROWS * VOCAB];
        float[] rev = new float[ROWS * VOCAB];
        for (int k = 0; k < policy.length; k++) {
            dpo[k] = (float) (random.nextGaussian() * 2);
            rev[k] = (float) (dpo[k] + random.nextGaussian() * 0.5);
            policy[k] = (float) (dpo[k] + random.nextGaussian());
        }
        int[] labels = {5, -100, 9, 1, 2, -100, 3};
        int[] starts = {0, 3, 5, 6, 7}; // sequence 2 (row 5) has no labelled token
        float beta = 0.1f;
        float beta2 = 10f;
        // Per token l_t and d l_t / d z_theta, then the mean over sequences of token means.
        double[] loss = new double[ROWS];
        double[][] grad = new double[ROWS][];
        for (int t = 0; t < ROWS; t++) {
            double[] zd = new double[VOCAB];
            double[] zr = new double[VOCAB];
            double[] zp = new double[VOCAB];
            for (int j = 0; j < VOCAB; j++) {
                zd[j] = dpo[t * VOCAB + j];
                zr[j] = rev[t * VOCAB + j];
                zp[j] = policy[t * VOCAB + j];
            }
            double[] pd = DivergenceReference.logSoftmax(zd, 1);
            double[] pr = DivergenceReference.logSoftmax(zr, 1);
            double tvd = 0;
            for (int j = 0; j < VOCAB; j++) {
                tvd += Math.abs(Math.exp(pd[j]) - Math.exp(pr[j]));
            }
            float alpha = fixed ? w - 1 : (float) (beta2 * tvd + 1e-3);
            double[] teacher = new double[VOCAB];
            for (int j = 0; j < VOCAB; j++) {
                teacher[j] = Math.fma(alpha, dpo[t * VOCAB + j] - rev[t * VOCAB + j], dpo[t * VOCAB + j]);
            }
            DivergenceReference.Row row = DivergenceReference.row(zp, teacher, Kind.REVERSE_KL, 0, 1);
            double scale = fixed ? 1 : beta / alpha;
            loss[t] = scale * row.loss();
            grad[t] = row.gradient();
            for (int j = 0; j < VOCAB; j++) {
                grad[t][j] *= scale;
            }
        }
        double expected = 0;
        int sequences = 0;
        double[] tokenWeight = new double[ROWS];
        for (int b = 0; b + 1 < starts.length; b++) {
            int counted = 0;
            for (int t = starts[b]; t < starts[b + 1]; t++) {
                counted += labels[t] == -100 ? 0 : 1;
            }
            if (counted == 0) {
                continue;
            }
            sequences++;
            for (int t = starts[b]; t < starts[b + 1]; t++) {
                tokenWeight[t] = labels[t] == -100 ? 0 : 1.0 / counted;
            }
        }
        for (int t = 0; t < ROWS; t++) {
            tokenWeight[t] /= sequences;
            expected += tokenWeight[t] * loss[t];
        }
        try (Tensor p = Tensor.of(policy, ROWS, VOCAB); Tensor d = Tensor.of(dpo, ROWS, VOCAB);
             Tensor r = Tensor.of(rev, ROWS, VOCAB); Tensor y = Tensor.ofInts(labels, ROWS)) {
            for (Backend b : ConformanceBackends.all()) {
                AlignDistilLoss method = fixed ? AlignDistilLoss.fixedWeight(w, 1f, b) : AlignDistilLoss.adaptive(beta, beta2, 1f, b);
                try (var result = method.compute(p, d, r, y, starts, 1f)) {
                    Approx.assertClose(b + " loss", expected, result.value(), 1e-5 * (1 + Math.abs(expected)));
                    for (int t = 0; t < ROWS; t++) {
                        for (int j = 0; j < VOCAB; j++) {
                            double g = tokenWeight[t] * grad[t][j];
                            Approx.assertClose(b + " gradient[" + t + "," + j + "]", g,
                                    result.gradient().getFloat((long) t * VOCAB + j), 1e-7 + 1e-4 * Math.abs(g));
                        }
                    }
                }
            }
        }
    }

    /** The gradient written into a caller's buffer (holding NaN before) equals the one in a new tensor. */
    @Test
    void gradientIntoABufferEqualsANewGradient() {
        int rows = 4;
        int vocab = 37;
        java.util.SplittableRandom random = new java.util.SplittableRandom(17);
        float[] policy = new float[rows * vocab];
        float[] dpo = new float[rows * vocab];
        float[] rev = new float[rows * vocab];
        for (int i = 0; i < policy.length; i++) {
            policy[i] = (float) random.nextGaussian();
            dpo[i] = (float) random.nextGaussian();
            rev[i] = dpo[i] + (float) random.nextGaussian() * 0.3f;
        }
        float[] garbage = new float[rows * vocab];
        java.util.Arrays.fill(garbage, Float.NaN);
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor p = Tensor.of(policy, rows, vocab); Tensor d = Tensor.of(dpo, rows, vocab);
                 Tensor r = Tensor.of(rev, rows, vocab); Tensor y = Tensor.ofInts(new int[] {0, 5, -100, 36}, rows);
                 Tensor buffer = Tensor.of(garbage, rows, vocab);
                 var fresh = AlignDistilLoss.adaptive(0.1f, 10f, 1f, backend).compute(p, d, r, y, new int[] {0, 2, 4}, 0.5f);
                 var into = AlignDistilLoss.adaptive(0.1f, 10f, 1f, backend).compute(p, d, r, y, new int[] {0, 2, 4}, 0.5f, buffer)) {
                org.junit.jupiter.api.Assertions.assertEquals(fresh.value(), into.value(), backend + " loss");
                org.junit.jupiter.api.Assertions.assertArrayEquals(fresh.gradient().toFloatArray(), buffer.toFloatArray(),
                        backend + " gradient");
            }
            // The documented in-place update: the policy logits themselves as the buffer.
            try (Tensor p = Tensor.of(policy, rows, vocab); Tensor d = Tensor.of(dpo, rows, vocab);
                 Tensor r = Tensor.of(rev, rows, vocab); Tensor y = Tensor.ofInts(new int[] {0, 5, -100, 36}, rows);
                 Tensor inPlace = Tensor.of(policy, rows, vocab);
                 var fresh = AlignDistilLoss.adaptive(0.1f, 10f, 1f, backend).compute(p, d, r, y, new int[] {0, 2, 4}, 0.5f);
                 var into = AlignDistilLoss.adaptive(0.1f, 10f, 1f, backend).compute(inPlace, d, r, y, new int[] {0, 2, 4},
                         0.5f, inPlace)) {
                org.junit.jupiter.api.Assertions.assertEquals(fresh.value(), into.value(), backend + " in place loss");
                org.junit.jupiter.api.Assertions.assertArrayEquals(fresh.gradient().toFloatArray(), inPlace.toFloatArray(),
                        backend + " in place gradient");
            }
        }
    }

    /** A labelled token whose reverse-DPO logits hold NaN has a NaN loss; the rest of the batch still runs. */
    @Test
    void aTeacherRowWithoutDistributionIsNaNNotAnError() {
        float[] policy = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f};
        float[] dpo = {1f, 0f, -1f, 0.5f, 0.5f, 0f};
        float[] rev = {0.5f, 0.2f, -0.5f, Float.NaN, 0f, 0f};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor p = Tensor.of(policy, 2, 3); Tensor d = Tensor.of(dpo, 2, 3); Tensor r = Tensor.of(rev, 2, 3);
                 Tensor y = Tensor.ofInts(new int[] {0, 1}, 2);
                 var result = AlignDistilLoss.adaptive(0.1f, 10f, 1f, backend).compute(p, d, r, y, new int[] {0, 1, 2}, 1f)) {
                org.junit.jupiter.api.Assertions.assertTrue(Float.isNaN(result.value()), backend + " " + result.value());
                org.junit.jupiter.api.Assertions.assertTrue(Float.isFinite(result.gradient().getFloat(0)),
                        backend + " the first token's gradient");
            }
        }
    }

    @Test
    void badArgumentsAreClearErrors() {
        assertThrows(IllegalArgumentException.class, () -> AlignDistilLoss.adaptive(0f, 10f, 1f, null));
        assertThrows(IllegalArgumentException.class, () -> AlignDistilLoss.adaptive(0.1f, -1f, 1f, null));
        // alpha_t up to 2 beta2 + 1e-3 would overflow: refused by its own name, not the op's extrapolationAlpha
        BadInput.expect(() -> AlignDistilLoss.adaptive(0.1f, 2e38f, 1f, null), "beta2");
        // beta / alpha_t up to beta / 1e-3: 1e38 gave an infinite loss without a word (found in review)
        BadInput.expect(() -> AlignDistilLoss.adaptive(1e38f, 10f, 1f, null), "beta");
        assertThrows(IllegalArgumentException.class, () -> AlignDistilLoss.fixedWeight(Float.NaN, 1f, null));
        try (Tensor z = Tensor.of(new float[6], 2, 3); Tensor y = Tensor.ofInts(new int[] {0, 1}, 2)) {
            assertThrows(IllegalArgumentException.class, () -> AlignDistilLoss.defaults().compute(z, z, z, y, new int[] {0, 1}, 1f));
            assertThrows(IllegalArgumentException.class, () -> AlignDistilLoss.defaults().compute(z, z, z, y, null, 1f));
            assertThrows(IllegalArgumentException.class, () -> AlignDistilLoss.defaults().compute(z, z, z, y, new int[] {0, 2, 1, 2}, 1f));
        }
        // float labels: refused by name in both modes (the fixed-weight one once failed in Tensor.getLong)
        try (Tensor z = Tensor.of(new float[6], 2, 3); Tensor labels = Tensor.of(new float[] {1, 2}, 2)) {
            BadInput.expect(() -> AlignDistilLoss.fixedWeight(0.5f, 1f, null).compute(z, z, z, labels, new int[] {0, 2}, 1f)
                    .close(), "labels");
            BadInput.expect(() -> AlignDistilLoss.defaults().compute(z, z, z, labels, new int[] {0, 2}, 1f).close(),
                    "labels");
        }
    }
}
