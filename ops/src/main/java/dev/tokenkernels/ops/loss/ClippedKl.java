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
 * Distribution-adaptive clipped KL (DAC-KL; Zhang et al., 2024, "Knowledge Distillation with
 * Distribution-Adaptive Clipping"): a KL divergence between student and teacher restricted, per
 * token, to a band of the teacher's cumulative probability mass. The paper's exact rule is not
 * public; this is the rule this project implements.
 *
 * <p>Per row {@code i}, with {@code p = softmax(z_t / T)} (teacher) and {@code q = softmax(z_s / T)}
 * (student): order the classes by the teacher's {@code x = z_t * (1/T)}, descending, ties by class
 * index; {@code c_j} is the teacher mass strictly before class {@code j} in that order. With the
 * caller's bounds {@code 0 <= l_i < u_i <= 1} (e.g. from a small learnable network), class
 * {@code j} has the gate
 * <pre>  g_j = sigma((c_j - l_i) / gamma) * sigma((u_i - c_j) / gamma)</pre>
 * where a factor whose argument is below {@code -20} counts as 0 (it is below {@code 2.1e-9}:
 * the gate is a band, not a tail of tiny weights); {@code gamma = 0} is the hard rule
 * {@code g_j = [l_i <= c_j < u_i]}, where {@code u_i = 1} passes every class of non-zero teacher
 * probability however {@code c_j} rounds near 1. A class the teacher masks ({@code z_t = -inf},
 * probability 0, e.g. padding of a smaller teacher vocabulary) has {@code g_j = 0} for every
 * {@code u_i} and both rules: it would otherwise add student mass the teacher has none of.
 * {@link Options#withTargetAlwaysKept()} sets the target's gate to 1 (unless the teacher masks it).
 * Both distributions are restricted by the gate and renormalized,
 * {@code P~_t = g p / sum g p}, {@code P~_s = g q / sum g q}, and the loss is
 * {@code KL(P~_t || P~_s)} ({@link Divergence.Kind#FORWARD_KL}, the default) or
 * {@code KL(P~_s || P~_t)}.
 *
 * <p>Gradients: w.r.t. the student logits ({@code (P~_s - P~_t) / T} for forward KL) as in
 * {@link Divergence}, and w.r.t. {@code l} and {@code u} through the gates (0 for the hard rule,
 * for factors counted as 0, and for a target kept by the option). Both are scaled by
 * {@code gradScale}, the reduction and the row weight. Per row the result also has the teacher
 * mass the band kept, {@code sum g p}; a row where it is 0 (the band holds no class of non-zero
 * teacher probability: possible with the hard rule or a narrow soft band) has loss 0 and zero
 * gradients. Band masses are summed relative to the band's own max when their sum relative to the
 * row's max is below {@code 2^-40} (a band far below the row's max), so they stay exact. A band
 * may hold classes where the student is {@code -inf} (probability 0): they add nothing to the
 * student's kept mass; for reverse KL they add nothing at all, for forward KL one of them with
 * teacher mass makes the loss {@code +inf} (and a soft band's bound gradients NaN). A student with
 * no probability at all on the band gives {@code +inf} and a NaN gradient in both directions.
 * As {@link Divergence}, a row whose KL sums below 0 (rounding, for a student within 1e-4 of its
 * teacher) reports 0; the gradients are unaffected.
 *
 * <p>How the band is found without sorting the row: one pass puts every class in one of
 * {@value #BUCKETS} buckets by {@code max(x) - x_j} ({@value #BUCKETS_PER_UNIT} per unit, the last
 * bucket open-ended) and sums the teacher mass per bucket (fp64); a prefix sum over the buckets,
 * divided by their total, gives each bucket's start {@code C_b}, so the band's cut points are
 * located to a bucket. A bucket entirely inside, below or above the band gives all its classes the
 * same gate (from {@code c = C_b}). Only a bucket that a cut point splits ({@code C_b < l < C_b + m_b},
 * likewise {@code u}; hard rule), or that meets {@code [l - 20 gamma, l + 20 gamma]} or
 * {@code [u - 20 gamma, u + 20 gamma]} and holds more than {@code 2^-22 gamma} of mass (soft rule;
 * below that, ordering it could move a gate by at most {@code 2^-23}), has its classes ordered
 * exactly. Cost: the passes of a {@link Divergence} plus one bucketing pass, plus, for the
 * {@code w} classes in the ordered buckets: on the CPU a radix sort, {@code O(w)}; in the CUDA
 * kernel a ranking in shared memory, {@code O(w^2 / 256)} per thread, when
 * {@code w <= }{@value #KERNEL_RANKED_CLASSES}, and otherwise a second launch for such rows that
 * reads the row again and bitonic-sorts the {@code w} classes in global scratch,
 * {@code O(w log^2 w / 256)} per thread (20 bytes of scratch per class, {@code w} rounded up to a
 * power of two; the rows share launches of at most 256 MiB of scratch, or one row's when it needs
 * more, a cap set by the system property {@code tokenkernels.clippedKl.scratchBytes}). {@code w} is small for a
 * peaked teacher and a narrow band, up to {@code V} for a flat teacher or a wide soft band.
 *
 * <p>Weights, targets, reductions, temperature and the gradient buffer options are those of
 * {@link Divergence}; {@code l} and {@code u} are checked on rows of non-zero weight only. No
 * {@code T^2} factor is applied.
 */
public final class ClippedKl {
    /** Buckets of the cut-point search. */
    public static final int BUCKETS = 1024;
    /** Buckets per unit of {@code max(x) - x}: neighbouring buckets differ in probability by e^(1/8). */
    public static final int BUCKETS_PER_UNIT = 8;
    /** A gate factor whose argument is below minus this counts as 0. */
    public static final float GATE_CUTOFF = 20f;
    /** Classes the CUDA kernel ranks in shared memory per row. */
    public static final int KERNEL_RANKED_CLASSES = 1024;

    /**
     * Options of one call; start from {@link #forwardKl(float)} or {@link #reverseKl(float)}.
     *
     * @param direction {@link Divergence.Kind#FORWARD_KL} or {@link Divergence.Kind#REVERSE_KL}
     * @param gamma the gate's softness: 0, the hard band, or a normal float {@code >= 1.18e-38}
     * @param targetAlwaysKept the target class (from {@code targets}) has gate 1
     */
    public record Options(Divergence.Kind direction, float gamma, float temperature, Reduction reduction,
                          Tensor weights, Tensor targets, long ignoreIndex, boolean targetAlwaysKept, Backend backend) {

        /**
         * Forward KL {@code KL(P~_t || P~_s)} with gate softness {@code gamma} (finite, >= 0; 0 the hard band):
         * temperature 1, {@link Reduction#TOKEN_MEAN}, every row of weight 1, no target kept, the default backend.
         */
        public static Options forwardKl(float gamma) {
            return new Options(Divergence.Kind.FORWARD_KL, gamma, 1f, Reduction.TOKEN_MEAN, null, null,
                    LogitStats.DEFAULT_IGNORE_INDEX, false, null);
        }

        /**
         * Reverse KL {@code KL(P~_s || P~_t)} with gate softness {@code gamma}; the other defaults as
         * {@link #forwardKl(float)}.
         */
        public static Options reverseKl(float gamma) {
            return new Options(Divergence.Kind.REVERSE_KL, gamma, 1f, Reduction.TOKEN_MEAN, null, null,
                    LogitStats.DEFAULT_IGNORE_INDEX, false, null);
        }

        /** Softmax temperature {@code T} of both sides (default 1): see {@link Checks#temperature}. */
        public Options withTemperature(float t) {
            return new Options(direction, gamma, t, reduction, weights, targets, ignoreIndex, targetAlwaysKept, backend);
        }

        /** How the per-row losses are reduced (default {@link Reduction#TOKEN_MEAN}). */
        public Options withReduction(Reduction r) {
            return new Options(direction, gamma, temperature, r, weights, targets, ignoreIndex, targetAlwaysKept, backend);
        }

        /** Per-row weights {@code [N]} (F32, finite, >= 0; 0 leaves the row out); not together with targets. */
        public Options withWeights(Tensor w) {
            return new Options(direction, gamma, temperature, reduction, w, targets, ignoreIndex, targetAlwaysKept, backend);
        }

        /**
         * Per-row targets {@code [N]} (I32 or I64): rows whose target is {@code ignore} get weight 0, the others 1; not
         * together with weights.
         */
        public Options withTargets(Tensor y, long ignore) {
            return new Options(direction, gamma, temperature, reduction, weights, y, ignore, targetAlwaysKept, backend);
        }

        /**
         * Per-row targets as in {@link #withTargets(Tensor, long)}, with the current ignore index (default
         * {@link LogitStats#DEFAULT_IGNORE_INDEX}).
         */
        public Options withTargets(Tensor y) {
            return withTargets(y, ignoreIndex);
        }

        /** The target class of each row keeps gate 1 (needs {@link #withTargets}). */
        public Options withTargetAlwaysKept() {
            return new Options(direction, gamma, temperature, reduction, weights, targets, ignoreIndex, true, backend);
        }

        /** Runs on {@code b}; null (the default) means {@link Backends#defaultBackend()}. */
        public Options on(Backend b) {
            return new Options(direction, gamma, temperature, reduction, weights, targets, ignoreIndex, targetAlwaysKept, b);
        }
    }

    /**
     * The loss (F32 {@code [N]} for {@link Reduction#NONE}, else {@code [1]}), the kept teacher
     * mass per row, and with gradients those w.r.t. the student logits, {@code l} and {@code u}.
     * Closing closes what the call allocated, not a caller's gradient buffer.
     */
    public static final class Result implements AutoCloseable {
        private final Tensor loss;
        private final Tensor keptMass;
        private final Tensor gradient;
        private final boolean ownsGradient;
        private final Tensor lowerGradient;
        private final Tensor upperGradient;
        private final double weightSum;

        Result(Tensor loss, Tensor keptMass, Tensor gradient, boolean ownsGradient, Tensor lowerGradient,
               Tensor upperGradient, double weightSum) {
            this.loss = loss;
            this.keptMass = keptMass;
            this.gradient = gradient;
            this.ownsGradient = ownsGradient;
            this.lowerGradient = lowerGradient;
            this.upperGradient = upperGradient;
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

        /** F32 [N]: {@code sum_j g_j p_j}, the teacher mass inside the band (0 for rows of weight 0). */
        public Tensor keptMass() {
            return keptMass;
        }

        /** The gradient w.r.t. the student logits, or null when only the loss was computed. */
        public Tensor gradient() {
            return gradient;
        }

        /** F32 [N]: the gradient w.r.t. {@code l}, or null when only the loss was computed. */
        public Tensor lowerGradient() {
            return lowerGradient;
        }

        /** F32 [N]: the gradient w.r.t. {@code u}, or null when only the loss was computed. */
        public Tensor upperGradient() {
            return upperGradient;
        }

        /** Sum of the row weights (the number of rows that count, with targets). */
        public double weightSum() {
            return weightSum;
        }

        @Override
        public void close() {
            loss.close();
            keptMass.close();
            if (ownsGradient && gradient != null) {
                gradient.close();
            }
            if (lowerGradient != null) {
                lowerGradient.close();
                upperGradient.close();
            }
        }
    }

    /**
     * One validated call as the backends see it. Per row: {@code rowLoss}, {@code keptMass}, and
     * with {@code gradCoef != null} the student gradient times {@code gradCoef[i]} (which holds
     * {@code 1/T}) and the bound gradients times {@code boundCoef[i]}.
     *
     * @param targets per row the class whose gate is 1, or -1 for none
     */
    record ClipRows(Tensor student, Tensor teacher, Divergence.Kind direction, float gamma, float invT, float[] lower,
                    float[] upper, int[] targets, float[] weights, float[] gradCoef, float[] boundCoef,
                    Tensor gradient, float[] rowLoss, float[] keptMass, float[] lowerGradient, float[] upperGradient) {

        int rows() {
            return (int) student.dim(0);
        }

        int vocab() {
            return (int) student.dim(1);
        }

        boolean inPlace() {
            return gradient == student;
        }
    }

    private ClippedKl() {
    }

    /** The loss only. */
    public static Result compute(Tensor student, Tensor teacher, Tensor lower, Tensor upper, Options options) {
        return run(student, teacher, lower, upper, options, 0f, null, false);
    }

    /** The loss and the gradients, the student's in a new F32 tensor {@code [N, V]}. */
    public static Result computeWithGradient(Tensor student, Tensor teacher, Tensor lower, Tensor upper,
                                             Options options, float gradScale) {
        return run(student, teacher, lower, upper, options, gradScale, null, true);
    }

    /**
     * The loss and the gradients, the student's written into {@code gradient} ({@code [N, V]}, F32,
     * F16 or BF16: each value formed in fp32 and rounded once, to nearest even), which may be
     * {@code student} itself for an in-place update, and must not otherwise
     * overlap {@code student} or {@code teacher}.
     */
    public static Result computeWithGradient(Tensor student, Tensor teacher, Tensor lower, Tensor upper,
                                             Options options, float gradScale, Tensor gradient) {
        Checks.notNull("gradient", gradient);
        return run(student, teacher, lower, upper, options, gradScale, gradient, true);
    }

    private static Result run(Tensor student, Tensor teacher, Tensor lower, Tensor upper, Options options,
                              float gradScale, Tensor gradientOut, boolean withGradient) {
        Checks.notNull("student", student);
        Checks.notNull("teacher", teacher);
        Checks.notNull("lower", lower);
        Checks.notNull("upper", upper);
        if (options == null) {
            throw new IllegalArgumentException("options: expected Options (e.g. Options.forwardKl(0.01f)), got null");
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
        Checks.dim("teacher", teacher, 1, vocab, "V, the columns of student");
        Checks.require(options.direction() == Divergence.Kind.FORWARD_KL
                || options.direction() == Divergence.Kind.REVERSE_KL, "direction", "FORWARD_KL or REVERSE_KL",
                options.direction());
        Checks.require(options.reduction() != null, "reduction", "a Reduction", "null");
        Checks.temperature("temperature", options.temperature());
        // a subnormal gamma makes 1/gamma, and so the bounds' gradient, overflow (0 * inf: NaN)
        Checks.require(options.gamma() == 0f || options.gamma() >= Float.MIN_NORMAL && Float.isFinite(options.gamma()),
                "gamma", "0 (the hard band) or a finite value >= " + Float.MIN_NORMAL, options.gamma());
        Checks.require(Float.isFinite(gradScale), "gradScale", "a finite number", gradScale);
        Checks.require(options.weights() == null || options.targets() == null, "weights", "weights or targets, not both",
                "both");
        Checks.require(!options.targetAlwaysKept() || options.targets() != null, "targets",
                "targets with Options.withTargetAlwaysKept()", "none");
        for (String name : new String[] {"lower", "upper"}) {
            Tensor t = name.equals("lower") ? lower : upper;
            Checks.rank(name, t, 1, "[N]");
            Checks.dtype(name, t, DType.F32);
            Checks.dim(name, t, 0, rows, "N, the rows of student");
        }
        if (withGradient && gradientOut != null) {
            Checks.rank("gradient", gradientOut, 2, "[N, V]");
            Checks.dtype("gradient", gradientOut, DType.F32, DType.F16, DType.BF16);
            Checks.dim("gradient", gradientOut, 0, rows, "N, the rows of student");
            Checks.dim("gradient", gradientOut, 1, vocab, "V, the columns of student");
            // The CPU writes each row's gradient after reading that row only: student itself is fine.
            Checks.apart("gradient", gradientOut, "student", student, true);
            Checks.apart("gradient", gradientOut, "teacher", teacher, false);
        }
        int n = (int) rows;
        float[] weights = Divergence.rowWeights(options.weights(), options.targets(), options.ignoreIndex(), n, vocab,
                "student");
        float[] l = new float[n];
        float[] u = new float[n];
        int[] keep = new int[n];
        for (int i = 0; i < n; i++) {
            l[i] = lower.getFloat(i);
            u[i] = upper.getFloat(i);
            keep[i] = options.targetAlwaysKept() && weights[i] != 0f ? (int) options.targets().getLong(i) : -1;
            if (weights[i] != 0f && !(l[i] >= 0f && l[i] < u[i] && u[i] <= 1f)) {
                throw new IllegalArgumentException("lower[" + i + "], upper[" + i + "]: expected 0 <= lower < upper <= 1,"
                        + " got " + l[i] + ", " + u[i]);
            }
        }
        student.segment(); // closed tensors fail here, before any work
        teacher.segment();
        double weightSum = 0;
        for (float w : weights) {
            weightSum += w;
        }
        double factor = options.reduction().factor(rows, weightSum);
        float invT = 1f / options.temperature();
        float[] gradCoef = null;
        float[] boundCoef = null;
        if (withGradient) {
            gradCoef = new float[n];
            boundCoef = new float[n];
            for (int i = 0; i < n; i++) {
                boundCoef[i] = (float) (gradScale * factor * weights[i]);
                gradCoef[i] = (float) (gradScale * factor * weights[i] * invT);
            }
        }
        Tensor gradient = withGradient ? (gradientOut != null ? gradientOut : Tensor.allocate(DType.F32, rows, vocab)) : null;
        boolean owns = withGradient && gradientOut == null;
        try {
            ClipRows job = new ClipRows(student, teacher, options.direction(), options.gamma(), invT, l, u, keep, weights,
                    gradCoef, boundCoef, gradient, new float[n], new float[n], withGradient ? new float[n] : null,
                    withGradient ? new float[n] : null);
            Backend backend = Backends.select(options.backend());
            if (backend instanceof CpuBackend cpu) {
                ClippedKlCpu.run(cpu, job);
            } else if (backend instanceof KernelBackend gpu) {
                ClippedKlKernel.run(gpu, job);
            } else {
                throw new TokenKernelsException("clipped KL cannot run on backend '" + backend.name()
                        + "': it is neither the cpu backend nor a kernel backend");
            }
            Tensor loss = Divergence.reduce(job.rowLoss(), weights, options.reduction(), factor);
            Tensor kept = Tensor.of(job.keptMass(), n);
            Tensor dl = withGradient ? Tensor.of(job.lowerGradient(), n) : null;
            Tensor du = withGradient ? Tensor.of(job.upperGradient(), n) : null;
            return new Result(loss, kept, gradient, owns, dl, du, weightSum);
        } catch (RuntimeException | Error e) {
            if (owns) {
                gradient.close();
            }
            throw e;
        }
    }
}
