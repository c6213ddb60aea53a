package dev.tokenkernels.methods;

import dev.tokenkernels.ops.loss.LogitStats;
import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.ops.select.EntropyNormalization;
import dev.tokenkernels.ops.select.TokenGroupAdvantage;
import dev.tokenkernels.ops.select.TokenSelection;
import dev.tokenkernels.ops.select.TokenTerms;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.Tensor;

/**
 * HAPO's policy loss (Liu et al., 2025, "From Uniform to Heterogeneous: Tailoring Policy
 * Optimization to Every Token's Nature", arXiv:2509.16591): every token's clip range and advantage
 * follow its entropy at rollout time.
 * <ol>
 * <li>{@link EntropyNormalization}: {@code h_hat in [-1, 1]} from the rollout entropies (log, the
 *     0.8-quantile pivot, RMS scale, split max/min scaling) over the counted tokens.</li>
 * <li>{@link TokenGroupAdvantage}: Token-Level Group Average advantages from the responses'
 *     rewards (length-weighted group statistics, GRPO fallback when any {@code |A| >= 5}).</li>
 * <li>{@link TokenTerms#adaptiveClipping}: Asymmetric Adaptive Clipping ({@code h_hat <= 0} widens
 *     eps_low by {@code 1 - alpha h_hat}, {@code h_hat > 0} widens eps_high by
 *     {@code 1 + alpha h_hat}) and Differential Advantage Redistribution ({@code A_ent = A (1 + beta
 *     h_hat)}: high-entropy tokens use A inside the neutral zone {@code (1 - eps_low'/2, 1 +
 *     eps_high'/2)} and A_ent outside it, low-entropy tokens the reverse).</li>
 * <li>One {@link PolicyLoss} pass with those per-token ranges, the inside advantages as
 *     {@code advantages}, the outside ones as zone advantages, the dual clip, token-mean
 *     aggregation, and the gradient w.r.t. the logits.</li>
 * </ol>
 * The paper's defaults: eps 0.2 both sides, alpha = beta = 1, dual clip 10. Its fourth part,
 * Adaptive Temperature Sampling, acts at rollout time: {@code samplingTemperatures} gives
 * {@code T0 (1 + tau clamp(h_hat, -1, 1))} per token for the sampler (T0 = 1, tau = 0.05), with
 * h_hat either over the entropies given or, as the authors' released sampler does during decoding,
 * under a training batch's statistics ({@link #entropyStatistics}).
 *
 * <p>The entropies are the rollout's (the sampling policy's, e.g. {@link LogitStats} on its
 * logits); h_hat and the advantages are constants of the loss, as in the paper. A token counts
 * when its target is not the ignore index ({@link LogitStats#DEFAULT_IGNORE_INDEX}).
 */
public final class HapoLoss {
    private final float epsLow;
    private final float epsHigh;
    private final float alpha;
    private final float beta;
    private final float dualClip;
    private final boolean releasedCodeSigns;
    private final Backend backend;

    /**
     * The HAPO loss with these settings; {@link #defaults()} gives the paper's.
     *
     * @param epsLow the base lower clip range (HAPO: 0.2)
     * @param epsHigh the base upper clip range (HAPO: 0.2)
     * @param alpha how far entropy widens the clip range (HAPO: 1)
     * @param beta how far entropy scales the advantage outside/inside the zone (HAPO: 1)
     * @param dualClip the dual clip {@code c > 1} for negative advantages (HAPO: 10), 0 for none
     * @param releasedCodeSigns reproduce the released code's h_hat signs (see {@link EntropyNormalization})
     * @param backend where to run, or null for the default backend
     */
    public HapoLoss(float epsLow, float epsHigh, float alpha, float beta, float dualClip, boolean releasedCodeSigns,
                    Backend backend) {
        nonNegative("epsLow", epsLow);
        nonNegative("epsHigh", epsHigh);
        nonNegative("alpha", alpha);
        nonNegative("beta", beta);
        Checks.require(dualClip == 0f || (Float.isFinite(dualClip) && dualClip > 1f), "dualClip",
                "0 (none) or a finite c > 1", dualClip);
        this.epsLow = epsLow;
        this.epsHigh = epsHigh;
        this.alpha = alpha;
        this.beta = beta;
        this.dualClip = dualClip;
        this.releasedCodeSigns = releasedCodeSigns;
        this.backend = backend;
    }

    /** The paper's settings: eps 0.2 both sides, alpha = beta = 1, dual clip 10, its signs of h_hat. */
    public static HapoLoss defaults() {
        return new HapoLoss(0.2f, 0.2f, 1f, 1f, 10f, false, null);
    }

    /**
     * The loss, its statistics and {@code gradScale} times its gradient w.r.t. {@code logits}.
     *
     * @param logits the policy's logits [N, V] (F32, F16 or BF16)
     * @param targets the sampled tokens [N] (I32 or I64), the ignore index where a token does not count
     * @param oldLogProb the sampling policy's log-probabilities of the targets, F32 [N]
     * @param entropy the sampling policy's entropies at each token, F32 [N] (finite where counted)
     * @param rewards one reward per response
     * @param sequenceStarts the responses as offsets [B + 1] from 0 to N
     * @param groupStarts the groups (responses to one prompt) as offsets [G + 1] from 0 to B
     */
    public PolicyLoss.Result compute(Tensor logits, Tensor targets, Tensor oldLogProb, Tensor entropy, float[] rewards,
                                     int[] sequenceStarts, int[] groupStarts, float gradScale) {
        return run(logits, targets, oldLogProb, entropy, rewards, sequenceStarts, groupStarts, gradScale, null);
    }

