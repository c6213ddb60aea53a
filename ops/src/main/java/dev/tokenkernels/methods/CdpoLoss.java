package dev.tokenkernels.methods;

import dev.tokenkernels.ops.loss.ContrastiveTargetProb;
import dev.tokenkernels.ops.loss.PreferenceLoss;
import dev.tokenkernels.ops.loss.PreferenceLoss.Responses;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;

/**
 * cDPO, critical-token DPO (Lin et al., 2024, "Critical Tokens Matter: Token-Level Contrastive
 * Estimation Enhances LLM's Reasoning Capability"; not the label-smoothed "conservative DPO", which
 * is {@link PreferenceLoss.Options#withLabelSmoothing}). A positive model fine-tuned on correct
 * answers and a negative model fine-tuned on incorrect ones score each token of a rejected answer
 * by contrastive estimation,
 * <pre>  p_ce,t = softmax((1 + lambda) z_pos,t - lambda z_neg,t)[y_t]          ({@link ContrastiveTargetProb})</pre>
 * and tokens the contrast finds unlikely (critical tokens that lead to the wrong answer) get a
 * large weight {@code 1 - p_ce,t} in token-weighted DPO:
 * <pre>  L = -log sigma( beta (sum_t w_w,t rho_w,t - sum_t (1 - p_ce,t) rho_l,t) )</pre>
 * with {@code rho_t = logp_theta(y_t) - logp_ref(y_t)}, mean over pairs, and chosen weights
 * {@code w_w,t = 1}, or {@code p_ce,t} of the chosen tokens ({@link #computeWeightingChosen}).
 * The weights are constants: no gradient flows into {@code z_pos} or {@code z_neg}, only into the
 * policy's logits. They replace any weights the caller's {@code Responses} carry.
 *
 * <p>One fused {@link ContrastiveTargetProb} pass over the two models' logits of each weighted
 * side (each read once, the combined logits never written), then {@link PreferenceLoss}'s two
 * passes over the policy's logits.
 */
public final class CdpoLoss {
    private final float beta;
    private final float lambda;
    private final Backend backend;

    /**
     * The cDPO loss with these settings; {@link #defaults()} has the defaults.
     *
     * @param beta DPO's scale, finite and {@code > 0}
     * @param lambda the contrast strength, finite and {@code >= 0}
     * @param backend where to run, or null for the default backend
     */
    public CdpoLoss(float beta, float lambda, Backend backend) {
        Checks.require(Float.isFinite(beta) && beta > 0f, "beta", "a finite value > 0", beta);
        Checks.require(Float.isFinite(lambda) && lambda >= 0f, "lambda", "a finite value >= 0", lambda);
        this.beta = beta;
        this.lambda = lambda;
        this.backend = backend;
    }

    /** beta 0.1, lambda 1, the default backend. */
    public static CdpoLoss defaults() {
        return new CdpoLoss(0.1f, 1f, null);
    }

    /**
     * The loss, the weights and the statistics; {@code chosenWeights} is null when the chosen
     * tokens are not weighted. Closing closes all of them.
     */
    public record Result(PreferenceLoss.Result preference, Tensor chosenWeights, Tensor rejectedWeights)
            implements AutoCloseable {
        /** The preference loss, {@code preference().loss()}. */
        public float loss() {
            return preference.loss();
        }

        @Override
        public void close() {
            preference.close();
            rejectedWeights.close();
            if (chosenWeights != null) {
                chosenWeights.close();
            }
        }
    }

    /**
     * Chosen weights 1, rejected weights {@code 1 - p_ce}; {@code gradScale} times the gradients
     * w.r.t. both policy logits tensors in new F32 tensors.
     *
     * @param rejectedPositive the positive model's logits {@code [N_l, V]} on the rejected responses
     * @param rejectedNegative the negative model's logits {@code [N_l, V]} on the rejected responses
     */
    public Result compute(Responses chosen, Responses rejected, Tensor rejectedPositive, Tensor rejectedNegative,
                          float gradScale) {
        return run(chosen, rejected, null, null, rejectedPositive, rejectedNegative, gradScale);
    }

