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
 * Token relationship graph distillation loss (after Zhang et al., 2023, "Knowledge Distillation
 * via Token-level Relationship Graph"): per sequence, each token's row of a softmax graph over
 * the cosine similarities to the other tokens, student against teacher, compared by a KL
 * divergence per row. The paper's graph construction is the idea; the exact formulation below is
 * this project's.
 *
 * <p>Inputs are token features {@code h_s [B, L, d_s]} (student) and {@code h_t [B, L, d_t]}
 * (teacher), each F32, F16 or BF16 (the two may differ, and so may {@code d_s} and {@code d_t});
 * all math is fp32. For a token {@code i} of either side:
 * <pre>  u_i = h_i / max(||h_i||, 1e-8),   S_ij = (u_i . u_j) / tau</pre>
 * with the temperature {@code tau > 0} (option {@link Options#withTemperature}, default
 * {@code tau = 1}). Sequence {@code b} has {@code n_b} valid tokens, its first {@code n_b}
 * positions ({@code lengths[b]} from {@link Options#withLengths}, else {@code L}); the others are
 * padding and are neither rows nor columns, and their features are never read (they may hold
 * anything, NaN included). The columns of row {@code i} are the other valid tokens
 * {@code j != i}: a self-loop has similarity {@code |u_i|^2 / tau}, which is {@code 1 / tau} for
 * every token (of norm at least 1e-8) of both graphs, so it only dilutes the relation;
 * {@link Options#withSelfLoops()} includes {@code j = i}. Per row
 * <pre>  P_s(i, .) = softmax_j S_s(i, j),   P_t(i, .) = softmax_j S_t(i, j),
 *   loss_i = KL(P_t(i, .) || P_s(i, .))</pre>
 * A row without columns (a sequence of one token, without self-loops) has loss 0.
 *
 * <p>Reductions ({@link Reduction}) weigh every valid row 1 and every padding row 0:
 * {@link Reduction#NONE} returns F32 {@code [B, L]} (0 at padding), {@link Reduction#SUM} the sum,
 * {@link Reduction#TOKEN_MEAN} the sum over the valid tokens {@code sum_b n_b} (rows without
 * columns count; 0 when there is no valid token) and {@link Reduction#BATCH_MEAN} the sum over
 * {@code B}. No {@code tau^2} factor is applied.
 *
 * <p>Gradient w.r.t. {@code h_s}, scaled by {@code gradScale} and the reduction: with
 * {@code w} the reduction's weight of a valid row and {@code G_ij = w (P_s(i, j) - P_t(i, j))}
 * (0 for a pair that is not a column),
 * <pre>{@code  dL/du_k = (1/tau) sum_j (G_kj + G_jk) u_j           (S_s is symmetric)
 *   dL/dh_k = (dL/du_k - (u_k . dL/du_k) u_k) / ||h_k||   (||h_k|| >= 1e-8)
 *   dL/dh_k = dL/du_k / 1e-8                           (||h_k|| < 1e-8)}</pre>
 * in a new F32 tensor {@code [B, L, d_s]}, or a caller's buffer (F32, F16 or BF16: each value
 * formed in fp32 and rounded once), which may be the student features themselves for an in-place
 * update (every backend reads them into its own copy before it writes a gradient row; the teacher
 * may not overlap it); padding rows get 0. The teacher gets no gradient.
 *
 * <p>Special values: if a valid token of either side has a NaN or infinite feature, or a squared
 * norm that overflows fp32 ({@code ||h|| > ~1.8e19}), every valid row of its sequence has loss NaN
 * and gradient NaN (and so has a reduced loss); other sequences are unaffected. A token of norm 0
 * has {@code u = 0}: similarity 0 to every token.
 *
 * <p>How: no {@code [L, L]} matrix is ever stored. Pass 1, per row {@code i}: the row's
 * {@code L} similarities on both sides, their log-sum-exps (kept: {@code 8 B L} bytes) and the
 * loss. Pass 2 (with the gradient), per row {@code k}: the row's similarities again, then
 * {@code G_kj} from row {@code k}'s log-sum-exps and {@code G_jk} from row {@code j}'s (the graphs'
 * symmetry gives {@code S(j, k) = S(k, j)}), summed over {@code j} in a fixed order: deterministic,
 * no atomics. Each pass costs {@code O(L^2 (d_s + d_t))} flops per sequence: {@code n^2 (d_s + d_t)}
 * multiply-adds for the dot products (twice that in the kernels, which also sum each column's
 * squared norms in the same loop), and pass 2 {@code n^2 d_s} more for {@code sum_j c_j u_j};
 * against {@code O(L (d_s + d_t))} bytes, so for all but short sequences the op is bound by
 * arithmetic, not by memory. The CPU path keeps fp32 unit vectors of the valid tokens
 * ({@code 4 B L (d_s + d_t)} bytes) so that every dot product is one SIMD loop. The CUDA path
 * ({@code kernels/loss/relation_graph_kl.cu}) has two kernels, one block per (sequence, row) each,
 * warps over columns and lanes over features (coalesced dot products, each also summing the
 * column's squared norms, so there is no separate norm pass): row statistics by an online softmax
 * (no row buffer), and the gradient, whose column coefficients go through shared memory in tiles of
 * {@value #KERNEL_COLUMN_TILE} columns, so {@code L} is not bounded. A tensor-core tiled version
 * (Gram blocks as matrix products) is future work.
 */
public final class RelationGraphKl {
    /** The norm below which a token is divided by this instead of its norm. */
    public static final float NORM_EPSILON = 1e-8f;
    /** Columns whose gradient coefficients the CUDA kernel holds in shared memory at a time. */
    public static final int KERNEL_COLUMN_TILE = 64;

    /**
     * Options of one call; start from {@link #defaults()}.
     *
     * @param temperature {@code tau}, finite, {@code > 0}, with a finite reciprocal
     * @param lengths I32 or I64 {@code [B]}, the valid tokens of each sequence, or null for all
     * @param selfLoops whether row {@code i} has column {@code i}
     */
    public record Options(float temperature, Reduction reduction, Tensor lengths, boolean selfLoops, Backend backend) {

        /** {@code tau = 1}, {@link Reduction#TOKEN_MEAN}, every token valid, no self-loops. */
        public static Options defaults() {
            return new Options(1f, Reduction.TOKEN_MEAN, null, false, null);
        }

        /** Similarity temperature {@code tau} (default 1): finite, > 0, with a finite reciprocal. */
        public Options withTemperature(float tau) {
            return new Options(tau, reduction, lengths, selfLoops, backend);
        }

        /** How the per-row losses are reduced (default {@link Reduction#TOKEN_MEAN}). */
        public Options withReduction(Reduction r) {
            return new Options(temperature, r, lengths, selfLoops, backend);
        }

        /** Sequence {@code b} has {@code lengths[b]} valid tokens, its first ones; the rest is padding. */
        public Options withLengths(Tensor lengthsPerSequence) {
            return new Options(temperature, reduction, lengthsPerSequence, selfLoops, backend);
        }

        /** Row {@code i} has column {@code i} too. */
        public Options withSelfLoops() {
            return new Options(temperature, reduction, lengths, true, backend);
        }

        /** Runs on {@code b}; null (the default) means {@link Backends#defaultBackend()}. */
        public Options on(Backend b) {
            return new Options(temperature, reduction, lengths, selfLoops, b);
        }
    }

    /**
     * The loss (F32 {@code [B, L]} for {@link Reduction#NONE}, else {@code [1]}) and, when asked
     * for, the gradient w.r.t. the student features. Closing closes what the call allocated, not a
     * caller's gradient buffer.
     */
    public static final class Result implements AutoCloseable {
        private final Tensor loss;
        private final Tensor gradient;
        private final boolean ownsGradient;
        private final long validTokens;

        Result(Tensor loss, Tensor gradient, boolean ownsGradient, long validTokens) {
            this.loss = loss;
            this.gradient = gradient;
            this.ownsGradient = ownsGradient;
            this.validTokens = validTokens;
        }

        /** The loss, F32: {@code [B, L]} per-row values (0 at padding) for {@link Reduction#NONE}, else {@code [1]}. */
        public Tensor loss() {
            return loss;
        }

        /** The loss as a number, for the reductions other than {@link Reduction#NONE}. */
        public float value() {
            if (loss.rank() != 1) {
                throw new IllegalStateException("loss is per token (Reduction.NONE): read loss() instead");
            }
            return loss.getFloat(0);
        }

        /** {@code [B, L, d_s]} (F32, or the caller's buffer): the gradient w.r.t. the student features, or null for the loss only. */
        public Tensor gradient() {
            return gradient;
        }

        /** {@code sum_b n_b}: the rows {@link Reduction#TOKEN_MEAN} divides by. */
        public long validTokens() {
            return validTokens;
        }

        @Override
        public void close() {
            loss.close();
            if (ownsGradient && gradient != null) {
                gradient.close();
            }
        }
    }

    /**
     * One validated call as the backends see it. Rows are flat, {@code row = b * tokens + i}.
     * Backends fill {@code rowLoss} (0 at padding) and, with {@code gradient != null}, the
     * gradient: {@code dL/du_k = gradCoef sum_j (P_s(k,j) - P_t(k,j) + P_s(j,k) - P_t(j,k)) u_j},
     * {@code gradCoef = gradScale * factor / tau}, projected and divided by the norm.
     *
     * @param lengths the valid tokens of each sequence, each in {@code [0, tokens]}
     * @param invT {@code 1 / tau} in fp32: similarities are {@code (u_i . u_j) * invT}
     */
    record GraphJob(Tensor student, Tensor teacher, int batch, int tokens, int studentDim, int teacherDim,
                    int[] lengths, float invT, boolean selfLoops, float gradCoef, Tensor gradient, float[] rowLoss) {

        int rows() {
            return batch * tokens;
        }
    }

    private RelationGraphKl() {
    }

    /** The loss only. */
    public static Result compute(Tensor student, Tensor teacher, Options options) {
        return run(student, teacher, options, 0f, null, false);
    }

    /** The loss and the gradient w.r.t. {@code student}, in a new F32 tensor {@code [B, L, d_s]}. */
    public static Result computeWithGradient(Tensor student, Tensor teacher, Options options, float gradScale) {
        return run(student, teacher, options, gradScale, null, true);
    }

    /**
     * The loss and the gradient w.r.t. {@code student}, written into {@code gradient}
     * ({@code [B, L, d_s]}, F32, F16 or BF16), which may be {@code student} itself (in place) but
     * may not overlap {@code teacher}.
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
            throw new IllegalArgumentException("options: expected Options (e.g. Options.defaults()), got null");
        }
        Checks.rank("student", student, 3, "[B, L, d_s]");
        Checks.rank("teacher", teacher, 3, "[B, L, d_t]");
        Checks.dtype("student", student, DType.F32, DType.F16, DType.BF16);
        Checks.dtype("teacher", teacher, DType.F32, DType.F16, DType.BF16);
        long batch = student.dim(0);
        long tokens = student.dim(1);
        long studentDim = student.dim(2);
        long teacherDim = teacher.dim(2);
        Checks.dim("teacher", teacher, 0, batch, "B, the sequences of student");
        Checks.dim("teacher", teacher, 1, tokens, "L, the tokens per sequence of student");
        Checks.require(studentDim >= 1, "student", "d_s >= 1 features per token", studentDim);
        Checks.require(teacherDim >= 1, "teacher", "d_t >= 1 features per token", teacherDim);
        Checks.require(batch * tokens <= Integer.MAX_VALUE, "student", "B * L < 2^31 tokens", batch * tokens);
        // The CPU path holds a sequence's unit vectors in one array, rows padded to whole vectors.
        Checks.require(tokens * (studentDim + 16) <= Integer.MAX_VALUE, "student",
                "L * (d_s + 16) < 2^31 (one sequence's features)", tokens * studentDim);
        Checks.require(tokens * (teacherDim + 16) <= Integer.MAX_VALUE, "teacher",
                "L * (d_t + 16) < 2^31 (one sequence's features)", tokens * teacherDim);
        Checks.require(options.reduction() != null, "reduction", "a Reduction", "null");
        float tau = options.temperature();
        Checks.require(tau > 0 && Float.isFinite(tau) && Float.isFinite(1f / tau), "temperature",
                "a finite value > 0 with a finite reciprocal", tau);
        Checks.require(Float.isFinite(gradScale), "gradScale", "a finite number", gradScale);
        int b = (int) batch;
        int l = (int) tokens;
        int[] lengths = lengths(options.lengths(), b, l);
        if (withGradient && gradientOut != null) {
            Checks.rank("gradient", gradientOut, 3, "[B, L, d_s]");
            Checks.dtype("gradient", gradientOut, DType.F32, DType.F16, DType.BF16);
            Checks.dim("gradient", gradientOut, 0, batch, "B, the sequences of student");
            Checks.dim("gradient", gradientOut, 1, tokens, "L, the tokens per sequence of student");
            Checks.dim("gradient", gradientOut, 2, studentDim, "d_s, the features of student");
            Checks.apart("gradient", gradientOut, "student", student, true);
            Checks.apart("gradient", gradientOut, "teacher", teacher, false);
        }
        student.segment(); // closed tensors fail here, before any work
        teacher.segment();
        long valid = 0;
        for (int n : lengths) {
            valid += n;
        }
        double factor = options.reduction().factor(batch, valid);
        float invT = 1f / tau;
        float gradCoef = withGradient ? (float) (gradScale * factor * invT) : 0f;
        Tensor gradient = withGradient
                ? (gradientOut != null ? gradientOut : Tensor.allocate(DType.F32, batch, tokens, studentDim)) : null;
        boolean owns = withGradient && gradientOut == null;
        try {
            GraphJob job = new GraphJob(student, teacher, b, l, (int) studentDim, (int) teacherDim, lengths, invT,
                    options.selfLoops(), gradCoef, gradient, new float[b * l]);
            Backend backend = Backends.select(options.backend());
            if (backend instanceof CpuBackend cpu) {
                RelationGraphKlCpu.run(cpu, job);
            } else if (backend instanceof KernelBackend gpu) {
                RelationGraphKlKernel.run(gpu, job);
            } else {
                throw new TokenKernelsException("relation graph KL cannot run on backend '" + backend.name()
                        + "': it is neither the cpu backend nor a kernel backend");
            }
            return new Result(reduce(job, options.reduction(), factor), gradient, owns, valid);
        } catch (RuntimeException | Error e) {
            if (owns) {
                gradient.close();
            }
            throw e;
        }
    }

    /** The valid tokens per sequence: {@code lengths} checked, or {@code L} for every sequence. */
    private static int[] lengths(Tensor lengths, int batch, int tokens) {
        int[] n = new int[batch];
        if (lengths == null) {
            java.util.Arrays.fill(n, tokens);
            return n;
        }
        Checks.rank("lengths", lengths, 1, "[B]");
        Checks.dtype("lengths", lengths, DType.I32, DType.I64);
        Checks.dim("lengths", lengths, 0, batch, "B, the sequences of student");
        for (int b = 0; b < batch; b++) {
            long v = lengths.getLong(b);
            if (v < 0 || v > tokens) {
                throw new IllegalArgumentException("lengths[" + b + "]: expected a length in [0, " + tokens
                        + "] (L, the tokens per sequence), got " + v);
            }
            n[b] = (int) v;
        }
        return n;
    }

    private static Tensor reduce(GraphJob job, Reduction reduction, double factor) {
        float[] rowLoss = job.rowLoss();
        if (reduction == Reduction.NONE) {
            Tensor out = Tensor.allocate(DType.F32, job.batch(), job.tokens());
            for (int row = 0; row < rowLoss.length; row++) {
                out.setFloat(row, rowLoss[row]); // backends write 0 at padding
            }
            return out;
        }
        double sum = 0;
        for (int b = 0; b < job.batch(); b++) {
            for (int i = 0; i < job.lengths()[b]; i++) {
                sum += rowLoss[b * job.tokens() + i];
            }
        }
        Tensor out = Tensor.allocate(DType.F32, 1);
        out.setFloat(0, (float) (sum * factor));
        return out;
    }
}
