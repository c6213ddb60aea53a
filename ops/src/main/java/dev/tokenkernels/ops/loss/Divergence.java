package dev.tokenkernels.ops.loss;

import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Backends;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.KernelBackend;
import dev.tokenkernels.runtime.Tensor;
import dev.tokenkernels.runtime.TokenKernelsException;

/**
 * Token-level divergences between a student and a teacher, with the gradient w.r.t. the student
 * logits computed in the same pass (the distillation losses of GKD, MiniLLM and DistiLLM).
 *
 * <p>Per row {@code i}, with {@code P_s = softmax(z_s / T)} (student) and {@code P_t = softmax(z_t / T)}
 * (teacher):
 * <ul>
 *   <li>{@link Kind#FORWARD_KL}: {@code KL(P_t || P_s) = sum_v P_t (log P_t - log P_s)};</li>
 *   <li>{@link Kind#REVERSE_KL}: {@code KL(P_s || P_t)};</li>
 *   <li>{@link Kind#JSD}, generalized with {@code beta} in [0, 1]: {@code M = beta P_t + (1 - beta) P_s},
 *       {@code beta KL(P_t || M) + (1 - beta) KL(P_s || M)}; {@code beta = 0} is defined as forward
 *       KL and {@code beta = 1} as reverse KL, as distillation libraries do (the formula itself
 *       degenerates to 0 there);</li>
 *   <li>{@link Kind#TOTAL_VARIATION}: {@code 0.5 sum_v |P_t - P_s|}.</li>
 * </ul>
 * Terms with zero probability contribute 0 ({@code 0 log 0 = 0}); an infinite KL (one side gives
 * 0 where the other does not) is {@code +inf}: forward KL's gradient {@code (p - q) / T} stays
 * finite, reverse KL's is not finite. A row
 * whose student or teacher logits contain NaN or {@code +inf}, or are all {@code -inf}, has no
 * distribution: its loss and gradient are NaN (give it weight 0 to leave it out).
 * A row's divergence is never negative: the fp32 sums leave an absolute error of up to a few
 * 1e-7 (CPU about 1e-8), more than the whole KL of a student within 1e-3 of its teacher, so a
 * row that sums below 0 reports 0, the divergences' lower bound (the gradient is unaffected).
 *
 * <p>Rows are weighted by {@code weights [N]} (F32, finite, >= 0; 0 = ignored) or by
 * {@code targets [N]} with an ignore index (weight 0 for ignored, else 1); rows of weight 0 are
 * not read, their loss and gradient are 0. The loss is reduced by {@link Reduction}. The gradient
 * is {@code gradScale * d(loss)/d(z_s)} (for {@link Reduction#NONE}, of the sum of the returned
 * values), {@code [N, V]}, into a new F32 tensor, or a caller buffer or the student logits in place
 * (F32, F16 or BF16: formed in fp32, rounded once).
 * No {@code [N, V]} probability matrix is allocated; extra memory is O(N) plus a few rows per
 * thread for F16/BF16 decoding.
 *
 * <p>Student and teacher may have different dtypes (F32, F16, BF16; fp32 math). A teacher with a
 * larger vocabulary is compared over the student's {@code V} classes (its softmax renormalized
 * over them) only when {@link Options#withSharedPrefix()} says so; otherwise it is an error.
 *
 * <p>No {@code T^2} factor is applied; multiply the loss and {@code gradScale} by it if your
 * recipe wants it.
 */
public final class Divergence {

    /** Which divergence to compute; the class description gives each formula. */
    public enum Kind {
        /** {@code KL(P_t || P_s)}. */
        FORWARD_KL,
        /** {@code KL(P_s || P_t)}. */
        REVERSE_KL,
        /** Generalized Jensen-Shannon divergence with mixture weight {@code beta}. */
        JSD,
        /** {@code 0.5 sum_v |P_t - P_s|}. */
        TOTAL_VARIATION
    }

