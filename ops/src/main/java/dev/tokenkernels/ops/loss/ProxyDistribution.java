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
 * The filtered proxy distribution of Lp-Reg (Huang et al., 2025, "Low-probability Tokens Sustain
 * Exploration in Reinforcement Learning with Verifiable Reward"): from old-policy logits
 * {@code z [N, V]} at temperature {@code T}, {@code p = softmax(z / T)}, keep class {@code v} iff
 * <ul>
 *   <li>{@link Mode#MIN_P}: {@code p_v >= kappa * max(p)} (the paper's default, kappa = 0.02), or</li>
 *   <li>{@link Mode#FIXED}: {@code p_v >= tau}; the most likely class is always kept, so the proxy
 *       exists even when {@code tau > max(p)};</li>
 * </ul>
 * and renormalize over the kept classes. Per row it returns the proxy log-probability of the
 * given token ({@code -inf} if the token is filtered out, 0 if ignored), the log-sum-exp of
 * {@code z / T} over the kept classes, and how many classes are kept.
 *
 * <p>Membership is decided in fp32 on {@code x = z * (1 / T)}: MIN_P keeps {@code x_v - max(x) >=
 * log(kappa)}; FIXED keeps {@code x_v - lse(x) >= log(tau)}. Across backends MIN_P keeps the
 * same classes (its reference, the max, is exact); FIXED's reference, the row's lse, is summed in
 * each backend's own order and may differ in its last bit or two, so a class whose {@code p_v}
 * lies within that of {@code tau} (about 1e-7 relative) may be kept on one backend and not on
 * another. Special rows: any NaN or {@code +inf}
 * gives NaN; a row of all {@code -inf} keeps nothing ({@code lse = -inf}, log-prob {@code -inf}).
 * One pass over each row for MIN_P (max, then the kept sum from L1/L2), two for FIXED.
 *
 * <p>The distributional regularizers with their gradient w.r.t. the policy logits are
 * {@link Divergence} with {@link Divergence.Options#withTeacherFilter}: forward KL gives
 * {@code KL(proxy || P_theta)}; reverse KL gives {@code KL(P_theta || proxy)}, which is {@code +inf}
 * whenever the policy gives mass to a dropped class (for finite logits, whenever any class is
 * dropped).
 */
public final class ProxyDistribution {

    /** How the kept classes are chosen. */
    public enum Mode {
        /** Keep {@code p_v >= kappa * max(p)}. */
        MIN_P,
        /** Keep {@code p_v >= tau}, and always the most likely class. */
        FIXED
    }

    /**
     * Options of one call; start from {@link #minP(float)} or {@link #fixed(float)}.
     *
     * @param threshold kappa (MIN_P) or tau (FIXED), in (0, 1]
     */
    public record Options(Mode mode, float threshold, float temperature, long ignoreIndex, Backend backend) {

        /** Keep {@code p_v >= kappa * max(p)}; the Lp-Reg default is {@code kappa = 0.02}. */
        public static Options minP(float kappa) {
            return new Options(Mode.MIN_P, kappa, 1f, LogitStats.DEFAULT_IGNORE_INDEX, null);
        }

        /** Keep {@code p_v >= tau} (and always the most likely class). */
        public static Options fixed(float tau) {
            return new Options(Mode.FIXED, tau, 1f, LogitStats.DEFAULT_IGNORE_INDEX, null);
        }

        /** Softmax temperature {@code T} (default 1): see {@link Checks#temperature}. */
        public Options withTemperature(float t) {
            return new Options(mode, threshold, t, ignoreIndex, backend);
        }

        /** Target value of the rows that are ignored (default {@link LogitStats#DEFAULT_IGNORE_INDEX}). */
        public Options withIgnoreIndex(long index) {
            return new Options(mode, threshold, temperature, index, backend);
        }

        /** Runs on {@code b}; null (the default) means {@link Backends#defaultBackend()}. */
        public Options on(Backend b) {
            return new Options(mode, threshold, temperature, ignoreIndex, b);
        }
    }

    /**
     * Per row: {@code logProb} (F32 [N]), {@code keptLse} (F32 [N], log-sum-exp of {@code z / T}
     * over the kept classes) and {@code keptCount} (I32 [N]). The caller closes it.
     */
    public record Result(Tensor logProb, Tensor keptLse, Tensor keptCount) implements AutoCloseable {
        @Override
        public void close() {
            logProb.close();
            keptLse.close();
            keptCount.close();
        }
    }

    private ProxyDistribution() {
    }

    /**
     * The proxy of {@code logits [N, V]} (F32, F16 or BF16) and the proxy log-probabilities of
     * {@code targets [N]} (I32 or I64; {@code ignoreIndex} rows get 0).
     *
     * @throws IllegalArgumentException for a bad shape, dtype, threshold, temperature or target
     */
    public static Result compute(Tensor logits, Tensor targets, Options options) {
        Checks.notNull("logits", logits);
        Checks.notNull("targets", targets);
        if (options == null) {
            throw new IllegalArgumentException("options: expected Options (e.g. Options.minP(0.02f)), got null");
        }
        Checks.rank("logits", logits, 2, "[N, V]");
        Checks.dtype("logits", logits, DType.F32, DType.F16, DType.BF16);
        Checks.require(logits.dim(0) <= Integer.MAX_VALUE, "logits", "N < 2^31 rows", logits.dim(0));
        Checks.require(logits.dim(1) >= 1 && logits.dim(1) <= Integer.MAX_VALUE, "logits", "1 <= V < 2^31 columns",
                logits.dim(1));
        Checks.require(options.mode() != null, "mode", "MIN_P or FIXED", "null");
        Checks.require(options.threshold() > 0f && options.threshold() <= 1f,
                options.mode() == Mode.MIN_P ? "kappa" : "tau", "a value in (0, 1]", options.threshold());
        Checks.temperature("temperature", options.temperature());
        int rows = (int) logits.dim(0);
        Checks.rank("targets", targets, 1, "[N]");
        Checks.dim("targets", targets, 0, rows, "N, the rows of logits");
        Checks.dtype("targets", targets, DType.I32, DType.I64);
        long[] y = new long[rows];
        for (int i = 0; i < rows; i++) {
            y[i] = targets.getLong(i);
            if (y[i] != options.ignoreIndex() && (y[i] < 0 || y[i] >= logits.dim(1))) {
                throw new IllegalArgumentException("targets[" + i + "]: expected a class index in [0, " + logits.dim(1)
                        + ") or ignoreIndex " + options.ignoreIndex() + ", got " + y[i]);
            }
        }
        logits.segment(); // a closed tensor fails here
        Tensor logProb = Tensor.allocate(DType.F32, rows);
        Tensor keptLse = Tensor.allocate(DType.F32, rows);
        Tensor keptCount = Tensor.allocate(DType.I32, rows);
        Result result = new Result(logProb, keptLse, keptCount);
        try {
            // log(kappa) or log(tau), rounded once so that every backend compares with the same number.
            float logThreshold = (float) Math.log(options.threshold());
            ProxyRows job = new ProxyRows(logits, y, options.ignoreIndex(), options.mode(), logThreshold,
                    1f / options.temperature(), result);
            Backend backend = Backends.select(options.backend());
            if (backend instanceof CpuBackend cpu) {
                ProxyDistributionCpu.run(cpu, job);
            } else if (backend instanceof KernelBackend gpu) {
                ProxyDistributionKernel.run(gpu, job);
            } else {
                throw new TokenKernelsException("proxy distribution cannot run on backend '" + backend.name()
                        + "': it is neither the cpu backend nor a kernel backend");
            }
            return result;
        } catch (RuntimeException | Error e) {
            result.close();
            throw e;
        }
    }

    /** One validated call as the backends see it. */
    record ProxyRows(Tensor logits, long[] targets, long ignoreIndex, Mode mode, float logThreshold, float invT,
                     Result out) {
        int rows() {
            return (int) logits.dim(0);
        }

        int vocab() {
            return (int) logits.dim(1);
        }
    }
}
