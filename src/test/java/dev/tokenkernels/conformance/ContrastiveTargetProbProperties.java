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
     * The combined logits of one row as the op rounds them, fp32 {@code fma(lambda, zp - zn, zp) * (1/T)}
     * ({@code -inf} where either model masks the class); the softmax is then taken in float64.
     */
    static double[] combined(float[] zp, float[] zn, int offset, int vocab, float lambda, float temperature) {
        float invT = 1f / temperature;
        double[] x = new double[vocab];
        for (int j = 0; j < vocab; j++) {
            float p = zp[offset + j];
            float n = zn[offset + j];
            boolean masked = p == Float.NEGATIVE_INFINITY || n == Float.NEGATIVE_INFINITY;
            x[j] = masked ? Double.NEGATIVE_INFINITY : Math.fma(lambda, p - n, p) * invT;
        }
        return x;
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
                        for (double v : x) {
                            maxAbs = Double.isFinite(v) ? Math.max(maxAbs, Math.abs(v)) : maxAbs;
                        }
                        double expected = logProb(x, targets[i]);
                        double xError = 0x1p-21 * maxAbs; // the rounding of x - lse in fp32
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