    /**
     * Options of one call; start from {@link #forwardKl()}, {@link #reverseKl()},
     * {@link #jsd(float)} or {@link #totalVariation()}.
     *
     * @param beta the JSD mixture weight of the teacher, in [0, 1] (unused by the other kinds)
     * @param weights per-row weights [N] or null
     * @param targets per-row targets [N] (I32/I64) whose {@code ignoreIndex} rows are left out, or null
     * @param sharedPrefix compare over the student's vocabulary when the teacher's is larger
     * @param backend where to run, or null for {@link Backends#defaultBackend()}
     * @param teacherFilter the teacher is replaced by its {@link ProxyDistribution} (kept classes
     *     renormalized, the rest probability 0) before the divergence, or null for none
     * @param teacherFilterThreshold kappa or tau of the filter
     * @param extrapolationReference with {@code extrapolationAlpha}: the teacher's logits become
     *     {@code z_t + alpha_i (z_t - z_ref)} per row (see {@link #withExtrapolatedTeacher}); or null
     */
    public record Options(Kind kind, float beta, float temperature, Reduction reduction, Tensor weights,
                          Tensor targets, long ignoreIndex, boolean sharedPrefix, Backend backend,
                          ProxyDistribution.Mode teacherFilter, float teacherFilterThreshold,
                          Tensor extrapolationReference, Tensor extrapolationAlpha) {

        /**
         * Forward KL {@code KL(P_t || P_s)} at temperature 1, {@link Reduction#TOKEN_MEAN}, every row of weight 1
         * (ignore index {@link LogitStats#DEFAULT_IGNORE_INDEX} for targets), equal vocabularies, no teacher filter or
         * extrapolation, the default backend.
         */
        public static Options forwardKl() {
            return new Options(Kind.FORWARD_KL, 0f, 1f, Reduction.TOKEN_MEAN, null, null,
                    LogitStats.DEFAULT_IGNORE_INDEX, false, null, null, 0f, null, null);
        }

        /** Reverse KL {@code KL(P_s || P_t)}, with the defaults of {@link #forwardKl()}. */
        public static Options reverseKl() {
            return forwardKl().withKind(Kind.REVERSE_KL, 0f);
        }

        /** Generalized JSD; {@code beta = 0.5} is the symmetric Jensen-Shannon divergence. */
        public static Options jsd(float beta) {
            return forwardKl().withKind(Kind.JSD, beta);
        }

        /** Total variation {@code 0.5 sum_v |P_t - P_s|}, with the defaults of {@link #forwardKl()}. */
        public static Options totalVariation() {
            return forwardKl().withKind(Kind.TOTAL_VARIATION, 0f);
        }

        private Options withKind(Kind k, float b) {
            return new Options(k, b, temperature, reduction, weights, targets, ignoreIndex, sharedPrefix,
                    backend, teacherFilter, teacherFilterThreshold,
                    extrapolationReference, extrapolationAlpha);
        }

        /** Softmax temperature {@code T} of both sides (default 1): finite and > 0, see {@link Checks#temperature}. */
        public Options withTemperature(float t) {
            return new Options(kind, beta, t, reduction, weights, targets, ignoreIndex, sharedPrefix,
                    backend, teacherFilter, teacherFilterThreshold,
                    extrapolationReference, extrapolationAlpha);
        }

        /** How the per-row losses are reduced (default {@link Reduction#TOKEN_MEAN}). */
        public Options withReduction(Reduction r) {
            return new Options(kind, beta, temperature, r, weights, targets, ignoreIndex, sharedPrefix,
                    backend, teacherFilter, teacherFilterThreshold,
                    extrapolationReference, extrapolationAlpha);
        }

        /** Per-row weights {@code [N]} (F32, finite, >= 0; 0 leaves the row out); not together with targets. */
        public Options withWeights(Tensor w) {
            return new Options(kind, beta, temperature, reduction, w, targets, ignoreIndex, sharedPrefix,
                    backend, teacherFilter, teacherFilterThreshold,
                    extrapolationReference, extrapolationAlpha);
        }

        /**
         * Per-row targets {@code [N]} (I32 or I64): rows whose target is {@code ignore} get weight 0, the others 1; not
         * together with weights.
         */
        public Options withTargets(Tensor y, long ignore) {
            return new Options(kind, beta, temperature, reduction, weights, y, ignore, sharedPrefix,
                    backend, teacherFilter, teacherFilterThreshold,
                    extrapolationReference, extrapolationAlpha);
        }

        /**
         * Per-row targets as in {@link #withTargets(Tensor, long)}, with the current ignore index (default
         * {@link LogitStats#DEFAULT_IGNORE_INDEX}).
         */
        public Options withTargets(Tensor y) {
            return withTargets(y, ignoreIndex);
        }

        /**
         * Allows a teacher with more columns than the student, compared over the student's first {@code V} classes (the
         * teacher's softmax renormalized over them).
         */
        public Options withSharedPrefix() {
            return new Options(kind, beta, temperature, reduction, weights, targets, ignoreIndex, true,
                    backend, teacherFilter, teacherFilterThreshold,
                    extrapolationReference, extrapolationAlpha);
        }

        /** Runs on {@code b}; null (the default) means {@link Backends#defaultBackend()}. */
        public Options on(Backend b) {
            return new Options(kind, beta, temperature, reduction, weights, targets, ignoreIndex,
                    sharedPrefix, b, teacherFilter, teacherFilterThreshold,
                    extrapolationReference, extrapolationAlpha);
        }

        /**
         * Compares the student with the teacher's Lp-Reg proxy instead of the teacher: classes the
         * filter drops get probability 0 and the rest is renormalized ({@link ProxyDistribution}
         * defines the rule; it is applied to {@code z_t / T} with this call's temperature). With
         * forward KL this is {@code KL(proxy || P_s)}; reverse KL is {@code +inf} as soon as the
         * student gives probability to a dropped class (any finite student logit does), and that
         * row's gradient is then not finite either (infinite and NaN entries): use forward KL,
         * or {@link ProxyDistribution}'s log-probabilities, for a usable regularizer.
         * With {@link #withSharedPrefix()} the filter sees only the shared prefix: its max and
         * renormalization are over the student's {@code V} classes; with
         * {@link #withExtrapolatedTeacher} it filters {@code z*}.
         */
        public Options withTeacherFilter(ProxyDistribution.Mode mode, float threshold) {
            return new Options(kind, beta, temperature, reduction, weights, targets, ignoreIndex, sharedPrefix, backend,
                    mode, threshold, extrapolationReference, extrapolationAlpha);
        }

        /**
         * Replaces the teacher's logits by {@code z* = z_t + alpha_i (z_t - z_ref)} for row {@code i}
         * (computed in fp32 as {@code fma(alpha, z_t - z_ref, z_t)}, never stored as a tensor):
         * AlignDistil's token-adaptive logit extrapolation ({@code z_t} the DPO model,
         * {@code z_ref} the reverse-DPO or reference model), or with a constant
         * {@code alpha = w - 1} the weighted mix {@code w z_t + (1 - w) z_ref}. A class masked
         * ({@code -inf}) in the teacher or in the reference is masked in {@code z*}. A {@code z*}
         * beyond fp32's range is an infinite logit like any other: {@code -inf} masks the class,
         * {@code +inf} makes the row's loss NaN.
         *
         * @param reference logits of the teacher's shape (F32, F16 or BF16)
         * @param alpha F32 [N], finite
         */
        public Options withExtrapolatedTeacher(Tensor reference, Tensor alpha) {
            return new Options(kind, beta, temperature, reduction, weights, targets, ignoreIndex, sharedPrefix, backend,
                    teacherFilter, teacherFilterThreshold, reference, alpha);
        }

        /** The kind actually computed: JSD with beta 0 or 1 is forward or reverse KL. */
        Kind effectiveKind() {
            if (kind == Kind.JSD && beta == 0f) {
                return Kind.FORWARD_KL;
            }
            return kind == Kind.JSD && beta == 1f ? Kind.REVERSE_KL : kind;
        }
    }

