package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.PreferenceLoss;
import dev.tokenkernels.ops.loss.PreferenceLoss.Options;
import dev.tokenkernels.ops.loss.PreferenceLoss.Responses;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** Worked examples, special pairs, finite differences on the logits and bad inputs of PreferenceLoss. */
class PreferenceLossTest {
    private static final float LN3 = (float) Math.log(3);
    private static final float LN_HALF = (float) Math.log(0.5);

    /**
     * One pair, logits (0, ln 3) on both sides: p = (1/4, 3/4). Chosen takes class 1 (logp ln 3/4),
     * rejected class 0 (ln 1/4), both references ln 1/2: rho_w = ln 3/2, rho_l = ln 1/2, h = ln 3.
     * DPO, beta 1: sigma(ln 3) = 3/4, loss -ln 3/4, dl/dm = -1/4, so the chosen gradient is
     * -1/4 ((0, 1) - p) = (1/16, -1/16) and the rejected one 1/4 ((1, 0) - p) = (3/16, -3/16).
     */
    @Test
    void dpoByHand() {
        for (Backend backend : ConformanceBackends.all()) {
            try (Pair p = Pair.byHand(); PreferenceLoss.Result r = PreferenceLoss.computeWithGradient(p.chosen(),
                    p.rejected(), Options.dpo(1f).on(backend), 1f)) {
                assertEquals(-Math.log(0.75), r.loss(), 1e-6, backend + " loss");
                assertEquals(1 / 16f, r.chosenGradient().getFloat(0), 1e-6, backend + " chosen gradient[0]");
                assertEquals(-1 / 16f, r.chosenGradient().getFloat(1), 1e-6, backend + " chosen gradient[1]");
                assertEquals(3 / 16f, r.rejectedGradient().getFloat(0), 1e-6, backend + " rejected gradient[0]");
                assertEquals(-3 / 16f, r.rejectedGradient().getFloat(1), 1e-6, backend + " rejected gradient[1]");
                assertEquals(Math.log(1.5), r.chosenReward().getFloat(0), 1e-6, backend + " chosen reward");
                assertEquals(Math.log(0.5), r.rejectedReward().getFloat(0), 1e-6, backend + " rejected reward");
                assertEquals(Math.log(3), r.margin().getFloat(0), 1e-6, backend + " margin");
                assertEquals(1.0, r.accuracy(), backend + " accuracy");
                assertEquals(Math.log(0.75), r.chosenLogProb().getFloat(0), 1e-6, backend + " chosen logp");
            }
        }
    }

    /** The same pair: IPO with tau 1/2 is (ln 3 - 1)^2; SimPO (beta 2, gamma 1) is -log sigma(2 ln 3 - 1). */
    @Test
    void ipoAndSimpoByHand() {
        try (Pair p = Pair.byHand();
             PreferenceLoss.Result ipo = PreferenceLoss.computeWithGradient(p.chosen(), p.rejected(), Options.ipo(0.5f), 1f);
             Pair q = Pair.byHand();
             PreferenceLoss.Result simpo = PreferenceLoss.computeWithGradient(q.chosenNoReference(),
                     q.rejectedNoReference(), Options.simpo(2f, 1f), 1f)) {
            double d = Math.log(3) - 1;
            assertEquals(d * d, ipo.loss(), 1e-6, "IPO loss");
            // dl/dh = 2 d; chosen gradient 2 d ((0, 1) - p)
            assertEquals(2 * d * -0.25, ipo.chosenGradient().getFloat(0), 1e-6, "IPO chosen gradient[0]");
            double m = 2 * (Math.log(0.75) - Math.log(0.25)) - 1;
            assertEquals(Math.log1p(Math.exp(-m)), simpo.loss(), 1e-6, "SimPO loss");
            assertEquals(2 * Math.log(0.75), simpo.chosenReward().getFloat(0), 1e-6, "SimPO chosen reward");
        }
    }

    /** Label smoothing eps: -(1 - eps) log sigma(m) - eps log sigma(-m), with m = ln 3. */
    @Test
    void labelSmoothingByHand() {
        try (Pair p = Pair.byHand();
             PreferenceLoss.Result r = PreferenceLoss.compute(p.chosen(), p.rejected(), Options.dpo(1f).withLabelSmoothing(0.1f))) {
            assertEquals(-0.9 * Math.log(0.75) - 0.1 * Math.log(0.25), r.loss(), 1e-6, "smoothed loss");
            assertNull(r.chosenGradient(), "no gradient asked for");
        }
    }

