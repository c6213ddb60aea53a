package dev.tokenkernels.ops.loss;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.MemorySegment;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * The blocked row softmax against float64: lengths around the vector width and the block size,
 * rows whose max grows block after block (the running rescale), masked classes, every dtype, and
 * the special rows (NaN, +inf, all -inf).
 */
class SoftmaxRowCpuTest {
    private static final int[] VOCABS = {1, 7, 16, 17, 2047, 2048, 2049, 5000, 32000};

    @Test
    void logSumExpGradientAndEntropyMatchFloat64() {
        SplittableRandom random = new SplittableRandom(7);
        for (DType dtype : new DType[] {DType.F32, DType.BF16, DType.F16}) {
            for (int vocab : VOCABS) {
                for (int shape = 0; shape < 4; shape++) {
                    float[] z = new float[vocab];
                    for (int i = 0; i < vocab; i++) {
                        z[i] = switch (shape) {
                            case 0 -> (float) (3 * random.nextGaussian());
                            case 1 -> i * 0.01f; // max grows in every block
                            case 2 -> (vocab - i) * 0.01f; // max in the first block
                            default -> random.nextInt(5) == 0 ? Float.NEGATIVE_INFINITY : (float) random.nextGaussian();
                        };
                    }
                    if (shape == 3) {
                        z[random.nextInt(vocab)] = 1f; // at least one class left
                    }
                    check(z, dtype, 0.7f, random.nextBoolean(), dtype + " V=" + vocab + " shape " + shape);
                }
            }
        }
    }

    @Test
    void specialRows() {
        float[] nan = {0f, Float.NaN, 1f};
        float[] inf = {0f, Float.POSITIVE_INFINITY, 1f};
        float[] masked = {Float.NEGATIVE_INFINITY, Float.NEGATIVE_INFINITY, Float.NEGATIVE_INFINITY};
        float[] late = new float[3000];
        java.util.Arrays.fill(late, Float.NEGATIVE_INFINITY);
        late[2500] = 4f; // the first block is all -inf, then a finite max
        for (DType dtype : new DType[] {DType.F32, DType.BF16, DType.F16}) {
            assertTrue(Float.isNaN(logSumExp(nan, dtype)), dtype + " NaN element");
            assertTrue(Float.isNaN(logSumExp(inf, dtype)), dtype + " +inf max");
            assertEquals(Float.NEGATIVE_INFINITY, logSumExp(masked, dtype), dtype + " all -inf");
            assertEquals(4f, logSumExp(late, dtype), 1e-6f, dtype + " only one finite class, in block 2");
            check(late, dtype, 1f, false, dtype + " all -inf first block");
        }
    }

    /**
     * Scaled logits so large that half an ulp of the max exceeds the range of exp: every exponent
     * must come from the same rounding as the max it is taken against (here {@code z - m = 0}, not
     * a product rounded at {@code |z / T|}). Equal values, so that the expected row is
     * {@code lse = x + log n}, {@code sum p log p = -log n} whatever the rounding.
     */
    @Test
    void hugeScaledLogits() {
        float[] values = {3e9f, 1e10f, -1e10f, 1e12f, 5f};
        float[] invTs = {3.3f, 1 / 0.7f, 1 / 0.7f, 1 / 0.7f, 1e9f};
        for (int k = 0; k < values.length; k++) {
            for (int n : new int[] {1, 3, 20}) {
                float[] z = new float[n];
                java.util.Arrays.fill(z, values[k]);
                String at = n + " x " + values[k] + " at 1/T = " + invTs[k];
                try (Tensor t = Tensor.ofFloats(z, DType.F32, 1, n)) {
                    SoftmaxRowCpu row = new SoftmaxRowCpu(n, true);
                    row.select(t.segment(), DType.F32, 0);
                    float lse = row.logSumExp(invTs[k]);
                    double expected = (double) (values[k] * invTs[k]) + Math.log(n);
                    assertEquals(expected, lse, 2e-6 * Math.abs(expected), at + " lse");
                    // m_b - lse in fp64 keeps log n to an ulp of |x|
                    assertEquals(-Math.log(n), row.sumPLogP(), 1e-6 + 4 * Math.ulp(expected), at + " sum p log p");
                }
            }
        }
    }

    /**
     * Logits far from 0 at T = 1: each p must keep about an ulp of precision relative to its
     * distance from the max (the difference z - m is exact near the max), not lose an ulp of |z|
     * (about 1e-6 of p at z = 100, which a product z log2(e) / T rounded before the difference costs).
     */
    @Test
    void logitsFarFromZeroKeepTheirPrecision() {
        int vocab = 5000;
        for (float offset : new float[] {100f, 1000f, -3000f}) {
            java.util.SplittableRandom random = new java.util.SplittableRandom(7);
            float[] z = new float[vocab];
            double max = Double.NEGATIVE_INFINITY;
            for (int i = 0; i < vocab; i++) {
                z[i] = (float) (random.nextGaussian() * 3 + offset);
                max = Math.max(max, z[i]);
            }
            double sum = 0;
            for (float v : z) {
                sum += Math.exp(v - max);
            }
            try (Tensor t = Tensor.ofFloats(z, DType.F32, 1, vocab); Tensor g = Tensor.allocate(DType.F32, 1, vocab)) {
                SoftmaxRowCpu row = new SoftmaxRowCpu(vocab, true);
                row.select(t.segment(), DType.F32, 0);
                float lse = row.logSumExp(1f);
                assertEquals(max + Math.log(sum), lse, Math.ulp(lse), offset + " lse");
                row.gradient(-1f, -1, g.segment(), DType.F32, 0, false); // writes p (no target)
                for (int i = 0; i < vocab; i++) {
                    double p = Math.exp(z[i] - max) / sum;
                    double tolerance = p * (3e-7 + 1.2e-7 * (max - z[i]));
                    assertEquals(p, g.getFloat(i), tolerance, offset + " p[" + i + "]");
                }
            }
        }
    }

