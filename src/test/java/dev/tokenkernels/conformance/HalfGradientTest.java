package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.Divergence;
import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.ops.loss.TargetLogProb;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * Gradients stored as F16 or BF16 (PolicyLoss, Divergence, TargetLogProb), on every backend: each
 * value is the backend's own F32 gradient rounded once to nearest even, bit for bit (also when
 * TargetLogProb adds to what the buffer holds); in place into BF16 logits gives the bits a separate
 * buffer gets; other dtypes are refused. The rows cover an ignored token, masked classes, a row
 * without a distribution (NaN gradient) and more columns than a CPU block.
 */
class HalfGradientTest {
    private static final int ROWS = 5;
    private static final int VOCAB = 2053;
    private static final DType[] HALVES = {DType.F16, DType.BF16};

    /** BF16 logits: row 1 has masked classes, row 3 a NaN. */
    private static float[] logits(long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] z = new float[ROWS * VOCAB];
        for (int i = 0; i < z.length; i++) {
            z[i] = (float) (3 * random.nextGaussian());
        }
        for (int j = 0; j < VOCAB; j += 3) {
            z[VOCAB + j] = Float.NEGATIVE_INFINITY;
        }
        z[3 * VOCAB + 17] = Float.NaN;
        return z;
    }

    /** {@code actual} holds {@code reference} (F32 [N, V]) rounded to its dtype, bit for bit (NaN as NaN). */
    private static void assertRounded(Tensor reference, Tensor actual, String what) {
        for (long i = 0; i < reference.elementCount(); i++) {
            float r = reference.getFloat(i);
            short expected = actual.dtype() == DType.F16 ? Float.floatToFloat16(r) : DType.floatToBf16(r);
            short bits = actual.segment().getAtIndex(java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED, i);
            if (Float.isNaN(r)) {
                assertTrue(Float.isNaN(actual.getFloat(i)), what + " [" + i + "] NaN");
            } else {
                assertEquals(expected, bits, what + " [" + i + "] of " + r);
            }
        }
    }

    private static void assertSameBits(Tensor expected, Tensor actual, String what) {
        for (long i = 0; i < expected.elementCount(); i++) {
            float e = expected.getFloat(i);
            float a = actual.getFloat(i);
            assertTrue(Float.floatToIntBits(e) == Float.floatToIntBits(a), what + " [" + i + "]: " + e + " vs " + a);
        }
    }

    @Test
    void policyLossGradientRoundsTheF32One() {
        int[] y = {5, -100, 2052, 7, 0};
        float[] old = {-9f, 0f, -8.5f, -7f, -10f};
        float[] advantage = {1.5f, 0f, -0.7f, 0.3f, -2f};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor z = Tensor.ofFloats(logits(1), DType.BF16, ROWS, VOCAB); Tensor targets = Tensor.ofInts(y, ROWS);
                 Tensor o = Tensor.of(old, ROWS); Tensor a = Tensor.of(advantage, ROWS);
                 Tensor f32 = Tensor.allocate(DType.F32, ROWS, VOCAB)) {
                PolicyLoss.Options options = PolicyLoss.Options.defaults().withTemperature(0.8f).on(backend);
                int[] starts = {0, 2, ROWS};
                PolicyLoss.computeWithGradient(z, targets, o, a, null, starts, options, 0.5f, f32).close();
                for (DType half : HALVES) {
                    try (Tensor g = Tensor.allocate(half, ROWS, VOCAB)) {
                        PolicyLoss.computeWithGradient(z, targets, o, a, null, starts, options, 0.5f, g).close();
                        assertRounded(f32, g, backend + " policy loss " + half);
                        assertEquals(0f, g.getFloat(VOCAB + 3), backend + " ignored row");
                    }
                }
            }
        }
    }

    @Test
    void divergenceGradientRoundsTheF32OneAndWorksInPlace() {
        for (Backend backend : ConformanceBackends.all()) {
            for (Divergence.Options kind : new Divergence.Options[] {Divergence.Options.forwardKl(),
                Divergence.Options.reverseKl(), Divergence.Options.jsd(0.3f)}) {
                Divergence.Options options = kind.withTemperature(1.3f).on(backend);
                try (Tensor s = Tensor.ofFloats(logits(2), DType.BF16, ROWS, VOCAB);
                     Tensor t = Tensor.ofFloats(logits(3), DType.BF16, ROWS, VOCAB);
                     Tensor f32 = Tensor.allocate(DType.F32, ROWS, VOCAB)) {
                    Divergence.computeWithGradient(s, t, options, 2f, f32).close();
                    for (DType half : HALVES) {
                        try (Tensor g = Tensor.allocate(half, ROWS, VOCAB)) {
                            Divergence.computeWithGradient(s, t, options, 2f, g).close();
                            assertRounded(f32, g, backend + " " + kind.kind() + " " + half);
                        }
                    }
                    try (Tensor separate = Tensor.allocate(DType.BF16, ROWS, VOCAB)) {
                        Divergence.computeWithGradient(s, t, options, 2f, separate).close();
                        Divergence.computeWithGradient(s, t, options, 2f, s).close();
                        assertSameBits(separate, s, backend + " " + kind.kind() + " in place");
                    }
                }
            }
        }
    }

    @Test
    void targetLogProbGradientRoundsTheF32OneAlsoWhenAdding() {
        int[] y = {4, -100, 9, 0, 2052};
        float[] c = {1f, 1f, -0.5f, 2f, 0.25f};
        SplittableRandom random = new SplittableRandom(4);
        float[] held = new float[ROWS * VOCAB];
        for (int i = 0; i < held.length; i++) {
            held[i] = (float) (1e-3 * random.nextGaussian());
        }
        for (Backend backend : ConformanceBackends.all()) {
            for (DType half : HALVES) {
                TargetLogProb.Options options = TargetLogProb.Options.defaults().on(backend);
                try (Tensor z = Tensor.ofFloats(logits(5), DType.BF16, ROWS, VOCAB); Tensor targets = Tensor.ofInts(y, ROWS);
                     Tensor coefficients = Tensor.of(c, ROWS);
                     Tensor f32 = Tensor.allocate(DType.F32, ROWS, VOCAB); Tensor g = Tensor.allocate(half, ROWS, VOCAB);
                     Tensor f32Added = Tensor.allocate(DType.F32, ROWS, VOCAB);
                     Tensor added = Tensor.ofFloats(held, half, ROWS, VOCAB)) {
                    TargetLogProb.computeWithGradient(z, targets, coefficients, options, f32).close();
                    TargetLogProb.computeWithGradient(z, targets, coefficients, options, g).close();
                    assertRounded(f32, g, backend + " target log prob " + half);
                    for (int i = 0; i < held.length; i++) {
                        f32Added.setFloat(i, added.getFloat(i)); // what the half buffer holds, exactly
                    }
                    TargetLogProb.Options adding = TargetLogProb.Options.defaults().accumulating().on(backend);
                    TargetLogProb.computeWithGradient(z, targets, coefficients, adding, f32Added).close();
                    TargetLogProb.computeWithGradient(z, targets, coefficients, adding, added).close();
                    assertRounded(f32Added, added, backend + " target log prob added to " + half);
                    try (Tensor separate = Tensor.allocate(DType.BF16, ROWS, VOCAB)) {
                        TargetLogProb.computeWithGradient(z, targets, coefficients, options, separate).close();
                        TargetLogProb.computeWithGradient(z, targets, coefficients, options, z).close();
                        assertSameBits(separate, z, backend + " target log prob in place");
                    }
                }
            }
        }
    }

    @Test
    void otherGradientDtypesAreRefused() {
        try (Tensor z = Tensor.ofFloats(logits(6), DType.BF16, ROWS, VOCAB); Tensor y = Tensor.ofInts(new int[ROWS], ROWS);
             Tensor o = Tensor.of(new float[ROWS], ROWS); Tensor a = Tensor.of(new float[ROWS], ROWS);
             Tensor ints = Tensor.allocate(DType.I32, ROWS, VOCAB)) {
            String expected = "gradient: expected dtype one of [F32, F16, BF16], got I32";
            expect(() -> PolicyLoss.computeWithGradient(z, y, o, a, null, new int[] {0, ROWS},
                    PolicyLoss.Options.defaults(), 1f, ints), expected);
            expect(() -> Divergence.computeWithGradient(z, z, Divergence.Options.forwardKl(), 1f, ints), expected);
            expect(() -> TargetLogProb.computeWithGradient(z, y, a, TargetLogProb.Options.defaults(), ints), expected);
        }
    }
}
