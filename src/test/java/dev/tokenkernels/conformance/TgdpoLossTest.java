package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;

import dev.tokenkernels.methods.TgdpoLoss;
import dev.tokenkernels.ops.loss.PreferenceLoss;
import dev.tokenkernels.ops.loss.PreferenceLoss.Kind;
import dev.tokenkernels.ops.loss.PreferenceLoss.Responses;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** TGDPO against the paper's formula in float64, on every backend. */
class TgdpoLossTest {

    @Test
    void matchesThePapersFormula() {
        SplittableRandom random = new SplittableRandom(21);
        int vocab = 37;
        var w = PreferenceLossProperties.randomSide(random, 3, vocab, true, false, false, 2f);
        var l = PreferenceLossProperties.randomSide(random, 3, vocab, true, false, false, 2f);
        checkAgainstTheFormula(w, l, rewardModel(random, w.targets().length), rewardModel(random, l.targets().length),
                vocab);
    }

    /**
     * Token rewards up to 19.5 nats in the harmful direction (1/(alpha beta) = 20 at the defaults): weights
     * down to 0.025 and up to 1.975, still the paper's formula.
     */
    @Test
    void largeTokenRewardsBelowTheLimit() {
        SplittableRandom random = new SplittableRandom(22);
        int vocab = 29;
        var w = PreferenceLossProperties.randomSide(random, 3, vocab, true, false, false, 2f);
        var l = PreferenceLossProperties.randomSide(random, 3, vocab, true, false, false, 2f);
        float[] rmW = new float[w.ref().length];
        float[] rmL = new float[l.ref().length];
        for (int t = 0; t < rmW.length; t++) {
            rmW[t] = w.ref()[t] + (float) (t % 2 == 0 ? -19.5 : 19.5 * random.nextDouble());
        }
        for (int t = 0; t < rmL.length; t++) {
            rmL[t] = l.ref()[t] + (float) (t % 2 == 0 ? 19.5 : -19.5 * random.nextDouble());
        }
        checkAgainstTheFormula(w, l, rmW, rmL, vocab);
    }

