package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.tokenkernels.conformance.PolicyLossReference.Settings;
import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.ops.loss.PolicyLoss.Aggregation;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.Arrays;
import java.util.SplittableRandom;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;

/**
 * PolicyLoss on random batches, every backend, against the float64 {@link PolicyLossReference},
 * with token weights, HAPO's zone advantages, Lp-Reg and per-token clip ranges switched on at
 * random. Ratios are drawn away from every branch point (clip bounds, zone bounds, cap, dual clip)
 * and Lp-Reg's log-ratios away from where its k3 reaches the cap of 10, by more than fp32
 * rounding can move them, so each token's branch is the reference's. Logits are F32, F16 or BF16.
 */
class PolicyLossProperties {

    /** A random batch: the logits as the op sees them (decoded) and the per-token inputs. */
    record Batch(double[][] z, PolicyLossReference.Tokens tokens, int[] starts, Settings s) {
    }

    /** The aggregations with a normalizer ({@code numItems}, {@code maxLength}); PolicyLoss refuses one elsewhere. */
    static boolean takesNormalizer(Aggregation aggregation) {
        return aggregation == Aggregation.TOKEN_MEAN || aggregation == Aggregation.SEQ_MEAN_TOKEN_SUM_NORM;
    }

    static Batch randomBatch(SplittableRandom random, float[] seen, int rows, int vocab, Aggregation aggregation,
                             boolean extensions) {
        Settings s = new Settings((float) random.nextDouble(0.1, 0.3), (float) random.nextDouble(0.1, 0.4),
                random.nextBoolean() ? 0f : (float) random.nextDouble(2, 3.2),
                random.nextBoolean() ? Float.POSITIVE_INFINITY : (float) random.nextDouble(1.6, 3),
                random.nextBoolean() ? 0f : (float) random.nextDouble(0.01, 0.5),
                random.nextBoolean() ? 1f : (float) random.nextDouble(0.5, 2), aggregation,
                takesNormalizer(aggregation) && random.nextInt(3) == 0 ? 1 + random.nextInt(40) : 0,
                (float) random.nextDouble(0, 0.5));
        double[][] z = new double[rows][vocab];
        for (int t = 0; t < rows; t++) {
            for (int j = 0; j < vocab; j++) {
                z[t][j] = seen[t * vocab + j];
            }
        }
        int[] y = new int[rows];
        boolean[] counted = new boolean[rows];
        for (int t = 0; t < rows; t++) {
            counted[t] = random.nextInt(5) != 0;
            y[t] = counted[t] ? random.nextInt(vocab) : -100;
        }
        boolean perTokenEps = extensions && random.nextBoolean();
        float[] epsLow = perTokenEps ? new float[rows] : null;
        float[] epsHigh = perTokenEps ? new float[rows] : null;
        float[] weight = extensions && random.nextBoolean() ? new float[rows] : null;
        float[] outside = extensions && random.nextBoolean() ? new float[rows] : null;
        boolean lpReg = extensions && random.nextBoolean();
        boolean[] regularized = lpReg ? new boolean[rows] : null;
        float[] proxy = lpReg ? new float[rows] : null;
        float[] old = new float[rows];
        float[] a = new float[rows];
        float[] ref = new float[rows];
        for (int t = 0; t < rows; t++) {
            if (perTokenEps) {
                epsLow[t] = (float) random.nextDouble(0.05, 0.4);
                epsHigh[t] = (float) random.nextDouble(0.05, 0.5);
            }
            double eL = perTokenEps ? epsLow[t] : s.epsLow();
            double eH = perTokenEps ? epsHigh[t] : s.epsHigh();
            double logp = counted[t] ? DivergenceReference.logSoftmax(z[t], s.temperature())[y[t]] : 0;
            old[t] = (float) (logp - Math.log(ratioAwayFromBranchPoints(random, eL, eH, s)));
            a[t] = (float) (random.nextBoolean() ? random.nextDouble(0.05, 2) : -random.nextDouble(0.05, 2));
            ref[t] = (float) (logp + random.nextDouble(-1, 1));
            if (weight != null) {
                weight[t] = random.nextInt(6) == 0 ? 0f : (float) random.nextDouble(0, 2);
            }
            if (outside != null) {
                outside[t] = (float) (a[t] * random.nextDouble(0.5, 2));
            }
            if (lpReg) {
                regularized[t] = random.nextInt(3) == 0;
                // e = lp - logp away from where k3(e) reaches Lp-Reg's cap of 10 (e = 2.611 and -10.99998)
                boolean below = random.nextInt(4) == 0;
                double e = below ? -(random.nextBoolean() ? random.nextDouble(0.05, 10.8) : random.nextDouble(11.2, 14))
                        : random.nextBoolean() ? random.nextDouble(0.05, 2.55) : random.nextDouble(2.7, 14);
                // unregularized tokens' proxy is not read: -inf there must not matter
                proxy[t] = regularized[t] ? (float) (logp + e)
                        : random.nextBoolean() ? Float.NEGATIVE_INFINITY : (float) logp;
            }
        }
        PolicyLossReference.Tokens tokens = new PolicyLossReference.Tokens(y, counted, old, a, ref, epsLow, epsHigh,
                weight, outside, regularized, proxy, lpReg ? (float) random.nextDouble(0, 2) : 0f);
        return new Batch(z, tokens, randomStarts(random, rows), s);
    }

