package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.OneTokenRollout;
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

/** OneTokenRollout on random shapes, every backend: the draws bit for bit, loss and gradient against float64. */
class OneTokenRolloutProperties {

    @Property(tries = 60)
    void drawsLossAndGradientMatchTheReferences(@ForAll @IntRange(min = 1, max = 6) int rows,
                                                @ForAll("vocabularies") int vocab,
                                                @ForAll @IntRange(min = 1, max = 10) int k,
                                                @ForAll("temperatures") float temperature,
                                                @ForAll("magnitudes") float magnitude,
                                                @ForAll("dtypes") DType dtype,
                                                @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] values = LogitStatsProperties.randomLogits(random, rows, vocab, magnitude);
        int[] targets = new int[rows];
        for (int t = 0; t < rows; t++) {
            targets[t] = random.nextInt(5) == 0 ? -100 : random.nextInt(vocab);
        }
        float beta = random.nextInt(4) == 0 ? 0f : (float) random.nextDouble(0, 2);
        float gradScale = (float) random.nextDouble(-3, 3);
        long drawSeed = random.nextLong();
        long firstPosition = random.nextLong(1L << 40);
        try (Tensor logits = Tensor.ofFloats(values, dtype, rows, vocab); Tensor y = Tensor.ofInts(targets, rows)) {
            float[] z = logits.toFloatArray();
            int[] expected = new int[rows * k];
            for (int t = 0; t < rows; t++) {
                int[] draws = targets[t] < 0 ? filled(k, -1)
                        : TokenSamplerReference.sample(z, t * vocab, vocab, temperature, k, drawSeed, firstPosition + t);
                System.arraycopy(draws, 0, expected, t * k, k);
            }
            for (Backend backend : ConformanceBackends.all()) {
                OneTokenRollout.Options o = OneTokenRollout.Options.defaults().withSamples(k).withBeta(beta)
                        .withTemperature(temperature).withSeed(drawSeed).withFirstPosition(firstPosition).on(backend);
                String at = backend + " V=" + vocab + " K=" + k + " T=" + temperature + " " + dtype;
                try (OneTokenRollout.Result r = OneTokenRollout.computeWithGradient(logits, y, o, gradScale)) {
                    assertArrayEquals(expected, TokenSamplerTest.ints(r.samples()), at + " draws");
                    check(at, r, z, rows, vocab, k, temperature, targets, beta, gradScale, expected);
                }
            }
        }
    }

    private static int[] filled(int n, int value) {
        int[] a = new int[n];
        java.util.Arrays.fill(a, value);
        return a;
    }

    private static void check(String at, OneTokenRollout.Result r, float[] z, int rows, int vocab, int k,
                              float temperature, int[] targets, float beta, float gradScale, int[] draws) {
        long counted = java.util.Arrays.stream(targets).filter(t -> t >= 0).count();
        double lossSum = 0;
        double lossTolerance = 0;
        boolean special = false;
        for (int t = 0; t < rows; t++) {
            int offset = t * vocab;
            if (targets[t] < 0) {
                for (int v = 0; v < vocab; v++) {
                    assertEquals(0f, r.gradient().getFloat(offset + v), at + " ignored row " + t);
                }
                continue;
            }
            double maxAbs = 0;
            boolean finite = false;
            for (int v = 0; v < vocab; v++) {
                if (Float.isFinite(z[offset + v])) {
                    maxAbs = Math.max(maxAbs, Math.abs(z[offset + v]));
                    finite = true;
                }
            }
            if (!finite) { // all -inf: no distribution
                special = true;
                assertTrue(Float.isNaN(r.gradient().getFloat(offset)), at + " masked row " + t);
                continue;
            }
            double[] zt = new double[vocab];
            for (int v = 0; v < vocab; v++) {
                zt[v] = z[offset + v];
            }
            int[] rowDraws = java.util.Arrays.copyOfRange(draws, t * k, (t + 1) * k);
            double[] ref = OneTokenRolloutReference.row(zt, vocab, temperature, rowDraws, targets[t], beta, true);
            double xError = 0x1p-21 * maxAbs / temperature; // the rounding of x = z / T and of x - lse
            double rewardScale = Math.max(1, beta);
            Approx.assertClose(at + " token loss " + t, ref[0], r.tokenLoss().getFloat(t),
                    rewardScale * (1e-5 * (1 + Math.abs(ref[0])) + xError));
            lossSum += ref[0];
            lossTolerance += rewardScale * (1e-5 * (1 + Math.abs(ref[0])) + xError);
            double scale = Math.abs(gradScale) / counted;
            for (int v = 0; v < vocab; v++) {
                Approx.assertClose(at + " row " + t + " gradient[" + v + "]", scale * ref[1 + v] * Math.signum(gradScale),
                        r.gradient().getFloat(offset + v), scale * rewardScale * (3e-6 + xError) / temperature);
            }
        }
        if (!special) {
            Approx.assertClose(at + " loss", lossSum / Math.max(counted, 1), r.loss(),
                    lossTolerance / Math.max(counted, 1) + 1e-7);
        } else {
            assertTrue(Float.isNaN(r.loss()), at + " a masked counted row makes the loss NaN");
        }
    }

    @Provide
    Arbitrary<Integer> vocabularies() {
        return Arbitraries.oneOf(Arbitraries.integers().between(1, 40), Arbitraries.integers().between(41, 3000),
                Arbitraries.of(1, 15, 16, 17, 255, 256, 257));
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
