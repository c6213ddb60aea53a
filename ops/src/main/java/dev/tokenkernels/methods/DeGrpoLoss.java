package dev.tokenkernels.methods;

import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.Tensor;

/**
 * Decoupled GRPO of Thinkless (Fang et al., 2025, "Thinkless: LLM Learns When to Think"): each
 * response starts with a control token ({@code <think>} or {@code <short>}) that picks the reasoning
 * mode. GRPO's token-normalized loss lets long responses drown that one token's signal, so DeGRPO
 * normalizes the two parts apart:
 * <pre>  L = alpha * mean_b l_{b,0} + sum_b sum_{t>=1} l_{b,t} / sum_b (T_b - 1)</pre>
 * with {@code l} the clipped surrogate per token and {@code alpha} the control token's weight
 * (Thinkless: {@code 1/1000}). One {@link PolicyLoss} call with
 * {@link PolicyLoss.Aggregation#DEGRPO}; the sequence offsets must start each sequence at its
 * control token: the control token is the first position of each sequence, as Thinkless' mask of
 * the first response token, so a sequence whose first token is ignored has no control token (its
 * later counted tokens stay in the second part).
 *
 * <p>Defaults: {@code alpha = 0.001} as in Thinkless; the rest is plain GRPO: a symmetric clip
 * {@code eps = 0.2}, no reference KL, temperature 1.
 */
public final class DeGrpoLoss {
    private final float alpha;
    private final float eps;
    private final float temperature;
    private final Backend backend;

    /**
     * The DeGRPO loss with these settings; {@link #defaults()} gives Thinkless' alpha.
     *
     * @param alpha the control token's weight, finite and {@code >= 0}
     * @param eps the clip range on both sides
     * @param temperature of the policy's softmax
     * @param backend where to run, or null for the default backend
     */
    public DeGrpoLoss(float alpha, float eps, float temperature, Backend backend) {
        Checks.require(Float.isFinite(alpha) && alpha >= 0f, "alpha", "a finite value >= 0", alpha);
        Checks.require(Float.isFinite(eps) && eps >= 0f, "eps", "a finite value >= 0", eps);
        Checks.temperature("temperature", temperature);
        this.alpha = alpha;
        this.eps = eps;
        this.temperature = temperature;
        this.backend = backend;
    }

    /** alpha 0.001, eps 0.2, temperature 1, the default backend. */
    public static DeGrpoLoss defaults() {
        return new DeGrpoLoss(PolicyLoss.Options.DEFAULT_CONTROL_TOKEN_WEIGHT, 0.2f, 1f, null);
    }

    /** The PolicyLoss options this loss runs with. */
    public PolicyLoss.Options options() {
        return PolicyLoss.Options.defaults().withClip(eps, eps).withTemperature(temperature)
                .withAggregation(PolicyLoss.Aggregation.DEGRPO).withControlTokenWeight(alpha).on(backend);
    }

    /** The loss, its statistics and {@code gradScale} times its gradient w.r.t. {@code logits}. */
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
}
