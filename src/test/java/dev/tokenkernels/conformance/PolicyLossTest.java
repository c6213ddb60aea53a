package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.ops.loss.PolicyLoss.Aggregation;
import dev.tokenkernels.ops.loss.PolicyLoss.Options;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
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
            expect(() -> PolicyLoss.computeWithGradient(z, y, o, a, null, starts, d, 1f, z), "gradient");
        }
    }
}
