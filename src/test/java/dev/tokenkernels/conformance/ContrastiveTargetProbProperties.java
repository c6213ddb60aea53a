package dev.tokenkernels.conformance;

import dev.tokenkernels.ops.loss.ContrastiveTargetProb;
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

/** ContrastiveTargetProb on random shapes, dtypes and masks, every backend, against a float64 reference. */
class ContrastiveTargetProbProperties {

    /**
     * The combined logits of one row in float64, {@code ((1 + lambda) zp - lambda zn) / T}: {@code -inf}
     * where z_pos masks the class, or z_neg does and lambda > 0; NaN where either input is NaN or +inf.
     */
    static double[] combined(float[] zp, float[] zn, int offset, int vocab, float lambda, float temperature) {
        double[] x = new double[vocab];
        for (int j = 0; j < vocab; j++) {
            double p = zp[offset + j];
            double n = zn[offset + j];
            if (Double.isNaN(p) || Double.isNaN(n) || p == Double.POSITIVE_INFINITY || n == Double.POSITIVE_INFINITY) {
                x[j] = Double.NaN;
            } else if (p == Double.NEGATIVE_INFINITY || lambda > 0 && n == Double.NEGATIVE_INFINITY) {
                x[j] = Double.NEGATIVE_INFINITY;
            } else {
                x[j] = lambda > 0 ? ((1.0 + lambda) * p - (double) lambda * n) / temperature : p / temperature;
            }
        }
        return x;
    }

    /**
     * A bound on the op's fp32 rounding of one combined logit: {@code zp - zn}, the fma and the
     * product with the rounded {@code 1/T}, each half an ulp of its result.
     */
    static double logitError(float zp, float zn, float lambda, float temperature, double x) {
        if (!Double.isFinite(x)) {
            return 0;
        }
        double difference = lambda > 0 ? lambda * Math.abs((double) zp - zn) / temperature : 0;
        return 0x1p-23 * (difference + 2 * Math.abs(x));
    }

    /** Float64 {@code log softmax(x)[y]}: NaN for NaN or +inf in x, -inf when every class is masked. */
    static double logProb(double[] x, int y) {
        double max = Double.NEGATIVE_INFINITY;
        for (double v : x) {
            if (Double.isNaN(v) || v == Double.POSITIVE_INFINITY) {
                return Double.NaN;
            }
            max = Math.max(max, v);
        }
        if (max == Double.NEGATIVE_INFINITY) {
            return max;
        }
        double sum = 0;
        for (double v : x) {
            sum += Math.exp(v - max);
        }
        return Math.min(0, x[y] - max - Math.log(sum));
    }

    @Property(tries = 120)
    void logProbAndProbMatchTheReference(@ForAll @IntRange(min = 1, max = 6) int rows,
                                         @ForAll("vocabularies") int vocab,
                                         @ForAll("lambdas") float lambda,
                                         @ForAll("temperatures") float temperature,
                                         @ForAll("magnitudes") float magnitude,
                                         @ForAll("dtypes") DType positiveType,
                                         @ForAll("dtypes") DType negativeType,
                                         @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] zp = LogitStatsProperties.randomLogits(random, rows, vocab, magnitude);
        float[] zn = new float[zp.length];
        for (int k = 0; k < zn.length; k++) {
            // a model near the positive one, masking a few other classes
            zn[k] = random.nextInt(30) == 0 ? Float.NEGATIVE_INFINITY
                    : Float.isFinite(zp[k]) ? zp[k] + (float) random.nextGaussian() : (float) random.nextGaussian();
        }
        int[] targets = new int[rows];
        for (int i = 0; i < rows; i++) {
            targets[i] = random.nextInt(5) == 0 ? -100 : random.nextInt(vocab);
        }
        try (Tensor y = Tensor.ofInts(targets, rows);
             Tensor positive = Tensor.ofFloats(zp, positiveType, rows, vocab);
             Tensor negative = Tensor.ofFloats(zn, negativeType, rows, vocab)) {
            float[] p = positive.toFloatArray();
            float[] n = negative.toFloatArray();
            for (Backend backend : ConformanceBackends.all()) {
                ContrastiveTargetProb.Options o = ContrastiveTargetProb.Options.defaults().withLambda(lambda)
                        .withTemperature(temperature).on(backend);
                try (ContrastiveTargetProb.Result r = ContrastiveTargetProb.compute(positive, negative, y, o)) {
                    for (int i = 0; i < rows; i++) {
                        String at = backend + " V=" + vocab + " lambda=" + lambda + " T=" + temperature + " "
                                + positiveType + "/" + negativeType + " row " + i;
                        if (targets[i] < 0) {
                            Approx.assertClose(at + " ignored logp", 0, r.logProb().getFloat(i), 0);
                            Approx.assertClose(at + " ignored p", 0, r.prob().getFloat(i), 0);
                            continue;
                        }
                        double[] x = combined(p, n, i * vocab, vocab, lambda, temperature);
                        double maxAbs = 0;
                        double maxLogitError = 0;
                        for (int j = 0; j < vocab; j++) {
                            maxAbs = Double.isFinite(x[j]) ? Math.max(maxAbs, Math.abs(x[j])) : maxAbs;
                            maxLogitError = Math.max(maxLogitError,
                                    logitError(p[i * vocab + j], n[i * vocab + j], lambda, temperature, x[j]));
                        }
                        double expected = logProb(x, targets[i]);
                        // the fp32 logits (the target's and, through lse, the others') and x - lse in fp32
                        double xError = 2 * maxLogitError + 0x1p-21 * maxAbs;
                        double tolerance = 1e-5 * (1 + Math.abs(expected)) + xError;
                        Approx.assertClose(at + " logp", expected, r.logProb().getFloat(i), tolerance);
                        double prob = Math.exp(expected);
                        Approx.assertClose(at + " p", prob, r.prob().getFloat(i),
                                Double.isFinite(expected) ? prob * 2 * tolerance + 1e-7 : 0);
                    }
                }
            }
        }
    }

    @Provide
    Arbitrary<Integer> vocabularies() {
        return Arbitraries.oneOf(Arbitraries.integers().between(1, 40), Arbitraries.integers().between(41, 3000),
                Arbitraries.of(1, 15, 16, 17, 255, 256, 257, 20000));
    }

    @Provide
    Arbitrary<Float> lambdas() {
        return Arbitraries.oneOf(Arbitraries.of(0f, 1f), Arbitraries.floats().between(0f, 3f));
    }

    @Provide
    Arbitrary<Float> temperatures() {
        return Arbitraries.oneOf(Arbitraries.of(1f, 0.7f), Arbitraries.floats().between(0.2f, 5f));
    }

    @Provide
    Arbitrary<Float> magnitudes() {
        return Arbitraries.of(0f, 1f, 4f, 20f);
    }

    @Provide
    Arbitrary<DType> dtypes() {
        return Arbitraries.of(DType.F32, DType.F16, DType.BF16);
    }
}
