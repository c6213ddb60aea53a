package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.tokenkernels.conformance.PolicyLossReference.Settings;
import dev.tokenkernels.methods.DeGrpoLoss;
import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.ops.loss.PolicyLoss.Aggregation;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** Thinkless' decoupled GRPO against a float64 composition: alpha times the control tokens' mean plus the rest's. */
class DeGrpoLossTest {

    @Test
    void matchesTheFloat64CompositionOnEveryBackend() {
        int rows = 11;
        int vocab = 50;
        SplittableRandom random = new SplittableRandom(3);
        float[] values = new float[rows * vocab];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) (random.nextGaussian() * 2);
        }
        // four responses; the third's control token is masked, the last has only its control token
        int[] starts = {0, 4, 7, 10, 11};
        int[] y = {1, 7, 9, 30, 2, 2, 49, -100, 5, 6, 8};
        float[] a = new float[rows];
        for (int b = 0; b + 1 < starts.length; b++) {
            float advantage = (float) random.nextGaussian(); // GRPO: one advantage per response
            for (int t = starts[b]; t < starts[b + 1]; t++) {
                a[t] = advantage;
            }
        }
        double[][] z = PolicyLossReference.rows(values, rows, vocab);
        float[] old = PolicyLossReference.oldLogProbs(random, z, y, 1f, 0.8, 1.2);
        boolean[] counted = new boolean[rows];
        for (int t = 0; t < rows; t++) {
            counted[t] = y[t] >= 0;
        }
        for (float alpha : new float[] {0.001f, 0.5f}) {
            Settings s = new Settings(0.2f, 0.2f, 0f, Float.POSITIVE_INFINITY, 0f, 1f, Aggregation.DEGRPO, 0, alpha);
            double[][] gradient = new double[rows][vocab];
            double expected = PolicyLossReference.lossAndGradient(z,
                    PolicyLossReference.Tokens.plain(y, counted, old, a, null), starts, s, gradient);
            for (Backend backend : ConformanceBackends.all()) {
                DeGrpoLoss loss = new DeGrpoLoss(alpha, 0.2f, 1f, backend);
                try (Tensor logits = Tensor.of(values, rows, vocab); Tensor targets = Tensor.ofInts(y, rows);
                     Tensor o = Tensor.of(old, rows); Tensor adv = Tensor.of(a, rows);
                     PolicyLoss.Result r = loss.compute(logits, targets, o, adv, starts, 2f)) {
                    PolicyLossReference.assertMatches(backend + " DeGRPO alpha " + alpha, r, expected, gradient, 2f);
                }
            }
        }
        expect(() -> new DeGrpoLoss(-1f, 0.2f, 1f, null), "alpha");
        expect(() -> new DeGrpoLoss(Float.NaN, 0.2f, 1f, null), "alpha");
    }

    @Test
    void defaultsAreThinkless() {
        PolicyLoss.Options o = DeGrpoLoss.defaults().options();
        assertEquals(Aggregation.DEGRPO, o.aggregation());
        assertEquals(0.001f, o.controlTokenWeight());
        assertEquals(0.2f, o.epsLow());
        assertEquals(0.2f, o.epsHigh());
        assertEquals(0f, o.klBeta());
    }
}
