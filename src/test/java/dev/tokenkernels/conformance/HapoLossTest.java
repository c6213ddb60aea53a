package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.tokenkernels.conformance.PolicyLossReference.Settings;
import dev.tokenkernels.conformance.PolicyLossReference.Tokens;
import dev.tokenkernels.methods.HapoLoss;
import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.ops.loss.PolicyLoss.Aggregation;
import dev.tokenkernels.ops.select.TokenSelection;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * HAPO's loss against a float64 composition written from the paper's formulas (entropy
 * normalization, token-level group advantage, adaptive clipping and advantage redistribution),
 * with the clipped loss itself from {@link PolicyLossReference}.
 */
class HapoLossTest {
    private static final int IGNORE = -100;

    @Test
    void matchesTheFloat64CompositionOnEveryBackend() {
        SplittableRandom random = new SplittableRandom(5);
        int[] starts = {0, 5, 9, 16, 20, 27, 30};
        int[] groups = {0, 3, 6};
        float[] rewards = {1f, 0f, 0.5f, 0f, 0f, 1f};
        int rows = starts[starts.length - 1];
        int vocab = 37;
        float[] values = new float[rows * vocab];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) (random.nextGaussian() * 2);
        }
        int[] y = new int[rows];
        float[] entropy = new float[rows];
        for (int t = 0; t < rows; t++) {
            y[t] = random.nextInt(6) == 0 ? IGNORE : random.nextInt(vocab);
            entropy[t] = (float) Math.exp(random.nextGaussian() * 1.5 - 1); // log-normal, as token entropies are
        }
        entropy[7] = 0f; // the 1e-8 floor
        double[][] z = PolicyLossReference.rows(values, rows, vocab);
        float[] old = PolicyLossReference.oldLogProbs(random, z, y, 1f);
        for (float dualClip : new float[] {10f, 0f}) {
            Composition c = compose(entropy, y, rewards, starts, groups, 0.2, 0.25, 1, 1);
            boolean[] counted = new boolean[rows];
            for (int t = 0; t < rows; t++) {
                counted[t] = y[t] != IGNORE;
            }
            Tokens tokens = new Tokens(y, counted, old, c.inside(), null, c.epsLow(), c.epsHigh(), null, c.outside(),
                    null, null, 0f);
            Settings s = new Settings(0.2f, 0.25f, dualClip, Float.POSITIVE_INFINITY, 0f, 1f, Aggregation.TOKEN_MEAN, 0);
            double[][] gradient = new double[rows][vocab];
            double expected = PolicyLossReference.lossAndGradient(z, tokens, starts, s, gradient);
            for (Backend backend : ConformanceBackends.all()) {
                HapoLoss hapo = new HapoLoss(0.2f, 0.25f, 1f, 1f, dualClip, false, backend);
                try (Tensor logits = Tensor.of(values, rows, vocab); Tensor targets = Tensor.ofInts(y, rows);
                     Tensor o = Tensor.of(old, rows); Tensor h = Tensor.of(entropy, rows);
                     PolicyLoss.Result r = hapo.compute(logits, targets, o, h, rewards, starts, groups, 0.7f)) {
                    PolicyLossReference.assertMatches(backend + " HAPO dual clip " + dualClip, r, expected, gradient,
                            0.7f);
                }
            }
        }
    }

    @Test
    void samplingTemperaturesFollowTheNormalizedEntropy() {
        float[] entropy = {0.1f, 2f, 0.5f, 3f, 1f};
        int[] y = {1, 2, IGNORE, 0, 4};
        Composition c = compose(entropy, y, new float[] {1f}, new int[] {0, 5}, new int[] {0, 1}, 0.2, 0.2, 1, 1);
        Composition everyToken = compose(entropy, new int[] {1, 2, 3, 0, 4}, new float[] {1f}, new int[] {0, 5},
                new int[] {0, 1}, 0.2, 0.2, 1, 1);
        for (Backend backend : ConformanceBackends.all()) {
            HapoLoss hapo = new HapoLoss(0.2f, 0.2f, 1f, 1f, 10f, false, backend);
            // at rollout time there are no targets: a U8 mask of the positions that count (here the
            // bridge from targets, which must give the same mask), or null for all
            try (Tensor h = Tensor.of(entropy, 5); Tensor targets = Tensor.ofInts(y, 5);
                 Tensor counted = TokenSelection.countedMask(targets, IGNORE);
                 Tensor mask = TokenSelectionTest.maskOf(new boolean[] {true, true, false, true, true});
                 Tensor t = hapo.samplingTemperatures(h, mask, 1f, 0.05f);
                 Tensor all = hapo.samplingTemperatures(h, null, 1f, 0.05f)) {
                assertArrayEquals(TokenSelectionTest.read(mask), TokenSelectionTest.read(counted), "countedMask");
                for (int i = 0; i < 5; i++) {
                    assertEquals(1 + 0.05 * c.hHat()[i], t.getFloat(i), 1e-6, backend + " token " + i);
                    assertEquals(1 + 0.05 * everyToken.hHat()[i], all.getFloat(i), 1e-6, backend + " no mask, token " + i);
                }
            }
        }
    }

    @Test
    void badInputsAreClearErrors() {
        expect(() -> new HapoLoss(-0.1f, 0.2f, 1f, 1f, 10f, false, null), "epsLow");
        expect(() -> new HapoLoss(0.2f, 0.2f, Float.NaN, 1f, 10f, false, null), "alpha");
        expect(() -> new HapoLoss(0.2f, 0.2f, 1f, 1f, 0.5f, false, null), "dualClip");
        HapoLoss hapo = HapoLoss.defaults();
        try (Tensor logits = Tensor.of(new float[12], 3, 4); Tensor y = Tensor.ofInts(new int[] {0, 1, 2}, 3);
             Tensor shortY = Tensor.ofInts(new int[] {0, 1}, 2); Tensor o = Tensor.of(new float[3], 3);
             Tensor h = Tensor.of(new float[] {1f, 2f, 3f}, 3); Tensor nanH = Tensor.of(new float[] {1f, Float.NaN, 3f}, 3)) {
            int[] starts = {0, 1, 3};
            int[] groups = {0, 2};
            float[] rewards = {1f, 0f};
            expect(() -> hapo.compute(logits, shortY, o, h, rewards, starts, groups, 1f), "targets");
            expect(() -> hapo.compute(logits, y, o, nanH, rewards, starts, groups, 1f), "entropy");
            expect(() -> hapo.compute(logits, y, o, h, new float[] {1f}, starts, groups, 1f), "sequenceStarts");
            expect(() -> hapo.compute(logits, y, o, h, rewards, starts, new int[] {0, 1}, 1f), "groupStarts");
            expect(() -> hapo.compute(null, y, o, h, rewards, starts, groups, 1f), "logits");
            expect(() -> hapo.compute(logits, o, o, h, rewards, starts, groups, 1f), "targets: expected dtype");
            expect(() -> hapo.compute(logits, null, o, h, rewards, starts, groups, 1f), "targets");
            expect(() -> hapo.samplingTemperatures(h, y, 1f, 0.05f), "mask: expected dtype");
            expect(() -> hapo.samplingTemperatures(nanH, null, 1f, 0.05f), "entropy[1]");
            expect(() -> hapo.samplingTemperatures(null, null, 1f, 0.05f), "entropy");
            expect(() -> TokenSelection.countedMask(o, IGNORE), "targets: expected dtype");
            expect(() -> TokenSelection.countedMask(null, IGNORE), "targets");
        }
    }

    /** h_hat, the clip ranges and the inside/outside advantages per token, in float64. */
    record Composition(double[] hHat, float[] epsLow, float[] epsHigh, float[] inside, float[] outside) {
    }

    static Composition compose(float[] entropy, int[] y, float[] rewards, int[] starts, int[] groups, double epsLow,
                               double epsHigh, double alpha, double beta) {
        int n = entropy.length;
        // entropy normalization over the counted tokens
        double[] e = new double[n];
        double[] counted = new double[0];
        for (int t = 0; t < n; t++) {
            e[t] = Math.log(Math.max(entropy[t], 1e-8f));
            if (y[t] != IGNORE) {
                counted = Arrays.copyOf(counted, counted.length + 1);
                counted[counted.length - 1] = e[t];
            }
        }
        Arrays.sort(counted);
        // torch.quantile's 'nearest': rank 1 + rint(0.8 (n - 1))
        double pivot = counted[(int) TokenSelectionReference.rank(0.8, counted.length, true) - 1];
        double squares = 0;
        for (double v : counted) {
            squares += (v - pivot) * (v - pivot);
        }
        double scale = Math.sqrt(Math.max(squares / counted.length, 1e-8));
        double top = 1e-8;
        double bottom = 1e-8;
        for (double v : counted) {
            top = Math.max(top, (v - pivot) / scale);
            bottom = Math.max(bottom, -(v - pivot) / scale);
        }
        double[] hHat = new double[n];
        for (int t = 0; t < n; t++) {
            double h = (e[t] - pivot) / scale;
            hHat[t] = y[t] == IGNORE ? 0 : h > 0 ? h / top : h / bottom;
        }
        // token-level group average advantage (population statistics over the group's tokens)
        double[] sequenceAdvantage = new double[rewards.length];
        for (int g = 0; g + 1 < groups.length; g++) {
            double tokens = 0;
            double weighted = 0;
            double[] length = new double[rewards.length];
            for (int i = groups[g]; i < groups[g + 1]; i++) {
                for (int t = starts[i]; t < starts[i + 1]; t++) {
                    length[i] += y[t] != IGNORE ? 1 : 0;
                }
                tokens += length[i];
                weighted += length[i] * rewards[i];
            }
            double mu = weighted / tokens;
            double variance = 0;
            for (int i = groups[g]; i < groups[g + 1]; i++) {
                variance += length[i] * (rewards[i] - mu) * (rewards[i] - mu);
            }
            double sigma = Math.sqrt(variance / tokens);
            for (int i = groups[g]; i < groups[g + 1]; i++) {
                sequenceAdvantage[i] = (rewards[i] - mu) / (sigma + 1e-6);
                if (Math.abs(sequenceAdvantage[i]) >= 5) {
                    throw new AssertionError("the test's rewards must not need the GRPO fallback");
                }
            }
        }
        float[] low = new float[n];
        float[] high = new float[n];
        float[] inside = new float[n];
        float[] outside = new float[n];
        for (int b = 0; b + 1 < starts.length; b++) {
            for (int t = starts[b]; t < starts[b + 1]; t++) {
                double a = y[t] == IGNORE ? 0 : sequenceAdvantage[b];
                double aEnt = a * (1 + beta * hHat[t]);
                boolean hot = hHat[t] > 0;
                low[t] = (float) (hot ? epsLow : epsLow * (1 - alpha * hHat[t]));
                high[t] = (float) (hot ? epsHigh * (1 + alpha * hHat[t]) : epsHigh);
                inside[t] = (float) (hot ? a : aEnt);
                outside[t] = (float) (hot ? aEnt : a);
            }
        }
        return new Composition(hHat, low, high, inside, outside);
    }
}
