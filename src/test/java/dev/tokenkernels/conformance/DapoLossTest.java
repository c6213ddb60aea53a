package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;

import dev.tokenkernels.conformance.PolicyLossReference.Settings;
import dev.tokenkernels.methods.DapoLoss;
import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.ops.loss.PolicyLoss.Aggregation;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** DAPO's loss against a float64 composition of its formulas, and its dynamic-sampling filter. */
class DapoLossTest {

    @Test
    void matchesTheFloat64CompositionOnEveryBackend() {
        int rows = 10;
        int vocab = 70;
        SplittableRandom random = new SplittableRandom(11);
        float[] values = new float[rows * vocab];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) (random.nextGaussian() * 2);
        }
        int[] y = {3, 69, -100, 0, 12, 12, 40, -100, 5, 66};
        float[] a = new float[rows];
        for (int t = 0; t < rows; t++) {
            a[t] = (float) random.nextGaussian();
        }
        double[][] z = PolicyLossReference.rows(values, rows, vocab);
        // clip-higher 0.2 / 0.28, token mean over the batch, no KL
        Settings s = new Settings(0.2f, 0.28f, 0f, Float.POSITIVE_INFINITY, 0f, 1f, Aggregation.TOKEN_MEAN, 0);
        float[] old = PolicyLossReference.oldLogProbs(random, z, y, 1f, 0.8, 1.28);
        boolean[] counted = new boolean[rows];
        for (int t = 0; t < rows; t++) {
            counted[t] = y[t] >= 0;
        }
        int[] starts = {0, 4, 10};
        double[][] gradient = new double[rows][vocab];
        double expected = PolicyLossReference.lossAndGradient(z, PolicyLossReference.Tokens.plain(y, counted, old, a, null),
                starts, s, gradient);
        for (Backend backend : ConformanceBackends.all()) {
            DapoLoss dapo = new DapoLoss(0.2f, 0.28f, 1f, backend);
            try (Tensor logits = Tensor.of(values, rows, vocab); Tensor targets = Tensor.ofInts(y, rows);
                 Tensor o = Tensor.of(old, rows); Tensor adv = Tensor.of(a, rows);
                 PolicyLoss.Result r = dapo.compute(logits, targets, o, adv, starts, 0.5f)) {
                PolicyLossReference.assertMatches(backend + " DAPO", r, expected, gradient, 0.5f);
            }
        }
    }

    @Test
    void dynamicSamplingKeepsGroupsWithDifferentRewards() {
        float[] rewards = {1, 1, 1, 0, 1, 0, 0, 0, 0, 0.5f, 0.5f, 0.5f};
        assertArrayEquals(new boolean[] {false, true, false, false}, DapoLoss.informativeGroups(rewards, 3));
        assertArrayEquals(new boolean[] {false, true, true, false, true, false},
                DapoLoss.informativeGroups(rewards, 2));
        expect(() -> DapoLoss.informativeGroups(rewards, 5), "rewards");
        expect(() -> DapoLoss.informativeGroups(rewards, 0), "groupSize");
        expect(() -> DapoLoss.informativeGroups(new float[] {1f, Float.NaN}, 2), "rewards[1]");
        expect(() -> new DapoLoss(-0.1f, 0.28f, 1f, null), "epsLow");
    }
}
