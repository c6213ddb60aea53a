package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.ClippedKl;
import dev.tokenkernels.ops.loss.ClippedKl.Options;
import dev.tokenkernels.ops.loss.Divergence;
import dev.tokenkernels.ops.loss.Reduction;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.KernelBackend;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;

/** Worked examples, the band's edge cases and bad inputs of ClippedKl, on every backend. */
class ClippedKlTest {

    /**
     * Teacher (0.5, 0.3, 0.2): c = (0, 0.5, 0.8). The hard band [0.4, 1) keeps classes 1 and 2,
     * so the loss is KL((0.6, 0.4) || student renormalized over {1, 2}).
     */
    @Test
    void hardBandByHand() {
        float[] zt = {(float) Math.log(0.5), (float) Math.log(0.3), (float) Math.log(0.2)};
        float[] zs = {0.7f, -0.2f, 0.4f};
        double e1 = Math.exp(-0.2);
        double e2 = Math.exp(0.4);
        double q1 = e1 / (e1 + e2);
        double q2 = e2 / (e1 + e2);
        double expected = 0.6 * Math.log(0.6 / q1) + 0.4 * Math.log(0.4 / q2);
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor s = Tensor.of(zs, 1, 3); Tensor t = Tensor.of(zt, 1, 3); Tensor l = Tensor.of(new float[] {0.4f}, 1);
                 Tensor u = Tensor.of(new float[] {1f}, 1);
                 ClippedKl.Result r = ClippedKl.computeWithGradient(s, t, l, u, Options.forwardKl(0f).on(backend), 1f)) {
                assertEquals(expected, r.value(), 1e-6, backend + " loss");
                assertEquals(0.5, r.keptMass().getFloat(0), 1e-6, backend + " kept mass");
                assertEquals(0f, r.gradient().getFloat(0), 0f, backend + " class 0 is outside the band");
                assertEquals(q1 - 0.6, r.gradient().getFloat(1), 1e-6, backend + " gradient[1]");
                assertEquals(q2 - 0.4, r.gradient().getFloat(2), 1e-6, backend + " gradient[2]");
                assertEquals(0f, r.lowerGradient().getFloat(0), backend + " the hard band has no bound gradient");
            }
        }
    }

    /** The whole-distribution band is the plain divergence, loss and gradient. */
    @Test
    void fullHardBandIsThePlainDivergence() {
        SplittableRandom random = new SplittableRandom(7);
        int rows = 3;
        int vocab = 1500;
        float[] zs = new float[rows * vocab];
        float[] zt = new float[rows * vocab];
        for (int i = 0; i < zs.length; i++) {
            zs[i] = (float) (3 * random.nextGaussian());
            zt[i] = (float) (3 * random.nextGaussian());
        }
        float[] zeros = new float[rows];
        float[] ones = {1f, 1f, 1f};
        for (Backend backend : ConformanceBackends.all()) {
            for (boolean reverse : new boolean[] {false, true}) {
                try (Tensor s = Tensor.of(zs, rows, vocab); Tensor t = Tensor.of(zt, rows, vocab);
                     Tensor l = Tensor.of(zeros, rows); Tensor u = Tensor.of(ones, rows);
                     ClippedKl.Result clipped = ClippedKl.computeWithGradient(s, t, l, u,
                             (reverse ? Options.reverseKl(0f) : Options.forwardKl(0f)).withTemperature(1.5f).on(backend), 1f);
                     Divergence.Result plain = Divergence.computeWithGradient(s, t,
                             (reverse ? Divergence.Options.reverseKl() : Divergence.Options.forwardKl())
                                     .withTemperature(1.5f).on(backend), 1f)) {
                    // Both are fp32 sums over 1500 classes, in different orders (a few ulps apart, more
                    // with 4-lane vectors).
                    assertEquals(plain.value(), clipped.value(), 1e-5 * (1 + Math.abs(plain.value())), backend + " loss");
                    for (int i = 0; i < rows * vocab; i++) {
                        float g = plain.gradient().getFloat(i);
                        assertEquals(g, clipped.gradient().getFloat(i), 1e-7 + 2e-6 * Math.abs(g),
                                backend + " reverse=" + reverse + " gradient[" + i + "]");
                    }
                }
            }
        }
    }

    /** A band holding no class gives 0, and the kept target gives the target's own mass. */
    @Test
    void emptyBandAndKeptTarget() {
        // Teacher (0.9, 0.05, 0.05): c = (0, 0.9, 0.95); the band [0.3, 0.5) holds no class.
        float[] zt = {(float) Math.log(0.9), (float) Math.log(0.05), (float) Math.log(0.05)};
        float[] zs = {0.1f, 0.2f, 0.3f};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor s = Tensor.of(zs, 1, 3); Tensor t = Tensor.of(zt, 1, 3); Tensor l = Tensor.of(new float[] {0.3f}, 1);
                 Tensor u = Tensor.of(new float[] {0.5f}, 1); Tensor y = Tensor.ofInts(new int[] {2}, 1)) {
                try (ClippedKl.Result r = ClippedKl.computeWithGradient(s, t, l, u, Options.forwardKl(0f).on(backend), 1f)) {
                    assertEquals(0f, r.value(), backend + " empty band");
                    assertEquals(0f, r.keptMass().getFloat(0), backend + " empty band");
                    for (int j = 0; j < 3; j++) {
                        assertEquals(0f, r.gradient().getFloat(j), 0f, backend + " empty band gradient");
                    }
                }
                Options keep = Options.forwardKl(0f).withTargets(y).withTargetAlwaysKept().on(backend);
                try (ClippedKl.Result r = ClippedKl.computeWithGradient(s, t, l, u, keep, 1f)) {
                    // Only the target is kept: both renormalized distributions are one-hot, KL 0.
                    assertEquals(0f, r.value(), 1e-7, backend + " kept target");
                    assertEquals(0.05f, r.keptMass().getFloat(0), 1e-7, backend + " kept target mass");
                }
            }
        }
    }

    /**
     * A flat teacher puts every class in one bucket, and a soft band's edge crosses it: all
     * 3000 classes need their exact order, past the kernel's shared-memory ranking (its sort
     * path). Every backend must still match the reference.
     */
    @Test
    void flatTeacherOrdersEveryClass() {
        int vocab = 3000;
        float[] zt = new float[vocab];
        float[] zs = new float[vocab];
        SplittableRandom random = new SplittableRandom(3);
        for (int j = 0; j < vocab; j++) {
            zs[j] = (float) random.nextGaussian();
        }
        var ref = ClippedKlReference.row(zs, zt, 0, vocab, 1f, false, 0.02, 0.25, 0.6, -1);
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor s = Tensor.of(zs, 1, vocab); Tensor t = Tensor.of(zt, 1, vocab);
                 Tensor l = Tensor.of(new float[] {0.25f}, 1); Tensor u = Tensor.of(new float[] {0.6f}, 1);
                 ClippedKl.Result r = ClippedKl.computeWithGradient(s, t, l, u, Options.forwardKl(0.02f).on(backend), 1f)) {
                assertEquals(ref.loss(), r.value(), 1e-5 * (1 + ref.loss()), backend + " loss");
                assertEquals(ref.keptMass(), r.keptMass().getFloat(0), 1e-5, backend + " kept mass");
                assertEquals(ref.lowerGradient(), r.lowerGradient().getFloat(0), 1e-4 * (1 + Math.abs(ref.lowerGradient())),
                        backend + " dL/dl");
                assertEquals(ref.upperGradient(), r.upperGradient().getFloat(0), 1e-4 * (1 + Math.abs(ref.upperGradient())),
                        backend + " dL/du");
                for (int j = 0; j < vocab; j++) {
                    assertEquals(ref.gradient()[j], r.gradient().getFloat(j), 1e-7, backend + " gradient[" + j + "]");
                }
            }
        }
    }

    /**
     * Rows that need the sort in more launches than one: three flat-teacher rows (3000 ordered
     * classes: 4096 * 20 bytes = 80 KiB of scratch; one with half its classes masked: 1500, 40 KiB)
     * among rows that need no sort, with the per-launch scratch capped
     * ({@code tokenkernels.clippedKl.scratchBytes}) at 100 000 bytes (one row per launch: three
     * launches) and 200 000 (two, then one). Each cap gives exactly what the default
     * cap (one launch) gives (to the rounding of the kernel's fp64 atomic sums), and the losses match
     * the reference.
     */
    @Test
    void sortingRowsInSeveralLaunchesChangesNothing() {
        int vocab = 3000;
        int rows = 5;
        float[] zs = new float[rows * vocab];
        float[] zt = new float[rows * vocab];
        SplittableRandom random = new SplittableRandom(8);
        for (int i = 0; i < rows * vocab; i++) {
            zs[i] = (float) random.nextGaussian();
            zt[i] = i / vocab % 2 == 0 ? 0f : (float) (25 * random.nextGaussian()); // even rows flat: all ordered
        }
        for (int j = 1; j < vocab; j += 2) {
            zt[2 * vocab + j] = Float.NEGATIVE_INFINITY; // row 2: 1500 classes to order, a smaller scratch (2048)
        }
        float[] lower = {0.25f, 0.1f, 0.3f, 0.2f, 0.15f};
        float[] upper = {0.6f, 0.9f, 0.7f, 0.8f, 0.65f};
        String property = "tokenkernels.clippedKl.scratchBytes";
        for (Backend backend : ConformanceBackends.all()) {
            if (!(backend instanceof KernelBackend)) { // the cap is the kernel's
                continue;
            }
            Options o = Options.forwardKl(0.02f).withReduction(Reduction.NONE).on(backend);
            try (Tensor s = Tensor.of(zs, rows, vocab); Tensor t = Tensor.of(zt, rows, vocab);
                 Tensor l = Tensor.of(lower, rows); Tensor u = Tensor.of(upper, rows);
                 ClippedKl.Result one = ClippedKl.computeWithGradient(s, t, l, u, o, 1f)) {
                for (int row = 0; row < rows; row++) {
                    var ref = ClippedKlReference.row(zs, zt, row * vocab, vocab, 1f, false, 0.02, lower[row], upper[row], -1);
                    assertEquals(ref.loss(), one.loss().getFloat(row), 1e-5 * (1 + ref.loss()), backend + " loss " + row);
                    assertEquals(ref.keptMass(), one.keptMass().getFloat(row), 1e-5, backend + " kept mass " + row);
                }
                for (long cap : new long[] {100_000, 200_000}) {
                    String before = System.setProperty(property, Long.toString(cap));
                    try (ClippedKl.Result several = ClippedKl.computeWithGradient(s, t, l, u, o, 1f)) {
                        String at = backend + " cap " + cap;
                        // The same up to the rounding of fp64 atomic sums, whose order a GPU does not fix.
                        assertSame(one.loss(), several.loss(), at + " loss");
                        assertSame(one.keptMass(), several.keptMass(), at + " kept mass");
                        assertSame(one.gradient(), several.gradient(), at + " gradient");
                        assertSame(one.lowerGradient(), several.lowerGradient(), at + " dL/dl");
                        assertSame(one.upperGradient(), several.upperGradient(), at + " dL/du");
                    } finally {
                        if (before == null) {
                            System.clearProperty(property);
                        } else {
                            System.setProperty(property, before);
                        }
                    }
                }
            }
        }
    }

    private static void assertSame(Tensor expected, Tensor actual, String what) {
        float[] e = expected.toFloatArray();
        float[] a = actual.toFloatArray();
        assertEquals(e.length, a.length, what + " length");
        for (int i = 0; i < e.length; i++) {
            assertEquals(e[i], a[i], 1e-6 * (1 + Math.abs(e[i])), what + "[" + i + "]");
        }
    }

    /**
     * The band (all but the teacher's top class 0, which is also the student's favourite) holds
     * classes the student puts ~e^-200 below its max: their fp32 probabilities underflow, the
     * renormalized band does not, and neither may the loss.
     */
    @Test
    void aBandFarBelowTheStudentsMaxStaysExact() {
        float[] zt = {3f, 2f, 1.5f, 1f, 0.5f};
        float[] zs = {200f, 0.3f, -0.4f, 0.8f, 0f};
        for (boolean reverse : new boolean[] {false, true}) {
            var ref = ClippedKlReference.row(zs, zt, 0, 5, 1f, reverse, 0, 0.01, 1.0, -1);
            assertTrue(Double.isFinite(ref.loss()) && ref.loss() > 0.01, "the reference's loss " + ref.loss());
            for (Backend backend : ConformanceBackends.all()) {
                try (Tensor s = Tensor.of(zs, 1, 5); Tensor t = Tensor.of(zt, 1, 5);
                     Tensor l = Tensor.of(new float[] {0.01f}, 1); Tensor u = Tensor.of(new float[] {1f}, 1);
                     ClippedKl.Result r = ClippedKl.computeWithGradient(s, t, l, u,
                             (reverse ? Options.reverseKl(0f) : Options.forwardKl(0f)).on(backend), 1f)) {
                    String at = backend + " reverse=" + reverse;
                    // fp32 holds x - lse_s ~ -200 to 2^-17: the log-ratios carry that much.
                    assertEquals(ref.loss(), r.value(), 1e-5 * (1 + ref.loss()) + 0x1p-21 * 200, at + " loss");
                    assertEquals(ref.keptMass(), r.keptMass().getFloat(0), 1e-6, at + " kept mass");
                    for (int j = 0; j < 5; j++) {
                        assertEquals(ref.gradient()[j], r.gradient().getFloat(j), 1e-5 + 0x1p-21 * 200,
                                at + " gradient[" + j + "]");
                    }
                }
            }
        }
    }

    /**
     * Classes the teacher masks (-inf) are out of the band for every u and both rules, a kept
     * target included: the loss and gradients equal those of the row without them (both sides
     * are renormalized over the band), and the masked classes' gradient is 0. Before, u just
     * below 1 (hard: c = 1 could round below u) or a soft edge near 1 gave them a gate, and reverse
     * KL was +inf.
     */
    @Test
    void maskedTeacherClassesAreOutOfEveryBand() {
        float ninf = Float.NEGATIVE_INFINITY;
        float[] zt = {1.5f, ninf, 0.2f, -0.4f, ninf, 0.9f, -1.1f, ninf};
        float[] zs = {0.3f, 2.0f, -0.5f, 0.1f, 1.2f, 0.7f, -0.2f, 0.4f};
        int[] live = {0, 2, 3, 5, 6};
        float[] ztLive = new float[live.length];
        float[] zsLive = new float[live.length];
        for (int k = 0; k < live.length; k++) {
            ztLive[k] = zt[live[k]];
            zsLive[k] = zs[live[k]];
        }
        float[][] bands = {{0f, 0.99999994f}, {0.1f, 0.97f}, {0f, 1f}};
        for (Backend backend : ConformanceBackends.all()) {
            for (float gamma : new float[] {0f, 0.05f}) {
                for (boolean reverse : new boolean[] {false, true}) {
                    for (float[] band : bands) {
                        String at = backend + " gamma=" + gamma + " reverse=" + reverse + " band=" + band[0] + ".."
                                + band[1];
                        Options o = (reverse ? Options.reverseKl(gamma) : Options.forwardKl(gamma)).on(backend);
                        try (Tensor s = Tensor.of(zs, 1, 8); Tensor t = Tensor.of(zt, 1, 8);
                             Tensor sLive = Tensor.of(zsLive, 1, live.length); Tensor tLive = Tensor.of(ztLive, 1, live.length);
                             Tensor l = Tensor.of(new float[] {band[0]}, 1); Tensor u = Tensor.of(new float[] {band[1]}, 1);
                             Tensor y = Tensor.ofInts(new int[] {4}, 1); // a masked target: not kept
                             ClippedKl.Result r = ClippedKl.computeWithGradient(s, t, l, u,
                                     o.withTargets(y).withTargetAlwaysKept(), 1f);
                             ClippedKl.Result without = ClippedKl.computeWithGradient(sLive, tLive, l, u, o, 1f)) {
                            assertTrue(Float.isFinite(r.value()), at + " finite loss " + r.value());
                            assertEquals(without.value(), r.value(), 2e-6 * (1 + Math.abs(without.value())), at + " loss");
                            assertEquals(without.keptMass().getFloat(0), r.keptMass().getFloat(0), 1e-6, at + " mass");
                            assertEquals(without.lowerGradient().getFloat(0), r.lowerGradient().getFloat(0),
                                    1e-5 * (1 + Math.abs(without.lowerGradient().getFloat(0))), at + " dL/dl");
                            assertEquals(without.upperGradient().getFloat(0), r.upperGradient().getFloat(0),
                                    1e-5 * (1 + Math.abs(without.upperGradient().getFloat(0))), at + " dL/du");
                            for (int j = 0, k = 0; j < 8; j++) {
                                float expected = zt[j] == ninf ? 0f : without.gradient().getFloat(k++);
                                assertEquals(expected, r.gradient().getFloat(j), 1e-6, at + " gradient[" + j + "]");
                            }
                        }
                    }
                }
            }
        }
        var ref = ClippedKlReference.row(zs, zt, 0, 8, 1f, true, 0.05, 0.1, 0.97, 4);
        assertTrue(Double.isFinite(ref.loss()), "the reference gives masked classes gate 0 too: " + ref.loss());
    }

    /**
     * Teacher (0, -100, -100.5, -101): the hard band [0.5, 1) holds classes 1-3, whose
     * probabilities (~e^-100) flush to 0 in fp32 relative to the row's max. The teacher side is
     * summed from the band's own max, so the renormalized band, the loss and the kept mass
     * (~6e-44, a subnormal float) stay right.
     */
    @Test
    void aBandFarBelowTheTeachersMaxShiftsTheTeacherSide() {
        float[] zt = {0f, -100f, -100.5f, -101f};
        float[] zs = {1f, 0.5f, -0.3f, 0.2f};
        for (boolean reverse : new boolean[] {false, true}) {
            var ref = ClippedKlReference.row(zs, zt, 0, 4, 1f, reverse, 0, 0.5, 1, -1);
            assertTrue(ref.loss() > 0.01 && ref.keptMass() > 0 && ref.keptMass() < 1e-43, "reference " + ref);
            for (Backend backend : ConformanceBackends.all()) {
                try (Tensor s = Tensor.of(zs, 1, 4); Tensor t = Tensor.of(zt, 1, 4);
                     Tensor l = Tensor.of(new float[] {0.5f}, 1); Tensor u = Tensor.of(new float[] {1f}, 1);
                     ClippedKl.Result r = ClippedKl.computeWithGradient(s, t, l, u,
                             (reverse ? Options.reverseKl(0f) : Options.forwardKl(0f)).on(backend), 1f)) {
                    String at = backend + " reverse=" + reverse;
                    // x_t - lse_t ~ -100 carries fp32 rounding of 2^-24 * 100 into the log-ratios.
                    assertEquals(ref.loss(), r.value(), 1e-5 * (1 + ref.loss()) + 0x1p-21 * 100, at + " loss");
                    // A subnormal float near 6e-44 has steps of 1.4e-45.
                    assertEquals(ref.keptMass(), r.keptMass().getFloat(0), 0x1p-149 + 1e-5 * ref.keptMass(), at + " mass");
                    for (int j = 0; j < 4; j++) {
                        assertEquals(ref.gradient()[j], r.gradient().getFloat(j), 1e-5 + 0x1p-21 * 100,
                                at + " gradient[" + j + "]");
                    }
                }
            }
        }
    }

    /**
     * The band [0.3, 0.31) holds no class, but the kept target (class 3) is ~100 below both rows'
     * max: both sides are summed from the band's max (the target), the renormalized band is the
     * target alone on both sides, so the loss and the gradient are 0 and the kept mass is the
     * target's (~e^-100). Without the shift the band's sums flush to 0: an empty band (kept mass 0)
     * or an infinite loss.
     */
    @Test
    void onlyAKeptTargetFarBelowTheMaxSurvives() {
        float[] zt = {5f, 4f, 3f, -95f};
        float[] zs = {10f, 0f, 0f, -90f};
        double targetMass = Math.exp(-95 - Math.log(Math.exp(5) + Math.exp(4) + Math.exp(3) + Math.exp(-95)));
        for (Backend backend : ConformanceBackends.all()) {
            for (boolean reverse : new boolean[] {false, true}) {
                try (Tensor s = Tensor.of(zs, 1, 4); Tensor t = Tensor.of(zt, 1, 4);
                     Tensor l = Tensor.of(new float[] {0.3f}, 1); Tensor u = Tensor.of(new float[] {0.31f}, 1);
                     Tensor y = Tensor.ofInts(new int[] {3}, 1);
                     ClippedKl.Result r = ClippedKl.computeWithGradient(s, t, l, u,
                             (reverse ? Options.reverseKl(0f) : Options.forwardKl(0f)).withTargets(y)
                                     .withTargetAlwaysKept().on(backend), 1f)) {
                    String at = backend + " reverse=" + reverse;
                    assertEquals(0f, r.value(), 1e-6, at + " loss");
                    // A subnormal float near 2.5e-44: steps of 2^-149.
                    assertEquals(targetMass, r.keptMass().getFloat(0), 0x1p-149 + 1e-5 * targetMass, at + " kept mass");
                    for (int j = 0; j < 4; j++) {
                        assertEquals(0f, r.gradient().getFloat(j), 1e-6, at + " gradient[" + j + "]");
                    }
                }
            }
        }
    }

    /**
     * Rows whose hard band edge splits a bucket of exactly 1024 classes (the most the kernel ranks
     * in shared memory) and of 1025 (the kernel sorts them in a second launch), in one call with a
     * row that needs no ordering, loss only and with gradients, in place too. The teacher is not
     * flat: class 0 at 0, the bucket's other classes at -k * 1e-4, then a tail of 500 classes.
     */
    @Test
    void rowsAtAndPastTheKernelsRankedClasses() {
        int vocab = 1600;
        int[] bucketSizes = {1024, 1025, 1, 1600};
        int rows = bucketSizes.length;
        float[] zt = new float[rows * vocab];
        float[] zs = new float[rows * vocab];
        SplittableRandom random = new SplittableRandom(11);
        for (int i = 0; i < rows; i++) {
            for (int j = 0; j < vocab; j++) {
                // (0 - x) * 8 < 1 puts class j in bucket 0; the tail lies 3 to 6 below.
                zt[i * vocab + j] = j < bucketSizes[i] ? -j * 1e-4f : -3f - (j % 7) * 0.5f;
                zs[i * vocab + j] = (float) random.nextGaussian();
            }
        }
        float[] lower = {0.5f, 0.5f, 0.5f, 0.37f};
        float[] upper = {1f, 1f, 0.9f, 0.81f};
        for (boolean reverse : new boolean[] {false, true}) {
            for (Backend backend : ConformanceBackends.all()) {
                Options o = (reverse ? Options.reverseKl(0f) : Options.forwardKl(0f)).withReduction(Reduction.NONE)
                        .on(backend);
                try (Tensor s = Tensor.of(zs, rows, vocab); Tensor t = Tensor.of(zt, rows, vocab);
                     Tensor inPlace = Tensor.of(zs.clone(), rows, vocab);
                     Tensor l = Tensor.of(lower, rows); Tensor u = Tensor.of(upper, rows);
                     ClippedKl.Result lossOnly = ClippedKl.compute(s, t, l, u, o);
                     ClippedKl.Result r = ClippedKl.computeWithGradient(s, t, l, u, o, 1f);
                     ClippedKl.Result r2 = ClippedKl.computeWithGradient(inPlace, t, l, u, o, 1f, inPlace)) {
                    assertEquals(null, lossOnly.gradient(), "loss only");
                    for (int i = 0; i < rows; i++) {
                        String at = backend + " reverse=" + reverse + " row " + i + " (bucket of " + bucketSizes[i] + ")";
                        var ref = ClippedKlReference.row(zs, zt, i * vocab, vocab, 1f, reverse, 0, lower[i], upper[i], -1);
                        assertTrue(ref.cutDistance() > 1e-6, at + ": no class within rounding of a cut");
                        double tolerance = 1e-5 * (1 + ref.loss());
                        Approx.assertClose(at + " loss", ref.loss(), r.loss().getFloat(i), tolerance);
                        Approx.assertClose(at + " loss only", ref.loss(), lossOnly.loss().getFloat(i), tolerance);
                        Approx.assertClose(at + " kept mass", ref.keptMass(), lossOnly.keptMass().getFloat(i), 1e-6);
                        assertEquals(r.loss().getFloat(i), r2.loss().getFloat(i), at + " in place");
                        for (int j = 0; j < vocab; j++) {
                            long k = (long) i * vocab + j;
                            Approx.assertClose(at + " gradient[" + j + "]", ref.gradient()[j], r.gradient().getFloat(k), 1e-7);
                            assertEquals(r.gradient().getFloat(k), inPlace.getFloat(k), at + " in place [" + j + "]");
                        }
                    }
                }
            }
        }
    }

    /** Fractional token weights scale each row's loss and gradients; the token mean divides by their sum. */
    @Test
    void fractionalTokenWeights() {
        int rows = 4;
        int vocab = 37;
        SplittableRandom random = new SplittableRandom(13);
        float[] zs = new float[rows * vocab];
        float[] zt = new float[rows * vocab];
        for (int i = 0; i < zs.length; i++) {
            zs[i] = (float) (2 * random.nextGaussian());
            zt[i] = (float) (2 * random.nextGaussian());
        }
        float[] weights = {0.25f, 1.5f, 0f, 0.7f};
        float[] lower = {0.1f, 0f, 0.2f, 0.05f};
        float[] upper = {0.8f, 0.9f, 0.6f, 1f};
        double weightSum = 0.25 + 1.5 + 0.7;
        float gradScale = 1.5f;
        for (float gamma : new float[] {0f, 0.03f}) {
            double expected = 0;
            var refs = new ClippedKlReference.Row[rows];
            for (int i = 0; i < rows; i++) {
                refs[i] = ClippedKlReference.row(zs, zt, i * vocab, vocab, 1.3f, false, gamma, lower[i], upper[i], -1);
                expected += weights[i] * refs[i].loss() / weightSum;
            }
            for (Backend backend : ConformanceBackends.all()) {
                try (Tensor s = Tensor.of(zs, rows, vocab); Tensor t = Tensor.of(zt, rows, vocab);
                     Tensor w = Tensor.of(weights, rows); Tensor l = Tensor.of(lower, rows); Tensor u = Tensor.of(upper, rows);
                     ClippedKl.Result r = ClippedKl.computeWithGradient(s, t, l, u,
                             Options.forwardKl(gamma).withTemperature(1.3f).withWeights(w).on(backend), gradScale)) {
                    String at = backend + " gamma=" + gamma;
                    assertEquals(weightSum, r.weightSum(), 1e-6, at + " weight sum");
                    Approx.assertClose(at + " loss", expected, r.value(), 1e-5 * (1 + expected));
                    for (int i = 0; i < rows; i++) {
                        double coef = gradScale * weights[i] / weightSum;
                        for (int j = 0; j < vocab; j++) {
                            Approx.assertClose(at + " gradient[" + i + "][" + j + "]", coef * refs[i].gradient()[j],
                                    r.gradient().getFloat((long) i * vocab + j), 1e-6);
                        }
                        double dl = coef * refs[i].lowerGradient();
                        double du = coef * refs[i].upperGradient();
                        Approx.assertClose(at + " dL/dl[" + i + "]", dl, r.lowerGradient().getFloat(i), 1e-4 * (1 + Math.abs(dl)));
                        Approx.assertClose(at + " dL/du[" + i + "]", du, r.upperGradient().getFloat(i), 1e-4 * (1 + Math.abs(du)));
                    }
                }
            }
        }
    }

    @Test
    void specialRowsAndInPlace() {
        float[] zs = {1f, Float.NaN, 0f, 0.5f, -1f, 2f};
        float[] zt = {0f, 0f, 0f, 1f, 2f, 3f};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor s = Tensor.of(zs, 2, 3); Tensor t = Tensor.of(zt, 2, 3); Tensor l = Tensor.of(new float[] {0f, 0.1f}, 2);
                 Tensor u = Tensor.of(new float[] {1f, 0.9f}, 2); Tensor copy = Tensor.of(zs.clone(), 2, 3)) {
                Options o = Options.reverseKl(0.05f).withReduction(Reduction.NONE).on(backend);
                try (ClippedKl.Result r = ClippedKl.computeWithGradient(s, t, l, u, o, 1f);
                     ClippedKl.Result inPlace = ClippedKl.computeWithGradient(copy, t, l, u, o, 1f, copy)) {
                    assertTrue(Float.isNaN(r.loss().getFloat(0)), backend + " a NaN logit makes the row NaN");
                    assertTrue(Float.isNaN(r.gradient().getFloat(0)), backend + " NaN row gradient");
                    assertTrue(Float.isFinite(r.loss().getFloat(1)), backend + " the other row is computed");
                    for (int j = 3; j < 6; j++) {
                        assertEquals(r.gradient().getFloat(j), copy.getFloat(j), backend + " in place [" + j + "]");
                    }
                    assertEquals(r.upperGradient().getFloat(1), inPlace.upperGradient().getFloat(1), backend + " dL/du");
                }
            }
        }
    }

    /** The reference's gradients against central finite differences of its loss, in float64. */
    @Property(tries = 60)
    void referenceGradientsMatchFiniteDifferences(@ForAll @IntRange(min = 2, max = 12) int vocab,
                                                  @ForAll boolean reverse, @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] zs = new float[vocab];
        float[] zt = new float[vocab];
        for (int j = 0; j < vocab; j++) {
            zs[j] = (float) (2 * random.nextGaussian());
            zt[j] = (float) (2 * random.nextGaussian());
        }
        double gamma = random.nextDouble(0.02, 0.3);
        double l = random.nextDouble(0, 0.5);
        double u = random.nextDouble(l + 0.1, 1);
        float temperature = (float) random.nextDouble(0.5, 2);
        var row = ClippedKlReference.row(zs, zt, 0, vocab, temperature, reverse, gamma, l, u, -1);
        double[] z = new double[vocab];
        for (int j = 0; j < vocab; j++) {
            z[j] = zs[j];
        }
        double h = 1e-6;
        for (int j = 0; j < vocab; j++) {
            z[j] = zs[j] + h;
            double up = ClippedKlReference.loss(z, zt, temperature, reverse, gamma, l, u);
            z[j] = zs[j] - h;
            double down = ClippedKlReference.loss(z, zt, temperature, reverse, gamma, l, u);
            z[j] = zs[j];
            double numeric = (up - down) / (2 * h);
            Approx.assertClose("d/dz_s[" + j + "]", numeric, (float) row.gradient()[j], 1e-6 * (1 + Math.abs(numeric)));
        }
        double numericL = (ClippedKlReference.loss(z, zt, temperature, reverse, gamma, l + h, u)
                - ClippedKlReference.loss(z, zt, temperature, reverse, gamma, l - h, u)) / (2 * h);
        double numericU = (ClippedKlReference.loss(z, zt, temperature, reverse, gamma, l, u + h)
                - ClippedKlReference.loss(z, zt, temperature, reverse, gamma, l, u - h)) / (2 * h);
        Approx.assertClose("d/dl", numericL, (float) row.lowerGradient(), 1e-5 * (1 + Math.abs(numericL)));
        Approx.assertClose("d/du", numericU, (float) row.upperGradient(), 1e-5 * (1 + Math.abs(numericU)));
    }

    @Test
    void badInputsAreClearErrors() {
        try (Tensor s = Tensor.of(new float[6], 2, 3); Tensor t = Tensor.of(new float[6], 2, 3);
             Tensor wide = Tensor.of(new float[8], 2, 4); Tensor flat = Tensor.of(new float[6], 6);
             Tensor l = Tensor.of(new float[] {0f, 0.2f}, 2); Tensor u = Tensor.of(new float[] {1f, 0.8f}, 2);
             Tensor reversed = Tensor.of(new float[] {0.5f, 0.5f}, 2); Tensor above = Tensor.of(new float[] {1f, 1.5f}, 2);
             Tensor nan = Tensor.of(new float[] {0f, Float.NaN}, 2); Tensor shortBound = Tensor.of(new float[] {0f}, 1);
             Tensor halfBound = Tensor.ofFloats(new float[] {0f, 0f}, DType.F16, 2);
             Tensor y = Tensor.ofInts(new int[] {0, -100}, 2); Tensor w = Tensor.of(new float[] {1f, 0f}, 2);
             Tensor gradWrong = Tensor.of(new float[8], 2, 4); Tensor upperNan = Tensor.of(new float[] {1f, Float.NaN}, 2);
             Tensor wideRow = Tensor.of(new float[9], 9);
             Tensor student = Tensor.of(wideRow.segment().asSlice(0, 24), DType.F32, 2, 3);
             Tensor shifted = Tensor.of(wideRow.segment().asSlice(12, 24), DType.F32, 2, 3); // rows 1.. of student, and more
             Tensor aliasTeacher = Tensor.of(t.segment(), DType.F32, 2, 3)) {
            Options o = Options.forwardKl(0.01f);
            expect(() -> ClippedKl.compute(flat, t, l, u, o), "student: expected rank 2");
            expect(() -> ClippedKl.compute(s, wide, l, u, o), "teacher");
            expect(() -> ClippedKl.compute(s, t, reversed, reversed, o), "0 <= lower < upper <= 1");
            expect(() -> ClippedKl.compute(s, t, l, above, o), "0 <= lower < upper <= 1");
            expect(() -> ClippedKl.compute(s, t, nan, u, o), "0 <= lower < upper <= 1");
            expect(() -> ClippedKl.compute(s, t, shortBound, u, o), "lower");
            expect(() -> ClippedKl.compute(s, t, l, halfBound, o), "upper: expected dtype");
            expect(() -> ClippedKl.compute(s, t, null, u, o), "lower");
            expect(() -> ClippedKl.compute(s, t, l, u, Options.forwardKl(-1f)), "gamma");
            expect(() -> ClippedKl.compute(s, t, l, u, Options.forwardKl(Float.NaN)), "gamma");
            expect(() -> ClippedKl.compute(s, t, l, u, o.withTemperature(0f)), "temperature");
            expect(() -> ClippedKl.compute(s, t, l, u, o.withTemperature(0x1p-130f)), "reciprocal 1/T is finite");
            expect(() -> ClippedKl.compute(s, t, l, u, o.withTargetAlwaysKept()), "targets");
            expect(() -> ClippedKl.compute(s, t, l, u, o.withWeights(w).withTargets(y)), "not both");
            expect(() -> ClippedKl.compute(s, t, l, u, null), "options");
            expect(() -> ClippedKl.computeWithGradient(s, t, l, u, o, Float.NaN), "gradScale");
            expect(() -> ClippedKl.computeWithGradient(s, t, l, u, o, 1f, gradWrong), "gradient");
            expect(() -> ClippedKl.computeWithGradient(s, t, l, u, o, 1f, t), "teacher");
            expect(() -> ClippedKl.computeWithGradient(student, t, l, u, o, 1f, shifted), "does not overlap student");
            expect(() -> ClippedKl.computeWithGradient(s, t, l, u, o, 1f, aliasTeacher), "does not overlap teacher");
            // Bounds of rows that do not count are not checked: padding may hold anything.
            try (ClippedKl.Result r = ClippedKl.compute(s, t, l, upperNan, o.withWeights(w).withReduction(Reduction.SUM))) {
                assertTrue(Float.isFinite(r.value()));
            }
        }
        expectDirection();
    }

    private static void expectDirection() {
        Options jsd = new Options(Divergence.Kind.JSD, 0f, 1f, Reduction.SUM, null, null, -100, false, null);
        try (Tensor s = Tensor.of(new float[3], 1, 3); Tensor l = Tensor.of(new float[] {0f}, 1);
             Tensor u = Tensor.of(new float[] {1f}, 1)) {
            expect(() -> ClippedKl.compute(s, s, l, u, jsd), "FORWARD_KL or REVERSE_KL");
        }
    }

    /**
     * A student within 1e-3 or 1e-4 of its teacher: the clipped KL is at most a few 1e-7, and the
     * CPU once summed it to -5e-11 (reverse, hard) and -9.6e-9 (reverse, soft). Never below 0.
     */
    @Test
    void klOfNearIdenticalRowsIsNeverNegative() {
        int vocab = 32000;
        for (double eps : new double[] {1e-3, 1e-4}) {
            float[][] rows = DivergenceReference.nearIdenticalRows(vocab, eps);
            float[] zs = rows[0];
            float[] zt = rows[1];
            for (float gamma : new float[] {0f, 0.05f}) {
                for (ClippedKl.Options o : new ClippedKl.Options[] {ClippedKl.Options.forwardKl(gamma),
                    ClippedKl.Options.reverseKl(gamma)}) {
                    for (Backend b : ConformanceBackends.all()) {
                        try (Tensor s = Tensor.of(zs, 1, vocab); Tensor t = Tensor.of(zt, 1, vocab);
                             Tensor lo = Tensor.of(new float[] {0.1f}, 1); Tensor hi = Tensor.of(new float[] {0.9f}, 1);
                             ClippedKl.Result res = ClippedKl.compute(s, t, lo, hi, o.on(b))) {
                            String at = b + " eps " + eps + " gamma " + gamma + " " + o;
                            assertTrue(res.value() >= 0f && res.value() < 1e-6f, at + ": " + res.value());
                        }
                    }
                }
            }
        }
    }
}
