package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.OneTokenRollout;
import dev.tokenkernels.ops.loss.OneTokenRollout.Options;
import dev.tokenkernels.ops.loss.TokenSampler;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** Worked examples, the draws, finite differences, special rows and bad inputs of OneTokenRollout. */
class OneTokenRolloutTest {

    /**
     * Logits (0, ln 3): pi = (1/4, 3/4); ground truth 0, K = 8, beta = 0.5, gradScale 2. With h
     * draws of token 0: l = -(1/8)(h ln(1/4) - 0.5 (8 - h) ln(3/4)), and the gradient
     * 2 (1/8)(R pi_v - sum of the rewards of the draws of v), R = h - 0.5 (8 - h).
     */
    @Test
    void twoClassesByHand() {
        long seed = mixedSeed();
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor z = Tensor.of(new float[] {0f, (float) Math.log(3)}, 1, 2); Tensor y = Tensor.ofInts(new int[] {0}, 1);
                 OneTokenRollout.Result r = OneTokenRollout.computeWithGradient(z, y,
                         Options.defaults().withSamples(8).withBeta(0.5f).withSeed(seed).on(backend), 2f)) {
                int h = 0;
                for (int s = 0; s < 8; s++) {
                    long a = r.samples().getLong(s);
                    assertTrue(a == 0 || a == 1, backend + " draw " + a);
                    h += a == 0 ? 1 : 0;
                }
                assertTrue(h > 0 && h < 8, backend + " seed " + seed + " draws both tokens (h = " + h + ")");
                double expected = -(h * Math.log(0.25) - 0.5 * (8 - h) * Math.log(0.75)) / 8;
                assertEquals(expected, r.loss(), 1e-6, backend + " loss");
                double rewardSum = h - 0.5 * (8 - h);
                assertEquals(2 * (rewardSum * 0.25 - h) / 8, r.gradient().getFloat(0), 1e-6, backend + " gradient[0]");
                assertEquals(2 * (rewardSum * 0.75 + 0.5 * (8 - h)) / 8, r.gradient().getFloat(1), 1e-6,
                        backend + " gradient[1]");
                assertEquals(h / 8.0, r.hitRate(), 1e-12, backend + " hit rate");
                assertEquals(1, r.tokens());
            }
            try (Tensor z = Tensor.of(new float[] {0f, 1f}, 1, 2); Tensor y = Tensor.ofInts(new int[] {0}, 1);
                 OneTokenRollout.Result r = OneTokenRollout.compute(z, y, Options.defaults().on(backend))) {
                assertNull(r.gradient(), backend + " no gradient asked for");
            }
        }
    }

    /** The first seed from 42 whose 8 draws from (1/4, 3/4) hold both tokens, so both rewards occur in the example. */
    private static long mixedSeed() {
        try (Tensor z = Tensor.of(new float[] {0f, (float) Math.log(3)}, 1, 2)) {
            for (long seed = 42; ; seed++) {
                try (TokenSampler.Result r = TokenSampler.sample(z, TokenSampler.Options.defaults().withSamples(8)
                        .withSeed(seed))) {
                    int[] draws = TokenSamplerTest.ints(r.samples());
                    if (Arrays.stream(draws).distinct().count() == 2) {
                        return seed;
                    }
                }
            }
        }
    }

    /** The draws are TokenSampler's (same seed and positions) on every backend; ignored rows draw nothing. */
    @Test
    void drawsAreTheSamplersOnEveryBackend() {
        SplittableRandom random = new SplittableRandom(8);
        int rows = 24;
        int vocab = 700;
        float[] values = TokenSamplerTest.hardRows(random, rows, vocab);
        int[] targets = new int[rows];
        for (int t = 0; t < rows; t++) {
            targets[t] = t % 5 == 4 ? -100 : random.nextInt(vocab);
        }
        for (DType dtype : new DType[] {DType.F32, DType.BF16}) {
            try (Tensor logits = Tensor.ofFloats(values, dtype, rows, vocab); Tensor y = Tensor.ofInts(targets, rows);
                 TokenSampler.Result sampled = TokenSampler.sample(logits, TokenSampler.Options.defaults().withSamples(6)
                         .withTemperature(0.8f).withSeed(77).withFirstPosition(1000))) {
                int[] expected = TokenSamplerTest.ints(sampled.samples());
                for (int t = 0; t < rows; t++) {
                    if (targets[t] < 0) {
                        Arrays.fill(expected, t * 6, t * 6 + 6, -1);
                    }
                }
                for (Backend backend : ConformanceBackends.all()) {
                    Options o = Options.defaults().withSamples(6).withTemperature(0.8f).withSeed(77)
                            .withFirstPosition(1000).on(backend);
                    try (OneTokenRollout.Result r = OneTokenRollout.computeWithGradient(logits, y, o, 1f)) {
                        assertArrayEquals(expected, TokenSamplerTest.ints(r.samples()), backend + " " + dtype);
                    }
                }
            }
        }
    }

    /**
     * The op's gradient against central differences of the float64 loss with the op's draws held
     * fixed (steps 1e-5; the float64 loss is smooth in z), after checking that the op's loss is that
     * function's value.
     */
    @Test
    void gradientMatchesFiniteDifferences() {
        SplittableRandom random = new SplittableRandom(21);
        int rows = 4;
        int vocab = 9;
        float[] values = new float[rows * vocab];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) (2 * random.nextGaussian());
        }
        int[] targets = {3, -100, 0, 8};
        float temperature = 0.7f;
        double beta = 0.25;
        float gradScale = 1.5f;
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor logits = Tensor.of(values, rows, vocab); Tensor y = Tensor.ofInts(targets, rows);
                 OneTokenRollout.Result r = OneTokenRollout.computeWithGradient(logits, y, Options.defaults()
                         .withSamples(5).withBeta((float) beta).withTemperature(temperature).withSeed(3).on(backend),
                         gradScale)) {
                int[] draws = TokenSamplerTest.ints(r.samples());
                double[] z = new double[values.length];
                for (int i = 0; i < z.length; i++) {
                    z[i] = values[i];
                }
                double loss = OneTokenRolloutReference.loss(z, rows, vocab, temperature, draws, 5, targets, beta, 0);
                assertEquals(loss, r.loss(), 1e-5 * (1 + Math.abs(loss)), backend + " loss");
                for (int i = 0; i < z.length; i++) {
                    double h = 1e-5;
                    double saved = z[i];
                    z[i] = saved + h;
                    double up = OneTokenRolloutReference.loss(z, rows, vocab, temperature, draws, 5, targets, beta, 0);
                    z[i] = saved - h;
                    double down = OneTokenRolloutReference.loss(z, rows, vocab, temperature, draws, 5, targets, beta, 0);
                    z[i] = saved;
                    double numeric = gradScale * (up - down) / (2 * h);
                    Approx.assertClose(backend + " d loss / d z[" + i + "]", numeric, r.gradient().getFloat(i), 2e-6);
                }
            }
        }
    }

    /** A caller buffer is filled (ignored rows zeroed), the normalizer divides the token sum, the ignore index moves. */
    @Test
    void callerBufferNormalizerAndIgnoreIndex() {
        SplittableRandom random = new SplittableRandom(4);
        float[] values = TokenSamplerTest.hardRows(random, 3, 50);
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor logits = Tensor.of(values, 3, 50); Tensor y = Tensor.ofInts(new int[] {7, -1, 20}, 3);
                 Tensor buffer = Tensor.of(filled(150, 9f), 3, 50)) {
                Options o = Options.defaults().withIgnoreIndex(-1).withSeed(5).on(backend);
                try (OneTokenRollout.Result mean = OneTokenRollout.computeWithGradient(logits, y, o, 1f);
                     OneTokenRollout.Result sum = OneTokenRollout.computeWithGradient(logits, y, o.withNormalizer(10),
                             1f, buffer)) {
                    assertSame(buffer, sum.gradient());
                    assertEquals(2, mean.tokens());
                    assertEquals(mean.loss() * 2 / 10, sum.loss(), 1e-6, backend + " normalizer");
                    for (int v = 0; v < 50; v++) {
                        assertEquals(0f, buffer.getFloat(50 + v), backend + " an ignored row's gradient");
                        assertEquals(mean.gradient().getFloat(v) * 2 / 10, buffer.getFloat(v), 1e-7,
                                backend + " scaled gradient");
                        assertEquals(-1, mean.samples().getLong(4 + v % 4), backend + " an ignored row draws nothing");
                    }
                    assertEquals(0f, mean.tokenLoss().getFloat(1));
                }
            }
        }
    }

    private static float[] filled(int n, float value) {
        float[] a = new float[n];
        Arrays.fill(a, value);
        return a;
    }

    /** NaN / +inf / all -inf rows: NaN loss and gradient rows, no draws; a masked target is never drawn. */
    @Test
    void specialRows() {
        float inf = Float.POSITIVE_INFINITY;
        float[] z = {1f, Float.NaN, 0f, -inf, -inf, -inf, 2f, -inf, 1f};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor logits = Tensor.of(z, 3, 3); Tensor y = Tensor.ofInts(new int[] {0, 1, 1}, 3);
                 OneTokenRollout.Result r = OneTokenRollout.computeWithGradient(logits, y,
                         Options.defaults().on(backend), 1f)) {
                assertTrue(Float.isNaN(r.loss()), backend + " loss");
                for (int v = 0; v < 6; v++) {
                    assertTrue(Float.isNaN(r.gradient().getFloat(v)), backend + " special gradient " + v);
                }
                assertEquals(-1, r.samples().getLong(0), backend + " NaN row");
                assertEquals(-1, r.samples().getLong(4), backend + " masked row");
                for (int s = 8; s < 12; s++) {
                    assertTrue(r.samples().getLong(s) != 1, backend + " the -inf target is never drawn");
                }
                assertTrue(Float.isFinite(r.tokenLoss().getFloat(2)), backend + " the last row is regular");
                assertTrue(Float.isFinite(r.gradient().getFloat(7)), backend + " its gradient too");
            }
        }
    }

    @Test
    void badInputsAreClearErrors() {
        try (Tensor z = Tensor.of(new float[6], 2, 3); Tensor y = Tensor.ofInts(new int[] {0, 2}, 2);
             Tensor badY = Tensor.ofInts(new int[] {0, 3}, 2); Tensor shortY = Tensor.ofInts(new int[] {0}, 1);
             Tensor wrongGrad = Tensor.of(new float[8], 2, 4); Tensor intGrad = Tensor.ofInts(new int[6], 2, 3);
             Tensor flat = Tensor.of(new float[6], 6)) {
            Options o = Options.defaults();
            expect(() -> OneTokenRollout.compute(flat, y, o), "logits: expected rank 2");
            expect(() -> OneTokenRollout.compute(z, badY, o), "targets[1]");
            expect(() -> OneTokenRollout.compute(z, shortY, o), "targets");
            expect(() -> OneTokenRollout.compute(z, null, o), "targets");
            expect(() -> OneTokenRollout.compute(z, y, null), "options");
            expect(() -> OneTokenRollout.compute(z, y, o.withSamples(0)), "samples");
            expect(() -> OneTokenRollout.compute(z, y, o.withSamples(65)), "samples");
            expect(() -> OneTokenRollout.compute(z, y, o.withBeta(Float.NaN)), "beta");
            expect(() -> OneTokenRollout.compute(z, y, o.withTemperature(-1f)), "temperature");
            expect(() -> OneTokenRollout.compute(z, y, o.withTemperature(0x1p-130f)), "reciprocal 1/T is finite");
            expect(() -> OneTokenRollout.compute(z, y, o.withNormalizer(-2)), "normalizer");
            expect(() -> OneTokenRollout.computeWithGradient(z, y, o, Float.POSITIVE_INFINITY), "gradScale");
            expect(() -> OneTokenRollout.computeWithGradient(z, y, o.withTemperature(0x1p-120f), 0x1p100f), "gradScale");
            expect(() -> OneTokenRollout.computeWithGradient(z, y, o, 1f, null), "gradient");
            expect(() -> OneTokenRollout.computeWithGradient(z, y, o, 1f, z), "gradient");
            expect(() -> OneTokenRollout.computeWithGradient(z, y, o, 1f, wrongGrad), "gradient");
            expect(() -> OneTokenRollout.computeWithGradient(z, y, o, 1f, intGrad), "gradient: expected dtype");
        }
    }
}
