package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertEquals;

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
 * PolicyLoss on random batches, every backend, against a float64 reference written from the
 * class doc's formulas. Ratios are drawn away from every branch point (clip bounds, cap, dual
 * clip) by more than fp32 rounding can move them, so each token's branch is the reference's.
 */
class PolicyLossProperties {

    /** Settings of one call, as the reference reads them. */
    record Settings(float epsLow, float epsHigh, float dualClip, float cap, float beta, float temperature,
                    Aggregation aggregation, long normalizer) {
    }

    /** Float64 loss and dL/dz of the batch; {@code counted[t]} false for ignored tokens. */
    static double lossAndGradient(double[][] z, int[] y, boolean[] counted, float[] old, float[] a, float[] ref,
                                  int[] starts, Settings s, double[][] gradient) {
        int rows = z.length;
        int sequences = starts.length - 1;
        double[] weight = new double[rows];
        long total = 0;
        long[] perSequence = new long[sequences];
        int longest = 0;
        for (int b = 0; b < sequences; b++) {
            longest = Math.max(longest, starts[b + 1] - starts[b]);
            for (int t = starts[b]; t < starts[b + 1]; t++) {
                if (counted[t]) {
                    total++;
                    perSequence[b]++;
                }
            }
        }
        int nonEmpty = (int) Arrays.stream(perSequence).filter(c -> c > 0).count();
        for (int b = 0; b < sequences; b++) {
            for (int t = starts[b]; t < starts[b + 1]; t++) {
                weight[t] = switch (s.aggregation()) {
                    case TOKEN_MEAN -> 1.0 / (s.normalizer() > 0 ? s.normalizer() : total);
                    case SEQ_MEAN_TOKEN_MEAN -> 1.0 / (perSequence[b] * (double) nonEmpty);
                    case SEQ_MEAN_TOKEN_SUM -> 1.0 / sequences;
                    case SEQ_MEAN_TOKEN_SUM_NORM -> 1.0 / (sequences * (double) (s.normalizer() > 0 ? s.normalizer() : longest));
                };
            }
        }
        double loss = 0;
        for (int t = 0; t < rows; t++) {
            Arrays.fill(gradient[t], 0);
            if (!counted[t]) {
                continue;
            }
            double[] logSoftmax = DivergenceReference.logSoftmax(z[t], s.temperature());
            double logp = logSoftmax[y[t]];
            double r = Math.exp(logp - old[t]);
            double dr = r;
            if (r > s.cap()) {
                r = s.cap();
                dr = 0;
            }
            double clipped = Math.min(Math.max(r, 1 - (double) s.epsLow()), 1 + (double) s.epsHigh());
            boolean clipActive = clipped != r;
            double surrogate = Math.min(r * a[t], clipped * a[t]);
            double l = -surrogate;
            double slope = r * a[t] <= clipped * a[t] ? -a[t] * dr : (clipActive ? 0 : -a[t] * dr);
            if (s.dualClip() > 0 && a[t] < 0 && l > -s.dualClip() * a[t]) {
                l = -s.dualClip() * a[t];
                slope = 0;
            }
            if (s.beta() != 0) {
                double d = ref[t] - logp;
                l += s.beta() * (Math.exp(d) - d - 1);
                slope += s.beta() * (1 - Math.exp(d));
            }
            loss += weight[t] * l;
            for (int j = 0; j < z[t].length; j++) {
                double p = Math.exp(logSoftmax[j]);
                gradient[t][j] = weight[t] * slope * ((j == y[t] ? 1 : 0) - p) / s.temperature();
            }
        }
        return loss;
    }

