package dev.tokenkernels.methods;

import dev.tokenkernels.ops.loss.Divergence;
import dev.tokenkernels.ops.loss.LogitStats;
import dev.tokenkernels.ops.loss.Reduction;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;

/**
 * AlignDistil (Zhang et al., 2025, "AlignDistil: Token-Level Language Model Alignment as Adaptive
 * Policy Distillation"): the policy {@code pi_theta} is distilled towards a teacher whose logits
 * extrapolate a DPO model away from a reverse-DPO (or reference) model, per token:
 * <pre>
 *   TVD_t   = sum_v |softmax(z_dpo) - softmax(z_rev)|      (no 1/2; no gradient)
 *   alpha_t = beta2 TVD_t + 1e-3
 *   z*_t    = z_dpo + alpha_t (z_dpo - z_rev)
 *   l_t     = (beta / alpha_t) KL(pi_theta || softmax(z*_t))
 * </pre>
 * aggregated as the mean over sequences of each sequence's mean over its labelled tokens
 * (sequences without a labelled token are left out). Defaults beta = 0.1, beta2 = 10. The
 * fixed-weight mode uses {@code z* = w z_dpo + (1 - w) z_ref} and {@code l_t = KL(pi_theta || softmax(z*))}.
 *
 * <p>Two fused ops: the TVD from {@link Divergence} (total variation, loss only), then the
 * reverse KL with {@link Divergence.Options#withExtrapolatedTeacher}, which forms {@code z*} on
 * the fly and returns the gradient w.r.t. the policy logits. All at temperature {@code T}
 * (default 1).
 */
public final class AlignDistilLoss {
    private final float beta;
    private final float beta2;
    private final float fixedWeight;
    private final boolean adaptive;
    private final float temperature;
    private final Backend backend;

    private AlignDistilLoss(float beta, float beta2, float fixedWeight, boolean adaptive, float temperature,
                            Backend backend) {
        // the token weight beta / alpha_t reaches beta / 1e-3 (alpha_t >= 1e-3): it must stay a finite float
        Checks.require(beta > 0f && Float.isFinite(beta / 1e-3f), "beta", "a value > 0 with beta / 1e-3 finite", beta);
        // alpha_t reaches 2 beta2 + 1e-3 (TVD_t <= 2): it must stay a finite float.
        Checks.require(beta2 >= 0f && Float.isFinite(2 * beta2 + 1e-3f), "beta2",
                "a value >= 0 with 2 beta2 + 1e-3 finite", beta2);
        Checks.require(Float.isFinite(fixedWeight), "w", "a finite weight", fixedWeight);
        Checks.temperature("temperature", temperature);
        this.beta = beta;
        this.beta2 = beta2;
        this.fixedWeight = fixedWeight;
        this.adaptive = adaptive;
        this.temperature = temperature;
        this.backend = backend;
    }

    /** The token-adaptive extrapolation with the paper's beta and beta2. */
    public static AlignDistilLoss adaptive(float beta, float beta2, float temperature, Backend backend) {
        return new AlignDistilLoss(beta, beta2, 0f, true, temperature, backend);
    }

    /** beta 0.1, beta2 10, temperature 1, the default backend. */
    public static AlignDistilLoss defaults() {
        return adaptive(0.1f, 10f, 1f, null);
    }

    /** The fixed-weight teacher {@code w z_dpo + (1 - w) z_ref}. */
    public static AlignDistilLoss fixedWeight(float w, float temperature, Backend backend) {
        return new AlignDistilLoss(1f, 0f, w, false, temperature, backend);
    }

    /**
     * The loss and {@code gradScale} times its gradient w.r.t. {@code policy} logits.
     *
     * @param policy {@code z_theta [N, V]}, the N tokens of all sequences one after another
     * @param dpo {@code z_dpo [N, V']} (V' >= V; a larger vocabulary is compared over the first V)
     * @param reverse {@code z_rev} (or {@code z_ref} in fixed-weight mode), shaped like {@code dpo}
     * @param labels [N]; tokens whose label is {@link LogitStats#DEFAULT_IGNORE_INDEX} do not count
     * @param sequenceStarts [B + 1] row offsets of the sequences, from 0 to N
     */
    public Divergence.Result compute(Tensor policy, Tensor dpo, Tensor reverse, Tensor labels, int[] sequenceStarts,
                                     float gradScale) {
        return run(policy, dpo, reverse, labels, sequenceStarts, gradScale, null);
    }

