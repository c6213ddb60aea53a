package dev.tokenkernels.conformance;

import dev.tokenkernels.ops.loss.PreferenceLoss;
import dev.tokenkernels.ops.loss.PreferenceLoss.Kind;
import dev.tokenkernels.ops.loss.PreferenceLoss.Responses;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;

/** PreferenceLoss on random batches of pairs, every backend, against the float64 reference. */
class PreferenceLossProperties {

    /** A random side: its tensors and the reference's view of them (the logits as the tensor rounds them). */
    record RandomSide(float[] logits, int[] targets, int[] starts, float[] ref, float[] weights, int vocab) {
        PreferenceLossReference.Side reference(Tensor z) {
            float[] rounded = z.toFloatArray();
            int rows = targets.length;
            double[][] rowsOf = new double[rows][vocab];
            int[] y = new int[rows];
            double[] r = ref == null ? null : new double[rows];
            double[] w = weights == null ? null : new double[rows];
            for (int t = 0; t < rows; t++) {
                for (int j = 0; j < vocab; j++) {
                    rowsOf[t][j] = rounded[t * vocab + j];
                }
                y[t] = targets[t] == -100 ? -1 : targets[t];
                if (r != null) {
                    r[t] = ref[t];
                }
                if (w != null) {
                    w[t] = weights[t];
                }
            }
            return new PreferenceLossReference.Side(rowsOf, y, starts, r, w);
        }
    }

    /** {@code pairs} responses of 0 to 4 tokens (at least one counted token each when {@code counted}). */
    static RandomSide randomSide(SplittableRandom random, int pairs, int vocab, boolean withReference,
                                 boolean weighted, boolean counted, float magnitude) {
        int[] starts = new int[pairs + 1];
        for (int b = 0; b < pairs; b++) {
            starts[b + 1] = starts[b] + (counted ? 1 : 0) + random.nextInt(5);
        }
        int rows = starts[pairs];
        float[] z = new float[rows * vocab];
        for (int k = 0; k < z.length; k++) {
            z[k] = (float) (random.nextGaussian() * magnitude);
        }
        int[] y = new int[rows];
        float[] ref = withReference ? new float[rows] : null;
        float[] w = weighted ? new float[rows] : null;
        for (int b = 0; b < pairs; b++) {
            for (int t = starts[b]; t < starts[b + 1]; t++) {
                boolean first = t == starts[b];
                y[t] = !(counted && first) && random.nextInt(5) == 0 ? -100 : random.nextInt(vocab);
                if (ref != null) {
                    ref[t] = y[t] == -100 && random.nextBoolean() ? Float.NaN : (float) random.nextDouble(-4, 0);
                }
                if (w != null) {
                    w[t] = (float) random.nextDouble(-0.5, 2);
                }
            }
        }
        return new RandomSide(z, y, starts, ref, w, vocab);
    }

