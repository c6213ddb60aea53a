package dev.tokenkernels.methods;

import dev.tokenkernels.ops.loss.PreferenceLoss;
import dev.tokenkernels.ops.loss.PreferenceLoss.Responses;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;

/**
 * TGDPO (Zhu et al., 2025, "TGDPO: Harnessing Token-Level Reward Guidance for Enhancing Direct
 * Preference Optimization"): DPO whose per-token log-ratios are weighted by a token-level reward
 * {@code r_t = logp_rm(y_t) - logp_ref(y_t)} of a token-level reward model (e.g. a DPO-trained
 * model, read as an implicit token reward against the reference):
 * <pre>
 *   L = -log sigma( sum_t beta (1 + alpha beta r_w,t) rho_w,t - sum_t beta (1 - alpha beta r_l,t) rho_l,t )
 * </pre>
 * with {@code rho_t = logp_theta(y_t) - logp_ref(y_t)}, mean over pairs. Chosen tokens that the
 * reward model favours and rejected tokens that it disfavours get larger weights. The weights are
 * constants of the loss (no gradient flows into the reward model's log-probabilities).
 *
 * <p>{@code logp_ref} in {@code r_t} is the policy's reference log-probability, the same
 * {@link Responses#referenceLogProb()} as in {@code rho_t}: no separate reference for the reward
 * model is taken.
 *
 * <p><b>Positive weights.</b> In the paper the weight is a token-level {@code beta_t = beta (1 +- alpha
 * beta r_t)} of a KL-regularized token-level objective, which needs {@code beta_t > 0}: at
 * {@code beta_t <= 0} the token's log-ratio would enter with the wrong sign (the loss would push the
 * chosen token down). That happens once {@code |r_t| >= 1 / (alpha beta)} (20 nats at the defaults)
 * in the harmful direction. The paper gives no clamp, so a weight {@code <= 0} is refused with an
 * {@link IllegalArgumentException} naming the token, not clamped: choose a smaller {@code alpha}
 * (or bound the reward model's log-ratios) for such data.
 *
 * <p>One {@link PreferenceLoss} in DPO form with token weights {@code 1 + alpha beta r_w,t} and
 * {@code 1 - alpha beta r_l,t}: two passes over each logits tensor.
 */
public final class TgdpoLoss {
    private final float beta;
    private final float alpha;
    private final Backend backend;

    /**
     * The TGDPO loss with these settings; {@link #defaults()} has the defaults.
     *
     * @param beta DPO's scale, finite and {@code > 0}
     * @param alpha the strength of the token reward's guidance, finite and {@code >= 0} (0 is DPO)
     * @param backend where to run, or null for the default backend
     */
    public TgdpoLoss(float beta, float alpha, Backend backend) {
        Checks.require(Float.isFinite(beta) && beta > 0f, "beta", "a finite value > 0", beta);
        Checks.require(Float.isFinite(alpha) && alpha >= 0f, "alpha", "a finite value >= 0", alpha);
        this.beta = beta;
        this.alpha = alpha;
        this.backend = backend;
    }

    /** beta 0.1, alpha 0.5, the default backend. */
    public static TgdpoLoss defaults() {
        return new TgdpoLoss(0.1f, 0.5f, null);
    }

    /**
     * The loss, statistics and {@code gradScale} times the gradients w.r.t. both logits tensors (new
     * F32 tensors, closed with the result).
     *
     * @param chosen the chosen responses with reference log-probabilities (their own weights are
     *     replaced); targets I32/I64 with the default ignore index
     * @param rejected the rejected responses likewise
     * @param chosenRewardModelLogProb F32 {@code [N_w]} {@code logp_rm(y_t)}, finite at counted tokens,
     *     with {@code 1 + alpha beta r_t > 0}
     * @param rejectedRewardModelLogProb F32 {@code [N_l]} likewise, with {@code 1 - alpha beta r_t > 0}
     * @throws IllegalArgumentException for bad input, a weight {@code <= 0} included
     */
    public PreferenceLoss.Result compute(Responses chosen, Responses rejected, Tensor chosenRewardModelLogProb,
                                         Tensor rejectedRewardModelLogProb, float gradScale) {
        Checks.require(chosen != null && rejected != null, "responses", "chosen and rejected Responses", "null");
        try (Tensor weightW = weights("chosenRewardModelLogProb", chosen, chosenRewardModelLogProb, 1);
             Tensor weightL = weights("rejectedRewardModelLogProb", rejected, rejectedRewardModelLogProb, -1)) {
            return PreferenceLoss.computeWithGradient(chosen.withWeights(weightW), rejected.withWeights(weightL),
                    PreferenceLoss.Options.dpo(beta).on(backend), gradScale);
        }
    }

    /** {@code 1 + sign alpha beta (rm - ref)} at counted tokens, 0 elsewhere; refuses a weight {@code <= 0}. */
    private Tensor weights(String name, Responses r, Tensor rewardModel, int sign) {
        Checks.notNull(name, rewardModel);
        String side = name.startsWith("chosen") ? "chosen" : "rejected";
        Tensor targets = Checks.notNull(side + ".targets", r.targets());
        Checks.rank(side + ".targets", targets, 1, "[N]");
        Checks.dtype(side + ".targets", targets, DType.I32, DType.I64);
        String referenceName = side + ".referenceLogProb";
        Tensor reference = Checks.notNull(referenceName, r.referenceLogProb());
        Checks.rank(referenceName, reference, 1, "[N]");
        Checks.dtype(referenceName, reference, DType.F32);
        Checks.rank(name, rewardModel, 1, "[N]");
        Checks.dtype(name, rewardModel, DType.F32);
        long rows = targets.dim(0);
        Checks.dim(name, rewardModel, 0, rows, "N, the rows of the responses");
        Checks.dim(referenceName, reference, 0, rows, "N, the rows of the responses");
        double scale = (double) alpha * beta;
        float[] w = new float[(int) rows];
        for (int t = 0; t < rows; t++) {
            if (targets.getLong(t) == dev.tokenkernels.ops.loss.LogitStats.DEFAULT_IGNORE_INDEX) {
                continue;
            }
            float rm = rewardModel.getFloat(t);
            float ref = reference.getFloat(t);
            Checks.require(Float.isFinite(rm), name + "[" + t + "]", "a finite number", rm);
            Checks.require(Float.isFinite(ref), referenceName + "[" + t + "]", "a finite number", ref);
            double reward = (double) rm - ref;
            w[t] = (float) (1 + sign * scale * reward);
            // a weight <= 0 would flip the token's sign in the loss (see the class doc)
            Checks.require(w[t] > 0f, name + "[" + t + "]", "a token reward r = logp_rm - logp_ref with 1 "
                    + (sign > 0 ? "+" : "-") + " alpha beta r > 0, i.e. r " + (sign > 0 ? "> -" : "< ")
                    + (float) (1 / scale) + " nats at alpha " + alpha + ", beta " + beta,
                    "r = " + (float) reward + " (weight " + w[t] + ")");
        }
        return Tensor.of(w, rows);
    }
}
