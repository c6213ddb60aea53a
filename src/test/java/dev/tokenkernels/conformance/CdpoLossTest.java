package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertNull;

import dev.tokenkernels.methods.CdpoLoss;
import dev.tokenkernels.ops.loss.PreferenceLoss.Kind;
import dev.tokenkernels.ops.loss.PreferenceLoss.Responses;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** cDPO against a float64 composition of the paper's contrastive estimation and token-weighted DPO, every backend. */
class CdpoLossTest {

    @Test
    void matchesTheFloat64Composition() {
        SplittableRandom random = new SplittableRandom(31);
        int vocab = 45;
        var w = PreferenceLossProperties.randomSide(random, 2, vocab, true, false, false, 2f);
        var l = PreferenceLossProperties.randomSide(random, 2, vocab, true, false, false, 2f);
        int rowsW = w.targets().length;
        int rowsL = l.targets().length;
        float[] posW = near(random, w.logits());
        float[] negW = near(random, w.logits());
        float[] posL = near(random, l.logits());
        float[] negL = near(random, l.logits());
        float lambda = 1.5f;
        double beta = 0.2;
        for (boolean weightChosen : new boolean[] {false, true}) {
            for (Backend backend : ConformanceBackends.all()) {
                try (Tensor zw = Tensor.of(w.logits(), rowsW, vocab); Tensor zl = Tensor.of(l.logits(), rowsL, vocab);
                     Tensor yw = Tensor.ofInts(w.targets(), rowsW); Tensor yl = Tensor.ofInts(l.targets(), rowsL);
                     Tensor refW = Tensor.of(w.ref(), rowsW); Tensor refL = Tensor.of(l.ref(), rowsL);
                     Tensor pw = Tensor.ofFloats(posW, DType.BF16, rowsW, vocab); Tensor nw = Tensor.of(negW, rowsW, vocab);
                     Tensor pl = Tensor.ofFloats(posL, DType.BF16, rowsL, vocab); Tensor nl = Tensor.of(negL, rowsL, vocab)) {
                    CdpoLoss loss = new CdpoLoss((float) beta, lambda, backend);
                    Responses chosen = Responses.of(zw, yw, w.starts(), refW);
                    Responses rejected = Responses.of(zl, yl, l.starts(), refL);
                    try (CdpoLoss.Result r = weightChosen
                            ? loss.computeWeightingChosen(chosen, rejected, pw, nw, pl, nl, 1f)
                            : loss.compute(chosen, rejected, pl, nl, 1f)) {
                        double[] weightL = contrastiveProb(pl.toFloatArray(), negL, l.targets(), vocab, lambda);
                        for (int t = 0; t < rowsL; t++) {
                            weightL[t] = 1 - weightL[t];
                            if (l.targets()[t] >= 0) {
                                Approx.assertClose(backend + " rejected weight " + t, weightL[t],
                                        r.rejectedWeights().getFloat(t), 1e-5);
                            }
                        }
                        double[] weightW = null;
                        if (weightChosen) {
                            weightW = contrastiveProb(pw.toFloatArray(), negW, w.targets(), vocab, lambda);
                            for (int t = 0; t < rowsW; t++) {
                                if (w.targets()[t] >= 0) {
                                    Approx.assertClose(backend + " chosen weight " + t, weightW[t],
                                            r.chosenWeights().getFloat(t), 1e-5);
                                }
                            }
                        } else {
                            assertNull(r.chosenWeights(), "chosen weights 1");
                        }
                        PreferenceLossReference.Side sw = w.reference(zw);
                        PreferenceLossReference.Side sl = l.reference(zl);
                        var expected = PreferenceLossReference.compute(
                                new PreferenceLossReference.Side(sw.z(), sw.y(), sw.starts(), sw.ref(), weightW),
                                new PreferenceLossReference.Side(sl.z(), sl.y(), sl.starts(), sl.ref(), weightL),
                                new PreferenceLossReference.Settings(Kind.DPO, beta, 1, 0, 0, 1), 1);
                        PreferenceLossProperties.check(backend + " cDPO chosen weighted=" + weightChosen, expected,
                                r.preference(), null, null, false, vocab);
                    }
                }
            }
        }
    }