    @Property(tries = 80)
    void lossStatisticsAndGradientsMatchTheReference(@ForAll @IntRange(min = 1, max = 4) int pairs,
                                                     @ForAll("vocabularies") int vocab,
                                                     @ForAll Kind kind,
                                                     @ForAll("dtypes") DType dtype,
                                                     @ForAll boolean weighted,
                                                     @ForAll boolean smoothed,
                                                     @ForAll boolean accumulate,
                                                     @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        boolean reference = kind != Kind.SIMPO;
        float magnitude = (float) random.nextDouble(0.1, 3);
        RandomSide w = randomSide(random, pairs, vocab, reference, weighted, kind == Kind.SIMPO, magnitude);
        RandomSide l = randomSide(random, pairs, vocab, reference, weighted, kind == Kind.SIMPO, magnitude);
        float temperature = random.nextBoolean() ? 1f : (float) random.nextDouble(0.5, 2);
        float gradScale = (float) random.nextDouble(-2, 2);
        PreferenceLoss.Options options = switch (kind) {
            case DPO -> PreferenceLoss.Options.dpo((float) random.nextDouble(0.05, 1));
            case IPO -> PreferenceLoss.Options.ipo((float) random.nextDouble(0.1, 2));
            case SIMPO -> PreferenceLoss.Options.simpo((float) random.nextDouble(0.5, 3),
                    (float) random.nextDouble(-1, 2));
        };
        if (smoothed && kind != Kind.IPO) {
            options = options.withLabelSmoothing((float) random.nextDouble(0, 0.4));
        }
        options = options.withTemperature(temperature);
        if (accumulate) {
            options = options.accumulating();
        }
        PreferenceLossReference.Settings settings = new PreferenceLossReference.Settings(kind, options.beta(),
                options.tau(), options.gamma(), options.labelSmoothing(), temperature);
        float[] beforeW = randomBuffer(random, w.logits().length);
        float[] beforeL = randomBuffer(random, l.logits().length);
        int rowsW = w.targets().length;
        int rowsL = l.targets().length;
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor zw = Tensor.ofFloats(w.logits(), dtype, rowsW, vocab);
                 Tensor zl = Tensor.ofFloats(l.logits(), dtype, rowsL, vocab);
                 Tensor yw = Tensor.ofInts(w.targets(), rowsW); Tensor yl = Tensor.ofInts(l.targets(), rowsL);
                 Tensor refW = reference ? Tensor.of(w.ref(), rowsW) : null;
                 Tensor refL = reference ? Tensor.of(l.ref(), rowsL) : null;
                 Tensor weightW = weighted ? Tensor.of(w.weights(), rowsW) : null;
                 Tensor weightL = weighted ? Tensor.of(l.weights(), rowsL) : null;
                 Tensor gw = Tensor.of(beforeW.clone(), rowsW, vocab);
                 Tensor gl = Tensor.of(beforeL.clone(), rowsL, vocab)) {
                Responses chosen = new Responses(zw, yw, w.starts(), refW, weightW);
                Responses rejected = new Responses(zl, yl, l.starts(), refL, weightL);
                PreferenceLossReference.Out expected = PreferenceLossReference.compute(w.reference(zw),
                        l.reference(zl), settings, gradScale);
                String at = backend + " " + kind + " " + dtype + " V=" + vocab + " pairs=" + pairs + " weighted="
                        + weighted + " eps=" + options.labelSmoothing() + " accumulate=" + accumulate;
                try (PreferenceLoss.Result r = PreferenceLoss.computeWithGradient(chosen, rejected,
                        options.on(backend), gradScale, gw, gl)) {
                    check(at, expected, r, beforeW, beforeL, accumulate, vocab);
                }
            }
        }
    }

    static void check(String at, PreferenceLossReference.Out expected, PreferenceLoss.Result r, float[] beforeW,
                      float[] beforeL, boolean accumulate, int vocab) {
        Approx.assertClose(at + " loss", expected.loss(), r.loss(), 2e-5 * (1 + Math.abs(expected.loss())));
        double marginSum = 0;
        int correct = 0;
        for (int b = 0; b < expected.pairLoss().length; b++) {
            double pl = expected.pairLoss()[b];
            Approx.assertClose(at + " pairLoss[" + b + "]", pl, r.pairLoss().getFloat(b), 2e-5 * (1 + Math.abs(pl)));
            double cw = expected.rewardChosen()[b];
            double cl = expected.rewardRejected()[b];
            Approx.assertClose(at + " chosenReward[" + b + "]", cw, r.chosenReward().getFloat(b), 2e-5 * (1 + Math.abs(cw)));
            Approx.assertClose(at + " rejectedReward[" + b + "]", cl, r.rejectedReward().getFloat(b),
                    2e-5 * (1 + Math.abs(cl)));
            Approx.assertClose(at + " margin[" + b + "]", cw - cl, r.margin().getFloat(b),
                    2e-5 * (1 + Math.abs(cw) + Math.abs(cl)));
            marginSum += r.margin().getFloat(b);
            correct += r.chosenReward().getFloat(b) > r.rejectedReward().getFloat(b) ? 1 : 0;
        }
        int pairs = expected.pairLoss().length;
        Approx.assertClose(at + " mean margin", marginSum / pairs, (float) r.meanMargin(), 1e-5 * (1 + Math.abs(marginSum)));
        Approx.assertClose(at + " accuracy", correct / (double) pairs, (float) r.accuracy(), 1e-7);
        checkGradient(at + " chosen", expected.gradChosen(), r.chosenGradient(), beforeW, accumulate, vocab);
        checkGradient(at + " rejected", expected.gradRejected(), r.rejectedGradient(), beforeL, accumulate, vocab);
    }

    private static void checkGradient(String at, double[][] expected, Tensor actual, float[] before, boolean accumulate,
                                      int vocab) {
        double scale = 0;
        for (double[] row : expected) {
            for (double v : row) {
                scale = Math.max(scale, Math.abs(v));
            }
        }
        for (int t = 0; t < expected.length; t++) {
            for (int j = 0; j < vocab; j++) {
                int k = t * vocab + j;
                double e = expected[t][j] + (accumulate ? before[k] : 0);
                Approx.assertClose(at + " gradient[" + t + "][" + j + "]", e, actual.getFloat(k),
                        2e-5 * scale + 1e-6 + (accumulate ? 1e-6 : 0));
            }
        }
    }

    private static float[] randomBuffer(SplittableRandom random, int n) {
        float[] v = new float[n];
        for (int k = 0; k < n; k++) {
            v[k] = (float) random.nextDouble(-1, 1);
        }
        return v;
    }

    /** The reference's gradients against central finite differences of its loss, in float64. */
    @Property(tries = 40)
    void referenceGradientMatchesFiniteDifferences(@ForAll @IntRange(min = 1, max = 3) int pairs,
                                                   @ForAll @IntRange(min = 1, max = 7) int vocab,
                                                   @ForAll Kind kind, @ForAll boolean weighted,
                                                   @ForAll boolean smoothed, @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        boolean reference = kind != Kind.SIMPO;
        RandomSide w = randomSide(random, pairs, vocab, reference, weighted, kind == Kind.SIMPO, 2f);
        RandomSide l = randomSide(random, pairs, vocab, reference, weighted, kind == Kind.SIMPO, 2f);
        PreferenceLossReference.Settings s = new PreferenceLossReference.Settings(kind, random.nextDouble(0.05, 1),
                random.nextDouble(0.1, 2), random.nextDouble(-1, 2), smoothed && kind != Kind.IPO
                ? random.nextDouble(0, 0.4) : 0, random.nextBoolean() ? 1 : random.nextDouble(0.5, 2));
        try (Tensor zw = Tensor.of(w.logits(), w.targets().length, vocab);
             Tensor zl = Tensor.of(l.logits(), l.targets().length, vocab)) {
            PreferenceLossReference.Side sw = w.reference(zw);
            PreferenceLossReference.Side sl = l.reference(zl);
            PreferenceLossReference.Out out = PreferenceLossReference.compute(sw, sl, s, 1);
            finiteDifferences(kind + " chosen", sw, sl, s, sw.z(), out.gradChosen());
            finiteDifferences(kind + " rejected", sw, sl, s, sl.z(), out.gradRejected());
        }
    }

    private static void finiteDifferences(String at, PreferenceLossReference.Side w, PreferenceLossReference.Side l,
                                          PreferenceLossReference.Settings s, double[][] z, double[][] gradient) {
        double h = 1e-6;
        for (int t = 0; t < z.length; t++) {
            for (int j = 0; j < z[t].length; j++) {
                double saved = z[t][j];
                z[t][j] = saved + h;
                double up = PreferenceLossReference.loss(w, l, s);
                z[t][j] = saved - h;
                double down = PreferenceLossReference.loss(w, l, s);
                z[t][j] = saved;
                double numeric = (up - down) / (2 * h);
                Approx.assertClose(at + " d/dz[" + t + "][" + j + "]", numeric, (float) gradient[t][j],
                        1e-6 * (1 + Math.abs(numeric)));
            }
        }
    }

    @Provide
    Arbitrary<Integer> vocabularies() {
        return Arbitraries.oneOf(Arbitraries.integers().between(1, 40), Arbitraries.of(15, 16, 17, 257, 1000));
    }

    @Provide
    Arbitrary<DType> dtypes() {
        return Arbitraries.of(DType.F32, DType.F16, DType.BF16);
    }
}
