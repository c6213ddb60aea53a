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
 * The log-probability of each row's target and its gradient w.r.t. the logits, scaled per row:
 * the last step of every loss written in terms of {@code log pi(y)} (cross-entropy, policy
 * gradients, DPO), which computes {@code c_i = dL / d logp_i} itself.
 *
 * <p>Per row {@code i} with {@code x = z / T}: {@code logp_i = x_{i,y_i} - logsumexp(x_i)} and,
 * with coefficients {@code c [N]}, the gradient
 * <pre>  c_i * d logp_i / d z_i = (c_i / T) (onehot(y_i) - softmax(x_i))</pre>
 * written into a new tensor or a caller buffer (possibly the logits themselves), or added to
 * what the buffer holds ({@link Options#accumulating()}), so that a loss with several terms
 * builds one gradient. Rows whose target is the ignore index get {@code logp = 0} and a zero
 * gradient (left as it is when accumulating). Special rows as in {@link LogitStats}: NaN or
 * {@code +inf} give NaN, all {@code -inf} gives {@code logp = -inf}, and both give a NaN gradient
 * (there is no distribution to differentiate). A row whose coefficient is 0 gets a zero gradient
 * (left as it is when accumulating), special or not: a row that does not count never turns a
 * buffer's accumulated gradient into NaN. Two sweeps over each row: the log-sum-exp, then
 * the gradient (from cache on the CPU, from L2 on a GPU).
 */
public final class TargetLogProb {

    /**
     * Options of one call; start from {@link #defaults()}.
     *
     * @param accumulate add the gradient to the buffer instead of overwriting it
     */
    public record Options(float temperature, long ignoreIndex, boolean accumulate, Backend backend) {
        /**
         * Temperature 1, ignore index {@link LogitStats#DEFAULT_IGNORE_INDEX}, the gradient overwrites the buffer, the
         * default backend.
         */
        public static Options defaults() {
            return new Options(1f, LogitStats.DEFAULT_IGNORE_INDEX, false, null);
        }

        /** Softmax temperature {@code T} (default 1): see {@link Checks#temperature}. */
        public Options withTemperature(float t) {
            return new Options(t, ignoreIndex, accumulate, backend);
        }

        /** Target value of the rows that do not count (default {@link LogitStats#DEFAULT_IGNORE_INDEX}). */
        public Options withIgnoreIndex(long index) {
            return new Options(temperature, index, accumulate, backend);
        }

        /** Adds the gradient to the caller's buffer (needs one) instead of overwriting it. */
        public Options accumulating() {
            return new Options(temperature, ignoreIndex, true, backend);
        }

        /** Runs on {@code b}; null (the default) means {@link Backends#defaultBackend()}. */
        public Options on(Backend b) {
            return new Options(temperature, ignoreIndex, accumulate, b);
        }
    }

    /** {@code logp [N]} and the gradient (null without coefficients); closing closes what the call allocated. */
    public static final class Result implements AutoCloseable {
        private final Tensor logProb;
        private final Tensor gradient;
        private final boolean ownsGradient;

        Result(Tensor logProb, Tensor gradient, boolean ownsGradient) {
            this.logProb = logProb;
            this.gradient = gradient;
            this.ownsGradient = ownsGradient;
        }

        /** {@code logp} of each row's target, F32 {@code [N]}; 0 for ignored rows. */
        public Tensor logProb() {
            return logProb;
        }

        /** The gradient {@code [N, V]} (the caller's buffer when one was given), or null without coefficients. */
        public Tensor gradient() {
            return gradient;
        }

        @Override
        public void close() {
            logProb.close();
            if (ownsGradient && gradient != null) {
                gradient.close();
            }
        }
    }

    /**
     * One validated call as the backends see it.
     *
     * @param targets per row the target, or -1 for an ignored row
     * @param coefficients per row {@code c_i / T}, or null for the log-probabilities only
     */
    record Rows(Tensor logits, int[] targets, float invT, float[] coefficients, Tensor gradient, boolean accumulate,
                float[] logProb) {
        int rows() {
            return (int) logits.dim(0);
        }

        int vocab() {
            return (int) logits.dim(1);
        }

        boolean inPlace() {
            return gradient == logits;
        }
    }

    private TargetLogProb() {
    }

    /** The log-probabilities only. */
    public static Result compute(Tensor logits, Tensor targets, Options options) {
        return run(logits, targets, null, options, null, false);
    }

    /** The log-probabilities and the gradient scaled by {@code coefficients [N]}, in a new F32 tensor. */
    public static Result computeWithGradient(Tensor logits, Tensor targets, Tensor coefficients, Options options) {
        Checks.notNull("coefficients", coefficients);
        return run(logits, targets, coefficients, options, null, true);
    }

    /**
     * The log-probabilities and the gradient scaled by {@code coefficients [N]}, written into (or,
     * accumulating, added to) {@code gradient} ({@code [N, V]}, F32, F16 or BF16: each value formed
     * in fp32, the buffer's value added first when accumulating, and rounded once, to nearest
     * even; the logits themselves for an in-place update, which cannot accumulate).
     */
    public static Result computeWithGradient(Tensor logits, Tensor targets, Tensor coefficients, Options options,
                                             Tensor gradient) {
        Checks.notNull("coefficients", coefficients);
        Checks.notNull("gradient", gradient);
        return run(logits, targets, coefficients, options, gradient, true);
    }

    private static Result run(Tensor logits, Tensor targets, Tensor coefficients, Options options, Tensor gradientOut,
                              boolean withGradient) {
        Checks.notNull("logits", logits);
        Checks.notNull("targets", targets);
        if (options == null) {
            throw new IllegalArgumentException("options: expected Options (e.g. Options.defaults()), got null");
        }
        Checks.rank("logits", logits, 2, "[N, V]");
        Checks.dtype("logits", logits, DType.F32, DType.F16, DType.BF16);
        long rows = logits.dim(0);
        long vocab = logits.dim(1);
        Checks.require(rows <= Integer.MAX_VALUE, "logits", "N < 2^31 rows", rows);
        Checks.require(vocab >= 1 && vocab <= Integer.MAX_VALUE, "logits", "1 <= V < 2^31 columns", vocab);
        Checks.temperature("temperature", options.temperature());
        float[] weights = Divergence.rowWeights(null, targets, options.ignoreIndex(), (int) rows, vocab, "logits");
        int[] y = new int[(int) rows];
        for (int i = 0; i < rows; i++) {
            y[i] = weights[i] == 0f ? -1 : (int) targets.getLong(i);
        }
        float invT = 1f / options.temperature();
        float[] coef = null;
        if (withGradient) {
            Checks.rank("coefficients", coefficients, 1, "[N]");
            Checks.dtype("coefficients", coefficients, DType.F32);
            Checks.dim("coefficients", coefficients, 0, rows, "N, the rows of logits");
            coef = new float[(int) rows];
            for (int i = 0; i < rows; i++) {
                float c = coefficients.getFloat(i);
                Checks.require(Float.isFinite(c), "coefficients[" + i + "]", "a finite number", c);
                coef[i] = c * invT;
            }
            if (gradientOut != null) {
                Checks.rank("gradient", gradientOut, 2, "[N, V]");
                Checks.dtype("gradient", gradientOut, DType.F32, DType.F16, DType.BF16);
                Checks.dim("gradient", gradientOut, 0, rows, "N, the rows of logits");
                Checks.dim("gradient", gradientOut, 1, vocab, "V, the columns of logits");
                Checks.apart("gradient", gradientOut, "logits", logits, true);
                Checks.require(!(options.accumulate() && gradientOut == logits), "gradient",
                        "a buffer other than logits when accumulating", "logits");
            }
            Checks.require(!options.accumulate() || gradientOut != null, "gradient",
                    "a caller buffer to accumulate into", "none");
        } else {
            Checks.require(!options.accumulate(), "accumulate", "a gradient to accumulate into", "no coefficients");
        }
        logits.segment(); // closed tensors fail here, before any work
        Tensor gradient = withGradient ? (gradientOut != null ? gradientOut : Tensor.allocate(DType.F32, rows, vocab)) : null;
        boolean owns = withGradient && gradientOut == null;
        try {
            Rows job = new Rows(logits, y, invT, coef, gradient, options.accumulate(), new float[(int) rows]);
            Backend backend = Backends.select(options.backend());
            if (backend instanceof CpuBackend cpu) {
                TargetLogProbCpu.run(cpu, job);
            } else if (backend instanceof KernelBackend gpu) {
                TargetLogProbKernel.run(gpu, job);
            } else {
                throw new TokenKernelsException("target log-probability cannot run on backend '" + backend.name()
                        + "': it is neither the cpu backend nor a kernel backend");
            }
            return new Result(Tensor.of(job.logProb(), rows), gradient, owns);
        } catch (RuntimeException | Error e) {
            if (owns) {
                gradient.close();
            }
            throw e;
        }
    }
}
