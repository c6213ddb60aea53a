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
 * The clipped policy-gradient loss of PPO (Schulman et al., 2017) and its token-level variants
 * (GRPO, Shao et al., 2024; DAPO, Yu et al., 2025; Dr. GRPO, Liu et al., 2025), with the gradient
 * w.r.t. the policy logits, and the per-token extensions of STEER, HAPO, Lp-Reg and Thinkless.
 *
 * <p>Per token {@code t} with policy logits {@code z_t [V]}, sampled token {@code y_t}, old
 * log-probability {@code o_t} and advantage {@code A_t}: {@code logp_t = log softmax(z_t / T)[y_t]},
 * <pre>{@code
 *   r_t  = exp(clamp(logp_t - o_t, -20, 20)),   r'_t = min(r_t, delta)        (ratio cap, off by default)
 *   a_t  = A_t inside 1 - eps_low_t/2 < r'_t < 1 + eps_high_t/2, else Aout_t   (HAPO zones; off: a_t = A_t)
 *   p_t  = -min(r'_t a_t, clip(r'_t, 1 - eps_low_t, 1 + eps_high_t) a_t)
 *   p_t  = min(p_t, -c a_t)  for a_t < 0                                       (dual clip c, off by default)
 *   p_t  = -a_t r'_t         for the tokens Lp-Reg regularizes (no clip, no dual clip)
 *   l_t  = w_t p_t                                                             (token weights, 1 by default)
 *        + beta (exp(d_t) - d_t - 1),  d_t = clamp(ref_t - logp_t, -20, 20)   (k3 reference KL, beta = 0 by default)
 *        + beta_lp min(exp(e_t) - e_t - 1, 10),  e_t = lp_t - logp_t         (regularized tokens only)
 * }</pre>
 * {@code eps_low}, {@code eps_high} are scalars or per-token tensors. The gradient follows the
 * branch each {@code min}/{@code clip}/zone takes (0 where the log-ratio clamp, the cap, a clip, the
 * dual clip or Lp-Reg's cap of its KL at 10 is active, and the reference KL's slope 0 where its
 * {@code d_t} is clamped; the zone's choice of advantage is a constant), as automatic
 * differentiation of these formulas does. The reference KL's clamp is the log-ratio's: a sampled
 * token whose logit is {@code -inf} (masked at training but not at sampling) costs
 * {@code beta k3(20)}, a large finite penalty, not {@code inf - inf}.
 *
 * <p>Decisions on the extensions:
 * <ul>
 *   <li>Token weights ({@link Options#withTokenWeights}; STEER, Hao et al., 2025, arXiv:2510.10150, weights the
 *       dual-clip token loss) multiply the policy term {@code p_t} and its gradient only: the k3
 *       reference KL and Lp-Reg's KL are regularizers towards other distributions, not credit
 *       assignment, so a token's weight does not scale them.</li>
 *   <li>HAPO's zones ({@link Options#withZoneAdvantages}; Liu et al., 2025, "HAPO") use the capped
 *       ratio {@code r'}, the one the clip sees (the same as {@code r} whenever
 *       {@code delta >= 1 + eps_high/2}); both bounds are strict. The chosen advantage {@code a_t}
 *       is then the token's advantage everywhere: in the clip, the dual clip and the statistics.</li>
 *   <li>Lp-Reg ({@link Options#withLpReg}; Huang et al., 2025, "Low-probability Tokens Sustain
 *       Exploration in RLVR") keeps the ratio cap (a safety bound, off by default) but no clip
 *       range and no dual clip for regularized tokens. As in Lp-Reg, the k3 value (not the
 *       log-ratio) is capped at 10, with derivative 0 where {@code k3 > 10}; {@code e_t} is first
 *       clamped to {@code [-20, 20]}, where k3 is above 10 on both sides, so the value is unchanged
 *       and a regularized token with {@code logp_t = -inf} (its target logit {@code -inf}) gets the
 *       capped KL {@code 10 beta_lp} and slope 0, not {@code inf - inf}. Lp-Reg regularizes only
 *       tokens with {@code logp < lp}, so a regularized token with {@code lp_t = -inf} (dropped by
 *       the proxy) is refused; the proxy is not read for other tokens ({@link ProxyDistribution}'s
 *       output can be passed as is). Regularized tokens are never counted as clipped.</li>
 *   <li>They compose as the formulas read: the zone picks {@code a_t} (for Lp-Reg's tokens too),
 *       the policy term (clipped, or Lp-Reg's) is weighted by {@code w_t}, the KL terms are added
 *       unweighted. The defaults (no weights, zones or Lp-Reg) leave every formula as plain PPO,
 *       bit for bit.</li>
 * </ul>
 *
 * <p>Two layouts: packed, logits {@code [N, V]} whose sequences are consecutive runs of tokens
 * given by offsets {@code [B + 1]} (0 to N), per-token inputs {@code [N]}; or padded, logits
 * {@code [B, L, V]} with null offsets, each of the B rows one sequence starting at its position 0
 * (right-padded: DEGRPO's control token is position 0), per-token inputs and outputs
 * {@code [B, L]}. A padded call gives the numbers of the packed call over the real tokens bit for
 * bit, given the same normalizer (Dr. GRPO's default maxLength is L when padded, the longest
 * sequence when packed). Advantages are per token, or per sequence ({@code [B]}) with
 * {@link Options#withSequenceAdvantages}. Tokens whose target is the ignore index, or where a
 * {@link Options#withResponseMask response mask} is 0, do not count, and their per-token inputs
 * (old and reference log-probabilities, advantages, clip ranges, weights, Lp-Reg's; under a mask's
 * 0 the target too) are not read: padding may hold anything, NaN included. {@link Aggregation}
 * turns per-token losses into the loss; the statistics ({@link Result}) are over the counted tokens.
 *
 * <p>One fused pass per row ({@code kernels/loss/policy_loss.cu}, {@code PolicyLossCpu}): the
 * row's log-sum-exp and entropy, {@code logp}, the token's loss and slope {@code dl/dlogp}, then
 * from cache (L2 on a GPU) the gradient {@code gradScale g_t slope (onehot - softmax) / T}
 * ({@code g_t} the token's aggregation weight).
 * The row is read from memory once and the gradient written once; no other {@code [N, V]} buffer
 * (none at all with the gradient in place of the logits).
 * Rows whose logits hold NaN or {@code +inf}, or are all {@code -inf}, have NaN loss and gradient.
 */
public final class PolicyLoss {

    /** How per-token losses {@code l_t} with counted tokens {@code m_t} become the loss. */
    public enum Aggregation {
        /** {@code sum m l / sum m} over the batch (DAPO), or {@code / numItems} when given. */
        TOKEN_MEAN,
        /** The mean over sequences with a counted token of each sequence's token mean (GRPO). */
        SEQ_MEAN_TOKEN_MEAN,
        /** The mean over all {@code B} sequences of each sequence's token sum. */
        SEQ_MEAN_TOKEN_SUM,
        /** {@code sum m l / (B * maxLength)} (Dr. GRPO); maxLength from the options, else the longest sequence. */
        SEQ_MEAN_TOKEN_SUM_NORM,
        /**
         * Thinkless' decoupled GRPO (Fang et al., 2025, "Thinkless: LLM Learns When to Think"):
         * {@code alpha * mean_b l_{b,0} + sum_{t>=1} m l / sum_{t>=1} m} over the batch, where
         * {@code l_{b,0}} is the first token of sequence {@code b} (the control token) when it
         * counts (a sequence whose first token is ignored has none), the second sum runs over every
         * other counted token, and {@code alpha} is {@link Options#controlTokenWeight()}. A part with
         * no token contributes 0, not NaN.
         */
        DEGRPO
    }

    /**
     * Options of one call; start from {@link #defaults()}.
     *
     * <p>Per-token tensors have the targets' shape, {@code [N]} or {@code [B, L]}.
     *
     * @param epsLowPerToken F32 per token overriding {@code epsLow}, or null
     * @param epsHighPerToken F32 per token overriding {@code epsHigh}, or null
     * @param dualClip {@code c > 1}, or 0 for none
     * @param ratioCap {@code delta > 0}, or {@code +inf} for none
     * @param klBeta the k3 reference KL's coefficient (needs reference log-probabilities), 0 for none
     * @param normalizer TOKEN_MEAN's {@code numItems} or SEQ_MEAN_TOKEN_SUM_NORM's {@code maxLength};
     *     0 for the default (and with the other aggregations, which take none)
     * @param tokenWeights F32 per token {@code w_t >= 0} multiplying each token's policy term, or null
     * @param zoneAdvantages F32 per token advantages used outside HAPO's neutral zone, or null
     * @param lpRegProxyLogProb F32 per token Lp-Reg's proxy log-probabilities, or null
     * @param lpRegMask per token (U8, I8, I32, I64 or F32) 1 for the tokens Lp-Reg regularizes, else 0; or null
     * @param lpRegBeta Lp-Reg's coefficient of its proxy KL
     * @param controlTokenWeight DEGRPO's {@code alpha}, the weight of the control tokens' mean
     * @param responseMask 1 for the tokens that may count, 0 for the others; or null
     * @param sequenceAdvantages the advantages are per sequence ({@code [B]}), not per token
     */
    public record Options(float epsLow, float epsHigh, Tensor epsLowPerToken, Tensor epsHighPerToken, float dualClip,
                          float ratioCap, float klBeta, float temperature, Aggregation aggregation, long normalizer,
                          Tensor tokenWeights, Tensor zoneAdvantages, Tensor lpRegProxyLogProb, Tensor lpRegMask,
                          float lpRegBeta, float controlTokenWeight, Tensor responseMask, boolean sequenceAdvantages,
                          long ignoreIndex, Backend backend) {

        /** DEGRPO's default control-token weight, Thinkless' {@code alpha = 1/1000}. */
        public static final float DEFAULT_CONTROL_TOKEN_WEIGHT = 0.001f;

        /**
         * eps 0.2 both sides, no dual clip, no cap, no KL, temperature 1, token mean, no token
         * weights, zone advantages or Lp-Reg, DEGRPO's alpha 0.001 (used only with DEGRPO), no
         * response mask, advantages per token, ignore index -100, the default backend.
         */
        public static Options defaults() {
            return new Options(0.2f, 0.2f, null, null, 0f, Float.POSITIVE_INFINITY, 0f, 1f, Aggregation.TOKEN_MEAN, 0,
                    null, null, null, null, 0f, DEFAULT_CONTROL_TOKEN_WEIGHT, null, false,
                    LogitStats.DEFAULT_IGNORE_INDEX, null);
        }

        /**
         * Scalar clip ranges {@code eps_low}, {@code eps_high} (finite, >= 0; default 0.2 each), used where no
         * per-token range is given.
         */
        public Options withClip(float low, float high) {
            return new Options(low, high, epsLowPerToken, epsHighPerToken, dualClip, ratioCap, klBeta, temperature,
                    aggregation, normalizer, tokenWeights, zoneAdvantages, lpRegProxyLogProb, lpRegMask, lpRegBeta,
                    controlTokenWeight, responseMask, sequenceAdvantages, ignoreIndex, backend);
        }

        /** Per-token clip ranges (F32, of the targets' shape), e.g. HAPO's entropy-adaptive ones. */
        public Options withClipPerToken(Tensor low, Tensor high) {
            return new Options(epsLow, epsHigh, low, high, dualClip, ratioCap, klBeta, temperature, aggregation,
                    normalizer, tokenWeights, zoneAdvantages, lpRegProxyLogProb, lpRegMask, lpRegBeta,
                    controlTokenWeight, responseMask, sequenceAdvantages, ignoreIndex, backend);
        }

        /** Dual clip {@code c}: finite and > 1, or 0 (the default) for none. */
        public Options withDualClip(float c) {
            return new Options(epsLow, epsHigh, epsLowPerToken, epsHighPerToken, c, ratioCap, klBeta, temperature,
                    aggregation, normalizer, tokenWeights, zoneAdvantages, lpRegProxyLogProb, lpRegMask, lpRegBeta,
                    controlTokenWeight, responseMask, sequenceAdvantages, ignoreIndex, backend);
        }

        /** Ratio cap {@code delta} (> 0), or {@code +inf} (the default) for none. */
        public Options withRatioCap(float delta) {
            return new Options(epsLow, epsHigh, epsLowPerToken, epsHighPerToken, dualClip, delta, klBeta, temperature,
                    aggregation, normalizer, tokenWeights, zoneAdvantages, lpRegProxyLogProb, lpRegMask, lpRegBeta,
                    controlTokenWeight, responseMask, sequenceAdvantages, ignoreIndex, backend);
        }

        /**
         * Coefficient {@code beta} of the k3 reference KL (finite, >= 0; default 0 = off); non-zero needs reference
         * log-probabilities.
         */
        public Options withReferenceKl(float beta) {
            return new Options(epsLow, epsHigh, epsLowPerToken, epsHighPerToken, dualClip, ratioCap, beta,
                    temperature, aggregation, normalizer, tokenWeights, zoneAdvantages, lpRegProxyLogProb, lpRegMask,
                    lpRegBeta, controlTokenWeight, responseMask, sequenceAdvantages, ignoreIndex, backend);
        }

        /** Softmax temperature {@code T} (default 1): see {@link Checks#temperature}. */
        public Options withTemperature(float t) {
            return new Options(epsLow, epsHigh, epsLowPerToken, epsHighPerToken, dualClip, ratioCap, klBeta, t,
                    aggregation, normalizer, tokenWeights, zoneAdvantages, lpRegProxyLogProb, lpRegMask, lpRegBeta,
                    controlTokenWeight, responseMask, sequenceAdvantages, ignoreIndex, backend);
        }

        /**
         * The aggregation, with its normalizer ({@code numItems} for TOKEN_MEAN, {@code maxLength}
         * for SEQ_MEAN_TOKEN_SUM_NORM; 0 for the default; a call refuses one with another aggregation).
         */
        public Options withAggregation(Aggregation a, long normalizerValue) {
            return new Options(epsLow, epsHigh, epsLowPerToken, epsHighPerToken, dualClip, ratioCap, klBeta,
                    temperature, a, normalizerValue, tokenWeights, zoneAdvantages, lpRegProxyLogProb, lpRegMask,
                    lpRegBeta, controlTokenWeight, responseMask, sequenceAdvantages, ignoreIndex, backend);
        }

        /** The aggregation with its default normalizer (default {@link Aggregation#TOKEN_MEAN}). */
        public Options withAggregation(Aggregation a) {
            return withAggregation(a, 0);
        }

        /**
         * Per-token weights {@code w_t} (F32 per token, finite, {@code >= 0}; null for none) of the
         * policy term, e.g. STEER's; the KL terms are not weighted (see the class doc).
         */
        public Options withTokenWeights(Tensor w) {
            return new Options(epsLow, epsHigh, epsLowPerToken, epsHighPerToken, dualClip, ratioCap, klBeta,
                    temperature, aggregation, normalizer, w, zoneAdvantages, lpRegProxyLogProb, lpRegMask, lpRegBeta,
                    controlTokenWeight, responseMask, sequenceAdvantages, ignoreIndex, backend);
        }

        /**
         * HAPO's differential advantages, per token: the call's {@code advantages} apply inside the
         * neutral zone {@code 1 - eps_low_t/2 < r'_t < 1 + eps_high_t/2}, {@code outside[t]} (F32
         * per token, finite; null for none) outside it. Which of {@code A} and {@code A_ent} is inside
         * depends on the token (HAPO: {@code A_ent} inside for {@code h_hat <= 0}, outside for
         * {@code h_hat > 0}), so pass both per-token tensors as {@code TokenTerms.adaptiveClipping}
         * gives them: {@code advantageInside} as the call's {@code advantages},
         * {@code advantageOutside} here, and its ranges to {@link #withClipPerToken}.
         */
        public Options withZoneAdvantages(Tensor outside) {
            return new Options(epsLow, epsHigh, epsLowPerToken, epsHighPerToken, dualClip, ratioCap, klBeta,
                    temperature, aggregation, normalizer, tokenWeights, outside, lpRegProxyLogProb, lpRegMask,
                    lpRegBeta, controlTokenWeight, responseMask, sequenceAdvantages, ignoreIndex, backend);
        }

        /**
         * Lp-Reg on the tokens {@code regularized} marks (U8, I8, I32, I64 or F32 per token of 0 and 1):
         * the unclipped policy term plus {@code beta min(k3(proxyLogProb - logp), 10)};
         * {@code proxyLogProb} (F32 per token) must be finite on those tokens and is not read elsewhere.
         * Null tensors turn it off.
         */
        public Options withLpReg(Tensor proxyLogProb, Tensor regularized, float beta) {
            return new Options(epsLow, epsHigh, epsLowPerToken, epsHighPerToken, dualClip, ratioCap, klBeta,
                    temperature, aggregation, normalizer, tokenWeights, zoneAdvantages, proxyLogProb, regularized,
                    beta, controlTokenWeight, responseMask, sequenceAdvantages, ignoreIndex, backend);
        }

        /** DEGRPO's {@code alpha}, the weight of the control tokens' mean (finite, {@code >= 0}). */
        public Options withControlTokenWeight(float alpha) {
            return new Options(epsLow, epsHigh, epsLowPerToken, epsHighPerToken, dualClip, ratioCap, klBeta,
                    temperature, aggregation, normalizer, tokenWeights, zoneAdvantages, lpRegProxyLogProb, lpRegMask,
                    lpRegBeta, alpha, responseMask, sequenceAdvantages, ignoreIndex, backend);
        }

        /**
         * Which tokens count besides the ignore index: {@code mask} of the targets' shape
         * ({@code [N]} or {@code [B, L]}; U8, I8, I32, I64 or F32 of 0 and 1), a token counting where
         * it is 1 and its target is not the ignore index; null for none. The other tokens' inputs,
         * targets included, are not read.
         */
        public Options withResponseMask(Tensor mask) {
            return new Options(epsLow, epsHigh, epsLowPerToken, epsHighPerToken, dualClip, ratioCap, klBeta,
                    temperature, aggregation, normalizer, tokenWeights, zoneAdvantages, lpRegProxyLogProb, lpRegMask,
                    lpRegBeta, controlTokenWeight, mask, sequenceAdvantages, ignoreIndex, backend);
        }

        /**
         * With {@code perSequence}, the call's {@code advantages} hold one value per sequence (F32
         * {@code [B]}, e.g. GRPO's group-normalized rewards), which every token of the sequence
         * takes; otherwise (the default) one per token ({@code [N]} or {@code [B, L]}).
         */
        public Options withSequenceAdvantages(boolean perSequence) {
            return new Options(epsLow, epsHigh, epsLowPerToken, epsHighPerToken, dualClip, ratioCap, klBeta,
                    temperature, aggregation, normalizer, tokenWeights, zoneAdvantages, lpRegProxyLogProb, lpRegMask,
                    lpRegBeta, controlTokenWeight, responseMask, perSequence, ignoreIndex, backend);
        }

        /** The target value of tokens that do not count (default -100). */
        public Options withIgnoreIndex(long index) {
            return new Options(epsLow, epsHigh, epsLowPerToken, epsHighPerToken, dualClip, ratioCap, klBeta,
                    temperature, aggregation, normalizer, tokenWeights, zoneAdvantages, lpRegProxyLogProb, lpRegMask,
                    lpRegBeta, controlTokenWeight, responseMask, sequenceAdvantages, index, backend);
        }

        /** Runs on {@code b}; null (the default) means {@link Backends#defaultBackend()}. */
        public Options on(Backend b) {
            return new Options(epsLow, epsHigh, epsLowPerToken, epsHighPerToken, dualClip, ratioCap, klBeta,
                    temperature, aggregation, normalizer, tokenWeights, zoneAdvantages, lpRegProxyLogProb, lpRegMask,
                    lpRegBeta, controlTokenWeight, responseMask, sequenceAdvantages, ignoreIndex, b);
        }
    }

    /**
     * The loss, the gradient w.r.t. the logits (of their shape, null when not asked for), per token
     * {@code logp} and entropy (F32 of the targets' shape; 0 for tokens that do not count), and over
     * the counted tokens: the fraction clipped at the low side ({@code a < 0}, {@code r' < 1 - eps_low}) and at
     * the high side ({@code a > 0}, {@code r' > 1 + eps_high}), with {@code a} the token's advantage
     * after HAPO's zone choice and Lp-Reg's regularized tokens never counted; the mean capped ratio
     * {@code r'} and the mean entropy. Closing closes what the call allocated, not a caller's
     * gradient buffer.
     */
    public static final class Result implements AutoCloseable {
        private final float loss;
        private final Tensor gradient;
        private final boolean ownsGradient;
        private final Tensor logProb;
        private final Tensor entropy;
        private final double clipFractionLow;
        private final double clipFractionHigh;
        private final double meanRatio;
        private final double meanEntropy;
        private final long tokens;

        Result(float loss, Tensor gradient, boolean ownsGradient, Tensor logProb, Tensor entropy, double clipFractionLow,
               double clipFractionHigh, double meanRatio, double meanEntropy, long tokens) {
            this.loss = loss;
            this.gradient = gradient;
            this.ownsGradient = ownsGradient;
            this.logProb = logProb;
            this.entropy = entropy;
            this.clipFractionLow = clipFractionLow;
            this.clipFractionHigh = clipFractionHigh;
            this.meanRatio = meanRatio;
            this.meanEntropy = meanEntropy;
            this.tokens = tokens;
        }

        /** The aggregated loss. */
        public float loss() {
            return loss;
        }

        /** {@code gradScale} times the gradient w.r.t. the logits, of their shape, or null when not asked for. */
        public Tensor gradient() {
            return gradient;
        }

        /** {@code logp} of each token, F32 of the targets' shape, 0 for tokens that do not count. */
        public Tensor logProb() {
            return logProb;
        }

        /** The entropy of each token's softmax, F32 of the targets' shape, 0 for tokens that do not count. */
        public Tensor entropy() {
            return entropy;
        }

        /** Fraction of the counted tokens clipped at the low side ({@code a < 0}, {@code r' < 1 - eps_low}). */
        public double clipFractionLow() {
            return clipFractionLow;
        }

        /** Fraction of the counted tokens clipped at the high side ({@code a > 0}, {@code r' > 1 + eps_high}). */
        public double clipFractionHigh() {
            return clipFractionHigh;
        }

        /** Mean capped ratio {@code r'} over the counted tokens. */
        public double meanRatio() {
            return meanRatio;
        }

        /** Mean entropy over the counted tokens. */
        public double meanEntropy() {
            return meanEntropy;
        }

        /** The counted tokens. */
        public long tokens() {
            return tokens;
        }

        @Override
        public void close() {
            logProb.close();
            entropy.close();
            if (ownsGradient && gradient != null) {
                gradient.close();
            }
        }
    }

    /** The ratio's log is clamped to this magnitude before exp. */
    public static final float LOG_RATIO_CLAMP = 20f;

    private PolicyLoss() {
    }

    /** The loss and statistics only. */
    public static Result compute(Tensor logits, Tensor targets, Tensor oldLogProb, Tensor advantages,
                                 Tensor referenceLogProb, int[] sequenceStarts, Options options) {
        return run(logits, targets, oldLogProb, advantages, referenceLogProb, sequenceStarts, options, 0f, null, false);
    }

    /** With {@code gradScale} times the gradient w.r.t. the logits, in a new F32 tensor. */
    public static Result computeWithGradient(Tensor logits, Tensor targets, Tensor oldLogProb, Tensor advantages,
                                             Tensor referenceLogProb, int[] sequenceStarts, Options options,
                                             float gradScale) {
        return run(logits, targets, oldLogProb, advantages, referenceLogProb, sequenceStarts, options, gradScale, null,
                true);
    }

    /**
     * With {@code gradScale} times the gradient written into {@code gradient} (the logits' shape; F32,
     * or F16/BF16 to halve its memory: each value is formed in fp32 and rounded once, to nearest
     * even). {@code gradient} may be the logits themselves (in place, as fused cross-entropy
     * kernels do: a row is read before its gradient is written, and no [N, V] buffer is needed
     * besides the logits); otherwise it must share no byte with them.
     */
    public static Result computeWithGradient(Tensor logits, Tensor targets, Tensor oldLogProb, Tensor advantages,
                                             Tensor referenceLogProb, int[] sequenceStarts, Options options,
                                             float gradScale, Tensor gradient) {
        Checks.notNull("gradient", gradient);
        return run(logits, targets, oldLogProb, advantages, referenceLogProb, sequenceStarts, options, gradScale,
                gradient, true);
    }

    private static Result run(Tensor logits, Tensor targets, Tensor oldLogProb, Tensor advantages,
                              Tensor referenceLogProb, int[] starts, Options o, float gradScale, Tensor gradientOut,
                              boolean withGradient) {
        Checks.notNull("logits", logits);
        Checks.notNull("targets", targets);
        if (o == null) {
            throw new IllegalArgumentException("options: expected Options (e.g. Options.defaults()), got null");
        }
        Checks.dtype("logits", logits, DType.F32, DType.F16, DType.BF16);
        TokenLayout layout = TokenLayout.of(logits, starts);
        Tensor logitRows = layout.packedRows("logits", logits);
        int rows = layout.rows();
        long vocab = logitRows.dim(1);
        boolean[] counted = new boolean[rows];
        int[] target = targets(layout, targets, o, vocab, counted);
        float[] old = perToken("oldLogProb", oldLogProb, layout, counted);
        float[] advantage = o.sequenceAdvantages() ? layout.perSequence("advantages", advantages, counted)
                : perToken("advantages", advantages, layout, counted);
        float[] reference = referenceLogProb == null ? null
                : perToken("referenceLogProb", referenceLogProb, layout, counted);
        Checks.require(o.klBeta() == 0f || reference != null, "referenceLogProb",
                "reference log-probabilities with withReferenceKl(beta != 0)", "null");
        Checks.require(Float.isFinite(o.klBeta()) && o.klBeta() >= 0f, "klBeta", "a finite value >= 0", o.klBeta());
        Checks.require(o.aggregation() != null, "aggregation", "an Aggregation", "null");
        Checks.require(o.normalizer() >= 0, "normalizer", "a count >= 0 (0 for the default)", o.normalizer());
        // only TOKEN_MEAN (numItems) and SEQ_MEAN_TOKEN_SUM_NORM (maxLength) read it: elsewhere it would be ignored
        Checks.require(o.normalizer() == 0 || o.aggregation() == Aggregation.TOKEN_MEAN
                || o.aggregation() == Aggregation.SEQ_MEAN_TOKEN_SUM_NORM, "normalizer",
                "0 with " + o.aggregation() + " (it takes none)", o.normalizer());
        Checks.require(o.dualClip() == 0f || (Float.isFinite(o.dualClip()) && o.dualClip() > 1f), "dualClip",
                "0 (none) or a finite c > 1", o.dualClip());
        Checks.require(o.ratioCap() > 0f && !Float.isNaN(o.ratioCap()), "ratioCap", "a value > 0 (+inf for none)",
                o.ratioCap());
        Checks.require(Float.isFinite(gradScale), "gradScale", "a finite number", gradScale);
        Checks.temperature("temperature", o.temperature());
        float[] epsLow = clipRange("epsLow", o.epsLow(), o.epsLowPerToken(), layout, counted);
        float[] epsHigh = clipRange("epsHigh", o.epsHigh(), o.epsHighPerToken(), layout, counted);
        float[] tokenWeight = tokenWeights(o.tokenWeights(), layout, counted);
        float[] outside = o.zoneAdvantages() == null ? advantage
                : perToken("zoneAdvantages", o.zoneAdvantages(), layout, counted);
        Checks.require(Float.isFinite(o.controlTokenWeight()) && o.controlTokenWeight() >= 0f, "controlTokenWeight",
                "a finite value >= 0", o.controlTokenWeight());
        int[] sequence = sequenceOf(layout.starts(), rows);
        Tensor gradientRows = null;
        if (withGradient && gradientOut != null) {
            Checks.apart("gradient", gradientOut, "logits", logits, true);
            Checks.dtype("gradient", gradientOut, DType.F32, DType.F16, DType.BF16);
            // the backends write N * V floats with stride V: any other shape overruns or misplaces rows
            gradientRows = gradientOut == logits ? logitRows : layout.packedRows("gradient", gradientOut);
        }

        LpReg lpReg = lpReg(o, layout, counted, rows);
        double[] weight = aggregationWeights(o, counted, sequence, layout.starts());
        float invT = 1f / o.temperature();
        double[] coefficientScale = new double[rows];
        for (int t = 0; t < rows; t++) {
            coefficientScale[t] = gradScale * weight[t] * invT; // dL/dz = that * slope * (onehot - p)
        }
        logits.segment(); // closed tensors fail here, before any work
        Tensor gradient = withGradient ? (gradientOut != null ? gradientOut
                : Tensor.allocate(DType.F32, layout.logitsShape())) : null;
        boolean owns = withGradient && gradientOut == null;
        try {
            if (owns) {
                gradientRows = layout.packedRows("gradient", gradient);
            }
            PolicyRows job = new PolicyRows(logitRows, target, invT, old, advantage, outside, reference, epsLow,
                    epsHigh, o.dualClip(), o.ratioCap(), o.klBeta(), tokenWeight, lpReg.regularized(), lpReg.proxy(),
                    lpReg.beta(), coefficientScale, gradientRows, new float[rows], new float[rows], new double[rows],
                    new double[rows]);
            Backend backend = Backends.select(o.backend());
            if (backend instanceof CpuBackend cpu) {
                PolicyLossCpu.run(cpu, job);
            } else if (backend instanceof KernelBackend gpu) {
                PolicyLossKernel.run(gpu, job);
            } else {
                throw new TokenKernelsException("the policy loss cannot run on backend '" + backend.name()
                        + "': it is neither the cpu backend nor a kernel backend");
            }
            double loss = 0;
            long tokens = 0;
            long low = 0;
            long high = 0;
            double ratioSum = 0;
            double entropySum = 0;
            for (int t = 0; t < rows; t++) {
                if (!counted[t]) {
                    continue;
                }
                loss += weight[t] * job.tokenLoss()[t];
                tokens++;
                double r = job.ratio()[t];
                int side = job.clipSide(t, r);
                low += side < 0 ? 1 : 0;
                high += side > 0 ? 1 : 0;
                ratioSum += r;
                entropySum += job.entropy()[t];
            }
            double per = tokens == 0 ? 0 : 1.0 / tokens;
            return new Result((float) loss, gradient, owns, Tensor.of(job.logProb(), layout.tokenShape()),
                    Tensor.of(job.entropy(), layout.tokenShape()),
                    low * per, high * per, ratioSum * per, entropySum * per, tokens);
        } catch (RuntimeException | Error e) {
            if (owns) {
                gradient.close();
            }
            throw e;
        }
    }

    /**
     * One validated call as the backends see it: per counted row the token's settings, the scale
     * {@code gradScale * aggregation weight / T} of its gradient, and the outputs.
     *
     * @param targets per row the sampled token, or -1 for a row that does not count
     * @param outsideAdvantages per row the advantage outside HAPO's neutral zone ({@code advantages} without zones)
     * @param reference per row the reference log-probability, or null without the KL term
     * @param tokenWeights per row the policy term's weight (1 without weights)
     * @param regularized per row 1 for a token Lp-Reg regularizes, else 0
     * @param lpProxy per row Lp-Reg's proxy log-probability (0 where not regularized)
     */
    record PolicyRows(Tensor logits, int[] targets, float invT, float[] oldLogProb, float[] advantages,
                      float[] outsideAdvantages, float[] reference, float[] epsLow, float[] epsHigh, float dualClip,
                      float ratioCap, float klBeta, float[] tokenWeights, int[] regularized, float[] lpProxy,
                      float lpBeta, double[] coefficientScale, Tensor gradient, float[] logProb, float[] entropy,
                      double[] tokenLoss, double[] ratio) {
        int rows() {
            return (int) logits.dim(0);
        }

        int vocab() {
            return (int) logits.dim(1);
        }

        /** The token formulas for row {@code t} at {@code logp}. */
        Token token(int t, float logp) {
            return PolicyLoss.token(logp, oldLogProb[t], advantages[t], outsideAdvantages[t], epsLow[t], epsHigh[t],
                    dualClip, ratioCap, klBeta, reference == null ? 0f : reference[t], tokenWeights[t],
                    regularized[t] != 0, lpProxy[t], lpBeta);
        }

        /** {@link PolicyLoss#clipSide} of row {@code t} at the capped ratio {@code r} a backend returned. */
        int clipSide(int t, double r) {
            return PolicyLoss.clipSide(r, advantages[t], outsideAdvantages[t], epsLow[t], epsHigh[t],
                    regularized[t] != 0);
        }
    }

    /** One token's loss, {@code dl/dlogp} and capped ratio {@code r'}. */
    record Token(double loss, double slope, double ratio) {
    }

    /** Lp-Reg's cap of its k3 value: {@code min(k3(lp_proxy - logp), LP_REG_KL_CAP)}. */
    public static final float LP_REG_KL_CAP = 10f;

    /**
     * Lp-Reg's log-ratio is clamped to this magnitude before exp, only so that {@code logp = -inf}
     * gives no {@code inf - inf}: k3 exceeds {@link #LP_REG_KL_CAP} at both ends, so the capped
     * value and its zero slope are those of the unclamped log-ratio.
     */
    static final double LP_REG_LOG_RATIO_LIMIT = 20;

    /**
     * The clip statistics' side of a counted token at capped ratio {@code r}: -1 for clipped low
     * ({@code a < 0}, {@code r < 1 - eps_low}), +1 for clipped high ({@code a > 0},
     * {@code r > 1 + eps_high}), else 0; {@code a} is the zone's advantage and Lp-Reg's tokens are
     * never clipped.
     */
    static int clipSide(double r, float advantage, float outsideAdvantage, float epsLow, float epsHigh,
                        boolean regularized) {
        if (regularized) {
            return 0;
        }
        double a = zoneAdvantage(r, advantage, outsideAdvantage, epsLow, epsHigh);
        return a < 0 && r < 1 - (double) epsLow ? -1 : a > 0 && r > 1 + (double) epsHigh ? 1 : 0;
    }

    /** HAPO's choice: {@code inside} in the neutral zone {@code 1 - eps_low/2 < r < 1 + eps_high/2}, else outside. */
    static double zoneAdvantage(double r, float inside, float outside, float epsLow, float epsHigh) {
        return 1 - 0.5 * epsLow < r && r < 1 + 0.5 * epsHigh ? inside : outside;
    }

    /** The formulas of the class doc for one counted token, in float64. */
    static Token token(float logp, float old, float advantage, float outsideAdvantage, float epsLow, float epsHigh,
                       float dualClip, float cap, float beta, float reference, float weight, boolean regularized,
                       float proxy, float lpBeta) {
        double logRatio = (double) logp - old;
        boolean clamped = Math.abs(logRatio) > LOG_RATIO_CLAMP;
        double r = Math.exp(Math.max(-LOG_RATIO_CLAMP, Math.min(LOG_RATIO_CLAMP, logRatio)));
        double dr = clamped ? 0 : r; // d r / d logp
        if (r > cap) {
            r = cap;
            dr = 0;
        }
        double a = zoneAdvantage(r, advantage, outsideAdvantage, epsLow, epsHigh);
        double lowBound = 1 - (double) epsLow;
        double highBound = 1 + (double) epsHigh;
        double loss;
        double slope;
        if (regularized) { // Lp-Reg: the plain importance-weighted term
            loss = -r * a;
            slope = -a * dr;
        } else {
            double clipped = Math.max(lowBound, Math.min(highBound, r));
            double dClipped = r < lowBound || r > highBound ? 0 : dr;
            double unclippedTerm = r * a;
            double clippedTerm = clipped * a;
            if (unclippedTerm <= clippedTerm) {
                loss = -unclippedTerm;
                slope = -a * dr;
            } else {
                loss = -clippedTerm;
                slope = -a * dClipped;
            }
            if (dualClip > 0 && a < 0 && loss > -dualClip * a) {
                loss = -dualClip * a;
                slope = 0;
            }
        }
        loss *= weight;
        slope *= weight;
        if (regularized) {
            double e = Math.max(-LP_REG_LOG_RATIO_LIMIT, Math.min(LP_REG_LOG_RATIO_LIMIT, (double) proxy - logp));
            double k3 = Math.exp(e) - e - 1;
            if (k3 > LP_REG_KL_CAP) { // capped: constant
                loss += lpBeta * (double) LP_REG_KL_CAP;
            } else {
                loss += lpBeta * k3;
                slope += lpBeta * (1 - Math.exp(e)); // d/dlogp of k3(lp - logp)
            }
        }
        if (beta != 0) {
            double d = (double) reference - logp;
            double clampedD = Math.max(-LOG_RATIO_CLAMP, Math.min(LOG_RATIO_CLAMP, d));
            loss += beta * (Math.exp(clampedD) - clampedD - 1);
            if (clampedD == d) {
                slope += beta * (1 - Math.exp(d)); // d/dlogp of k3
            }
        }
        return new Token(loss, slope, r);
    }

    /** Per counted token the factor that turns its loss into its share of the aggregated loss. */
    private static double[] aggregationWeights(Options o, boolean[] counted, int[] sequence, int[] starts) {
        int rows = counted.length;
        int sequences = starts.length - 1;
        double[] w = new double[rows];
        long total = 0;
        long[] perSequence = new long[sequences];
        int longest = 0;
        for (int t = 0; t < rows; t++) {
            if (counted[t]) {
                total++;
                perSequence[sequence[t]]++;
            }
        }
        for (int b = 0; b < sequences; b++) {
            longest = Math.max(longest, starts[b + 1] - starts[b]);
        }
        int withTokens = 0;
        for (long c : perSequence) {
            withTokens += c > 0 ? 1 : 0;
        }
        long controls = 0;
        for (int t = 0; t < rows; t++) {
            controls += counted[t] && t == starts[sequence[t]] ? 1 : 0;
        }
        long later = total - controls;
        for (int t = 0; t < rows; t++) {
            if (!counted[t]) {
                continue;
            }
            w[t] = switch (o.aggregation()) {
                case TOKEN_MEAN -> 1.0 / (o.normalizer() > 0 ? o.normalizer() : total);
                case SEQ_MEAN_TOKEN_MEAN -> 1.0 / ((double) perSequence[sequence[t]] * withTokens);
                case SEQ_MEAN_TOKEN_SUM -> 1.0 / sequences;
                case SEQ_MEAN_TOKEN_SUM_NORM -> 1.0 / ((double) sequences * (o.normalizer() > 0 ? o.normalizer() : longest));
                // each part's count is >= 1 when it holds this token, so an empty part adds 0, not NaN
                case DEGRPO -> t == starts[sequence[t]] ? o.controlTokenWeight() / (double) controls : 1.0 / later;
            };
        }
        return w;
    }

    /** The sequence of each token from offsets {@code [B + 1]} ({@link TokenLayout} checked them). */
    private static int[] sequenceOf(int[] starts, int rows) {
        int[] sequence = new int[rows];
        for (int b = 0; b + 1 < starts.length; b++) {
            for (int t = starts[b]; t < starts[b + 1]; t++) {
                sequence[t] = b;
            }
        }
        return sequence;
    }

    /** A per-token F32 input of the layout's shape, finite on the counted tokens; the others read as 0 (never used). */
    private static float[] perToken(String name, Tensor t, TokenLayout layout, boolean[] counted) {
        Tensor packed = layout.packedTokens(name, Checks.notNull(name, t));
        Checks.dtype(name, packed, DType.F32);
        float[] v = packed.toFloatArray();
        for (int i = 0; i < v.length; i++) {
            if (counted[i]) {
                Checks.require(Float.isFinite(v[i]), name + layout.at(i), "a finite number", v[i]);
            } else {
                v[i] = 0f;
            }
        }
        return v;
    }

    private static float[] clipRange(String name, float scalar, Tensor perToken, TokenLayout layout,
                                     boolean[] counted) {
        if (perToken == null) {
            Checks.require(scalar >= 0f && scalar < Float.POSITIVE_INFINITY, name, "a finite value >= 0", scalar);
            float[] eps = new float[layout.rows()];
            java.util.Arrays.fill(eps, scalar);
            return eps;
        }
        return nonNegative(name + "PerToken", perToken, layout, counted);
    }

    private static float[] tokenWeights(Tensor w, TokenLayout layout, boolean[] counted) {
        if (w == null) {
            float[] weights = new float[layout.rows()];
            java.util.Arrays.fill(weights, 1f);
            return weights;
        }
        return nonNegative("tokenWeights", w, layout, counted);
    }

    /** {@link #perToken} values that must also be {@code >= 0}. */
    private static float[] nonNegative(String name, Tensor t, TokenLayout layout, boolean[] counted) {
        float[] v = perToken(name, t, layout, counted);
        for (int i = 0; i < v.length; i++) {
            Checks.require(v[i] >= 0f, name + layout.at(i), "a value >= 0", v[i]);
        }
        return v;
    }

    /** Lp-Reg's settings per row, checked: which tokens, their proxy log-probabilities, beta. */
    private record LpReg(int[] regularized, float[] proxy, float beta) {
    }

    private static LpReg lpReg(Options o, TokenLayout layout, boolean[] counted, int rows) {
        int[] flags = new int[rows];
        float[] proxy = new float[rows];
        if (o.lpRegProxyLogProb() == null && o.lpRegMask() == null) {
            return new LpReg(flags, proxy, 0f);
        }
        Tensor lp = layout.packedTokens("lpRegProxyLogProb", Checks.notNull("lpRegProxyLogProb", o.lpRegProxyLogProb()));
        Tensor mask = maskType("lpRegMask", layout.packedTokens("lpRegMask", Checks.notNull("lpRegMask", o.lpRegMask())));
        Checks.require(Float.isFinite(o.lpRegBeta()) && o.lpRegBeta() >= 0f, "lpRegBeta", "a finite value >= 0",
                o.lpRegBeta());
        Checks.dtype("lpRegProxyLogProb", lp, DType.F32);
        for (int i = 0; i < rows; i++) {
            if (counted[i] && maskFlag("lpRegMask", mask, i, layout)) { // read only where the token counts
                float v = lp.getFloat(i);
                Checks.require(Float.isFinite(v), "lpRegProxyLogProb" + layout.at(i),
                        "a finite proxy log-probability on a regularized token (Lp-Reg selects only logp < lp;"
                                + " -inf means the proxy dropped the token)", v);
                flags[i] = 1;
                proxy[i] = v;
            }
        }
        return new LpReg(flags, proxy, o.lpRegBeta());
    }

    /**
     * Each token's target, -1 where it does not count, and which count ({@code counted}): the
     * response mask's 1s whose target is not the ignore index. Targets under a mask's 0 are not read.
     */
    private static int[] targets(TokenLayout layout, Tensor targets, Options o, long vocab, boolean[] counted) {
        Tensor y = layout.packedTokens("targets", targets);
        Checks.dtype("targets", y, DType.I32, DType.I64);
        Tensor mask = maskType("responseMask", layout.packedTokens("responseMask", o.responseMask()));
        int[] target = new int[counted.length];
        for (int i = 0; i < counted.length; i++) {
            target[i] = -1;
            if (mask != null && !maskFlag("responseMask", mask, i, layout)) {
                continue;
            }
            long v = y.getLong(i);
            if (v == o.ignoreIndex()) {
                continue;
            }
            Checks.require(v >= 0 && v < vocab, "targets" + layout.at(i),
                    "a class index in [0, " + vocab + ") or ignoreIndex " + o.ignoreIndex(), v);
            target[i] = (int) v;
            counted[i] = true;
        }
        return target;
    }

    /** A 0/1 mask's dtype, checked (U8, I8, I32, I64 or F32); null passes. */
    private static Tensor maskType(String name, Tensor mask) {
        if (mask != null) {
            Checks.dtype(name, mask, DType.U8, DType.I8, DType.I32, DType.I64, DType.F32);
        }
        return mask;
    }

    /** Element {@code i} of a 0/1 mask, checked to be 0 or 1. */
    private static boolean maskFlag(String name, Tensor mask, int i, TokenLayout layout) {
        double flag = mask.dtype() == DType.F32 ? mask.getFloat(i) : mask.getLong(i);
        Checks.require(flag == 0 || flag == 1, name + layout.at(i), "0 or 1", flag);
        return flag == 1;
    }
}
