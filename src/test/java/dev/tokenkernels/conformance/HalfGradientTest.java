package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.methods.AlignDistilLoss;
import dev.tokenkernels.ops.loss.ClippedKl;
import dev.tokenkernels.ops.loss.Divergence;
import dev.tokenkernels.ops.loss.OneTokenRollout;
import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.ops.loss.PreferenceLoss;
import dev.tokenkernels.ops.loss.PreferenceLoss.Responses;
import dev.tokenkernels.ops.loss.ProxyDistribution;
import dev.tokenkernels.ops.loss.TargetLogProb;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * Gradients stored as F16 or BF16 (PolicyLoss, Divergence, TargetLogProb, ClippedKl,
 * OneTokenRollout, and PreferenceLoss and AlignDistilLoss on them), on every backend: each value is the backend's own F32 gradient rounded
 * once to nearest even, bit for bit (also when TargetLogProb adds to what the buffer holds), in a
 * separate buffer and in place into BF16 or F16 logits; other dtypes and buffers
 * overlapping the inputs are refused. 64 rows (the two-thread CPU splits them) of more columns than
 * a CPU block, with ignored rows, rows of weight or coefficient 0, masked classes and a row without
 * a distribution (NaN gradient).
 */
class HalfGradientTest {
    private static final int ROWS = 64;
    private static final int VOCAB = 2053;
    private static final DType[] HALVES = {DType.F16, DType.BF16};

    /** Logits of scale 3: row 1 has masked classes, row 3 a NaN. */
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

    /** A target per row (the ignore index -100 in rows 2 and 40), the last class in row 5. */
    private static int[] targets(long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        int[] y = new int[ROWS];
        for (int i = 0; i < ROWS; i++) {
            y[i] = random.nextInt(VOCAB);
        }
        y[2] = -100;
        y[40] = -100;
        y[5] = VOCAB - 1;
        return y;
    }

