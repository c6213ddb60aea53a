package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.Divergence;
import dev.tokenkernels.ops.loss.Divergence.Kind;
import dev.tokenkernels.ops.loss.ProxyDistribution;
import dev.tokenkernels.ops.loss.Reduction;
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

/** Divergence losses and gradients on random shapes, every backend, against the float64 reference. */
class DivergenceProperties {

    @Property(tries = 150)
    void lossAndGradientMatchTheReference(@ForAll @IntRange(min = 1, max = 5) int rows,
                                          @ForAll("vocabularies") int vocab,
                                          @ForAll Kind kind,
                                          @ForAll("betas") float beta,
                                          @ForAll("temperatures") float temperature,
                                          @ForAll("magnitudes") float magnitude,
                                          @ForAll("dtypes") DType studentType,
                                          @ForAll("dtypes") DType teacherType,
                                          @ForAll Reduction reduction,
                                          @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        int extra = random.nextInt(3) == 0 ? 1 + random.nextInt(5) : 0; // teacher vocabulary beyond the student's
        float[] zs = new float[rows * vocab];
        float[] zt = new float[rows * (vocab + extra)];
        fillPair(random, zs, zt, rows, vocab, extra, magnitude);
        float[] weights = new float[rows];
        for (int i = 0; i < rows; i++) {
            weights[i] = random.nextInt(4) == 0 ? 0f : random.nextInt(2) == 0 ? 1f : (float) random.nextDouble(0.1, 3);
        }
        float gradScale = (float) random.nextDouble(-2, 2);
        boolean inPlace = studentType == DType.F32 && random.nextBoolean();
        try (Tensor student = Tensor.ofFloats(zs, studentType, rows, vocab);
             Tensor teacher = Tensor.ofFloats(zt, teacherType, rows, vocab + extra);
             Tensor w = Tensor.of(weights, rows)) {
            float[] s = student.toFloatArray(); // what the op sees after rounding to the dtype
            float[] t = teacher.toFloatArray();
            Divergence.Options options = (kind == Kind.JSD ? Divergence.Options.jsd(beta)
                    : kind == Kind.REVERSE_KL ? Divergence.Options.reverseKl()
                    : kind == Kind.TOTAL_VARIATION ? Divergence.Options.totalVariation() : Divergence.Options.forwardKl())
                    .withTemperature(temperature).withReduction(reduction).withWeights(w);
            if (extra > 0) {
                options = options.withSharedPrefix();
            }
            // Sometimes the teacher is replaced by its Lp-Reg proxy. Not with reverse KL: it is +inf
            // whenever the student gives mass to a dropped class (a worked example checks that), and
            // whether fp32 sees that mass (e^-90 flushes to 0) is not a property of the op.
            boolean reverse = kind == Kind.REVERSE_KL || kind == Kind.JSD && beta == 1f;
            ProxyDistribution.Mode filter = reverse ? null : switch (random.nextInt(5)) {
                case 0 -> ProxyDistribution.Mode.MIN_P;
                case 1 -> ProxyDistribution.Mode.FIXED;
                default -> null;
            };
            float filterThreshold = random.nextBoolean() ? 0.02f : (float) random.nextDouble(1e-5, 1);
            // Sometimes the teacher is AlignDistil's extrapolation z_t + alpha (z_t - z_ref).
            Tensor reference = null;
            Tensor alphas = null;
            if (random.nextInt(5) == 0) {
                float[] r = new float[t.length];
                float[] a = new float[rows];
                for (int k = 0; k < r.length; k++) {
                    // Now and then a class masked in the reference only: it is masked in z* too (not with
                    // reverse KL, for the reason given at the filter above).
                    boolean masked = t[k] == Float.NEGATIVE_INFINITY || !reverse && random.nextInt(50) == 0;
                    r[k] = masked ? Float.NEGATIVE_INFINITY
                            : (float) (t[k] + random.nextGaussian() * magnitude * 0.3);
                }
                for (int i = 0; i < rows; i++) {
                    a[i] = random.nextInt(6) == 0 ? 0f : (float) random.nextDouble(-0.5, 3);
                }
                reference = Tensor.ofFloats(r, teacherType, rows, vocab + extra);
                alphas = Tensor.of(a, rows);
                options = options.withExtrapolatedTeacher(reference, alphas);
                t = extrapolated(t, reference.toFloatArray(), a, vocab + extra);
            }
            if (filter != null) {
                options = options.withTeacherFilter(filter, filterThreshold);
                t = filteredTeacher(t, rows, vocab, vocab + extra, filter, filterThreshold, temperature);
            }
            for (Backend backend : ConformanceBackends.all()) {
                String where = backend + " " + kind + " beta=" + beta + " T=" + temperature + " " + studentType + "/"
                        + teacherType + " V=" + vocab + "+" + extra + " " + reduction + (inPlace ? " in place" : "");
                Tensor target = inPlace ? Tensor.ofFloats(s, DType.F32, rows, vocab) : null;
                try (Divergence.Result r = inPlace
                        ? Divergence.computeWithGradient(target, teacher, options.on(backend), gradScale, target)
                        : Divergence.computeWithGradient(student, teacher, options.on(backend), gradScale)) {
                    check(where, s, t, rows, vocab, vocab + extra, kind, beta, temperature, weights, reduction, gradScale, r);
                    if (!inPlace) { // the loss alone takes its own paths (total variation skips a sum): the same loss
                        try (Divergence.Result lossOnly = Divergence.compute(student, teacher, options.on(backend))) {
                            for (long i = 0; i < r.loss().elementCount(); i++) {
                                // not bitwise: the Vector API leaves the order of a float lane sum open
                                float withGradient = r.loss().getFloat(i);
                                float alone = lossOnly.loss().getFloat(i);
                                if (Float.isNaN(withGradient)) { // a row without distribution (e.g. its only class masked)
                                    assertTrue(Float.isNaN(alone), where + " loss without gradient " + i + ": " + alone);
                                } else {
                                    assertEquals(withGradient, alone, 1e-6f * (1 + Math.abs(withGradient)),
                                            where + " loss without gradient " + i);
                                }
                            }
                        }
                    }
                } finally {
                    if (target != null) {
                        target.close();
                    }
                }
            }
            if (reference != null) {
                reference.close();
                alphas.close();
            }
        }
    }

