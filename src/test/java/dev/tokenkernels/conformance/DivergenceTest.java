package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.Divergence;
import dev.tokenkernels.ops.loss.Divergence.Options;
import dev.tokenkernels.ops.loss.ProxyDistribution;
import dev.tokenkernels.ops.loss.Reduction;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import org.junit.jupiter.api.Test;

/** Worked examples, special rows and every bad input of {@link Divergence}, on every backend. */
class DivergenceTest {
    private static final float LN3 = (float) Math.log(3);

    /** Student uniform over 2 classes, teacher (0.75, 0.25): values by hand. */
    @Test
    void twoClassExampleByHand() {
        try (Tensor s = Tensor.of(new float[] {0, 0}, 1, 2); Tensor t = Tensor.of(new float[] {LN3, 0}, 1, 2)) {
            for (Backend b : ConformanceBackends.all()) {
                double fkl = 0.75 * Math.log(1.5) + 0.25 * Math.log(0.5);
                double rkl = 0.5 * Math.log(0.5 / 0.75) + 0.5 * Math.log(2);
                try (Divergence.Result r = Divergence.computeWithGradient(s, t, Options.forwardKl().on(b), 1f)) {
                    assertEquals(fkl, r.value(), 1e-6, b + " forward KL");
                    assertEquals(-0.25f, r.gradient().getFloat(0), 1e-6, b + " forward KL gradient");
                    assertEquals(0.25f, r.gradient().getFloat(1), 1e-6, b + " forward KL gradient");
                }
                try (Divergence.Result r = Divergence.compute(s, t, Options.reverseKl().on(b))) {
                    assertEquals(rkl, r.value(), 1e-6, b + " reverse KL");
                    assertNull(r.gradient());
                }
                try (Divergence.Result r = Divergence.compute(s, t, Options.totalVariation().on(b))) {
                    assertEquals(0.25, r.value(), 1e-6, b + " total variation");
                }
                try (Divergence.Result fwd = Divergence.compute(s, t, Options.jsd(0f).on(b));
                     Divergence.Result rev = Divergence.compute(s, t, Options.jsd(1f).on(b))) {
                    assertEquals(fkl, fwd.value(), 1e-6, b + " JSD beta 0 is forward KL");
                    assertEquals(rkl, rev.value(), 1e-6, b + " JSD beta 1 is reverse KL");
                }
            }
        }
    }

    /**
     * Scaled logits so large that half an ulp of the max exceeds the range of exp: every backend
     * must take {@code exp(x - m)} of the rounded {@code x = fp32(z / T)}, of which m is the max.
     */
    @Test
    void hugeScaledLogitsStayFinite() {
        float[] z = {3e9f, 3e9f, -2e9f, 3e9f, 1e10f, 1e10f};
        try (Tensor s = Tensor.of(z, 2, 3); Tensor t = Tensor.of(z, 2, 3)) {
            for (Backend b : ConformanceBackends.all()) {
                for (Options o : new Options[] {Options.forwardKl(), Options.reverseKl(), Options.jsd(0.5f),
                        Options.totalVariation()}) {
                    try (Divergence.Result r = Divergence.computeWithGradient(s, t, o.withTemperature(1 / 3.3f).on(b), 1f)) {
                        assertEquals(0f, r.value(), 1e-6, b + " " + o.kind() + " identical huge rows");
                        for (float g : r.gradient().toFloatArray()) {
                            assertEquals(0f, g, 1e-6, b + " " + o.kind() + " gradient");
                        }
                    }
                }
            }
        }
    }

    @Test
    void identicalDistributionsGiveZeroLossAndGradient() {
        float[] z = {1.5f, -2f, 0.25f, 3f, Float.NEGATIVE_INFINITY, 0f};
        try (Tensor s = Tensor.of(z, 2, 3); Tensor t = Tensor.of(z, 2, 3)) {
            for (Backend b : ConformanceBackends.all()) {
                for (Options o : new Options[] {Options.forwardKl(), Options.reverseKl(), Options.jsd(0.5f),
                        Options.totalVariation()}) {
                    try (Divergence.Result r = Divergence.computeWithGradient(s, t, o.withTemperature(0.7f).on(b), 1f)) {
                        assertEquals(0f, r.value(), 1e-6, b + " " + o.kind());
                        for (float g : r.gradient().toFloatArray()) {
                            assertEquals(0f, g, 1e-6, b + " " + o.kind() + " gradient");
                        }
                    }
                }
            }
        }
    }