    /** At |r| >= 1/(alpha beta) in the harmful direction the weight would be <= 0 and flip the token: refused. */
    @Test
    void nonPositiveWeightsAreRefused() {
        SplittableRandom random = new SplittableRandom(23);
        int vocab = 11;
        // token 0 is counted on both sides (the first token of a response with counted = true)
        var w = PreferenceLossProperties.randomSide(random, 2, vocab, true, false, true, 2f);
        var l = PreferenceLossProperties.randomSide(random, 2, vocab, true, false, true, 2f);
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor zw = Tensor.of(w.logits(), w.targets().length, vocab);
                 Tensor zl = Tensor.of(l.logits(), l.targets().length, vocab);
                 Tensor yw = Tensor.ofInts(w.targets(), w.targets().length);
                 Tensor yl = Tensor.ofInts(l.targets(), l.targets().length);
                 Tensor refW = Tensor.of(w.ref(), w.ref().length); Tensor refL = Tensor.of(l.ref(), l.ref().length)) {
                Responses chosen = Responses.of(zw, yw, w.starts(), refW);
                Responses rejected = Responses.of(zl, yl, l.starts(), refL);
                TgdpoLoss loss = new TgdpoLoss(0.1f, 0.5f, backend);
                float[] rmW = w.ref().clone();
                float[] rmL = l.ref().clone();
                rmW[0] -= 20.5f; // weight 1 + 0.05 * (-20.5) = -0.025
                try (Tensor rw = Tensor.of(rmW, rmW.length); Tensor rl = Tensor.of(rmL, rmL.length)) {
                    expect(() -> loss.compute(chosen, rejected, rw, rl, 1f), "chosenRewardModelLogProb[0]: expected");
                }
                rmW[0] = w.ref()[0];
                rmL[0] += 20.5f; // weight 1 - 0.05 * 20.5 = -0.025
                try (Tensor rw = Tensor.of(rmW, rmW.length); Tensor rl = Tensor.of(rmL, rmL.length)) {
                    expect(() -> loss.compute(chosen, rejected, rw, rl, 1f), "rejectedRewardModelLogProb[0]: expected");
                }
            }
        }
    }

    private static void checkAgainstTheFormula(PreferenceLossProperties.RandomSide w, PreferenceLossProperties.RandomSide l,
                                               float[] rmW, float[] rmL, int vocab) {
        double beta = 0.1;
        double alpha = 0.5;
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor zw = Tensor.of(w.logits(), w.targets().length, vocab);
                 Tensor zl = Tensor.of(l.logits(), l.targets().length, vocab);
                 Tensor yw = Tensor.ofInts(w.targets(), w.targets().length);
                 Tensor yl = Tensor.ofInts(l.targets(), l.targets().length);
                 Tensor refW = Tensor.of(w.ref(), w.ref().length); Tensor refL = Tensor.of(l.ref(), l.ref().length);
                 Tensor rw = Tensor.of(rmW, rmW.length); Tensor rl = Tensor.of(rmL, rmL.length);
                 PreferenceLoss.Result r = new TgdpoLoss(0.1f, 0.5f, backend).compute(
                         Responses.of(zw, yw, w.starts(), refW), Responses.of(zl, yl, l.starts(), refL), rw, rl, 1f)) {
                PreferenceLossReference.Side sw = w.reference(zw);
                PreferenceLossReference.Side sl = l.reference(zl);
                // L = -log sigma(sum beta (1 + a b r_w) rho_w - sum beta (1 - a b r_l) rho_l), r = rm - ref
                double loss = 0;
                for (int b = 0; b < 3; b++) {
                    double m = 0;
                    for (int t = w.starts()[b]; t < w.starts()[b + 1]; t++) {
                        if (sw.y()[t] >= 0) {
                            double rho = PreferenceLossReference.logSoftmaxAt(sw.z()[t], sw.y()[t], 1) - w.ref()[t];
                            m += beta * (1 + alpha * beta * ((double) rmW[t] - w.ref()[t])) * rho;
                        }
                    }
                    for (int t = l.starts()[b]; t < l.starts()[b + 1]; t++) {
                        if (sl.y()[t] >= 0) {
                            double rho = PreferenceLossReference.logSoftmaxAt(sl.z()[t], sl.y()[t], 1) - l.ref()[t];
                            m -= beta * (1 - alpha * beta * ((double) rmL[t] - l.ref()[t])) * rho;
                        }
                    }
                    loss -= PreferenceLossReference.logSigmoid(m) / 3;
                }
                Approx.assertClose(backend + " loss", loss, r.loss(), 1e-5 * (1 + Math.abs(loss)));
                // the gradient: the reference's token-weighted DPO with the same weights
                double[] weightW = new double[rmW.length];
                double[] weightL = new double[rmL.length];
                for (int t = 0; t < weightW.length; t++) {
                    weightW[t] = 1 + alpha * beta * ((double) rmW[t] - w.ref()[t]);
                }
                for (int t = 0; t < weightL.length; t++) {
                    weightL[t] = 1 - alpha * beta * ((double) rmL[t] - l.ref()[t]);
                }
                var expected = PreferenceLossReference.compute(
                        new PreferenceLossReference.Side(sw.z(), sw.y(), sw.starts(), sw.ref(), weightW),
                        new PreferenceLossReference.Side(sl.z(), sl.y(), sl.starts(), sl.ref(), weightL),
                        new PreferenceLossReference.Settings(Kind.DPO, beta, 1, 0, 0, 1), 1);
                org.junit.jupiter.api.Assertions.assertEquals(loss, expected.loss(), 1e-12 * (1 + Math.abs(loss)),
                        "the paper's formula and the token-weighted reference agree");
                PreferenceLossProperties.check(backend + " TGDPO", expected, r, null, null, false, vocab);
            }
        }
    }

    @Test
    void badInputsAreClearErrors() {
        try (Tensor z = Tensor.of(new float[4], 2, 2); Tensor y = Tensor.ofInts(new int[] {0, 1}, 2);
             Tensor ref = Tensor.of(new float[2], 2); Tensor nan = Tensor.of(new float[] {0f, Float.NaN}, 2);
             Tensor shortT = Tensor.of(new float[1], 1)) {
            Responses r = Responses.of(z, y, new int[] {0, 2}, ref);
            Responses noRef = Responses.of(z, y, new int[] {0, 2}, null);
            Responses floatTargets = Responses.of(z, ref, new int[] {0, 2}, ref);
            Responses nanRef = Responses.of(z, y, new int[] {0, 2}, nan);
            TgdpoLoss loss = TgdpoLoss.defaults();
            expect(() -> new TgdpoLoss(0f, 0.5f, null), "beta");
            expect(() -> new TgdpoLoss(0.1f, -1f, null), "alpha");
            expect(() -> loss.compute(r, r, nan, ref, 1f), "chosenRewardModelLogProb[1]");
            expect(() -> loss.compute(r, r, ref, shortT, 1f), "rejectedRewardModelLogProb");
            expect(() -> loss.compute(r, r, null, ref, 1f), "chosenRewardModelLogProb");
            expect(() -> loss.compute(r, noRef, ref, ref, 1f), "rejected.referenceLogProb");
            expect(() -> loss.compute(null, r, ref, ref, 1f), "responses");
            expect(() -> loss.compute(floatTargets, r, ref, ref, 1f), "chosen.targets: expected dtype");
            expect(() -> loss.compute(r, nanRef, ref, ref, 1f), "rejected.referenceLogProb[1]");
        }
    }

    private static float[] rewardModel(SplittableRandom random, int n) {
        float[] v = new float[n];
        for (int t = 0; t < n; t++) {
            v[t] = (float) random.nextDouble(-6, 0);
        }
        return v;
    }
}