    /** The extrapolated teacher as the op rounds it: fma(alpha, z - z_ref, z); masked stays masked. */
    private static float[] extrapolated(float[] t, float[] r, float[] alpha, int stride) {
        float[] out = new float[t.length];
        for (int k = 0; k < t.length; k++) {
            float a = alpha[k / stride];
            boolean masked = t[k] == Float.NEGATIVE_INFINITY || r[k] == Float.NEGATIVE_INFINITY;
            out[k] = masked ? Float.NEGATIVE_INFINITY : Math.fma(a, t[k] - r[k], t[k]);
        }
        return out;
    }

    /** The reference's own gradient against central finite differences of its loss, in float64. */
    @Property(tries = 60)
    void referenceGradientMatchesFiniteDifferences(@ForAll @IntRange(min = 2, max = 12) int vocab,
                                                   @ForAll Kind kind,
                                                   @ForAll("betas") float beta,
                                                   @ForAll("temperatures") float temperature,
                                                   @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        double[] zs = new double[vocab];
        double[] zt = new double[vocab];
        for (int j = 0; j < vocab; j++) {
            zs[j] = random.nextGaussian() * 2;
            zt[j] = random.nextGaussian() * 2;
        }
        double[] gradient = DivergenceReference.row(zs, zt, kind, beta, temperature).gradient();
        double h = 1e-6;
        for (int j = 0; j < vocab; j++) {
            double saved = zs[j];
            zs[j] = saved + h;
            double up = DivergenceReference.loss(zs, zt, kind, beta, temperature);
            zs[j] = saved - h;
            double down = DivergenceReference.loss(zs, zt, kind, beta, temperature);
            zs[j] = saved;
            double numeric = (up - down) / (2 * h);
            Approx.assertClose(kind + " d/dz_s[" + j + "]", numeric, (float) gradient[j], 1e-6 * (1 + Math.abs(numeric)));
        }
    }

    /**
     * The teacher as the reference sees it under a filter: dropped classes -inf; a row whose
     * membership rounding decides (FIXED) is all NaN, which check() skips.
     */
    private static float[] filteredTeacher(float[] t, int rows, int vocab, int stride, ProxyDistribution.Mode mode,
                                           float threshold, float temperature) {
        float[] out = t.clone();
        for (int i = 0; i < rows; i++) {
            float[] kept = ProxyDistributionReference.filtered(t, i * stride, vocab, mode, threshold, temperature);
            for (int j = 0; j < vocab; j++) {
                out[i * stride + j] = kept == null ? Float.NaN : kept[j];
            }
        }
        return out;
    }

