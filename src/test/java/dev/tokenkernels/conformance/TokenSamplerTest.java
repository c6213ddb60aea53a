package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.TokenSampler;
import dev.tokenkernels.ops.loss.TokenSampler.Options;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** The sampler's cross-backend identity, its distribution (chi-square) and bad inputs. */
class TokenSamplerTest {

    /** Rows meant to break a sampler that is not exact: ties, near-ties, masks, huge and tiny spreads. */
    static float[] hardRows(SplittableRandom random, int rows, int vocab) {
        float[] z = new float[rows * vocab];
        for (int i = 0; i < rows; i++) {
            int o = i * vocab;
            switch (i % 8) {
                case 0 -> Arrays.fill(z, o, o + vocab, 0.25f); // all tied: only the noise decides
                case 1 -> { // two values one ulp apart
                    for (int v = 0; v < vocab; v++) {
                        z[o + v] = random.nextBoolean() ? 1f : Math.nextUp(1f);
                    }
                }
                case 2 -> { // a few coarse levels: many exact ties in x
                    for (int v = 0; v < vocab; v++) {
                        z[o + v] = random.nextInt(4) * 0.5f;
                    }
                }
                case 3 -> { // mostly masked
                    for (int v = 0; v < vocab; v++) {
                        z[o + v] = random.nextInt(10) == 0 ? (float) random.nextGaussian() : Float.NEGATIVE_INFINITY;
                    }
                    z[o + random.nextInt(vocab)] = 0f;
                }
                case 4 -> { // a peaked row: one token far above the rest
                    for (int v = 0; v < vocab; v++) {
                        z[o + v] = (float) random.nextGaussian();
                    }
                    z[o + random.nextInt(vocab)] = 12f;
                }
                case 6 -> { // shaped like a trained model's row: most entries far below a few top ones
                    for (int v = 0; v < vocab; v++) {
                        z[o + v] = (float) (3 * random.nextGaussian());
                    }
                    for (int top = 0; top < 3; top++) {
                        z[o + random.nextInt(vocab)] = 22f + top;
                    }
                }
                case 5 -> { // large magnitudes
                    for (int v = 0; v < vocab; v++) {
                        z[o + v] = (float) (1e4 * random.nextGaussian());
                    }
                }
                default -> {
                    for (int v = 0; v < vocab; v++) {
                        z[o + v] = (float) (3 * random.nextGaussian());
                    }
                }
            }
        }
        return z;
    }

    /**
     * Every backend draws exactly what the scalar reference draws, on many rows of hard cases, in
     * every dtype (BF16 rounds the logits into many exact ties), at T = 1 and 0.7, with K not a
     * multiple of 4 and positions whose counter crosses 2^32.
     */
    @Test
    void everyBackendDrawsTheReferenceSamplesBitForBit() {
        SplittableRandom random = new SplittableRandom(11);
        int rows = 48;
        int vocab = 1000;
        float[] values = hardRows(random, rows, vocab);
        long firstPosition = (1L << 32) - 20;
        for (DType dtype : new DType[] {DType.F32, DType.BF16, DType.F16}) {
            for (float temperature : new float[] {1f, 0.7f}) {
                int k = temperature == 1f ? 5 : 9;
                long seed = 0x9E3779B97F4A7C15L ^ dtype.ordinal();
                try (Tensor logits = Tensor.ofFloats(values, dtype, rows, vocab)) {
                    float[] z = logits.toFloatArray(); // what the backends see after decoding
                    int[] expected = new int[rows * k];
                    for (int i = 0; i < rows; i++) {
                        System.arraycopy(TokenSamplerReference.sample(z, i * vocab, vocab, temperature, k, seed,
                                firstPosition + i), 0, expected, i * k, k);
                    }
                    for (Backend backend : ConformanceBackends.all()) {
                        Options o = Options.defaults().withSamples(k).withTemperature(temperature).withSeed(seed)
                                .withFirstPosition(firstPosition).on(backend);
                        try (TokenSampler.Result r = TokenSampler.sample(logits, o)) {
                            int[] got = ints(r.samples());
                            assertArrayEquals(expected, got, backend + " " + dtype + " T=" + temperature);
                            checkLogProb(backend + " " + dtype, z, vocab, temperature, got, k, r.logProb());
                        }
                    }
                }
            }
        }
    }

    static int[] ints(Tensor t) {
        int[] out = new int[(int) t.elementCount()];
        for (int i = 0; i < out.length; i++) {
            out[i] = (int) t.getLong(i);
        }
        return out;
    }

