package dev.tokenkernels.methods;

import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.Tensor;

/**
 * DAPO's policy loss (Yu et al., 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at
 * Scale"): the PPO clipped surrogate with decoupled clip ranges ("clip-higher",
 * {@code eps_low = 0.2}, {@code eps_high = 0.28}), averaged over all counted tokens of the batch
 * (token-level policy-gradient loss), without a KL term:
 * <pre>  L = - sum_t min(r_t A_t, clip(r_t, 1 - eps_low, 1 + eps_high) A_t) / sum_t m_t</pre>
 * One {@link PolicyLoss} call with {@link PolicyLoss.Aggregation#TOKEN_MEAN}.
 *
 * <p>DAPO's other two parts act on the data, not on the loss: overlong reward shaping changes the
 * rewards (the caller's, before the advantages), and dynamic sampling drops the groups whose
 * rewards are all equal (accuracy 0 or 1: zero advantage, no gradient); {@link #informativeGroups}
 * gives that mask for the caller's sampler.
 */
public final class DapoLoss {
    private final float epsLow;
    private final float epsHigh;
    private final float temperature;
    private final Backend backend;

    /**
     * The DAPO loss with these settings; {@link #defaults()} gives DAPO's.
     *
     * @param epsLow the lower clip range (DAPO: 0.2)
     * @param epsHigh the upper clip range (DAPO: 0.28)
     * @param temperature of the policy's softmax, as in sampling
     * @param backend where to run, or null for the default backend
     */
    public DapoLoss(float epsLow, float epsHigh, float temperature, Backend backend) {
        Checks.require(Float.isFinite(epsLow) && epsLow >= 0f, "epsLow", "a finite value >= 0", epsLow);
        Checks.require(Float.isFinite(epsHigh) && epsHigh >= 0f, "epsHigh", "a finite value >= 0", epsHigh);
        Checks.temperature("temperature", temperature);
        this.epsLow = epsLow;
        this.epsHigh = epsHigh;
        this.temperature = temperature;
        this.backend = backend;
    }

    /** eps_low 0.2, eps_high 0.28, temperature 1, the default backend. */
    public static DapoLoss defaults() {
        return new DapoLoss(0.2f, 0.28f, 1f, null);
    }

    /** The PolicyLoss options this loss runs with. */
    public PolicyLoss.Options options() {
        return PolicyLoss.Options.defaults().withClip(epsLow, epsHigh).withTemperature(temperature)
                .withAggregation(PolicyLoss.Aggregation.TOKEN_MEAN).on(backend);
    }

    /**
     * The loss, its statistics and {@code gradScale} times its gradient w.r.t. {@code logits}
     * ({@link PolicyLoss#computeWithGradient} for the arguments).
     */
    public PolicyLoss.Result compute(Tensor logits, Tensor targets, Tensor oldLogProb, Tensor advantages,
                                     int[] sequenceStarts, float gradScale) {
        return GradientOut.policyLoss(logits, targets, oldLogProb, advantages, sequenceStarts, options(), gradScale,
                null);
    }

    /**
     * As {@link #compute(Tensor, Tensor, Tensor, Tensor, int[], float)},
     * with the gradient written into {@code gradient} ({@code [N, V]}, F32, F16 or BF16, e.g. reused
     * from step to step), which may be {@code logits} itself: in place, with no {@code [N, V]}
     * buffer besides the logits.
     */
    public PolicyLoss.Result compute(Tensor logits, Tensor targets, Tensor oldLogProb, Tensor advantages,
                                     int[] sequenceStarts, float gradScale, Tensor gradient) {
        Checks.notNull("gradient", gradient);
        return GradientOut.policyLoss(logits, targets, oldLogProb, advantages, sequenceStarts, options(), gradScale,
                gradient);
    }

    /**
     * Dynamic sampling's filter: per group of {@code groupSize} consecutive rewards (the responses
     * to one prompt), true when the rewards are not all equal, i.e. the group has a gradient.
     */
    public static boolean[] informativeGroups(float[] rewards, int groupSize) {
        if (rewards == null) {
            throw new IllegalArgumentException("rewards: expected an array, got null");
        }
        Checks.require(groupSize >= 1, "groupSize", "a size >= 1", groupSize);
        Checks.require(rewards.length % groupSize == 0, "rewards", "a multiple of groupSize " + groupSize + " values",
                rewards.length);
        boolean[] keep = new boolean[rewards.length / groupSize];
        for (int i = 0; i < rewards.length; i++) {
            Checks.require(Float.isFinite(rewards[i]), "rewards[" + i + "]", "a finite number", rewards[i]);
            keep[i / groupSize] |= rewards[i] != rewards[i / groupSize * groupSize];
        }
        return keep;
    }
}