    /**
     * The loss (F32 {@code [N]} for {@link Reduction#NONE}, else {@code [1]}), the gradient if one
     * was asked for, and the sum of the row weights. Closing closes what the call allocated, not
     * a caller's gradient buffer.
     */
    public static final class Result implements AutoCloseable {
        private final Tensor loss;
        private final Tensor gradient;
        private final boolean ownsGradient;
        private final double weightSum;

        Result(Tensor loss, Tensor gradient, boolean ownsGradient, double weightSum) {
            this.loss = loss;
            this.gradient = gradient;
            this.ownsGradient = ownsGradient;
            this.weightSum = weightSum;
        }

        /** The loss, F32: {@code [N]} per-row values for {@link Reduction#NONE}, else {@code [1]}. */
        public Tensor loss() {
            return loss;
        }

        /**
         * The loss as a number: the reduced loss, or with {@link Reduction#NONE} the single token's
         * when there is one (more is an error).
         */
        public float value() {
            if (loss.elementCount() != 1 || loss.rank() != 1 || loss.dim(0) != 1) {
                throw new IllegalStateException("loss is per token (Reduction.NONE): read loss() instead");
            }
            return loss.getFloat(0);
        }

        /** The gradient w.r.t. the student logits, or null when only the loss was computed. */
        public Tensor gradient() {
            return gradient;
        }

        /** Sum of the row weights (the number of rows that count, with targets). */
        public double weightSum() {
            return weightSum;
        }

        @Override
        public void close() {
            loss.close();
            if (ownsGradient && gradient != null) {
                gradient.close();
            }
        }
    }

    private Divergence() {
    }

    /** The loss only. */
    public static Result compute(Tensor student, Tensor teacher, Options options) {
        return run(student, teacher, options, 0f, null, false);
    }

