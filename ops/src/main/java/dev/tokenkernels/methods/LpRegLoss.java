package dev.tokenkernels.methods;

import dev.tokenkernels.ops.loss.LogitStats;
import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.ops.loss.ProxyDistribution;
import dev.tokenkernels.ops.loss.TargetLogProb;
import dev.tokenkernels.ops.select.TokenSelection;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Lp-Reg (Huang et al., 2025, "Low-probability Tokens Sustain Exploration in Reinforcement
 * Learning with Verifiable Reward"): negative-advantage updates drive the probability of rare but
 * valuable tokens ("reasoning sparks") to 0 and exploration collapses. Lp-Reg protects the
 * lowest-probability tokens of the negative samples by pulling them towards a proxy of the old
 * policy from which the noise is filtered out (min-p, {@code kappa = 0.02}):
 * <ul>
 *   <li>among counted tokens with {@code A < 0}, the {@code k = floor(rho * N_neg)} with the
 *       lowest {@code logp} under the current policy (only if {@code k > 1}), and of those the
 *       ones with {@code logp < lp_proxy} (so the proxy keeps the token), are regularized;</li>
 *   <li>a regularized token's loss is {@code -A r + beta min(k3(lp_proxy - logp), 10)} with the
 *       unclipped ratio, {@code k3(e) = exp(e) - e - 1} (the KL value is capped at 10, with no
 *       gradient where it is); every other token has the clipped surrogate
 *       ({@link PolicyLoss.Options#withLpReg}).</li>
 * </ul>
 * Three passes: {@link TargetLogProb} (current {@code logp}), {@link ProxyDistribution} on the old
 * logits ({@code lp_proxy}), then {@link PolicyLoss}. The bottom-k selection is exact
 * ({@link TokenSelection}'s radix select: ties to the lower token index, the same tokens on every
 * backend). The selection is a constant of the step: no gradient through it.
 *
 * <p>Defaults: {@code rho = 1%} and {@code kappa = 0.02} from the paper; {@code beta = 1} and
 * clip-higher {@code eps_low = 0.2}, {@code eps_high = 0.28}, token mean, are ours.
 */
public final class LpRegLoss {
    private final float rho;
    private final float kappa;
    private final float beta;
    private final float epsLow;
    private final float epsHigh;
    private final float temperature;
    private final Backend backend;

    /**
     * The Lp-Reg loss with these settings; {@link #defaults()} has the defaults.
     *
     * @param rho the fraction of the negative tokens examined, in (0, 1]
     * @param kappa the proxy's min-p threshold, in (0, 1]
     * @param beta the regularizer's weight, finite and {@code >= 0}
     * @param epsLow the lower clip range of the other tokens
     * @param epsHigh the upper clip range of the other tokens
     * @param temperature of the policy's softmax (and the proxy's)
     * @param backend where to run, or null for the default backend
     */
    public LpRegLoss(float rho, float kappa, float beta, float epsLow, float epsHigh, float temperature,
                     Backend backend) {
        Checks.require(rho > 0f && rho <= 1f, "rho", "a fraction in (0, 1]", rho);
        Checks.require(kappa > 0f && kappa <= 1f, "kappa", "a value in (0, 1]", kappa);
        Checks.require(Float.isFinite(beta) && beta >= 0f, "beta", "a finite value >= 0", beta);
        Checks.require(Float.isFinite(epsLow) && epsLow >= 0f, "epsLow", "a finite value >= 0", epsLow);
        Checks.require(Float.isFinite(epsHigh) && epsHigh >= 0f, "epsHigh", "a finite value >= 0", epsHigh);
        Checks.temperature("temperature", temperature);
        this.rho = rho;
        this.kappa = kappa;
        this.beta = beta;
        this.epsLow = epsLow;
        this.epsHigh = epsHigh;
        this.temperature = temperature;
        this.backend = backend;
    }

    /** rho 0.01, kappa 0.02, beta 1, eps 0.2 / 0.28, temperature 1, the default backend. */
    public static LpRegLoss defaults() {
        return new LpRegLoss(0.01f, 0.02f, 1f, 0.2f, 0.28f, 1f, null);
    }

    /**
     * Lp-Reg's selection: true for the counted ({@code counted[t]}) tokens with {@code A < 0}
     * among the {@code floor(rho * N_neg)} lowest {@code logp} (ties: lower index first), when
     * that count is above 1, whose {@code logp < proxy} ({@code -inf} or NaN proxies never).
     * {@code rho} counts as the decimal it prints as ({@code 0.01f} as 0.01, not as the float's
     * 0.0099999998), the product in double as the released code's {@code int(rho * N_neg)}: with
     * the float itself, 200 negatives at rho 1% would select 1 token, so none.
     */
    public static boolean[] regularized(float[] logp, float[] proxy, float[] advantages, boolean[] counted, float rho) {
        Checks.require(logp != null, "logp", "an array", "null");
        sameLength("proxy", proxy == null ? -1 : proxy.length, logp.length);
        sameLength("advantages", advantages == null ? -1 : advantages.length, logp.length);
        sameLength("counted", counted == null ? -1 : counted.length, logp.length);
        Checks.require(rho > 0f && rho <= 1f, "rho", "a fraction in (0, 1]", rho);
        try (Tensor scores = Tensor.of(logp, logp.length)) {
            return regularized(scores, logp, proxy, advantages, counted, rho, null);
        }
    }

    private static void sameLength(String name, int length, int expected) {
        Checks.require(length == expected, name, "an array of " + expected + " entries, as logp",
                length < 0 ? "null" : length + " entries");
    }

    /**
     * The selection with {@link TokenSelection#keep} on {@code backend}: exact, the same tokens on
     * every backend. A NaN {@code logp} (a row without a distribution) counts in {@code N_neg} but
     * is never selected, as if it sorted last.
     */
    private static boolean[] regularized(Tensor scores, float[] logp, float[] proxy, float[] advantages,
                                         boolean[] counted, float rho, Backend backend) {
        int rows = logp.length;
        boolean[] selected = new boolean[rows];
        int negative = 0;
        try (Tensor candidates = Tensor.allocate(DType.U8, rows)) {
            MemorySegment m = candidates.segment();
            for (int t = 0; t < rows; t++) {
                if (counted[t] && advantages[t] < 0) {
                    negative++;
                    m.set(ValueLayout.JAVA_BYTE, t, (byte) (Float.isNaN(logp[t]) ? 0 : 1));
                }
            }
            int k = (int) (Double.parseDouble(Float.toString(rho)) * negative);
            if (k <= 1) {
                return selected;
            }
            try (Tensor lowest = TokenSelection.keep(scores, candidates, k, TokenSelection.Order.SMALLEST,
                    TokenSelection.Options.defaults().on(backend))) {
                MemorySegment kept = lowest.segment();
                for (int t = 0; t < rows; t++) {
                    selected[t] = kept.get(ValueLayout.JAVA_BYTE, t) != 0 && logp[t] < proxy[t];
                }
            }
        }
        return selected;
    }

    /** The PolicyLoss options this loss runs with, before Lp-Reg's tensors. */
    public PolicyLoss.Options options() {
        return PolicyLoss.Options.defaults().withClip(epsLow, epsHigh).withTemperature(temperature)
                .withAggregation(PolicyLoss.Aggregation.TOKEN_MEAN).on(backend);
    }

    /**
     * The loss, its statistics and {@code gradScale} times its gradient w.r.t. {@code logits}.
     *
     * @param oldLogits the old policy's logits {@code [N, V]}, the proxy's source
     */
    public PolicyLoss.Result compute(Tensor logits, Tensor oldLogits, Tensor targets, Tensor oldLogProb,
                                     Tensor advantages, int[] sequenceStarts, float gradScale) {
        return run(logits, oldLogits, targets, oldLogProb, advantages, sequenceStarts, gradScale, null);
    }

    /**
     * As {@link #compute(Tensor, Tensor, Tensor, Tensor, Tensor, int[], float)},
     * with the gradient written into {@code gradient} ({@code [N, V]}, F32, F16 or BF16, e.g. reused
     * from step to step), which may be {@code logits} itself: in place, with no {@code [N, V]}
     * buffer besides the logits.
     */
    public PolicyLoss.Result compute(Tensor logits, Tensor oldLogits, Tensor targets, Tensor oldLogProb,
                                     Tensor advantages, int[] sequenceStarts, float gradScale, Tensor gradient) {
        Checks.notNull("gradient", gradient);
        return run(logits, oldLogits, targets, oldLogProb, advantages, sequenceStarts, gradScale, gradient);
    }

    /** The current log-probabilities are read before the loss's pass writes its gradient (perhaps over the logits). */
    private PolicyLoss.Result run(Tensor logits, Tensor oldLogits, Tensor targets, Tensor oldLogProb,
                                  Tensor advantages, int[] sequenceStarts, float gradScale, Tensor gradient) {
        Checks.notNull("logits", logits);
        Checks.notNull("targets", targets);
        Checks.notNull("advantages", advantages);
        Checks.rank("advantages", advantages, 1, "[N]");
        Checks.dtype("advantages", advantages, DType.F32);
        Checks.notNull("oldLogits", oldLogits);
        Checks.rank("logits", logits, 2, "[N, V]");
        Checks.rank("oldLogits", oldLogits, 2, "[N, V]");
        Checks.require(oldLogits.dim(0) == logits.dim(0) && oldLogits.dim(1) == logits.dim(1), "oldLogits",
                "the shape of logits [" + logits.dim(0) + ", " + logits.dim(1) + "]",
                "[" + oldLogits.dim(0) + ", " + oldLogits.dim(1) + "]");
        int rows = (int) logits.dim(0);
        Checks.dim("advantages", advantages, 0, rows, "N, the rows of logits");
        try (TargetLogProb.Result current = TargetLogProb.compute(logits, targets,
                     TargetLogProb.Options.defaults().withTemperature(temperature).on(backend));
             ProxyDistribution.Result proxy = ProxyDistribution.compute(oldLogits, targets,
                     ProxyDistribution.Options.minP(kappa).withTemperature(temperature).on(backend))) {
            boolean[] counted = new boolean[rows];
            for (int t = 0; t < rows; t++) {
                counted[t] = targets.getLong(t) != LogitStats.DEFAULT_IGNORE_INDEX;
            }
            boolean[] selected = regularized(current.logProb(), current.logProb().toFloatArray(),
                    proxy.logProb().toFloatArray(), advantages.toFloatArray(), counted, rho, backend);
            try (Tensor mask = Tensor.allocate(DType.U8, rows)) {
                for (int t = 0; t < rows; t++) {
                    mask.segment().set(ValueLayout.JAVA_BYTE, t, (byte) (selected[t] ? 1 : 0));
                }
                return GradientOut.policyLoss(logits, targets, oldLogProb, advantages, sequenceStarts,
                        options().withLpReg(proxy.logProb(), mask, beta), gradScale, gradient);
            }
        }
    }
}
