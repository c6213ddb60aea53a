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
 * Per-row statistics of logits {@code z [N, V]}, the building block of every token-level loss.
 *
 * <p>With {@code x = z / T} for temperature {@code T}, each row {@code i} gets
 * <ul>
 *   <li>{@code max[i] = max_j x_ij},</li>
 *   <li>{@code lse[i] = log sum_j exp(x_ij)},</li>
 *   <li>{@code entropy[i] = lse[i] - sum_j softmax(x_i)_j x_ij}, the entropy of {@code softmax(x_i)} in nats,</li>
 *   <li>with targets {@code y [N]}: {@code logProb[i] = x_{i,y_i} - lse[i]}, or 0 where
 *       {@code y_i == ignoreIndex}; {@link Result#validTargets()} counts the other rows.</li>
 * </ul>
 * Each row is read once (an online max and rescaled sum of exponentials) and no softmax is
 * materialized. Inputs may be F32, F16 or BF16; all math is fp32.
 *
 * <p>Special rows, defined rather than left to chance:
 * <ul>
 *   <li>all entries {@code -inf} (a fully masked row): {@code max = lse = -inf}, {@code entropy = 0},
 *       {@code logProb = -inf} (0 if ignored);</li>
 *   <li>any NaN: {@code max}, {@code lse}, {@code entropy} and {@code logProb} are NaN for that row
 *       only ({@code logProb} stays 0 if ignored);</li>
 *   <li>{@code +inf} without NaN: {@code max = +inf}, the other statistics NaN;</li>
 *   <li>{@code -inf} entries elsewhere are ordinary zero-probability classes.</li>
 * </ul>
 *
 * <p>Accuracy against a float64 reference on the same (decoded) inputs: absolute error at most
 * {@code 1e-5 * max(1, |ref|) + 2^-22 * max_j |x_ij|}; the second term is the rounding of
 * {@code z / T} itself. F16 and BF16 inputs are decoded exactly, so the same bound holds.
 */
public final class LogitStats {
    /** The conventional ignore index of cross-entropy losses. */
    public static final long DEFAULT_IGNORE_INDEX = -100;

    private LogitStats() {
    }

    /**
     * Options of one call.
     *
     * @param temperature divides the logits; finite and {@code > 0}
     * @param ignoreIndex a target equal to this is skipped
     * @param backend where to run, or {@code null} for {@link Backends#defaultBackend()}
     */
    public record Options(float temperature, long ignoreIndex, Backend backend) {
        /** Temperature 1, ignore index {@link #DEFAULT_IGNORE_INDEX}, the default backend. */
        public static Options defaults() {
            return new Options(1f, DEFAULT_IGNORE_INDEX, null);
        }

        /** Softmax temperature {@code T} (default 1): see {@link Checks#temperature}. */
        public Options withTemperature(float t) {
            return new Options(t, ignoreIndex, backend);
        }

        /** Target value of the rows that are skipped (default {@link #DEFAULT_IGNORE_INDEX}). */
        public Options withIgnoreIndex(long index) {
            return new Options(temperature, index, backend);
        }

        /** Runs on {@code b}; null (the default) means {@link Backends#defaultBackend()}. */
        public Options on(Backend b) {
            return new Options(temperature, ignoreIndex, b);
        }
    }

    /**
     * The statistics, as F32 tensors of shape {@code [N]} that the caller owns and closes.
     * {@code logProb} is {@code null} when no targets were given.
     */
    public record Result(Tensor max, Tensor lse, Tensor entropy, Tensor logProb, long validTargets)
            implements AutoCloseable {
        @Override
        public void close() {
            max.close();
            lse.close();
            entropy.close();
            if (logProb != null) {
                logProb.close();
            }
        }
    }

    /** Statistics at temperature 1 without targets. */
    public static Result compute(Tensor logits) {
        return compute(logits, null, Options.defaults());
    }

    /**
     * Statistics of {@code logits [N, V]} and, if {@code targets [N]} (I32 or I64) is not null,
     * the targets' log-probabilities.
     *
     * @throws IllegalArgumentException for a bad shape, dtype, temperature or target index
     * @throws IllegalStateException if a tensor is closed
     */
    public static Result compute(Tensor logits, Tensor targets, Options options) {
        Checks.notNull("logits", logits);
        Checks.rank("logits", logits, 2, "[N, V]");
        Checks.dtype("logits", logits, DType.F32, DType.F16, DType.BF16);
        Checks.require(logits.dim(0) <= Integer.MAX_VALUE, "logits", "N < 2^31 rows", logits.dim(0));
        Checks.require(logits.dim(1) >= 1 && logits.dim(1) <= Integer.MAX_VALUE, "logits",
                "1 <= V < 2^31 columns", logits.dim(1));
        if (options == null) {
            throw new IllegalArgumentException("options: expected Options (e.g. Options.defaults()), got null");
        }
        Checks.temperature("temperature", options.temperature());
        logits.segment(); // a closed tensor fails here, before any work
        int rows = (int) logits.dim(0);
        int vocab = (int) logits.dim(1);
        long valid = 0;
        if (targets != null) {
            Checks.rank("targets", targets, 1, "[N]");
            Checks.dim("targets", targets, 0, rows, "N, the rows of logits");
            Checks.dtype("targets", targets, DType.I32, DType.I64);
            valid = checkTargets(targets, vocab, options.ignoreIndex());
        }

        Tensor max = Tensor.allocate(DType.F32, rows);
        Tensor lse = Tensor.allocate(DType.F32, rows);
        Tensor entropy = Tensor.allocate(DType.F32, rows);
        Tensor logProb = targets == null ? null : Tensor.allocate(DType.F32, rows);
        Result result = new Result(max, lse, entropy, logProb, valid);
        try {
            Backend backend = Backends.select(options.backend());
            if (backend instanceof CpuBackend cpu) {
                LogitStatsCpu.run(cpu, logits, targets, 1f / options.temperature(), options.ignoreIndex(), result);
            } else if (backend instanceof KernelBackend gpu) {
                LogitStatsKernel.run(gpu, logits, targets, 1f / options.temperature(), options.ignoreIndex(), result);
            } else {
                throw new TokenKernelsException("logit statistics cannot run on backend '" + backend.name()
                        + "': it is neither the cpu backend nor a kernel backend");
            }
            return result;
        } catch (RuntimeException | Error e) {
            result.close();
            throw e;
        }
    }

    /** Checks every target and counts the ones not ignored. */
    private static long checkTargets(Tensor targets, int vocab, long ignoreIndex) {
        long valid = 0;
        long n = targets.elementCount();
        for (long i = 0; i < n; i++) {
            long y = targets.getLong(i);
            if (y == ignoreIndex) {
                continue;
            }
            if (y < 0 || y >= vocab) {
                throw new IllegalArgumentException("targets[" + i + "]: expected a class index in [0, " + vocab
                        + ") or ignoreIndex " + ignoreIndex + ", got " + y);
            }
            valid++;
        }
        return valid;
    }
}