    /**
     * A chosen response whose target is masked: rho = -inf, DPO's loss is +inf and its gradient the
     * finite limit (-beta per unit weight). A NaN logit poisons its own pair only: NaN loss and a NaN
     * gradient on every row of both its responses; the other pair is untouched.
     */
    @Test
    void specialPairs() {
        float inf = Float.NEGATIVE_INFINITY;
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor zw = Tensor.of(new float[] {inf, 0f, Float.NaN, 0f, 1f, 2f}, 3, 2);
                 Tensor zl = Tensor.of(new float[] {0f, 0f, 0f, 0f}, 2, 2);
                 Tensor yw = Tensor.ofInts(new int[] {0, 1, 0}, 3); Tensor yl = Tensor.ofInts(new int[] {0, 1}, 2);
                 Tensor refW = Tensor.of(new float[] {-1f, -1f, -1f}, 3); Tensor refL = Tensor.of(new float[] {-1f, -1f}, 2);
                 PreferenceLoss.Result r = PreferenceLoss.computeWithGradient(
                         Responses.of(zw, yw, new int[] {0, 1, 3}, refW), Responses.of(zl, yl, new int[] {0, 1, 2}, refL),
                         Options.dpo(0.5f).on(backend), 1f)) {
                assertEquals(Float.POSITIVE_INFINITY, r.pairLoss().getFloat(0), backend + " masked chosen target");
                // dl/dm = -1, c = -beta / B = -0.25; the row is p = (0, 1): gradient c ((1, 0) - p)
                assertEquals(-0.25f, r.chosenGradient().getFloat(0), 1e-6, backend + " finite limit, target");
                assertEquals(0.25f, r.chosenGradient().getFloat(1), 1e-6, backend + " finite limit, other");
                assertTrue(Float.isNaN(r.pairLoss().getFloat(1)), backend + " NaN pair loss");
                assertTrue(Float.isNaN(r.loss()), backend + " the mean is NaN");
                for (int k = 2; k < 6; k++) {
                    assertTrue(Float.isNaN(r.chosenGradient().getFloat(k)), backend + " NaN pair chosen gradient " + k);
                }
                assertTrue(Float.isNaN(r.rejectedGradient().getFloat(2)), backend + " NaN pair rejected gradient");
                assertTrue(Float.isNaN(r.rejectedGradient().getFloat(3)), backend + " NaN pair rejected gradient");
                assertEquals(0.25f * 0.5f, r.rejectedGradient().getFloat(0), 1e-6, backend + " pair 0 rejected: c (1 - 1/2)");
            }
        }
    }

    /**
     * The op's gradient (F32 logits, every kind, token weights) against central differences of the
     * op's own loss: h = 1e-2 keeps fp32 rounding of the loss (~1e-7) far below the tolerance.
     */
    @Test
    void gradientMatchesFiniteDifferencesOfTheLoss() {
        SplittableRandom random = new SplittableRandom(7);
        for (PreferenceLoss.Kind kind : PreferenceLoss.Kind.values()) {
            boolean reference = kind != PreferenceLoss.Kind.SIMPO;
            var w = PreferenceLossProperties.randomSide(random, 2, 5, reference, true, true, 1.5f);
            var l = PreferenceLossProperties.randomSide(random, 2, 5, reference, true, true, 1.5f);
            Options o = switch (kind) {
                case DPO -> Options.dpo(0.5f).withLabelSmoothing(0.1f);
                case IPO -> Options.ipo(0.8f);
                case SIMPO -> Options.simpo(2f, 0.5f);
            };
            float[] zw = w.logits().clone();
            float[] zl = l.logits().clone();
            float[] gw;
            float[] gl;
            try (Inputs in = new Inputs(w, l, zw, zl); PreferenceLoss.Result r = PreferenceLoss.computeWithGradient(
                    in.chosen(), in.rejected(), o, 1f)) {
                gw = r.chosenGradient().toFloatArray();
                gl = r.rejectedGradient().toFloatArray();
            }
            float h = 1e-2f;
            for (int side = 0; side < 2; side++) {
                float[] z = side == 0 ? zw : zl;
                float[] g = side == 0 ? gw : gl;
                for (int k = 0; k < z.length; k++) {
                    float saved = z[k];
                    z[k] = saved + h;
                    double up = loss(w, l, zw, zl, o);
                    z[k] = saved - h;
                    double down = loss(w, l, zw, zl, o);
                    z[k] = saved;
                    double numeric = (up - down) / (2 * h);
                    Approx.assertClose(kind + (side == 0 ? " chosen" : " rejected") + " d/dz[" + k + "]", numeric, g[k],
                            1e-3 * (1 + Math.abs(numeric)));
                }
            }
        }
    }

    private static double loss(PreferenceLossProperties.RandomSide w, PreferenceLossProperties.RandomSide l, float[] zw,
                               float[] zl, Options o) {
        try (Inputs in = new Inputs(w, l, zw, zl); PreferenceLoss.Result r = PreferenceLoss.compute(in.chosen(),
                in.rejected(), o)) {
            return r.loss();
        }
    }

    /** Each gradient row of a softmax log-probability sums to 0 over the vocabulary, whatever the coefficient. */
    @Test
    void gradientRowsSumToZeroAndWeightsOfOneChangeNothing() {
        SplittableRandom random = new SplittableRandom(11);
        var w = PreferenceLossProperties.randomSide(random, 3, 33, true, false, false, 2f);
        var l = PreferenceLossProperties.randomSide(random, 3, 33, true, false, false, 2f);
        float[] ones = new float[w.targets().length];
        java.util.Arrays.fill(ones, 1f);
        float[] onesL = new float[l.targets().length];
        java.util.Arrays.fill(onesL, 1f);
        try (Inputs in = new Inputs(w, l, w.logits(), l.logits()); Tensor weightW = Tensor.of(ones, ones.length);
             Tensor weightL = Tensor.of(onesL, onesL.length);
             PreferenceLoss.Result plain = PreferenceLoss.computeWithGradient(in.chosen(), in.rejected(),
                     Options.dpo(0.1f), 1f);
             PreferenceLoss.Result weighted = PreferenceLoss.computeWithGradient(in.chosen().withWeights(weightW),
                     in.rejected().withWeights(weightL), Options.dpo(0.1f), 1f)) {
            assertEquals(plain.loss(), weighted.loss(), "weights of 1 are the default");
            float[] g = plain.chosenGradient().toFloatArray();
            assertTrue(java.util.Arrays.equals(g, weighted.chosenGradient().toFloatArray()), "same gradient");
            boolean nonZero = false;
            for (int t = 0; t < w.targets().length; t++) {
                double sum = 0;
                for (int j = 0; j < 33; j++) {
                    sum += g[t * 33 + j];
                    nonZero |= g[t * 33 + j] != 0f;
                }
                assertEquals(0, sum, 1e-7, "row " + t);
            }
            assertTrue(nonZero, "some gradient");
        }
    }

    /**
     * A masked target on one side only, as the class doc gives it on every backend: chosen masked,
     * {@code h = -inf}, infinite loss; rejected masked, {@code h = +inf}, loss 0 and no gradient, but
     * an infinite loss with label smoothing; the gradients stay finite.
     */
    @Test
    void maskedTargetOnOneSide() {
        float ninf = Float.NEGATIVE_INFINITY;
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor open = Tensor.of(new float[] {0f, 0f}, 1, 2); Tensor masked = Tensor.of(new float[] {0f, ninf}, 1, 2);
                 Tensor y = Tensor.ofInts(new int[] {1}, 1); Tensor ref = Tensor.of(new float[] {-0.7f}, 1)) {
                Responses openSide = Responses.of(open, y, new int[] {0, 1}, ref);
                Responses maskedSide = Responses.of(masked, y, new int[] {0, 1}, ref);
                Responses openFree = Responses.of(open, y, new int[] {0, 1}, null); // SimPO: no reference
                Responses maskedFree = Responses.of(masked, y, new int[] {0, 1}, null);
                Options dpo = Options.dpo(0.1f).on(backend);
                Options simpo = Options.simpo(2f, 0.5f).on(backend);
                try (PreferenceLoss.Result chosenMasked = PreferenceLoss.computeWithGradient(maskedSide, openSide, dpo, 1f);
                     PreferenceLoss.Result rejectedMasked = PreferenceLoss.computeWithGradient(openSide, maskedSide, dpo, 1f);
                     PreferenceLoss.Result smoothed = PreferenceLoss.computeWithGradient(openSide, maskedSide,
                             dpo.withLabelSmoothing(0.1f), 1f);
                     PreferenceLoss.Result simpoChosen = PreferenceLoss.computeWithGradient(maskedFree, openFree, simpo, 1f);
                     PreferenceLoss.Result simpoRejected = PreferenceLoss.computeWithGradient(openFree, maskedFree, simpo,
                             1f)) {
                    assertEquals(Float.POSITIVE_INFINITY, chosenMasked.loss(), backend + " chosen masked");
                    assertEquals(0f, rejectedMasked.loss(), backend + " rejected masked");
                    assertEquals(Float.POSITIVE_INFINITY, simpoChosen.loss(), backend + " SimPO, chosen masked");
                    assertEquals(0f, simpoRejected.loss(), backend + " SimPO, rejected masked");
                    assertEquals(Float.POSITIVE_INFINITY, smoothed.loss(), backend + " rejected masked, eps 0.1");
                    for (int v = 0; v < 2; v++) {
                        assertTrue(Float.isFinite(chosenMasked.chosenGradient().getFloat(v)), backend + " finite");
                        assertTrue(Float.isFinite(smoothed.chosenGradient().getFloat(v)), backend + " finite");
                        assertEquals(0f, rejectedMasked.chosenGradient().getFloat(v), backend + " no gradient");
                    }
                }
            }
        }
    }

    /**
     * A padded batch as Responses' doc writes it (reshaped views, offsets 0, L, 2L, the ignore index
     * at padding) gives the packed batch's loss and gradient rows bit for bit, on every backend.
     */
    @Test
    void paddedBatchThroughReshapeEqualsThePackedOne() {
        int b = 2;
        int l = 3;
        int v = 5;
        int[] lengths = {2, 3};
        SplittableRandom random = new SplittableRandom(21);
        float[] z = new float[b * l * v];
        for (int i = 0; i < z.length; i++) {
            z[i] = (float) random.nextGaussian();
        }
        int[] padded = {1, 4, -100, 0, 2, 3};
        float[] ref = {-1.5f, -2f, Float.NaN, -1f, -1.2f, -2.5f}; // padding's is not read
        float[] packedZ = new float[5 * v];
        System.arraycopy(z, 0, packedZ, 0, 2 * v);
        System.arraycopy(z, 3 * v, packedZ, 2 * v, 3 * v);
        int[] packedY = {1, 4, 0, 2, 3};
        float[] packedRef = {-1.5f, -2f, -1f, -1.2f, -2.5f};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor zp = Tensor.of(z, b, l, v); Tensor yp = Tensor.ofInts(padded, b, l); Tensor rp = Tensor.of(ref, b, l);
                 Tensor zk = Tensor.of(packedZ, 5, v); Tensor yk = Tensor.ofInts(packedY, 5); Tensor rk = Tensor.of(packedRef, 5)) {
                Responses paddedSide = Responses.of(zp.reshape(b * l, v), yp.reshape(b * l), new int[] {0, l, 2 * l},
                        rp.reshape(b * l));
                Responses packedSide = Responses.of(zk, yk, new int[] {0, lengths[0], 5}, rk);
                Options dpo = Options.dpo(0.1f).on(backend);
                try (PreferenceLoss.Result p = PreferenceLoss.computeWithGradient(paddedSide, packedSide, dpo, 1f);
                     PreferenceLoss.Result k = PreferenceLoss.computeWithGradient(packedSide, packedSide, dpo, 1f)) {
                    assertEquals(k.loss(), p.loss(), backend + " loss");
                    for (int row = 0, packedRow = 0; row < b * l; row++) {
                        if (row % l >= lengths[row / l]) {
                            continue;
                        }
                        for (int c = 0; c < v; c++) {
                            assertEquals(k.chosenGradient().getFloat((long) packedRow * v + c),
                                    p.chosenGradient().getFloat((long) row * v + c), backend + " row " + row);
                        }
                        packedRow++;
                    }
                }
            }
        }
    }

    @Test
    void badInputsAreClearErrors() {
        try (Pair p = Pair.byHand(); Tensor nan = Tensor.of(new float[] {Float.NaN}, 1);
             Tensor two = Tensor.of(new float[] {0f, 0f}, 2); Tensor wide = Tensor.of(new float[3], 1, 3);
             Tensor badY = Tensor.ofInts(new int[] {2}, 1); Tensor grad = Tensor.of(new float[2], 1, 2);
             Tensor grad2 = Tensor.of(new float[2], 1, 2); Tensor wrongGrad = Tensor.of(new float[3], 1, 3);
             Tensor zz = Tensor.of(new float[4], 2, 2); Tensor yy = Tensor.ofInts(new int[] {0, 0}, 2);
             Tensor refs = Tensor.of(new float[2], 2); Tensor ignored = Tensor.ofInts(new int[] {-100}, 1)) {
            Responses w = p.chosen();
            Responses l = p.rejected();
            Options d = Options.dpo(0.1f);
            expect(() -> PreferenceLoss.compute(w, l, null), "options");
            expect(() -> PreferenceLoss.compute(null, l, d), "chosen");
            expect(() -> PreferenceLoss.compute(w, Responses.of(zz, yy, new int[] {0, 1, 2}, refs), d),
                    "rejected.sequenceStarts");
            expect(() -> PreferenceLoss.compute(w, Responses.of(zz, yy, new int[] {0, 1}, refs), d),
                    "rejected.sequenceStarts");
            expect(() -> PreferenceLoss.compute(w, Responses.of(zz, yy, new int[] {0, 2, 1, 2}, refs), d),
                    "non-decreasing");
            expect(() -> PreferenceLoss.compute(w, new Responses(l.logits(), l.targets(), null, l.referenceLogProb(),
                    null), d), "rejected.sequenceStarts");
            expect(() -> PreferenceLoss.compute(Responses.of(w.logits(), w.targets(), new int[] {0, 1}, null), l, d),
                    "chosen.referenceLogProb");
            expect(() -> PreferenceLoss.compute(Responses.of(w.logits(), w.targets(), new int[] {0, 1}, nan), l, d),
                    "chosen.referenceLogProb[0]");
            expect(() -> PreferenceLoss.compute(Responses.of(w.logits(), w.targets(), new int[] {0, 1}, two), l, d),
                    "chosen.referenceLogProb");
            expect(() -> PreferenceLoss.compute(w, l.withWeights(nan), d), "rejected.weights[0]");
            expect(() -> PreferenceLoss.compute(w, Responses.of(l.logits(), badY, new int[] {0, 1},
                    l.referenceLogProb()), d), "rejected.targets[0]");
            expect(() -> PreferenceLoss.compute(w, Responses.of(wide, l.targets(), new int[] {0, 1},
                    l.referenceLogProb()), d), "rejected.logits");
            expect(() -> PreferenceLoss.compute(w, l, Options.simpo(2f, 1f)), "none for SimPO");
            expect(() -> PreferenceLoss.compute(p.chosenNoReference(), Responses.of(l.logits(), ignored,
                    new int[] {0, 1}, null), Options.simpo(2f, 1f)), "a counted token in every response");
            expect(() -> PreferenceLoss.compute(w, l, Options.dpo(0f)), "beta");
            expect(() -> PreferenceLoss.compute(w, l, Options.ipo(-1f)), "tau");
            expect(() -> PreferenceLoss.compute(w, l, Options.simpo(2f, Float.NaN)), "gamma");
            expect(() -> PreferenceLoss.compute(w, l, d.withLabelSmoothing(0.5f)), "labelSmoothing");
            expect(() -> PreferenceLoss.compute(w, l, Options.ipo(1f).withLabelSmoothing(0.1f)), "labelSmoothing");
            expect(() -> PreferenceLoss.compute(w, l, d.withTemperature(0f)), "temperature");
            expect(() -> PreferenceLoss.compute(w, l, d.withTemperature(0x1p-130f)), "reciprocal 1/T is finite");
            expect(() -> PreferenceLoss.compute(w, l, d.accumulating()), "accumulate");
            expect(() -> PreferenceLoss.computeWithGradient(w, l, d, Float.NaN), "gradScale");
            expect(() -> PreferenceLoss.computeWithGradient(w, l, d.accumulating(), 1f), "chosenGradient");
            expect(() -> PreferenceLoss.computeWithGradient(w, l, d, 1f, grad, null), "rejectedGradient");
            expect(() -> PreferenceLoss.computeWithGradient(w, l, d, 1f, grad, grad), "rejectedGradient");
            expect(() -> PreferenceLoss.computeWithGradient(w, l, d, 1f, grad, wrongGrad), "rejectedGradient");
            expect(() -> PreferenceLoss.computeWithGradient(w, l, d, 1f, grad, l.logits()), "rejectedGradient: expected a buffer that does not overlap the logits");
            expect(() -> PreferenceLoss.computeWithGradient(w, l, d, 1f, wrongGrad, grad2), "chosenGradient");
        }
    }

    /**
     * Finite but huge weights (or beta, or IPO's h) whose gradient coefficient overflows fp32: refused
     * naming the weights, before the caller's gradient buffers are touched.
     */
    @Test
    void overflowingCoefficientsNameTheWeights() {
        for (Backend backend : ConformanceBackends.all()) {
            try (Pair p = Pair.byHand(); Tensor huge = Tensor.of(new float[] {-3e38f}, 1);
                 Tensor large = Tensor.of(new float[] {1e38f}, 1);
                 Tensor gw = Tensor.of(new float[] {7f, 7f}, 1, 2); Tensor gl = Tensor.of(new float[] {7f, 7f}, 1, 2)) {
                Responses w = p.chosen();
                Responses l = p.rejected();
                // m = beta (-3e38 rho_w - rho_l) -> -inf side: dl/dm = -1, c = -beta * w = 3e39
                expect(() -> PreferenceLoss.computeWithGradient(w.withWeights(huge), l, Options.dpo(10f).on(backend), 1f),
                        "chosen.weights[0], beta 10.0");
                expect(() -> PreferenceLoss.computeWithGradient(w.withWeights(huge), l,
                        Options.dpo(10f).accumulating().on(backend), 1f, gw, gl), "chosen.weights[0]");
                for (int k = 0; k < 2; k++) {
                    assertEquals(7f, gw.getFloat(k), backend + " chosen gradient untouched");
                    assertEquals(7f, gl.getFloat(k), backend + " rejected gradient untouched");
                }
                // IPO: h = 1e38 rho_w - rho_l, dl/dh = 2 (h - 1/(2 tau)), c = 2 h w
                expect(() -> PreferenceLoss.computeWithGradient(w.withWeights(large), l, Options.ipo(1f).on(backend), 1f),
                        "the IPO margin");
            }
        }
    }

    /** The hand-worked pair: one token per response, V = 2. */
    private record Pair(Tensor zw, Tensor zl, Tensor yw, Tensor yl, Tensor refW, Tensor refL) implements AutoCloseable {
        static Pair byHand() {
            return new Pair(Tensor.of(new float[] {0f, LN3}, 1, 2), Tensor.of(new float[] {0f, LN3}, 1, 2),
                    Tensor.ofInts(new int[] {1}, 1), Tensor.ofInts(new int[] {0}, 1), Tensor.of(new float[] {LN_HALF}, 1),
                    Tensor.of(new float[] {LN_HALF}, 1));
        }

        Responses chosen() {
            return Responses.of(zw, yw, new int[] {0, 1}, refW);
        }

        Responses rejected() {
            return Responses.of(zl, yl, new int[] {0, 1}, refL);
        }

        Responses chosenNoReference() {
            return Responses.of(zw, yw, new int[] {0, 1}, null);
        }

        Responses rejectedNoReference() {
            return Responses.of(zl, yl, new int[] {0, 1}, null);
        }

        @Override
        public void close() {
            zw.close();
            zl.close();
            yw.close();
            yl.close();
            refW.close();
            refL.close();
        }
    }

    /** Tensors of two random sides with the given logits. */
    private static final class Inputs implements AutoCloseable {
        private final Tensor[] all;
        private final Responses chosen;
        private final Responses rejected;

        Inputs(PreferenceLossProperties.RandomSide w, PreferenceLossProperties.RandomSide l, float[] zw, float[] zl) {
            int vw = w.vocab();
            int rw = w.targets().length;
            int rl = l.targets().length;
            Tensor a = Tensor.of(zw.clone(), rw, vw);
            Tensor b = Tensor.of(zl.clone(), rl, l.vocab());
            Tensor ya = Tensor.ofInts(w.targets(), rw);
            Tensor yb = Tensor.ofInts(l.targets(), rl);
            Tensor ra = w.ref() == null ? null : Tensor.of(w.ref(), rw);
            Tensor rb = l.ref() == null ? null : Tensor.of(l.ref(), rl);
            Tensor wa = w.weights() == null ? null : Tensor.of(w.weights(), rw);
            Tensor wb = l.weights() == null ? null : Tensor.of(l.weights(), rl);
            all = new Tensor[] {a, b, ya, yb, ra, rb, wa, wb};
            chosen = new Responses(a, ya, w.starts(), ra, wa);
            rejected = new Responses(b, yb, l.starts(), rb, wb);
        }

        Responses chosen() {
            return chosen;
        }

        Responses rejected() {
            return rejected;
        }

        @Override
        public void close() {
            for (Tensor t : all) {
                if (t != null) {
                    t.close();
                }
            }
        }
    }
}