    /**
     * As {@link #compute(Tensor, Tensor, Tensor, Tensor, float[], int[], int[], float)},
     * with the gradient written into {@code gradient} ({@code [N, V]}, F32, F16 or BF16, e.g. reused
     * from step to step), which may be {@code logits} itself: in place, with no {@code [N, V]}
     * buffer besides the logits.
     */
    public PolicyLoss.Result compute(Tensor logits, Tensor targets, Tensor oldLogProb, Tensor entropy, float[] rewards,
                                     int[] sequenceStarts, int[] groupStarts, float gradScale, Tensor gradient) {
        Checks.notNull("gradient", gradient);
        return run(logits, targets, oldLogProb, entropy, rewards, sequenceStarts, groupStarts, gradScale, gradient);
    }

    private PolicyLoss.Result run(Tensor logits, Tensor targets, Tensor oldLogProb, Tensor entropy, float[] rewards,
                                  int[] sequenceStarts, int[] groupStarts, float gradScale, Tensor gradient) {
        Checks.notNull("logits", logits);
        Checks.rank("logits", logits, 2, "[N, V]");
        Checks.notNull("targets", targets);
        Checks.rank("targets", targets, 1, "[N]");
        Checks.dim("targets", targets, 0, logits.dim(0), "N, the rows of logits");
        Checks.notNull("entropy", entropy);
        Checks.rank("entropy", entropy, 1, "[N]");
        Checks.dim("entropy", entropy, 0, targets.dim(0), "N, the entries of targets");
        try (Tensor mask = TokenSelection.countedMask(targets, LogitStats.DEFAULT_IGNORE_INDEX);
             EntropyNormalization.Result h = EntropyNormalization.compute(entropy, mask, normalization());
             TokenGroupAdvantage.Result a = TokenGroupAdvantage.compute(rewards, sequenceStarts, groupStarts, mask);
             TokenTerms.Clipping c = TokenTerms.adaptiveClipping(h.normalized(), a.tokenAdvantages(), epsLow, epsHigh,
                     alpha, beta, TokenTerms.Options.defaults().on(backend))) {
            PolicyLoss.Options options = PolicyLoss.Options.defaults().withClipPerToken(c.epsLow(), c.epsHigh())
                    .withZoneAdvantages(c.advantageOutside()).withDualClip(dualClip)
                    .withAggregation(PolicyLoss.Aggregation.TOKEN_MEAN).on(backend);
            return GradientOut.policyLoss(logits, targets, oldLogProb, c.advantageInside(), sequenceStarts, options,
                    gradScale, gradient);
        }
    }

    /**
     * Adaptive Temperature Sampling: {@code t0 (1 + tau clamp(h_hat, -1, 1))} per token (F32 [N]),
     * h_hat from {@code entropy} over the tokens of {@code mask} (HAPO: t0 = 1, tau = 0.05). It runs
     * at rollout time, before there are targets: the mask says which positions count (e.g. not
     * padding); {@link TokenSelection#countedMask} makes one from targets where they exist.
     *
     * @param entropy the sampling policy's entropies, F32 [N] (finite where the mask counts)
     * @param mask U8 [N] of the positions that count, or null for all
     */
    public Tensor samplingTemperatures(Tensor entropy, Tensor mask, float t0, float tau) {
        try (EntropyNormalization.Result h = EntropyNormalization.compute(entropy, mask, normalization())) {
            return TokenTerms.adaptiveTemperature(h.normalized(), t0, tau, TokenTerms.Options.defaults().on(backend));
        }
    }

    /**
     * Adaptive Temperature Sampling as HAPO's released sampler does it: each token's {@code h_hat}
     * under a training batch's {@code statistics} ({@link #entropyStatistics}, e.g. the last
     * step's), not over the entropies given, which during decoding are one step's few tokens;
     * then {@code t0 (1 + tau clamp(h_hat, -1, 1))} (F32 [N]).
     *
     * @param entropy the sampling policy's entropies at the positions being sampled, F32 [N]
     * @param mask U8 [N] of the positions that count, or null for all
     */
    public Tensor samplingTemperatures(Tensor entropy, Tensor mask, EntropyNormalization.Result statistics, float t0,
                                       float tau) {
        try (Tensor hHat = EntropyNormalization.apply(entropy, mask, statistics, normalization())) {
            return TokenTerms.adaptiveTemperature(hHat, t0, tau, TokenTerms.Options.defaults().on(backend));
        }
    }

    /**
     * The entropy statistics {@link #compute} normalizes a batch with: over the tokens whose
     * target is not the ignore index, with this loss's signs. Keep them (the result may be
     * closed) for {@link #samplingTemperatures(Tensor, Tensor, EntropyNormalization.Result, float, float)}.
     *
     * @param entropy the batch's entropies, F32 [N] (finite where counted)
     * @param targets the batch's sampled tokens [N] (I32 or I64), the ignore index where a token does not count
     */
    public EntropyNormalization.Result entropyStatistics(Tensor entropy, Tensor targets) {
        Checks.notNull("targets", targets);
        Checks.rank("targets", targets, 1, "[N]");
        Checks.notNull("entropy", entropy);
        Checks.rank("entropy", entropy, 1, "[N]");
        Checks.dim("entropy", entropy, 0, targets.dim(0), "N, the entries of targets");
        try (Tensor mask = TokenSelection.countedMask(targets, LogitStats.DEFAULT_IGNORE_INDEX)) {
            return EntropyNormalization.compute(entropy, mask, normalization());
        }
    }

    private EntropyNormalization.Options normalization() {
        return EntropyNormalization.Options.defaults().withReleasedCodeSigns(releasedCodeSigns).on(backend);
    }

    private static void nonNegative(String name, float value) {
        Checks.require(Float.isFinite(value) && value >= 0f, name, "a finite value >= 0", value);
    }
}