    /** The loss and {@code gradScale * d(loss)/d(student)} in a new F32 tensor {@code [N, V]}. */
    public static Result computeWithGradient(Tensor student, Tensor teacher, Options options, float gradScale) {
        return run(student, teacher, options, gradScale, null, true);
    }

    /**
     * The loss and {@code gradScale * d(loss)/d(student)} written into {@code gradient}
     * ({@code [N, V]}, F32, F16 or BF16: each value formed in fp32 and rounded once, to nearest
     * even), which may be {@code student} itself for an in-place update.
     */
    public static Result computeWithGradient(Tensor student, Tensor teacher, Options options, float gradScale,
                                             Tensor gradient) {
        Checks.notNull("gradient", gradient);
        return run(student, teacher, options, gradScale, gradient, true);
    }

    private static Result run(Tensor student, Tensor teacher, Options options, float gradScale, Tensor gradientOut,
                              boolean withGradient) {
        Checks.notNull("student", student);
        Checks.notNull("teacher", teacher);
        if (options == null) {
            throw new IllegalArgumentException("options: expected Options (e.g. Options.forwardKl()), got null");
        }
        Checks.rank("student", student, 2, "[N, V]");
        Checks.rank("teacher", teacher, 2, "[N, V]");
        Checks.dtype("student", student, DType.F32, DType.F16, DType.BF16);
        Checks.dtype("teacher", teacher, DType.F32, DType.F16, DType.BF16);
        long rows = student.dim(0);
        long vocab = student.dim(1);
        Checks.require(rows <= Integer.MAX_VALUE, "student", "N < 2^31 rows", rows);
        Checks.require(vocab >= 1 && vocab <= Integer.MAX_VALUE, "student", "1 <= V < 2^31 columns", vocab);
        Checks.dim("teacher", teacher, 0, rows, "N, the rows of student");
        long teacherVocab = teacher.dim(1);
        if (teacherVocab != vocab) {
            Checks.require(teacherVocab > vocab && options.sharedPrefix(), "teacher",
                    teacherVocab > vocab ? vocab + " columns like student (or Options.withSharedPrefix() to compare over"
                            + " the first " + vocab + ")" : "at least " + vocab + " columns, the student's vocabulary",
                    teacherVocab);
        }
        Checks.require(options.kind() != null, "kind", "a Divergence.Kind", "null");
        Checks.require(options.reduction() != null, "reduction", "a Reduction", "null");
        Checks.temperature("temperature", options.temperature());
        if (options.kind() == Kind.JSD) {
            Checks.require(options.beta() >= 0f && options.beta() <= 1f, "beta", "a value in [0, 1]", options.beta());
        }
        Checks.require(Float.isFinite(gradScale), "gradScale", "a finite number", gradScale);
        float[] alpha = null;
        if (options.extrapolationReference() != null || options.extrapolationAlpha() != null) {
            Tensor ref = Checks.notNull("extrapolationReference", options.extrapolationReference());
            Tensor a = Checks.notNull("extrapolationAlpha", options.extrapolationAlpha());
            Checks.rank("extrapolationReference", ref, 2, "[N, V] like teacher");
            Checks.dtype("extrapolationReference", ref, DType.F32, DType.F16, DType.BF16);
            Checks.dim("extrapolationReference", ref, 0, rows, "N, the rows of teacher");
            Checks.dim("extrapolationReference", ref, 1, teacherVocab, "the columns of teacher");
            Checks.rank("extrapolationAlpha", a, 1, "[N]");
            Checks.dtype("extrapolationAlpha", a, DType.F32);
            Checks.dim("extrapolationAlpha", a, 0, rows, "N, the rows of teacher");
            alpha = new float[(int) rows];
            for (int i = 0; i < rows; i++) {
                alpha[i] = a.getFloat(i);
                Checks.require(Float.isFinite(alpha[i]), "extrapolationAlpha[" + i + "]", "a finite number", alpha[i]);
            }
            ref.segment(); // closed tensors fail here
        }
        if (options.teacherFilter() != null) {
            Checks.require(options.teacherFilterThreshold() > 0f && options.teacherFilterThreshold() <= 1f,
                    "teacherFilterThreshold", "a value in (0, 1]", options.teacherFilterThreshold());
        }
        Checks.require(options.weights() == null || options.targets() == null, "weights", "weights or targets, not both",
                "both");
        if (withGradient && gradientOut != null) {
            Checks.rank("gradient", gradientOut, 2, "[N, V]");
            Checks.dtype("gradient", gradientOut, DType.F32, DType.F16, DType.BF16);
            Checks.dim("gradient", gradientOut, 0, rows, "N, the rows of student");
            Checks.dim("gradient", gradientOut, 1, vocab, "V, the columns of student");
            Checks.apart("gradient", gradientOut, "student", student, true);
            Checks.apart("gradient", gradientOut, "teacher", teacher, false);
            if (options.extrapolationReference() != null) { // it would overwrite the caller's logits
                Checks.apart("gradient", gradientOut, "the extrapolation reference", options.extrapolationReference(),
                        false);
            }
        }
        float[] weights = rowWeights(options.weights(), options.targets(), options.ignoreIndex(), (int) rows, vocab,
                "student");
        student.segment(); // closed tensors fail here, before any work
        teacher.segment();
        double weightSum = 0;
        for (float w : weights) {
            weightSum += w;
        }
        double factor = options.reduction().factor(rows, weightSum);
        float invT = 1f / options.temperature();
        float[] rowLoss = new float[(int) rows];
        float[] gradCoef = null;
        if (withGradient) {
            gradCoef = new float[(int) rows];
            for (int i = 0; i < rows; i++) {
                gradCoef[i] = (float) (gradScale * factor * weights[i] * invT);
            }
        }
        Tensor gradient = withGradient ? (gradientOut != null ? gradientOut : Tensor.allocate(DType.F32, rows, vocab)) : null;
        boolean owns = withGradient && gradientOut == null;
        try {
            DivergenceRows job = new DivergenceRows(student, teacher, options.effectiveKind(), options.beta(), invT,
                    weights, gradCoef, gradient, rowLoss, options.teacherFilter(),
                    (float) Math.log(options.teacherFilterThreshold()), options.extrapolationReference(), alpha);
            Backend backend = Backends.select(options.backend());
            if (backend instanceof CpuBackend cpu) {
                DivergenceCpu.run(cpu, job);
            } else if (backend instanceof KernelBackend gpu) {
                DivergenceKernel.run(gpu, job);
            } else {
                throw new TokenKernelsException("divergence cannot run on backend '" + backend.name()
                        + "': it is neither the cpu backend nor a kernel backend");
            }
            return new Result(reduce(rowLoss, weights, options.reduction(), factor), gradient, owns, weightSum);
        } catch (RuntimeException | Error e) {
            if (owns) {
                gradient.close();
            }
            throw e;
        }
    }