    /** Float64 p_ce per token from fp32 logits (0 for ignored tokens). */
    private static double[] contrastiveProb(float[] pos, float[] neg, int[] targets, int vocab, float lambda) {
        double[] p = new double[targets.length];
        for (int t = 0; t < targets.length; t++) {
            if (targets[t] >= 0) {
                double[] x = ContrastiveTargetProbProperties.combined(pos, neg, t * vocab, vocab, lambda, 1f);
                p[t] = Math.exp(ContrastiveTargetProbProperties.logProb(x, targets[t]));
            }
        }
        return p;
    }

    /** Logits of a model near the policy's. */
    private static float[] near(SplittableRandom random, float[] z) {
        float[] v = new float[z.length];
        for (int k = 0; k < v.length; k++) {
            v[k] = z[k] + (float) random.nextGaussian();
        }
        return v;
    }

    @Test
    void badInputsAreClearErrors() {
        try (Tensor z = Tensor.of(new float[4], 2, 2); Tensor y = Tensor.ofInts(new int[] {0, 1}, 2);
             Tensor ref = Tensor.of(new float[2], 2); Tensor oneRow = Tensor.of(new float[2], 1, 2);
             Tensor nanRow = Tensor.of(new float[] {Float.NaN, 0f, 0f, 0f}, 2, 2);
             Tensor ints = Tensor.ofInts(new int[4], 2, 2)) {
            Responses r = Responses.of(z, y, new int[] {0, 2}, ref);
            CdpoLoss loss = CdpoLoss.defaults();
            expect(() -> new CdpoLoss(0f, 1f, null), "beta");
            expect(() -> new CdpoLoss(0.1f, -1f, null), "lambda");
            expect(() -> loss.compute(r, r, oneRow, z, 1f), "rejectedPositive: expected dimension 0 = 2");
            expect(() -> loss.compute(r, r, z, oneRow, 1f), "rejectedNegative: expected dimension 0 = 2");
            expect(() -> loss.compute(r, r, z, null, 1f), "rejectedNegative");
            expect(() -> loss.compute(r, r, ints, z, 1f), "rejectedPositive: expected dtype");
            expect(() -> loss.compute(r, r, nanRow, z, 1f), "rejectedPositive/rejectedNegative row 0: expected finite logits");
            expect(() -> loss.compute(r, r, z, nanRow, 1f), "rejectedPositive/rejectedNegative row 0");
            expect(() -> loss.computeWeightingChosen(r, r, z, oneRow, z, z, 1f), "chosenNegative: expected dimension 0 = 2");
            expect(() -> loss.computeWeightingChosen(r, r, z, nanRow, z, z, 1f), "chosenPositive/chosenNegative row 0");
            expect(() -> loss.computeWeightingChosen(r, r, null, z, z, z, 1f), "chosenPositive");
            expect(() -> loss.compute(null, r, z, z, 1f), "responses");
        }
        // contrast models over another vocabulary than the policy's: refused by name, wider or narrower
        // (wider was silently normalized over its extra classes, narrower failed as a bare "targets[0]")
        try (Tensor z = Tensor.of(new float[] {0f, 1f, 2f}, 1, 3); Tensor y = Tensor.ofInts(new int[] {2}, 1);
             Tensor ref = Tensor.of(new float[] {-1f}, 1); Tensor wide = Tensor.of(new float[5], 1, 5);
             Tensor narrow = Tensor.of(new float[2], 1, 2)) {
            Responses r = Responses.of(z, y, new int[] {0, 1}, ref);
            CdpoLoss loss = CdpoLoss.defaults();
            expect(() -> loss.compute(r, r, wide, wide, 1f).close(), "rejectedPositive: expected dimension 1 = 3");
            expect(() -> loss.compute(r, r, narrow, narrow, 1f).close(), "rejectedPositive: expected dimension 1 = 3");
            expect(() -> loss.compute(r, r, z, wide, 1f).close(), "rejectedNegative: expected dimension 1 = 3");
            expect(() -> loss.computeWeightingChosen(r, r, wide, wide, z, z, 1f).close(), "chosenPositive");
        }
    }
}