    /**
     * The 1st and the 3000th call give the same bits: the sums do not depend on whether C2 has
     * compiled the sweeps yet (the interpreter's and C2's reduceLanes(ADD) add lanes in different
     * orders; with them, the lse and the entropy moved in their last bits once compiled).
     */
    @Test
    void resultsDoNotChangeOnceCompiled() {
        int vocab = 2053;
        SplittableRandom random = new SplittableRandom(21);
        float[] z = new float[vocab];
        for (int i = 0; i < vocab; i++) {
            z[i] = (float) (4 * random.nextGaussian());
        }
        try (Tensor t = Tensor.ofFloats(z, DType.F32, 1, vocab); Tensor g = Tensor.allocate(DType.F32, 1, vocab);
             Tensor first = Tensor.allocate(DType.F32, 1, vocab)) {
            SoftmaxRowCpu row = new SoftmaxRowCpu(vocab, true);
            row.select(t.segment(), DType.F32, 0);
            float lse = row.logSumExp(0.7f);
            double plogp = row.sumPLogP();
            row.gradient(0.5f, 3, first.segment(), DType.F32, 0, false);
            for (int call = 2; call <= 3000; call++) {
                assertEquals(Float.floatToRawIntBits(lse), Float.floatToRawIntBits(row.logSumExp(0.7f)), "lse, call " + call);
                assertEquals(Double.doubleToRawLongBits(plogp), Double.doubleToRawLongBits(row.sumPLogP()), "call " + call);
                row.gradient(0.5f, 3, g.segment(), DType.F32, 0, false);
                assertEquals(-1L, first.segment().mismatch(g.segment()), "gradient, call " + call);
            }
        }
    }

    private static float logSumExp(float[] z, DType dtype) {
        try (Tensor t = Tensor.ofFloats(z, dtype, 1, z.length)) {
            SoftmaxRowCpu row = new SoftmaxRowCpu(z.length, false);
            row.select(t.segment(), dtype, 0);
            return row.logSumExp(1f);
        }
    }

    /** Row 1 of a two-row tensor (so the row offset matters), against float64 of the stored values. */
    private static void check(float[] z, DType dtype, float invT, boolean accumulate, String at) {
        int vocab = z.length;
        float[] both = new float[2 * vocab];
        java.util.Arrays.fill(both, 0, vocab, 100f); // row 0 must not leak into row 1
        System.arraycopy(z, 0, both, vocab, vocab);
        try (Tensor t = Tensor.ofFloats(both, dtype, 2, vocab); Tensor g = Tensor.allocate(DType.F32, 2, vocab)) {
            double[] x = new double[vocab];
            double max = Double.NEGATIVE_INFINITY;
            for (int i = 0; i < vocab; i++) {
                x[i] = (double) t.getFloat(vocab + i) * invT;
                max = Math.max(max, x[i]);
            }
            double sum = 0;
            for (double v : x) {
                sum += Math.exp(v - max);
            }
            double lse = max + Math.log(sum);
            SoftmaxRowCpu row = new SoftmaxRowCpu(vocab, true);
            row.select(t.segment(), dtype, 1);
            float got = row.logSumExp(invT);
            assertEquals(lse, got, 2e-6 * Math.max(1, Math.abs(lse)), at + " lse");
            float base = 0.25f;
            MemorySegment gs = g.segment();
            for (int i = 0; i < vocab; i++) {
                g.setFloat(vocab + i, base);
            }
            float c = 1.5f;
            int target = vocab / 2;
            row.gradient(c, target, gs, DType.F32, 1, accumulate);
            double plogp = row.sumPLogP();
            double expectedPlogp = 0;
            for (int i = 0; i < vocab; i++) {
                double p = Math.exp(x[i] - lse);
                expectedPlogp += p == 0 ? 0 : p * (x[i] - lse);
                double expected = (accumulate ? base : 0) - c * p + (i == target ? c : 0);
                assertEquals(expected, g.getFloat(vocab + i), 2e-6 * (1 + Math.abs(expected)), at + " gradient " + i);
            }
            assertEquals(expectedPlogp, plogp, 2e-5 * (1 + Math.abs(expectedPlogp)), at + " sum p log p");
            for (int i = 0; i < vocab; i++) {
                assertEquals(0f, g.getFloat(i), at + " row 0 of the gradient is not written");
            }
        }
    }
}