    private static float[] gaussians(long seed, float mean, float scale) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] v = new float[ROWS];
        for (int i = 0; i < ROWS; i++) {
            v[i] = mean + scale * (float) random.nextGaussian();
        }
        return v;
    }

    /**
     * {@code actual} holds {@code reference} (F32 [N, V], the backend's own gradient from another
     * call) rounded once to its dtype, to nearest even, bit for bit (NaN as NaN). Exact because the
     * ops' sums do not depend on whether C2 has compiled them yet ({@code VectorMath.sumLanes}).
     */
    private static void assertRounded(Tensor reference, Tensor actual, String what) {
        for (long i = 0; i < reference.elementCount(); i++) {
            float r = reference.getFloat(i);
            if (Float.isNaN(r)) {
                assertTrue(Float.isNaN(actual.getFloat(i)), what + " [" + i + "] NaN");
                continue;
            }
            short expected = actual.dtype() == DType.F16 ? Float.floatToFloat16(r) : DType.floatToBf16(r);
            assertEquals(expected, actual.segment().getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i),
                    what + " [" + i + "] of " + r);
        }
    }

    @Test
    void policyLossGradientRoundsTheF32One() {
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor z = Tensor.ofFloats(logits(1), DType.BF16, ROWS, VOCAB); Tensor y = Tensor.ofInts(targets(2), ROWS);
                 Tensor old = Tensor.of(gaussians(3, -8f, 1f), ROWS); Tensor a = Tensor.of(gaussians(4, 0f, 1f), ROWS);
                 Tensor f32 = Tensor.allocate(DType.F32, ROWS, VOCAB)) {
                PolicyLoss.Options options = PolicyLoss.Options.defaults().withTemperature(0.8f).on(backend);
                int[] starts = {0, 10, 33, ROWS};
                PolicyLoss.computeWithGradient(z, y, old, a, null, starts, options, 0.5f, f32).close();
                for (DType half : HALVES) {
                    try (Tensor g = Tensor.allocate(half, ROWS, VOCAB)) {
                        PolicyLoss.computeWithGradient(z, y, old, a, null, starts, options, 0.5f, g).close();
                        assertRounded(f32, g, backend + " policy loss " + half);
                        assertEquals(0f, g.getFloat(2L * VOCAB + 3), backend + " ignored row");
                    }
                }
            }
        }
    }

    @Test
    void policyLossGradientWorksInPlaceInHalfLogits() {
        for (Backend backend : ConformanceBackends.all()) {
            for (DType half : HALVES) {
                try (Tensor z = Tensor.ofFloats(logits(1), half, ROWS, VOCAB); Tensor y = Tensor.ofInts(targets(2), ROWS);
                     Tensor old = Tensor.of(gaussians(3, -8f, 1f), ROWS); Tensor a = Tensor.of(gaussians(4, 0f, 1f), ROWS);
                     Tensor f32 = Tensor.allocate(DType.F32, ROWS, VOCAB)) {
                    PolicyLoss.Options options = PolicyLoss.Options.defaults().withTemperature(0.8f).on(backend);
                    int[] starts = {0, 10, 33, ROWS};
                    PolicyLoss.computeWithGradient(z, y, old, a, null, starts, options, 0.5f, f32).close();
                    PolicyLoss.computeWithGradient(z, y, old, a, null, starts, options, 0.5f, z).close();
                    assertRounded(f32, z, backend + " policy loss in place, " + half);
                }
            }
        }
    }

    @Test
    void divergenceGradientRoundsTheF32OneAndWorksInPlace() {
        float[] weights = gaussians(5, 1f, 0.2f);
        weights[7] = 0f;
        float[] alpha = gaussians(6, 0.3f, 0.1f);
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor w = Tensor.of(weights, ROWS); Tensor alphas = Tensor.of(alpha, ROWS);
                 Tensor reference = Tensor.ofFloats(logits(7), DType.BF16, ROWS, VOCAB)) {
                Divergence.Options[] all = {Divergence.Options.forwardKl().withWeights(w),
                    Divergence.Options.reverseKl(), Divergence.Options.jsd(0.3f), Divergence.Options.totalVariation(),
                    Divergence.Options.forwardKl().withTeacherFilter(ProxyDistribution.Mode.MIN_P, 0.02f),
                    Divergence.Options.reverseKl().withExtrapolatedTeacher(reference, alphas)};
                for (Divergence.Options kind : all) {
                    Divergence.Options options = kind.withTemperature(1.3f).on(backend);
                    String what = backend + " " + kind.kind() + (kind.teacherFilter() != null ? " filtered" : "")
                            + (kind.extrapolationReference() != null ? " extrapolated" : "");
                    divergenceCase(options, what);
                }
            }
        }
    }

    private static void divergenceCase(Divergence.Options options, String what) {
        for (DType logits : HALVES) {
            try (Tensor s = Tensor.ofFloats(logits(8), logits, ROWS, VOCAB);
                 Tensor t = Tensor.ofFloats(logits(9), DType.BF16, ROWS, VOCAB);
                 Tensor f32 = Tensor.allocate(DType.F32, ROWS, VOCAB)) {
                Divergence.computeWithGradient(s, t, options, 2f, f32).close();
                try (Tensor g = Tensor.allocate(logits, ROWS, VOCAB)) {
                    Divergence.computeWithGradient(s, t, options, 2f, g).close();
                    assertRounded(f32, g, what + " " + logits + " logits and gradient");
                    Divergence.computeWithGradient(s, t, options, 2f, s).close();
                    assertRounded(f32, s, what + " " + logits + " in place");
                }
            }
        }
    }

    @Test
    void clippedKlGradientRoundsTheF32OneAndWorksInPlace() {
        float[] lower = gaussians(23, 0.1f, 0.05f);
        float[] upper = gaussians(24, 0.8f, 0.1f);
        for (int i = 0; i < ROWS; i++) {
            lower[i] = Math.max(0f, lower[i]);
            upper[i] = Math.min(1f, Math.max(lower[i] + 0.05f, upper[i]));
        }
        for (Backend backend : ConformanceBackends.all()) {
            for (float gamma : new float[] {0f, 0.02f}) {
                ClippedKl.Options options = ClippedKl.Options.forwardKl(gamma).on(backend);
                try (Tensor l = Tensor.of(lower, ROWS); Tensor u = Tensor.of(upper, ROWS);
                     Tensor s = Tensor.ofFloats(logits(25), DType.BF16, ROWS, VOCAB);
                     Tensor t = Tensor.ofFloats(logits(26), DType.BF16, ROWS, VOCAB);
                     Tensor f32 = Tensor.allocate(DType.F32, ROWS, VOCAB); Tensor g = Tensor.allocate(DType.BF16, ROWS, VOCAB)) {
                    String what = backend + " clipped KL gamma " + gamma;
                    ClippedKl.computeWithGradient(s, t, l, u, options, 1.5f, f32).close();
                    ClippedKl.computeWithGradient(s, t, l, u, options, 1.5f, g).close();
                    assertRounded(f32, g, what);
                    ClippedKl.computeWithGradient(s, t, l, u, options, 1.5f, s).close();
                    assertRounded(f32, s, what + " in place");
                }
            }
        }
    }

    /** Peaked rows, so that draws repeat: a column drawn twice is still rounded once. */
    @Test
    void oneTokenRolloutGradientRoundsTheF32One() {
        float[] z = logits(27);
        for (int i = 0; i < z.length; i += 97) {
            z[i] += 12f;
        }
        for (Backend backend : ConformanceBackends.all()) {
            OneTokenRollout.Options options = OneTokenRollout.Options.defaults().withSamples(8).withBeta(0.3f)
                    .withSeed(5).on(backend);
            try (Tensor logits = Tensor.ofFloats(z, DType.BF16, ROWS, VOCAB); Tensor y = Tensor.ofInts(targets(28), ROWS);
                 Tensor f32 = Tensor.allocate(DType.F32, ROWS, VOCAB)) {
                OneTokenRollout.computeWithGradient(logits, y, options, 0.7f, f32).close();
                for (DType half : HALVES) {
                    try (Tensor g = Tensor.allocate(half, ROWS, VOCAB)) {
                        OneTokenRollout.computeWithGradient(logits, y, options, 0.7f, g).close();
                        assertRounded(f32, g, backend + " one-token rollout " + half);
                    }
                }
            }
        }
    }

    @Test
    void targetLogProbGradientRoundsTheF32OneAlsoWhenAdding() {
        float[] c = gaussians(10, 0f, 1f);
        c[9] = 0f; // written as zeros, left alone when adding
        float[] held = new float[ROWS * VOCAB];
        SplittableRandom random = new SplittableRandom(11);
        for (int i = 0; i < held.length; i++) {
            held[i] = (float) (1e-3 * random.nextGaussian());
        }
        for (Backend backend : ConformanceBackends.all()) {
            for (DType half : HALVES) {
                TargetLogProb.Options options = TargetLogProb.Options.defaults().on(backend);
                TargetLogProb.Options adding = TargetLogProb.Options.defaults().accumulating().on(backend);
                try (Tensor z = Tensor.ofFloats(logits(12), half, ROWS, VOCAB); Tensor y = Tensor.ofInts(targets(13), ROWS);
                     Tensor coefficients = Tensor.of(c, ROWS); Tensor f32 = Tensor.allocate(DType.F32, ROWS, VOCAB);
                     Tensor g = Tensor.allocate(half, ROWS, VOCAB); Tensor f32Added = Tensor.allocate(DType.F32, ROWS, VOCAB);
                     Tensor added = Tensor.ofFloats(held, half, ROWS, VOCAB)) {
                    String what = backend + " target log prob " + half;
                    TargetLogProb.computeWithGradient(z, y, coefficients, options, f32).close();
                    TargetLogProb.computeWithGradient(z, y, coefficients, options, g).close();
                    assertRounded(f32, g, what);
                    for (int i = 0; i < held.length; i++) {
                        f32Added.setFloat(i, added.getFloat(i)); // what the half buffer holds, exactly
                    }
                    TargetLogProb.computeWithGradient(z, y, coefficients, adding, f32Added).close();
                    TargetLogProb.computeWithGradient(z, y, coefficients, adding, added).close();
                    assertRounded(f32Added, added, what + " added"); // row 9 keeps its bits
                    TargetLogProb.computeWithGradient(z, y, coefficients, options, z).close();
                    assertRounded(f32, z, what + " in place");
                }
            }
        }
    }

    @Test
    void preferenceLossAndAlignDistilTakeHalfBuffers() {
        int[] starts = {0, 20, ROWS};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor zw = Tensor.ofFloats(logits(14), DType.BF16, ROWS, VOCAB);
                 Tensor zl = Tensor.ofFloats(logits(15), DType.BF16, ROWS, VOCAB);
                 Tensor yw = Tensor.ofInts(targets(16), ROWS); Tensor yl = Tensor.ofInts(targets(17), ROWS);
                 Tensor refW = Tensor.of(gaussians(18, -8f, 1f), ROWS); Tensor refL = Tensor.of(gaussians(19, -8f, 1f), ROWS);
                 Tensor f32W = Tensor.allocate(DType.F32, ROWS, VOCAB); Tensor f32L = Tensor.allocate(DType.F32, ROWS, VOCAB);
                 Tensor gw = Tensor.allocate(DType.BF16, ROWS, VOCAB); Tensor gl = Tensor.allocate(DType.BF16, ROWS, VOCAB)) {
                Responses chosen = Responses.of(zw, yw, starts, refW);
                Responses rejected = Responses.of(zl, yl, starts, refL);
                PreferenceLoss.Options dpo = PreferenceLoss.Options.dpo(0.1f).on(backend);
                PreferenceLoss.computeWithGradient(chosen, rejected, dpo, 1f, f32W, f32L).close();
                PreferenceLoss.computeWithGradient(chosen, rejected, dpo, 1f, gw, gl).close();
                assertRounded(f32W, gw, backend + " DPO chosen");
                assertRounded(f32L, gl, backend + " DPO rejected");

                AlignDistilLoss align = AlignDistilLoss.adaptive(0.1f, 10f, 1f, backend);
                try (Tensor policy = Tensor.ofFloats(logits(20), DType.BF16, ROWS, VOCAB)) {
                    align.compute(policy, zw, zl, yw, starts, 1f, f32W).close();
                    align.compute(policy, zw, zl, yw, starts, 1f, gw).close();
                    assertRounded(f32W, gw, backend + " AlignDistil");
                }
            }
        }
    }

    @Test
    void otherDtypesAndOverlappingBuffersAreRefused() {
        try (Tensor z = Tensor.ofFloats(logits(21), DType.F32, ROWS, VOCAB); Tensor y = Tensor.ofInts(targets(22), ROWS);
             Tensor o = Tensor.of(new float[ROWS], ROWS); Tensor a = Tensor.of(new float[ROWS], ROWS);
             Tensor ints = Tensor.allocate(DType.I32, ROWS, VOCAB);
             // A BF16 view of the first half of F32 logits: gradient row r would overwrite logits row r / 2.
             Tensor view = Tensor.of(z.segment().asSlice(0, 2L * ROWS * VOCAB), DType.BF16, ROWS, VOCAB)) {
            String dtypes = "gradient: expected dtype one of [F32, F16, BF16], got I32";
            expect(() -> PolicyLoss.computeWithGradient(z, y, o, a, null, new int[] {0, ROWS},
                    PolicyLoss.Options.defaults(), 1f, ints), dtypes);
            expect(() -> Divergence.computeWithGradient(z, z, Divergence.Options.forwardKl(), 1f, ints), dtypes);
            expect(() -> TargetLogProb.computeWithGradient(z, y, a, TargetLogProb.Options.defaults(), ints), dtypes);
            expect(() -> Divergence.computeWithGradient(z, z, Divergence.Options.forwardKl(), 1f, view),
                    "gradient: expected student itself or a buffer that does not overlap student");
            expect(() -> TargetLogProb.computeWithGradient(z, y, a, TargetLogProb.Options.defaults(), view),
                    "gradient: expected logits itself or a buffer that does not overlap logits");
            expect(() -> PolicyLoss.computeWithGradient(z, y, o, a, null, new int[] {0, ROWS},
                    PolicyLoss.Options.defaults(), 1f, view), "gradient: expected logits itself or a buffer that does not overlap logits");
        }
    }
}