    static void check(String where, float[] s, float[] t, int rows, int vocab, int teacherVocab, Kind kind, float beta,
                      float temperature, float[] weights, Reduction reduction, float gradScale, Divergence.Result r) {
        double weightSum = 0;
        for (float w : weights) {
            weightSum += w;
        }
        double factor = switch (reduction) {
            case NONE, SUM -> 1;
            case TOKEN_MEAN -> weightSum == 0 ? 0 : 1 / weightSum;
            case BATCH_MEAN -> 1.0 / rows;
        };
        double total = 0;
        double totalScale = 0;
        boolean skipped = false;
        for (int i = 0; i < rows; i++) {
            double maxAbs = 0;
            double[] zs = new double[vocab];
            double[] zt = new double[vocab];
            for (int j = 0; j < vocab; j++) {
                zs[j] = s[i * vocab + j];
                zt[j] = t[i * teacherVocab + j];
                maxAbs = Math.max(maxAbs, Math.max(finiteAbs(zs[j]), finiteAbs(zt[j])) / temperature);
            }
            String row = where + " row " + i;
            if (weights[i] != 0f && Float.isNaN(t[i * teacherVocab])) {
                skipped = true; // a filtered teacher row that rounding decides: not compared
                continue;
            }
            if (weights[i] == 0f) {
                for (int j = 0; j < vocab; j++) {
                    assertEquals(0f, r.gradient().getFloat((long) i * vocab + j), row + " ignored row gradient");
                }
                if (reduction == Reduction.NONE) {
                    assertEquals(0f, r.loss().getFloat(i), row + " ignored row loss");
                }
                continue;
            }
            DivergenceReference.Row ref = DivergenceReference.row(zs, zt, kind, beta, temperature);
            double relative = 2e-5 + 0x1p-21 * maxAbs;
            double lossTolerance = relative * (1 + ref.lossScale());
            if (reduction == Reduction.NONE) {
                Approx.assertClose(row + " loss", weights[i] * ref.loss(), r.loss().getFloat(i),
                        weights[i] * lossTolerance);
            }
            total += weights[i] * ref.loss();
            totalScale += weights[i] * lossTolerance;
            double coef = gradScale * factor * weights[i];
            for (int j = 0; j < vocab; j++) {
                double expected = coef * ref.gradient()[j];
                double tolerance = Math.abs(coef) * (relative * ref.gradientScale()[j] + ref.gradientSlack()[j]) + 1e-30;
                Approx.assertClose(row + " gradient[" + j + "]", expected, r.gradient().getFloat((long) i * vocab + j),
                        tolerance);
            }
        }
        if (reduction != Reduction.NONE && !skipped) {
            Approx.assertClose(where + " reduced loss", total * factor, r.value(), totalScale * factor + 1e-6 * Math.abs(total * factor));
        }
        assertEquals(weightSum, r.weightSum(), 1e-9 * (1 + weightSum), where + " weight sum");
    }

    private static double finiteAbs(double v) {
        return Double.isFinite(v) ? Math.abs(v) : 0;
    }

    /**
     * Student and teacher logits of the given scale, correlated (distillation pairs are close),
     * with some classes masked (-inf) in both, never a whole row.
     */
    private static void fillPair(SplittableRandom random, float[] zs, float[] zt, int rows, int vocab, int extra,
                                 float magnitude) {
        double masked = random.nextInt(3) == 0 ? random.nextDouble() * 0.5 : 0;
        double closeness = random.nextDouble();
        for (int i = 0; i < rows; i++) {
            int live = random.nextInt(vocab);
            for (int j = 0; j < vocab + extra; j++) {
                double base = random.nextGaussian() * magnitude;
                double teacher = closeness * base + (1 - closeness) * random.nextGaussian() * magnitude;
                boolean mask = j != live && j < vocab && random.nextDouble() < masked;
                if (j < vocab) {
                    zs[i * vocab + j] = mask ? Float.NEGATIVE_INFINITY : (float) base;
                }
                zt[i * (vocab + extra) + j] = mask ? Float.NEGATIVE_INFINITY : (float) teacher;
            }
        }
    }

    @Provide
    Arbitrary<Integer> vocabularies() {
        return Arbitraries.oneOf(Arbitraries.integers().between(1, 40), Arbitraries.integers().between(41, 5000),
                Arbitraries.integers().between(5001, 40000), Arbitraries.of(1, 15, 16, 17, 4095, 4096, 4097));
    }

    @Provide
    Arbitrary<Float> betas() {
        return Arbitraries.oneOf(Arbitraries.of(0f, 0.5f, 1f, 0.1f, 0.9f), Arbitraries.floats().between(0.01f, 0.99f));
    }

    @Provide
    Arbitrary<Float> temperatures() {
        return Arbitraries.oneOf(Arbitraries.of(1f, 0.5f, 2f), Arbitraries.floats().between(0.1f, 10f));
    }

    @Provide
    Arbitrary<Float> magnitudes() {
        return Arbitraries.of(0f, 0.01f, 1f, 3f, 10f, 100f);
    }

    @Provide
    Arbitrary<DType> dtypes() {
        return Arbitraries.of(DType.F32, DType.F16, DType.BF16);
    }
}
