package dev.tokenkernels.conformance;

import dev.tokenkernels.ops.loss.TargetLogProb;
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

/** TargetLogProb on random shapes, every backend, against a float64 reference. */
class TargetLogProbProperties {

    /** Float64 {@code {logp, d logp / d z_j for every j}} of one row (fp32 x = z * (1/T) as the op rounds it). */
    static double[] reference(float[] z, int offset, int vocab, float temperature, int target) {
        float invT = 1f / temperature;
        double[] x = new double[vocab];
        for (int j = 0; j < vocab; j++) {
            x[j] = z[offset + j] * invT;
        }
        double[] logSoftmax = DivergenceReference.logSoftmax(x, 1);
        double[] out = new double[vocab + 1];
        out[0] = logSoftmax[target];
        for (int j = 0; j < vocab; j++) {
            out[1 + j] = ((j == target ? 1 : 0) - Math.exp(logSoftmax[j])) * invT;
        }
        return out;
    }

    @Property(tries = 120)
    void logProbAndGradientMatchTheReference(@ForAll @IntRange(min = 1, max = 6) int rows,
                                             @ForAll("vocabularies") int vocab,
                                             @ForAll("temperatures") float temperature,
                                             @ForAll("magnitudes") float magnitude,
                                             @ForAll("dtypes") DType dtype,
                                             @ForAll boolean accumulate,
                                             @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] values = LogitStatsProperties.randomLogits(random, rows, vocab, magnitude);
        int[] targets = new int[rows];
        float[] coefficients = new float[rows];
        for (int i = 0; i < rows; i++) {
            targets[i] = random.nextInt(5) == 0 ? -100 : random.nextInt(vocab);
            coefficients[i] = (float) random.nextDouble(-3, 3);
        }
        float[] before = new float[rows * vocab];
        for (int k = 0; k < before.length; k++) {
            before[k] = (float) random.nextDouble(-1, 1);
        }
        boolean inPlace = !accumulate && dtype == DType.F32 && random.nextBoolean();
        try (Tensor y = Tensor.ofInts(targets, rows); Tensor c = Tensor.of(coefficients, rows)) {
            for (Backend backend : ConformanceBackends.all()) {
                try (Tensor logits = Tensor.ofFloats(values, dtype, rows, vocab);
                     Tensor buffer = Tensor.of(before.clone(), rows, vocab)) {
                    float[] z = logits.toFloatArray();
                    TargetLogProb.Options options = TargetLogProb.Options.defaults().withTemperature(temperature)
                            .on(backend);
                    if (accumulate) {
                        options = options.accumulating();
                    }
                    Tensor out = inPlace ? logits : buffer;
                    try (TargetLogProb.Result r = TargetLogProb.computeWithGradient(logits, y, c, options, out)) {
                        for (int i = 0; i < rows; i++) {
                            String at = backend + " V=" + vocab + " T=" + temperature + " " + dtype + " accumulate="
                                    + accumulate + " in place=" + inPlace + " row " + i;
                            check(at, r, z, i, vocab, temperature, targets[i], coefficients[i], accumulate, before);
                        }
                    }
                }
            }
        }
    }

    private static void check(String at, TargetLogProb.Result r, float[] z, int i, int vocab, float temperature,
                              int target, float coefficient, boolean accumulate, float[] before) {
        int offset = i * vocab;
        if (target < 0) {
            Approx.assertClose(at + " logp of an ignored row", 0, r.logProb().getFloat(i), 0);
            for (int j = 0; j < vocab; j++) {
                Approx.assertClose(at + " gradient of an ignored row", accumulate ? before[offset + j] : 0,
                        r.gradient().getFloat(offset + j), 0);
            }
            return;
        }
        double maxAbs = 0;
        boolean finite = false;
        for (int j = 0; j < vocab; j++) {
            if (Float.isFinite(z[offset + j])) {
                maxAbs = Math.max(maxAbs, Math.abs(z[offset + j]));
                finite = true;
            }
        }
        if (!finite) { // all -inf: logp -inf, no gradient
            Approx.assertClose(at + " logp of a masked row", Double.NEGATIVE_INFINITY, r.logProb().getFloat(i), 0);
            org.junit.jupiter.api.Assertions.assertTrue(Float.isNaN(r.gradient().getFloat(offset)), at);
            return;
        }
        double[] ref = reference(z, offset, vocab, temperature, target);
        double xError = 0x1p-21 * maxAbs / temperature; // the rounding of x = z / T and of x - lse
        Approx.assertClose(at + " logp", ref[0], r.logProb().getFloat(i), 1e-5 * (1 + Math.abs(ref[0])) + xError);
        double scale = Math.abs(coefficient) / temperature;
        for (int j = 0; j < vocab; j++) {
            double expected = coefficient * ref[1 + j] + (accumulate ? before[offset + j] : 0);
            Approx.assertClose(at + " gradient[" + j + "]", expected, r.gradient().getFloat(offset + j),
                    scale * (2e-6 + xError) + (accumulate ? 1e-7 : 0));
        }
    }

    @Provide
    Arbitrary<Integer> vocabularies() {
        return Arbitraries.oneOf(Arbitraries.integers().between(1, 40), Arbitraries.integers().between(41, 5000),
                Arbitraries.of(1, 15, 16, 17, 255, 256, 257, 20000));
    }

    @Provide
    Arbitrary<Float> temperatures() {
        return Arbitraries.oneOf(Arbitraries.of(1f, 0.7f), Arbitraries.floats().between(0.2f, 5f));
    }

    @Provide
    Arbitrary<Float> magnitudes() {
        return Arbitraries.of(0f, 1f, 4f, 20f, 100f);
    }

    @Provide
    Arbitrary<DType> dtypes() {
        return Arbitraries.of(DType.F32, DType.F16, DType.BF16);
    }
}