    /** Each sample's log-probability against float64 {@code log softmax(x)}. */
    static void checkLogProb(String where, float[] z, int vocab, float temperature, int[] samples, int k, Tensor logProb) {
        float invT = 1f / temperature;
        for (int i = 0; i < samples.length / k; i++) {
            double[] x = new double[vocab];
            double maxAbs = 0;
            for (int v = 0; v < vocab; v++) {
                x[v] = z[i * vocab + v] * invT;
                maxAbs = Double.isFinite(x[v]) ? Math.max(maxAbs, Math.abs(x[v])) : maxAbs;
            }
            double[] logSoftmax = DivergenceReference.logSoftmax(x, 1);
            for (int s = 0; s < k; s++) {
                int a = samples[i * k + s];
                assertTrue(a >= 0 && a < vocab && x[a] != Double.NEGATIVE_INFINITY, where + " row " + i + " drew " + a);
                Approx.assertClose(where + " row " + i + " logp of " + a, logSoftmax[a], logProb.getFloat(i * k + s),
                        1e-5 * (1 + Math.abs(logSoftmax[a])) + 0x1p-21 * maxAbs);
            }
        }
    }

    /** NaN / +inf / all -inf rows draw -1 with NaN log-probability; the other rows are unaffected. */
    @Test
    void specialRowsDrawNothing() {
        float inf = Float.POSITIVE_INFINITY;
        float[] z = {1f, Float.NaN, 0f, 0f, inf, 1f, -inf, -inf, -inf, 2f, -inf, 1f};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor logits = Tensor.of(z, 4, 3);
                 TokenSampler.Result r = TokenSampler.sample(logits, Options.defaults().withSamples(2).on(backend))) {
                for (int s = 0; s < 6; s++) {
                    assertEquals(-1, r.samples().getLong(s), backend + " special row sample " + s);
                    assertTrue(Float.isNaN(r.logProb().getFloat(s)), backend + " special row logp " + s);
                }
                for (int s = 6; s < 8; s++) {
                    long a = r.samples().getLong(s);
                    assertTrue(a == 0 || a == 2, backend + " the masked row never draws its -inf entries: " + a);
                }
            }
        }
    }

    /**
     * Chi-square goodness of fit of 60000 draws (7500 rows of the same 12 logits, K = 8) against
     * softmax(z / T) at T = 0.7, with a fixed seed. The threshold is the chi-square quantile (11
     * degrees of freedom) for a false-failure probability of 1e-6 per check (Wilson-Hilferty
     * approximation). The test can fail: the same counts against softmax(z) at T = 1, a sampler that
     * ignored the temperature, must exceed the threshold, and do by far.
     */
    @Test
    void drawsFollowTheSoftmaxByChiSquare() {
        float[] row = {1.2f, -0.3f, 0.8f, 2.0f, -1.5f, 0.0f, 0.4f, 1.9f, -0.8f, 0.1f, 1.2f, -2.0f};
        int vocab = row.length;
        int rows = 7500;
        int k = 8;
        float temperature = 0.7f;
        float[] z = new float[rows * vocab];
        for (int i = 0; i < rows; i++) {
            System.arraycopy(row, 0, z, i * vocab, vocab);
        }
        long[] counts = new long[vocab];
        try (CpuBackend cpu = CpuBackend.withThreads(2); Tensor logits = Tensor.of(z, rows, vocab);
             TokenSampler.Result r = TokenSampler.sample(logits, Options.defaults().withSamples(k)
                     .withTemperature(temperature).withSeed(20251001L).on(cpu))) {
            for (int i = 0; i < rows * k; i++) {
                counts[(int) r.samples().getLong(i)]++;
            }
        }
        double threshold = chiSquareQuantile(vocab - 1, 4.753424); // z of the upper 1e-6 tail
        double statistic = chiSquare(counts, softmax(row, temperature));
        assertTrue(statistic < threshold, "chi-square " + statistic + " >= " + threshold + ": " + Arrays.toString(counts));
        double wrongTemperature = chiSquare(counts, softmax(row, 1f));
        assertTrue(wrongTemperature > 10 * threshold, "the test must be able to fail: " + wrongTemperature);
    }

    /**
     * Within-row independence: the samples of one row must be independent draws, not only right
     * in their marginals. A 2-D chi-square of sample {@code a} against sample {@code b} of 60000
     * rows of the same 6 logits, against {@code p x p} (35 degrees of freedom; false-failure
     * probability 1e-6 per pair, Wilson-Hilferty), for samples 0 and 1 (words of one Philox call)
     * and 3 and 4 (different calls). Can fail: pairing each sample with itself (what a sampler that
     * reused its noise across samples would give) exceeds the threshold by far.
     */
    @Test
    void samplesOfOneRowAreIndependentByChiSquare() {
        float[] row = {0.5f, -0.2f, 0.3f, 1.0f, -0.6f, 0.1f};
        int vocab = row.length;
        int rows = 60000;
        int k = 5;
        float[] z = new float[rows * vocab];
        for (int i = 0; i < rows; i++) {
            System.arraycopy(row, 0, z, i * vocab, vocab);
        }
        double[] p = softmax(row, 1f);
        double[] joint = new double[vocab * vocab];
        for (int a = 0; a < vocab; a++) {
            for (int b = 0; b < vocab; b++) {
                joint[a * vocab + b] = p[a] * p[b];
            }
        }
        double threshold = chiSquareQuantile(vocab * vocab - 1, 4.753424);
        try (CpuBackend cpu = CpuBackend.withThreads(2); Tensor logits = Tensor.of(z, rows, vocab);
             TokenSampler.Result r = TokenSampler.sample(logits, Options.defaults().withSamples(k).withSeed(77).on(cpu))) {
            int[] s = ints(r.samples());
            for (int[] pair : new int[][] {{0, 1}, {3, 4}}) {
                long[] counts = new long[vocab * vocab];
                long[] same = new long[vocab * vocab];
                for (int i = 0; i < rows; i++) {
                    counts[s[i * k + pair[0]] * vocab + s[i * k + pair[1]]]++;
                    same[s[i * k + pair[0]] * vocab + s[i * k + pair[0]]]++;
                }
                double statistic = chiSquare(counts, joint);
                assertTrue(statistic < threshold, "samples " + pair[0] + " and " + pair[1] + ": chi-square "
                        + statistic + " >= " + threshold + ": " + Arrays.toString(counts));
                assertTrue(chiSquare(same, joint) > 10 * threshold, "the test must be able to fail");
            }
        }
    }

    /**
     * A peaked row, where the CPU skips the noise of most entries (those more than
     * {@code log(T / 5.9e-8)} below the top, T the top entry's largest race score over four samples:
     * about 16 to 18 for typical T): the draws still follow the softmax. Classes 0..5 at 0, -2, .., -10, 300
     * entries at -12 (counted as one bucket: the skip rule's edge) and 200 at -30 (always skipped,
     * never drawn: 19.45 below the top is out of the noise's range). Chi-square over the 7 cells of
     * 160000 draws (2500 rows, K = 64), false-failure probability 1e-6; a sampler that skipped
     * entries 12 below the top (a wrong bound) would leave the bucket empty and fail. Every backend
     * draws the CPU's samples on these rows.
     */
    @Test
    void peakedRowsWhereTheSkipRuleFiresFollowTheSoftmax() {
        int vocab = 506;
        float[] row = new float[vocab];
        for (int c = 0; c < 6; c++) {
            row[c] = -2f * c;
        }
        Arrays.fill(row, 6, 306, -12f);
        Arrays.fill(row, 306, vocab, -30f);
        int rows = 2500;
        int k = TokenSampler.MAX_SAMPLES;
        float[] z = new float[rows * vocab];
        for (int i = 0; i < rows; i++) {
            System.arraycopy(row, 0, z, i * vocab, vocab);
        }
        double[] p = softmax(row, 1f);
        double[] cellP = new double[7];
        for (int v = 0; v < vocab; v++) {
            cellP[Math.min(v, 6)] += v < 306 ? p[v] : 0;
        }
        long[] counts = new long[7];
        try (CpuBackend cpu = CpuBackend.withThreads(2); Tensor logits = Tensor.of(z, rows, vocab);
             TokenSampler.Result r = TokenSampler.sample(logits, Options.defaults().withSamples(k).withSeed(31).on(cpu))) {
            int[] drawn = ints(r.samples());
            for (int a : drawn) {
                assertTrue(a < 306, "an entry 30 below the top was drawn: " + a);
                counts[Math.min(a, 6)]++;
            }
            // Where the skip rule fires on every backend, the draws stay identical (first 100 rows).
            int some = 100;
            try (Tensor head = Tensor.of(Arrays.copyOf(z, some * vocab), some, vocab)) {
                for (Backend backend : ConformanceBackends.all()) {
                    try (TokenSampler.Result b = TokenSampler.sample(head, Options.defaults().withSamples(k).withSeed(31)
                            .on(backend))) {
                        assertArrayEquals(Arrays.copyOf(drawn, some * k), ints(b.samples()), backend + " peaked rows");
                    }
                }
            }
        }
        double threshold = chiSquareQuantile(cellP.length - 1, 4.753424);
        double statistic = chiSquare(counts, cellP);
        assertTrue(statistic < threshold, "chi-square " + statistic + " >= " + threshold + ": " + Arrays.toString(counts));
        long[] withoutBucket = Arrays.copyOf(counts, 7);
        withoutBucket[0] += withoutBucket[6];
        withoutBucket[6] = 0;
        assertTrue(chiSquare(withoutBucket, cellP) > 5 * threshold, "the test must be able to fail");
    }

    static double[] softmax(float[] z, float temperature) {
        double[] x = new double[z.length];
        for (int v = 0; v < z.length; v++) {
            x[v] = z[v] * (double) (1f / temperature);
        }
        double[] logp = DivergenceReference.logSoftmax(x, 1);
        for (int v = 0; v < z.length; v++) {
            logp[v] = Math.exp(logp[v]);
        }
        return logp;
    }

    static double chiSquare(long[] counts, double[] p) {
        long n = Arrays.stream(counts).sum();
        double statistic = 0;
        for (int v = 0; v < counts.length; v++) {
            double expected = n * p[v];
            statistic += (counts[v] - expected) * (counts[v] - expected) / expected;
        }
        return statistic;
    }

    /** Wilson and Hilferty (1931): the chi-square quantile with {@code df} degrees of freedom at standard normal {@code z}. */
    static double chiSquareQuantile(int df, double z) {
        double a = 2.0 / (9 * df);
        return df * Math.pow(1 - a + z * Math.sqrt(a), 3);
    }

    /** A new seed or position draws differently; more samples keep the first ones. */
    @Test
    void seedsPositionsAndSampleCounts() {
        SplittableRandom random = new SplittableRandom(5);
        float[] z = hardRows(random, 8, 300);
        try (Tensor logits = Tensor.of(z, 8, 300);
             TokenSampler.Result a = TokenSampler.sample(logits, Options.defaults().withSamples(3).withSeed(1));
             TokenSampler.Result b = TokenSampler.sample(logits, Options.defaults().withSamples(7).withSeed(1));
             TokenSampler.Result c = TokenSampler.sample(logits, Options.defaults().withSamples(3).withSeed(2));
             Tensor tail = Tensor.of(Arrays.copyOfRange(z, 300 * 6, 300 * 8), 2, 300);
             TokenSampler.Result d = TokenSampler.sample(tail, Options.defaults().withSamples(3).withSeed(1)
                     .withFirstPosition(6))) {
            int[] three = ints(a.samples());
            int[] seven = ints(b.samples());
            for (int i = 0; i < 8; i++) {
                for (int s = 0; s < 3; s++) {
                    assertEquals(three[i * 3 + s], seven[i * 7 + s], "row " + i + " sample " + s);
                }
            }
            assertArrayEquals(Arrays.copyOfRange(three, 18, 24), ints(d.samples()), "a chunk at its position");
            int differ = 0;
            int[] other = ints(c.samples());
            for (int i = 0; i < three.length; i++) {
                differ += three[i] != other[i] ? 1 : 0;
            }
            assertTrue(differ > 6, "another seed draws other tokens: " + differ + " of 24 differ");
        }
    }

    @Test
    void badInputsAreClearErrors() {
        try (Tensor z = Tensor.of(new float[6], 2, 3); Tensor flat = Tensor.of(new float[6], 6);
             Tensor ints = Tensor.ofInts(new int[6], 2, 3)) {
            Options o = Options.defaults();
            expect(() -> TokenSampler.sample(flat, o), "logits: expected rank 2");
            expect(() -> TokenSampler.sample(ints, o), "logits: expected dtype");
            expect(() -> TokenSampler.sample(null, o), "logits");
            expect(() -> TokenSampler.sample(z, null), "options");
            expect(() -> TokenSampler.sample(z, o.withSamples(0)), "samples");
            expect(() -> TokenSampler.sample(z, o.withSamples(TokenSampler.MAX_SAMPLES + 1)), "samples");
            expect(() -> TokenSampler.sample(z, o.withTemperature(0f)), "temperature");
            expect(() -> TokenSampler.sample(z, o.withTemperature(Float.NaN)), "temperature");
            expect(() -> TokenSampler.sample(z, o.withTemperature(Float.MIN_VALUE)), "reciprocal 1/T is finite");
            expect(() -> TokenSampler.sample(z, o.withTemperature(0x1p-128f)), "reciprocal 1/T is finite");
        }
    }
}