    /** The op's options for a batch; the tensors go into {@code open} for the caller to close. */
    static PolicyLoss.Options options(Batch batch, java.util.List<Tensor> open) {
        Settings s = batch.s();
        PolicyLossReference.Tokens k = batch.tokens();
        int rows = k.y().length;
        PolicyLoss.Options options = PolicyLoss.Options.defaults().withClip(s.epsLow(), s.epsHigh())
                .withDualClip(s.dualClip()).withRatioCap(s.cap()).withReferenceKl(s.beta())
                .withTemperature(s.temperature()).withAggregation(s.aggregation(), s.normalizer())
                .withControlTokenWeight(s.alpha());
        if (k.epsLow() != null) {
            options = options.withClipPerToken(keep(open, Tensor.of(k.epsLow(), rows)), keep(open, Tensor.of(k.epsHigh(), rows)));
        }
        if (k.weight() != null) {
            options = options.withTokenWeights(keep(open, Tensor.of(k.weight(), rows)));
        }
        if (k.outside() != null) {
            options = options.withZoneAdvantages(keep(open, Tensor.of(k.outside(), rows)));
        }
        if (k.regularized() != null) {
            float[] mask = new float[rows];
            for (int t = 0; t < rows; t++) {
                mask[t] = k.regularized()[t] ? 1f : 0f;
            }
            options = options.withLpReg(keep(open, Tensor.of(k.proxy(), rows)), keep(open, Tensor.of(mask, rows)),
                    k.lpBeta());
        }
        return options;
    }

    private static Tensor keep(java.util.List<Tensor> open, Tensor t) {
        open.add(t);
        return t;
    }