    @Test
    void zeroProbabilityClassesFollowZeroLogZero() {
        float inf = Float.NEGATIVE_INFINITY;
        // Teacher gives class 2 no mass: forward KL is finite. Student gives it none: it is infinite.
        try (Tensor s = Tensor.of(new float[] {0, 0, 0}, 1, 3); Tensor t = Tensor.of(new float[] {0, 0, inf}, 1, 3);
             Tensor sMasked = Tensor.of(new float[] {0, 0, inf}, 1, 3); Tensor tFull = Tensor.of(new float[] {0, 0, 0}, 1, 3)) {
            for (Backend b : ConformanceBackends.all()) {
                try (Divergence.Result r = Divergence.compute(s, t, Options.forwardKl().on(b))) {
                    assertEquals(Math.log(1.5), r.value(), 1e-6, b + "");
                }
                try (Divergence.Result r = Divergence.compute(sMasked, tFull, Options.forwardKl().on(b))) {
                    assertEquals(Float.POSITIVE_INFINITY, r.value(), b + "");
                }
            }
        }
    }

    /**
     * The CPU sweeps go by blocks of 1024 columns with a running max: whole blocks impossible on
     * both sides come first, then a max that rises by 100 in the last block (the first blocks'
     * scale flushes to 0 in fp32), and a partial last vector. Every kind, both dtypes on the
     * teacher side, against the float64 reference.
     */
    @Test
    void impossibleLeadingBlocksAndALateMaxMatchTheReference() {
        int vocab = 5003;
        float[] zs = new float[2 * vocab];
        float[] zt = new float[2 * vocab];
        java.util.SplittableRandom random = new java.util.SplittableRandom(5);
        for (int row = 0; row < 2; row++) {
            for (int j = 0; j < vocab; j++) {
                boolean masked = j < 2300 + row * 700;
                float lift = j >= vocab - 50 ? 100f : 0f;
                zs[row * vocab + j] = masked ? Float.NEGATIVE_INFINITY : (float) random.nextGaussian() * 2 + lift;
                zt[row * vocab + j] = masked ? Float.NEGATIVE_INFINITY : (float) random.nextGaussian() * 2 + lift;
            }
        }
        float[] weights = {1f, 1f};
        for (DType teacherType : new DType[] {DType.F32, DType.BF16}) {
            try (Tensor student = Tensor.of(zs, 2, vocab); Tensor teacher = Tensor.ofFloats(zt, teacherType, 2, vocab)) {
                float[] t = teacher.toFloatArray();
                for (Divergence.Kind kind : Divergence.Kind.values()) {
                    Options options = (kind == Divergence.Kind.JSD ? Options.jsd(0.3f)
                            : kind == Divergence.Kind.REVERSE_KL ? Options.reverseKl()
                            : kind == Divergence.Kind.TOTAL_VARIATION ? Options.totalVariation() : Options.forwardKl())
                            .withReduction(Reduction.SUM);
                    for (Backend b : ConformanceBackends.all()) {
                        try (Divergence.Result r = Divergence.computeWithGradient(student, teacher, options.on(b), 1f)) {
                            DivergenceProperties.check(b + " " + kind + " " + teacherType, zs, t, 2, vocab, vocab, kind,
                                    0.3f, 1f, weights, Reduction.SUM, 1f, r);
                        }
                    }
                }
            }
        }
    }

