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
 * The probability of each row's target under the contrast of two models' logits: the critical-
 * token score of cDPO (Lin et al., 2024, "Critical Tokens Matter: Token-Level Contrastive
 * Estimation Enhances LLM's Reasoning Capability"), where a model fine-tuned on correct answers
 * ({@code z_pos}) and one fine-tuned on incorrect answers ({@code z_neg}) score each token of an
 * answer, and a low score marks a token that leads to errors.
 *
 * <p>Per row {@code i} with target {@code y_i}:
 * <pre>
 *   x_i  = ((1 + lambda) z_pos,i - lambda z_neg,i) / T     (computed as fma(lambda, z_pos - z_neg, z_pos) * (1/T))
 *   logp_i = log softmax(x_i)[y_i],   p_i = exp(logp_i)
 * </pre>
 * A class masked ({@code -inf}) in {@code z_pos} is masked in {@code x}; for {@code lambda > 0} so is
 * a class masked in {@code z_neg}: contrasting with an impossible class has no finite meaning
 * ({@code z_neg = -inf} would otherwise give {@code +inf}). At {@code lambda = 0} {@code z_neg} plays
 * no part ({@code x = z_pos / T}, its masks included) except that it must be a valid row.
 * {@code logp} is clamped to {@code <= 0} so that {@code 1 - p} is never negative by rounding.
 * Rows whose target is the ignore index are not read and give 0 in both outputs. Special rows:
 * NaN or {@code +inf} anywhere in either input row, or NaN or {@code +inf} in {@code x} (overflow),
 * give NaN in both outputs; all classes masked gives {@code logp = -inf}, {@code p = 0}. No gradient: the score is a constant weight for the loss
 * that uses it.
 *
 * <p>One read of each logits tensor: the combined logits are formed as the two rows are read and
 * never written ({@code kernels/loss/contrastive_target_prob.cu}; on the CPU into a cached scratch
 * row). The two tensors may have different dtypes.
 */
public final class ContrastiveTargetProb {

    /**
     * Options of one call; start from {@link #defaults()}.
     *
     * @param lambda the contrast strength, finite and {@code >= 0} (0 gives the positive model's own softmax)
     */
    public record Options(float lambda, float temperature, long ignoreIndex, Backend backend) {
        /** lambda 1, temperature 1, the default ignore index, the default backend. */
        public static Options defaults() {
            return new Options(1f, 1f, LogitStats.DEFAULT_IGNORE_INDEX, null);
        }

        /** Contrast strength {@code lambda}, finite and >= 0 (default 1; 0 gives the positive model's own softmax). */
        public Options withLambda(float l) {
            return new Options(l, temperature, ignoreIndex, backend);
        }

        /** Softmax temperature {@code T} (default 1): see {@link Checks#temperature}. */
        public Options withTemperature(float t) {
            return new Options(lambda, t, ignoreIndex, backend);
        }

        /** Target value of the rows that are not read (default {@link LogitStats#DEFAULT_IGNORE_INDEX}). */
        public Options withIgnoreIndex(long index) {
            return new Options(lambda, temperature, index, backend);
        }

        /** Runs on {@code b}; null (the default) means {@link Backends#defaultBackend()}. */
        public Options on(Backend b) {
            return new Options(lambda, temperature, ignoreIndex, b);
        }
    }

    /** {@code logp [N]} and {@code p [N]} (F32); closing closes both. */
    public record Result(Tensor logProb, Tensor prob) implements AutoCloseable {
        @Override
        public void close() {
            logProb.close();
            prob.close();
        }
    }

    /** One validated call as the backends see it; {@code targets[i] = -1} for an ignored row. */
    record Rows(Tensor positive, Tensor negative, int[] targets, float lambda, float invT, float[] logProb,
                float[] prob) {
        int rows() {
            return (int) positive.dim(0);
        }

        int vocab() {
            return (int) positive.dim(1);
        }
    }

    private ContrastiveTargetProb() {
    }

    /**
     * The target's log-probability and probability under the contrast, per row.
     *
     * @param positive logits {@code [N, V]} of the model of good answers (F32, F16 or BF16)
     * @param negative logits {@code [N, V]} of the model of bad answers (F32, F16 or BF16)
     * @param targets {@code [N]} (I32/I64) class indices or the ignore index
     */
    public static Result compute(Tensor positive, Tensor negative, Tensor targets, Options options) {
        Checks.notNull("positive", positive);
        Checks.notNull("negative", negative);
        Checks.notNull("targets", targets);
        if (options == null) {
            throw new IllegalArgumentException("options: expected Options (e.g. Options.defaults()), got null");
        }
        Checks.rank("positive", positive, 2, "[N, V]");
        Checks.dtype("positive", positive, DType.F32, DType.F16, DType.BF16);
        Checks.rank("negative", negative, 2, "[N, V] like positive");
        Checks.dtype("negative", negative, DType.F32, DType.F16, DType.BF16);
        long rows = positive.dim(0);
        long vocab = positive.dim(1);
        Checks.require(rows <= Integer.MAX_VALUE, "positive", "N < 2^31 rows", rows);
        Checks.require(vocab >= 1 && vocab <= Integer.MAX_VALUE, "positive", "1 <= V < 2^31 columns", vocab);
        Checks.dim("negative", negative, 0, rows, "N, the rows of positive");
        Checks.dim("negative", negative, 1, vocab, "V, the columns of positive");
        Checks.require(Float.isFinite(options.lambda()) && options.lambda() >= 0f, "lambda", "a finite value >= 0",
                options.lambda());
        Checks.temperature("temperature", options.temperature());
        float[] counted = Divergence.rowWeights(null, targets, options.ignoreIndex(), (int) rows, vocab, "positive");
        int[] y = new int[(int) rows];
        for (int i = 0; i < rows; i++) {
            y[i] = counted[i] == 0f ? -1 : (int) targets.getLong(i);
        }
        positive.segment(); // closed tensors fail here, before any work
        negative.segment();
        Rows job = new Rows(positive, negative, y, options.lambda(), 1f / options.temperature(),
                new float[(int) rows], new float[(int) rows]);
        Backend backend = Backends.select(options.backend());
        if (backend instanceof CpuBackend cpu) {
            ContrastiveTargetProbCpu.run(cpu, job);
        } else if (backend instanceof KernelBackend gpu) {
            ContrastiveTargetProbKernel.run(gpu, job);
        } else {
            throw new TokenKernelsException("the contrastive target probability cannot run on backend '"
                    + backend.name() + "': it is neither the cpu backend nor a kernel backend");
        }
        Tensor logProb = Tensor.of(job.logProb(), rows);
        return new Result(logProb, Tensor.of(job.prob(), rows));
    }
}