    /**
     * The weight of each row: the weights tensor, 0/1 from the targets, or all 1. {@code rowsOf}
     * names the input whose N rows they must match, in error messages.
     */
    static float[] rowWeights(Tensor weights, Tensor targets, long ignoreIndex, int rows, long vocab, String rowsOf) {
        float[] w = new float[rows];
        if (weights != null) {
            Tensor t = weights;
            Checks.rank("weights", t, 1, "[N]");
            Checks.dim("weights", t, 0, rows, "N, the rows of " + rowsOf);
            Checks.dtype("weights", t, DType.F32);
            for (int i = 0; i < rows; i++) {
                w[i] = t.getFloat(i);
                if (!(w[i] >= 0f) || w[i] == Float.POSITIVE_INFINITY) {
                    throw new IllegalArgumentException("weights[" + i + "]: expected a finite weight >= 0, got " + w[i]);
                }
            }
        } else if (targets != null) {
            Tensor t = targets;
            Checks.rank("targets", t, 1, "[N]");
            Checks.dim("targets", t, 0, rows, "N, the rows of " + rowsOf);
            Checks.dtype("targets", t, DType.I32, DType.I64);
            for (int i = 0; i < rows; i++) {
                long y = t.getLong(i);
                if (y != ignoreIndex && (y < 0 || y >= vocab)) {
                    throw new IllegalArgumentException("targets[" + i + "]: expected a class index in [0, " + vocab
                            + ") or ignoreIndex " + ignoreIndex + ", got " + y);
                }
                w[i] = y == ignoreIndex ? 0f : 1f;
            }
        } else {
            java.util.Arrays.fill(w, 1f);
        }
        return w;
    }

    static Tensor reduce(float[] rowLoss, float[] weights, Reduction reduction, double factor) {
        if (reduction == Reduction.NONE) {
            Tensor out = Tensor.allocate(DType.F32, rowLoss.length);
            for (int i = 0; i < rowLoss.length; i++) {
                out.setFloat(i, weights[i] == 0f ? 0f : weights[i] * rowLoss[i]);
            }
            return out;
        }
        double sum = 0;
        for (int i = 0; i < rowLoss.length; i++) {
            if (weights[i] != 0f) {
                sum += (double) weights[i] * rowLoss[i];
            }
        }
        Tensor out = Tensor.allocate(DType.F32, 1);
        out.setFloat(0, (float) (sum * factor));
        return out;
    }
}
