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
 * <p>One {@link PreferenceLoss} in DPO form with token weights {@code 1 + alpha beta r_w,t} and
 * {@code 1 - alpha beta r_l,t}: two passes over each logits tensor.
 */
public final class TgdpoLoss {
    private final float beta;
    private final float alpha;
    private final Backend backend;

    /**
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
     * @param chosen the chosen responses with reference log-probabilities (their own weights are replaced)
     * @param rejected the rejected responses likewise
     * @param chosenRewardModelLogProb F32 {@code [N_w]} {@code logp_rm(y_t)}, finite at counted tokens
     * @param rejectedRewardModelLogProb F32 {@code [N_l]} likewise
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

    /** {@code 1 + sign alpha beta (rm - ref)} at counted tokens, 0 elsewhere. */
    private Tensor weights(String name, Responses r, Tensor rewardModel, int sign) {
        Checks.notNull(name, rewardModel);
        Checks.notNull(name.startsWith("chosen") ? "chosen.targets" : "rejected.targets", r.targets());
        Tensor reference = Checks.notNull(name.replace("RewardModelLogProb", ".referenceLogProb"), r.referenceLogProb());
        Checks.rank(name, rewardModel, 1, "[N]");
        Checks.dtype(name, rewardModel, DType.F32);
        long rows = r.targets().dim(0);
        Checks.dim(name, rewardModel, 0, rows, "N, the rows of the responses");
        Checks.dim(name.replace("RewardModelLogProb", ".referenceLogProb"), reference, 0, rows,
                "N, the rows of the responses");
        float[] w = new float[(int) rows];
        for (int t = 0; t < rows; t++) {
            if (r.targets().getLong(t) == dev.tokenkernels.ops.loss.LogitStats.DEFAULT_IGNORE_INDEX) {
                continue;
            }
            float rm = rewardModel.getFloat(t);
            Checks.require(Float.isFinite(rm), name + "[" + t + "]", "a finite number", rm);
            double reward = (double) rm - reference.getFloat(t);
            w[t] = (float) (1 + sign * (double) alpha * beta * reward);
        }
        return Tensor.of(w, rows);
    }
}