    @Property(tries = 100)
    void lossAndGradientMatchTheReference(@ForAll @IntRange(min = 1, max = 12) int rows,
                                          @ForAll("vocabularies") int vocab,
                                          @ForAll Aggregation aggregation,
                                          @ForAll("dtypes") DType dtype,
                                          @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        Settings s = new Settings((float) random.nextDouble(0.1, 0.3), (float) random.nextDouble(0.1, 0.4),
                random.nextBoolean() ? 0f : (float) random.nextDouble(2, 3.2),
                random.nextBoolean() ? Float.POSITIVE_INFINITY : (float) random.nextDouble(1.6, 3),
                random.nextBoolean() ? 0f : (float) random.nextDouble(0.01, 0.5),
                random.nextBoolean() ? 1f : (float) random.nextDouble(0.5, 2), aggregation,
                random.nextInt(3) == 0 ? 1 + random.nextInt(40) : 0);
        float[] values = new float[rows * vocab];
        for (int k = 0; k < values.length; k++) {
            values[k] = (float) (random.nextGaussian() * 2);
        }
        int[] y = new int[rows];
        boolean[] counted = new boolean[rows];
        for (int t = 0; t < rows; t++) {
            counted[t] = random.nextInt(5) != 0;
            y[t] = counted[t] ? random.nextInt(vocab) : -100;
        }
        int[] starts = randomStarts(random, rows);
        try (Tensor logits = Tensor.ofFloats(values, dtype, rows, vocab)) {
            float[] seen = logits.toFloatArray();
            double[][] z = new double[rows][vocab];
            for (int t = 0; t < rows; t++) {
                for (int j = 0; j < vocab; j++) {
                    z[t][j] = seen[t * vocab + j];
                }
            }
            float[] old = new float[rows];
            float[] a = new float[rows];
            float[] ref = new float[rows];
            for (int t = 0; t < rows; t++) {
                double logp = counted[t] ? DivergenceReference.logSoftmax(z[t], s.temperature())[y[t]] : 0;
                old[t] = (float) (logp - Math.log(ratioAwayFromBranchPoints(random, s)));
                a[t] = (float) (random.nextBoolean() ? random.nextDouble(0.05, 2) : -random.nextDouble(0.05, 2));
                ref[t] = (float) (logp + random.nextDouble(-1, 1));
            }
            double[][] expectedGradient = new double[rows][vocab];
            double expected = lossAndGradient(z, y, counted, old, a, ref, starts, s, expectedGradient);
            float gradScale = (float) random.nextDouble(0.5, 2);
            PolicyLoss.Options options = PolicyLoss.Options.defaults().withClip(s.epsLow(), s.epsHigh())
                    .withDualClip(s.dualClip()).withRatioCap(s.cap()).withReferenceKl(s.beta())
                    .withTemperature(s.temperature()).withAggregation(aggregation, s.normalizer());
            for (Backend backend : ConformanceBackends.all()) {
                try (Tensor targets = Tensor.ofInts(y, rows); Tensor o = Tensor.of(old, rows); Tensor adv = Tensor.of(a, rows);
                     Tensor r = Tensor.of(ref, rows);
                     PolicyLoss.Result result = PolicyLoss.computeWithGradient(logits, targets, o, adv, r, starts,
                             options.on(backend), gradScale)) {
                    String at = backend + " " + s + " " + dtype + " V=" + vocab + " starts=" + Arrays.toString(starts);
                    double scale = 1 + Math.abs(expected);
                    Approx.assertClose(at + " loss", expected, result.loss(), 2e-5 * scale);
                    for (int t = 0; t < rows; t++) {
                        double max = 0;
                        for (double g : expectedGradient[t]) {
                            max = Math.max(max, Math.abs(g));
                        }
                        for (int j = 0; j < vocab; j++) {
                            Approx.assertClose(at + " gradient[" + t + "][" + j + "]", gradScale * expectedGradient[t][j],
                                    result.gradient().getFloat((long) t * vocab + j), gradScale * (2e-5 * max + 1e-7));
                        }
                    }
                    long tokens = 0;
                    for (boolean c : counted) {
                        tokens += c ? 1 : 0;
                    }
                    assertEquals(tokens, result.tokens(), at + " counted tokens");
                }
            }
        }
    }

    /** A ratio in [0.3, 3.5] farther than 0.003 from 1 - eps_low, 1 + eps_high, the cap and the dual clip. */
    static double ratioAwayFromBranchPoints(SplittableRandom random, Settings s) {
        while (true) {
            double r = random.nextDouble(0.3, 3.5);
            boolean near = Math.abs(r - (1 - s.epsLow())) < 3e-3 || Math.abs(r - (1 + s.epsHigh())) < 3e-3
                    || Math.abs(r - s.cap()) < 3e-3 || Math.abs(r - s.dualClip()) < 3e-3;
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
        return Arbitraries.of(DType.F32, DType.BF16);
    }
}