    /** As {@link #compute}, with the chosen tokens weighted by their own {@code p_ce}. */
    public Result computeWeightingChosen(Responses chosen, Responses rejected, Tensor chosenPositive,
                                         Tensor chosenNegative, Tensor rejectedPositive, Tensor rejectedNegative,
                                         float gradScale) {
        Checks.notNull("chosenPositive", chosenPositive);
        Checks.notNull("chosenNegative", chosenNegative);
        return run(chosen, rejected, chosenPositive, chosenNegative, rejectedPositive, rejectedNegative, gradScale);
    }

    private Result run(Responses chosen, Responses rejected, Tensor chosenPositive, Tensor chosenNegative,
                       Tensor rejectedPositive, Tensor rejectedNegative, float gradScale) {
        Checks.require(chosen != null && rejected != null, "responses", "chosen and rejected Responses", "null");
        ContrastiveTargetProb.Options contrast = ContrastiveTargetProb.Options.defaults().withLambda(lambda).on(backend);
        Tensor weightW = null;
        Tensor weightL = null;
        try {
            float[] rejectedWeight = contrastiveProb("rejected", rejected, rejectedPositive, rejectedNegative, contrast);
            for (int t = 0; t < rejectedWeight.length; t++) {
                rejectedWeight[t] = 1f - rejectedWeight[t]; // ignored tokens: p = 0, weight unused
            }
            weightL = Tensor.of(rejectedWeight, rejectedWeight.length);
            if (chosenPositive != null) {
                float[] p = contrastiveProb("chosen", chosen, chosenPositive, chosenNegative, contrast);
                weightW = Tensor.of(p, p.length);
            }
            Responses w = weightW == null ? chosen.withWeights(null) : chosen.withWeights(weightW);
            PreferenceLoss.Result loss = PreferenceLoss.computeWithGradient(w, rejected.withWeights(weightL),
                    PreferenceLoss.Options.dpo(beta).on(backend), gradScale);
            return new Result(loss, weightW, weightL);
        } catch (RuntimeException | Error e) {
            if (weightW != null) {
                weightW.close();
            }
            if (weightL != null) {
                weightL.close();
            }
            throw e;
        }
    }

    /**
     * {@code p_ce} of one side's tokens; shapes checked here under the caller's names ({@code
     * rejectedPositive}, ...), and a NaN {@code p_ce} (NaN or {@code +inf} in a model's row) refused
     * naming both models' logits, rather than surfacing later as a bad weight of PreferenceLoss.
     */
    private static float[] contrastiveProb(String side, Responses r, Tensor positive, Tensor negative,
                                           ContrastiveTargetProb.Options contrast) {
        String positiveName = side + "Positive";
        String negativeName = side + "Negative";
        Tensor targets = Checks.notNull(side + ".targets", r.targets());
        Checks.notNull(positiveName, positive);
        Checks.notNull(negativeName, negative);
        Checks.rank(side + ".targets", targets, 1, "[N]");
        Checks.rank(positiveName, positive, 2, "[N, V]");
        Checks.rank(negativeName, negative, 2, "[N, V] like " + positiveName);
        long rows = targets.dim(0);
        Checks.dim(positiveName, positive, 0, rows, "N, the tokens of " + side + ".targets");
        Checks.dim(negativeName, negative, 0, rows, "N, the tokens of " + side + ".targets");
        // p_ce weighs the policy's tokens: over another vocabulary it would be a different distribution
        Tensor policy = Checks.notNull(side + ".logits", r.logits());
        Checks.rank(side + ".logits", policy, 2, "[N, V]");
        Checks.dim(positiveName, positive, 1, policy.dim(1), "V, the columns of " + side + ".logits (the policy's)");
        Checks.dim(negativeName, negative, 1, policy.dim(1), "V, the columns of " + side + ".logits (the policy's)");
        Checks.dtype(positiveName, positive, DType.F32, DType.F16, DType.BF16);
        Checks.dtype(negativeName, negative, DType.F32, DType.F16, DType.BF16);
        try (ContrastiveTargetProb.Result p = ContrastiveTargetProb.compute(positive, negative, targets, contrast)) {
            float[] prob = p.prob().toFloatArray();
            for (int t = 0; t < prob.length; t++) {
                if (Float.isNaN(prob[t])) {
                    throw new IllegalArgumentException(positiveName + "/" + negativeName + " row " + t
                            + ": expected finite logits (no NaN or +inf; -inf masks a class), got a NaN"
                            + " contrastive probability p_ce");
                }
            }
            return prob;
        }
    }
}