    /**
     * As {@link #compute(Tensor, Tensor, Tensor, Tensor, int[], float)}, with the gradient written
     * into {@code gradient} ({@code [N, V]}, F32, F16 or BF16, e.g. reused from step to step: a new
     * tensor is zeroed memory the op then overwrites), which may be {@code policy} itself for an
     * in-place update.
     */
    public Divergence.Result compute(Tensor policy, Tensor dpo, Tensor reverse, Tensor labels, int[] sequenceStarts,
                                     float gradScale, Tensor gradient) {
        Checks.notNull("gradient", gradient);
        return run(policy, dpo, reverse, labels, sequenceStarts, gradScale, gradient);
    }

    private Divergence.Result run(Tensor policy, Tensor dpo, Tensor reverse, Tensor labels, int[] sequenceStarts,
                                  float gradScale, Tensor gradient) {
        Checks.notNull("policy", policy);
        Checks.notNull("dpo", dpo);
        Checks.notNull("reverse", reverse);
        Checks.notNull("labels", labels);
        int rows = (int) policy.dim(0);
        Checks.rank("labels", labels, 1, "[N]");
        Checks.dim("labels", labels, 0, rows, "N, the rows of policy");
        Checks.dtype("labels", labels, DType.I32, DType.I64); // before the TVD, which would call them targets
        int[] starts = Checks.offsets("sequenceStarts", sequenceStarts, rows);
        float[] alpha = new float[rows];
        float[] scale = new float[rows];
        if (adaptive) {
            // TVD of the two teachers over their own vocabulary; the op's total variation has the 1/2.
            Divergence.Options tv = Divergence.Options.totalVariation().withTemperature(temperature)
                    .withReduction(Reduction.NONE).withTargets(labels).on(backend);
            try (Divergence.Result tvd = Divergence.compute(dpo, reverse, tv)) {
                for (int t = 0; t < rows; t++) {
                    // NaN: a teacher row without distribution, whose KL is NaN anyway; alpha needs only be finite.
                    float distance = tvd.loss().getFloat(t);
                    alpha[t] = beta2 * 2 * (Float.isNaN(distance) ? 0f : distance) + 1e-3f;
                    scale[t] = beta / alpha[t];
                }
            }
        } else {
            java.util.Arrays.fill(alpha, fixedWeight - 1f);
            java.util.Arrays.fill(scale, 1f);
        }
        float[] weights = sequenceWeights(labels, starts, scale);
        try (Tensor w = Tensor.of(weights, rows); Tensor a = Tensor.of(alpha, rows)) {
            Divergence.Options kl = Divergence.Options.reverseKl().withTemperature(temperature)
                    .withReduction(Reduction.SUM).withWeights(w).withExtrapolatedTeacher(reverse, a).on(backend);
            if (dpo.dim(1) > policy.dim(1)) {
                kl = kl.withSharedPrefix();
            }
            return GradientOut.divergence(policy, dpo, kl, gradScale, gradient);
        }
    }

    /** {@code scale_t / (labelled tokens of t's sequence) / (sequences with a labelled token)}, 0 for unlabelled tokens. */
    private static float[] sequenceWeights(Tensor labels, int[] starts, float[] scale) {
        int rows = scale.length;
        float[] w = new float[rows];
        int sequences = 0;
        for (int b = 0; b + 1 < starts.length; b++) {
            int counted = 0;
            for (int t = starts[b]; t < starts[b + 1]; t++) {
                counted += labels.getLong(t) == LogitStats.DEFAULT_IGNORE_INDEX ? 0 : 1;
            }
            sequences += counted > 0 ? 1 : 0;
            for (int t = starts[b]; t < starts[b + 1]; t++) {
                w[t] = counted == 0 || labels.getLong(t) == LogitStats.DEFAULT_IGNORE_INDEX ? 0f : scale[t] / counted;
            }
        }
        if (sequences > 0) {
            for (int t = 0; t < rows; t++) {
                w[t] /= sequences;
            }
        }
        return w;
    }
}