    /**
     * A student whose logits are the teacher's plus a constant (and a little noise): a small KL
     * between large logits. The CPU takes each side's logits relative to its own running max
     * before they meet, so the constant never enters its fp32 sums and the error stays far below
     * the KL; summing {@code e (x_t - x_s)} directly put about {@code 1e-7 c} of rounding into the
     * loss. The kernel rounds {@code x - lse} at the logits' scale, which the general tolerance
     * allows for: this checks the CPU alone.
     */
    @Test
    void anOffsetBetweenStudentAndTeacherLogitsCostsTheCpuNoPrecision() {
        int rows = 3;
        int vocab = 20000;
        for (float offset : new float[] {0f, 100f, 1000f}) {
            java.util.SplittableRandom random = new java.util.SplittableRandom(11);
            float[] zs = new float[rows * vocab];
            float[] zt = new float[rows * vocab];
            for (int i = 0; i < zs.length; i++) {
                double base = random.nextGaussian() * 3;
                zt[i] = (float) base;
                zs[i] = (float) (base + offset + random.nextGaussian() * 0.01);
            }
            try (Tensor s = Tensor.of(zs, rows, vocab); Tensor t = Tensor.of(zt, rows, vocab)) {
                for (Options o : new Options[] {Options.forwardKl(), Options.reverseKl()}) {
                    for (Backend b : new Backend[] {CpuBackend.withThreads(1), CpuBackend.withThreads(2)}) {
                        try (Divergence.Result r = Divergence.computeWithGradient(s, t,
                                o.withReduction(Reduction.NONE).on(b), 1f)) {
                            for (int i = 0; i < rows; i++) {
                                double[] a = new double[vocab];
                                double[] c = new double[vocab];
                                for (int j = 0; j < vocab; j++) {
                                    a[j] = zs[i * vocab + j];
                                    c[j] = zt[i * vocab + j];
                                }
                                DivergenceReference.Row ref = DivergenceReference.row(a, c, o.kind(), 0, 1);
                                String where = o.kind() + " offset " + offset + " row " + i;
                                Approx.assertClose(where, ref.loss(), r.loss().getFloat(i), 1e-6 + 1e-4 * ref.loss());
                                for (int j = 0; j < vocab; j++) {
                                    Approx.assertClose(where + " gradient[" + j + "]", ref.gradient()[j],
                                            r.gradient().getFloat((long) i * vocab + j), 2e-6 * ref.gradientScale()[j] + 1e-30);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    @Test
    void weightsTargetsAndSpecialRows() {
        float nan = Float.NaN;
        float[] student = {0, 1, 2, nan, 0, 0, 5, 5, 5};
        float[] teacher = {2, 1, 0, 0, 0, 0, 1, 2, 3};
        try (Tensor s = Tensor.of(student, 3, 3); Tensor t = Tensor.of(teacher, 3, 3);
             Tensor ignoreNanRow = Tensor.ofInts(new int[] {0, -100, 2}, 3);
             Tensor noneCount = Tensor.of(new float[] {0, 0, 0}, 3)) {
            for (Backend b : ConformanceBackends.all()) {
                try (Divergence.Result r = Divergence.computeWithGradient(s, t,
                        Options.forwardKl().withReduction(Reduction.NONE).on(b), 1f)) {
                    assertTrue(Float.isNaN(r.loss().getFloat(1)), b + " the NaN row is NaN");
                    assertTrue(Float.isFinite(r.loss().getFloat(0)) && Float.isFinite(r.loss().getFloat(2)), b + " others are not");
                    assertTrue(Float.isNaN(r.gradient().getFloat(3)), b + " NaN gradient row");
                }
                try (Divergence.Result r = Divergence.computeWithGradient(s, t,
                        Options.forwardKl().withTargets(ignoreNanRow).on(b), 1f)) {
                    assertTrue(Float.isFinite(r.value()), b + " the ignored NaN row is not read");
                    assertEquals(2.0, r.weightSum(), b + "");
                    assertEquals(0f, r.gradient().getFloat(4), b + " ignored rows get a zero gradient");
                }
                try (Divergence.Result r = Divergence.computeWithGradient(s, t, Options.forwardKl().withWeights(noneCount).on(b), 1f)) {
                    assertEquals(0f, r.value(), b + " tokenMean over no tokens is 0, not NaN");
                }
            }
        }
    }

    /** p = (1, 2, 4, 8) / 15 for the teacher; min-p 0.2 keeps the last three classes. */
    @Test
    void teacherFilterComparesWithTheLpRegProxy() {
        float[] teacher = {0f, (float) Math.log(2), (float) Math.log(4), (float) Math.log(8)};
        float[] student = {0.5f, 0.1f, -0.2f, 0.3f};
        try (Tensor s = Tensor.of(student, 1, 4); Tensor t = Tensor.of(teacher, 1, 4)) {
            double[] ps = new double[4];
            double z = 0;
            for (int j = 0; j < 4; j++) {
                z += Math.exp(student[j]);
            }
            for (int j = 0; j < 4; j++) {
                ps[j] = Math.exp(student[j]) / z;
            }
            double[] proxy = {0, 2.0 / 14, 4.0 / 14, 8.0 / 14};
            double kl = 0;
            for (int j = 1; j < 4; j++) {
                kl += proxy[j] * Math.log(proxy[j] / ps[j]);
            }
            for (Backend b : ConformanceBackends.all()) {
                Options filtered = Options.forwardKl().withTeacherFilter(ProxyDistribution.Mode.MIN_P, 0.2f).on(b);
                try (Divergence.Result r = Divergence.computeWithGradient(s, t, filtered, 1f)) {
                    assertEquals(kl, r.value(), 1e-6, b + " KL(proxy || student)");
                    for (int j = 0; j < 4; j++) {
                        assertEquals(ps[j] - proxy[j], r.gradient().getFloat(j), 1e-6, b + " gradient " + j);
                    }
                }
                Options reverse = Options.reverseKl().withTeacherFilter(ProxyDistribution.Mode.MIN_P, 0.2f).on(b);
                try (Divergence.Result r = Divergence.compute(s, t, reverse)) {
                    assertEquals(Float.POSITIVE_INFINITY, r.value(), b + " the student has mass where the proxy has none");
                }
            }
        }
    }

    @Test
    void inPlaceEqualsOutOfPlace() {
        float[] zs = {0.3f, -1, 2, 0.5f, 4, -3, 1, 1, 0, 2, -1, 0.5f};
        float[] zt = {1, 0, 0.2f, -0.5f, 3, -2, 0, 2, 1, 0, 1, -1};
        for (Backend b : ConformanceBackends.all()) {
            for (Options o : new Options[] {Options.forwardKl(), Options.reverseKl(), Options.jsd(0.3f), Options.totalVariation()}) {
                try (Tensor s = Tensor.of(zs, 3, 4); Tensor t = Tensor.of(zt, 3, 4); Tensor inPlace = Tensor.of(zs, 3, 4);
                     Divergence.Result expected = Divergence.computeWithGradient(s, t, o.on(b), 2f);
                     Divergence.Result actual = Divergence.computeWithGradient(inPlace, t, o.on(b), 2f, inPlace)) {
                    assertEquals(expected.value(), actual.value(), 1e-6, b + " " + o.kind());
                    float[] e = expected.gradient().toFloatArray();
                    float[] a = inPlace.toFloatArray();
                    for (int i = 0; i < e.length; i++) {
                        assertEquals(e[i], a[i], 1e-6, b + " " + o.kind() + " element " + i);
                    }
                }
            }
        }
    }

    @Test
    void badInputsAreClearErrors() {
        try (Tensor s = Tensor.of(new float[6], 2, 3); Tensor t = Tensor.of(new float[6], 2, 3);
             Tensor wide = Tensor.of(new float[8], 2, 4); Tensor narrow = Tensor.of(new float[4], 2, 2);
             Tensor threeRows = Tensor.of(new float[9], 3, 3); Tensor flat = Tensor.of(new float[6], 6);
             Tensor ints = Tensor.ofInts(new int[6], 2, 3); Tensor bf16 = Tensor.ofFloats(new float[6], DType.BF16, 2, 3);
             Tensor w = Tensor.of(new float[] {1, 1}, 2); Tensor negative = Tensor.of(new float[] {1, -1}, 2);
             Tensor nanWeight = Tensor.of(new float[] {1, Float.NaN}, 2); Tensor shortW = Tensor.of(new float[] {1}, 1);
             Tensor y = Tensor.ofInts(new int[] {0, 3}, 2); Tensor grad = Tensor.of(new float[6], 2, 3);
             Tensor gradWrong = Tensor.of(new float[8], 2, 4)) {
            Options fkl = Options.forwardKl();
            expect(() -> Divergence.compute(flat, t, fkl), "student: expected rank 2");
            expect(() -> Divergence.compute(ints, t, fkl), "student: expected dtype");
            expect(() -> Divergence.compute(s, threeRows, fkl), "teacher");
            expect(() -> Divergence.compute(s, narrow, fkl), "at least 3 columns");
            expect(() -> Divergence.compute(s, wide, fkl), "withSharedPrefix");
            expect(() -> Divergence.compute(s, t, fkl.withTemperature(0f)), "temperature");
            expect(() -> Divergence.compute(s, t, fkl.withTemperature(Float.NaN)), "temperature");
            expect(() -> Divergence.compute(s, t, fkl.withTemperature(0x1p-130f)), "reciprocal 1/T is finite");
            expect(() -> Divergence.compute(s, t, Options.jsd(1.5f)), "beta");
            expect(() -> Divergence.compute(s, t, Options.jsd(Float.NaN)), "beta");
            expect(() -> Divergence.compute(s, t, fkl.withWeights(w).withTargets(y)), "not both");
            expect(() -> Divergence.compute(s, t, fkl.withWeights(negative)), "weights[1]");
            expect(() -> Divergence.compute(s, t, fkl.withWeights(nanWeight)), "weights[1]");
            expect(() -> Divergence.compute(s, t, fkl.withWeights(shortW)), "weights");
            expect(() -> Divergence.compute(s, t, fkl.withWeights(ints)), "weights");
            expect(() -> Divergence.compute(s, t, fkl.withTargets(y)), "targets[1]");
            expect(() -> Divergence.compute(s, t, null), "options");
            expect(() -> Divergence.computeWithGradient(s, t, fkl, Float.NaN), "gradScale");
            expect(() -> Divergence.computeWithGradient(s, t, fkl, 1f, gradWrong), "gradient");
            expect(() -> Divergence.computeWithGradient(s, t, fkl, 1f, t), "teacher");
            expect(() -> Divergence.computeWithGradient(s, t, Options.reverseKl().withExtrapolatedTeacher(grad, w), 1f,
                    grad), "extrapolation reference");
            expect(() -> Divergence.computeWithGradient(bf16, t, fkl, 1f, ints), "gradient: expected dtype");
            expect(() -> Divergence.computeWithGradient(s, t, fkl, 1f, null), "gradient");
            expect(() -> Divergence.compute(s, t, fkl.withTeacherFilter(ProxyDistribution.Mode.MIN_P, 0f)),
                    "teacherFilterThreshold");
            try (Divergence.Result r = Divergence.computeWithGradient(s, t, fkl.withReduction(Reduction.NONE), 1f, grad)) {
                assertThrows(IllegalStateException.class, r::value);
            }
        }
        Tensor closed = Tensor.of(new float[6], 2, 3);
        closed.close();
        try (Tensor t = Tensor.of(new float[6], 2, 3)) {
            assertThrows(IllegalStateException.class, () -> Divergence.compute(closed, t, Options.forwardKl()));
        }
    }

    /**
     * A student within 1e-3 or 1e-4 of its teacher (self-distillation, a student initialised from
     * the teacher): KL and JSD of 1e-9 .. 2e-7, below the fp32 sums' absolute error, once came out
     * negative (cuda-emu reverse KL -2.2e-7, CPU JSD -1.9e-8). Never below 0, and within the
     * documented absolute error of the float64 value.
     */
    @Test
    void divergencesOfNearIdenticalRowsAreNeverNegative() {
        int vocab = 32000;
        for (double eps : new double[] {1e-3, 1e-4}) {
            float[][] rows = DivergenceReference.nearIdenticalRows(vocab, eps);
            float[] zs = rows[0];
            float[] zt = rows[1];
            double[] t64 = new double[vocab];
            double[] s64 = new double[vocab];
            for (int j = 0; j < vocab; j++) {
                t64[j] = zt[j];
                s64[j] = zs[j];
            }
            for (Options o : new Options[] {Options.forwardKl(), Options.reverseKl(), Options.jsd(0.5f)}) {
                double expected = DivergenceReference.loss(s64, t64, o.kind(), o.beta(), 1);
                for (Backend b : ConformanceBackends.all()) {
                    try (Tensor s = Tensor.of(zs, 1, vocab); Tensor t = Tensor.of(zt, 1, vocab);
                         Divergence.Result res = Divergence.compute(s, t, o.on(b))) {
                        String at = b + " eps " + eps + " " + o.kind() + ": " + res.value() + " vs " + expected;
                        assertTrue(res.value() >= 0f, at);
                        assertEquals(expected, res.value(), 5e-7, at); // the documented few 1e-7
                    }
                }
            }
        }
    }
}