    @Property(tries = 120)
    void lossAndGradientMatchTheReference(@ForAll @IntRange(min = 1, max = 12) int rows,
                                          @ForAll("vocabularies") int vocab,
                                          @ForAll Aggregation aggregation,
                                          @ForAll("dtypes") DType dtype,
                                          @ForAll boolean extensions,
                                          @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] values = new float[rows * vocab];
        for (int k = 0; k < values.length; k++) {
            values[k] = (float) (random.nextGaussian() * 2);
        }
        try (Tensor logits = Tensor.ofFloats(values, dtype, rows, vocab)) {
            Batch batch = randomBatch(random, logits.toFloatArray(), rows, vocab, aggregation, extensions);
            PolicyLossReference.Tokens k = batch.tokens();
            Settings s = batch.s();
            int[] starts = batch.starts();
            double[][] expectedGradient = new double[rows][vocab];
            double expected = PolicyLossReference.lossAndGradient(batch.z(), k, starts, s, expectedGradient);
            long tokens = 0;
            long low = 0;
            long high = 0;
            for (int t = 0; t < rows; t++) {
                if (k.counted()[t]) {
                    tokens++;
                    PolicyLossReference.Token token = PolicyLossReference.token(
                            PolicyLossReference.logProb(batch.z()[t], k.y()[t], s.temperature()), t, k, s);
                    low += token.low() ? 1 : 0;
                    high += token.high() ? 1 : 0;
                }
            }
            float gradScale = (float) random.nextDouble(0.5, 2);
            java.util.List<Tensor> open = new java.util.ArrayList<>();
            try {
                PolicyLoss.Options options = options(batch, open);
                for (Backend backend : ConformanceBackends.all()) {
                    try (Tensor targets = Tensor.ofInts(k.y(), rows); Tensor o = Tensor.of(k.old(), rows);
                         Tensor adv = Tensor.of(k.a(), rows); Tensor r = Tensor.of(k.ref(), rows);
                         PolicyLoss.Result result = PolicyLoss.computeWithGradient(logits, targets, o, adv, r, starts,
                                 options.on(backend), gradScale)) {
                        String at = backend + " " + s + " " + dtype + " V=" + vocab + " extensions=" + extensions
                                + " starts=" + Arrays.toString(starts);
                        double scale = 1 + Math.abs(expected);
                        Approx.assertClose(at + " loss", expected, result.loss(), 2e-5 * scale);
                        double[] coefficient = PolicyLossReference.coefficients(batch.z(), k, starts, s);
                        for (int t = 0; t < rows; t++) {
                            double max = 0;
                            for (double g : expectedGradient[t]) {
                                max = Math.max(max, Math.abs(g));
                            }
                            double tolerance = gradScale * (2e-5 * max + 1e-7)
                                    + gradScale * max * slopeSensitivity(batch, t)
                                    + 4 * Math.ulp((float) (gradScale * Math.abs(coefficient[t])));
                            for (int j = 0; j < vocab; j++) {
                                Approx.assertClose(at + " gradient[" + t + "][" + j + "]",
                                        gradScale * expectedGradient[t][j],
                                        result.gradient().getFloat((long) t * vocab + j), tolerance);
                            }
                        }
                        assertEquals(tokens, result.tokens(), at + " counted tokens");
                        double per = tokens == 0 ? 0 : 1.0 / tokens;
                        assertEquals(low * per, result.clipFractionLow(), 1e-12, at + " clipped low");
                        assertEquals(high * per, result.clipFractionHigh(), 1e-12, at + " clipped high");
                    }
                }
            } finally {
                open.forEach(Tensor::close);
            }
        }
    }

    /**
     * The relative change of token {@code t}'s slope {@code dl/dlogp} when {@code logp} moves by
     * the error of the op's float32 log-probability (a few ulps of the row's log-sum-exp). Where
     * the slope's terms nearly cancel (the ratio term against the k3 term), that error is
     * amplified; the gradient row scales with the slope, so its tolerance must too.
     */
    private static double slopeSensitivity(Batch batch, int t) {
        if (!batch.tokens().counted()[t]) {
            return 0;
        }
        Settings s = batch.s();
        double[] z = batch.z()[t];
        double logp = PolicyLossReference.logProb(z, batch.tokens().y()[t], s.temperature());
        double magnitude = 1 + Math.abs(logp);
        for (double v : z) {
            magnitude = Math.max(magnitude, Math.abs(v) / s.temperature() + Math.log(z.length));
        }
        double delta = 8 * Math.ulp((float) magnitude);
        double slope = PolicyLossReference.token(logp, t, batch.tokens(), s).slope();
        double up = PolicyLossReference.token(logp + delta, t, batch.tokens(), s).slope();
        double down = PolicyLossReference.token(logp - delta, t, batch.tokens(), s).slope();
        return slope == 0 ? 0 : Math.max(Math.abs(up - slope), Math.abs(down - slope)) / Math.abs(slope);
    }

    /** The reference's gradient against central finite differences of its loss, every extension on. */
    @Property(tries = 60)
    void referenceGradientMatchesFiniteDifferences(@ForAll @IntRange(min = 1, max = 6) int rows,
                                                   @ForAll @IntRange(min = 1, max = 7) int vocab,
                                                   @ForAll Aggregation aggregation,
                                                   @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] values = new float[rows * vocab];
        for (int k = 0; k < values.length; k++) {
            values[k] = (float) (random.nextGaussian() * 2);
        }
        Batch batch = randomBatch(random, values, rows, vocab, aggregation, true);
        double[][] z = batch.z();
        double[][] gradient = new double[rows][vocab];
        PolicyLossReference.lossAndGradient(z, batch.tokens(), batch.starts(), batch.s(), gradient);
        double h = 1e-6;
        for (int t = 0; t < rows; t++) {
            for (int j = 0; j < vocab; j++) {
                double saved = z[t][j];
                double center = PolicyLossReference.loss(z, batch.tokens(), batch.starts(), batch.s());
                z[t][j] = saved + h;
                double up = PolicyLossReference.loss(z, batch.tokens(), batch.starts(), batch.s());
                z[t][j] = saved - h;
                double down = PolicyLossReference.loss(z, batch.tokens(), batch.starts(), batch.s());
                z[t][j] = saved;
                double numeric = (up - down) / (2 * h);
                // Two allowances beyond float32 rounding of the gradient: curvature (or a branch
                // point) within h, bounded by half the gap between the one-sided differences; and
                // cancellation, the loss's own rounding divided by h (k3 terms reach 1e4).
                double bend = 0.5 * Math.abs((up - center) - (center - down)) / h;
                double cancellation = 64 * Math.ulp(Math.abs(center)) / h;
                Approx.assertClose(batch.s() + " d/dz[" + t + "][" + j + "]", numeric, (float) gradient[t][j],
                        1e-6 * (1 + Math.abs(numeric)) + bend + cancellation);
            }
        }
    }

    /**
     * A ratio in [0.3, 3.5] farther than 0.003 from 1 - eps_low, 1 + eps_high, the zone bounds
     * 1 - eps_low/2 and 1 + eps_high/2, the cap and the dual clip.
     */
    static double ratioAwayFromBranchPoints(SplittableRandom random, double epsLow, double epsHigh, Settings s) {
        double[] points = {1 - epsLow, 1 + epsHigh, 1 - epsLow / 2, 1 + epsHigh / 2, s.cap(), s.dualClip()};
        while (true) {
            double r = random.nextDouble(0.3, 3.5);
            boolean near = false;
            for (double p : points) {
                near |= Math.abs(r - p) < 3e-3;
            }
            if (!near) {
                return r;
            }
        }
    }

    static int[] randomStarts(SplittableRandom random, int rows) {
        int sequences = 1 + random.nextInt(Math.min(rows, 4));
        int[] cuts = new int[sequences + 1];
        cuts[sequences] = rows;
        for (int b = 1; b < sequences; b++) {
            cuts[b] = random.nextInt(rows + 1);
        }
        Arrays.sort(cuts, 1, sequences);
        return cuts;
    }

    @Provide
    Arbitrary<Integer> vocabularies() {
        return Arbitraries.oneOf(Arbitraries.integers().between(1, 40), Arbitraries.integers().between(41, 3000));
    }

    @Provide
    Arbitrary<DType> dtypes() {
        return Arbitraries.of(DType.F32, DType.F16, DType.BF16);
    }
}
