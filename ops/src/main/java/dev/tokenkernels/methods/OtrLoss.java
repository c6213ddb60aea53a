package dev.tokenkernels.methods;

import dev.tokenkernels.ops.loss.OneTokenRollout;
import dev.tokenkernels.ops.loss.TargetLogProb;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;

/**
 * One-token rollout fine-tuning ("One-Token Rollout: Guiding Supervised Fine-Tuning of LLMs with
 * Policy Gradient", arXiv:2509.26313, 2025) on a batch of SFT sequences: the position that
 * predicts token {@code t + 1} of a sequence is a one-step episode whose {@code K} draws are
 * rewarded by that token ({@link OneTokenRollout} states the loss), prompt tokens are not learned,
 * and every training step draws fresh samples. Optionally, as this project's addition, a
 * cross-entropy term on the same tokens keeps a plain SFT signal alongside:
 * <pre>  L = L_OTR + lambda * mean_t ( -log pi(y_t) ),   pi = softmax(z / T)</pre>
 * ({@code lambda = 0}, the default, is OTR alone).
 */
public final class OtrLoss {
    private final OneTokenRollout.Options options;
    private final float sftWeight;

    /**
     * OTR, plus {@code sftWeight} times the cross-entropy; {@link #defaults()} is OTR alone.
     *
     * @param options K, beta, T, the base seed, backend ({@code firstPosition}, the ignore index and
     *     the normalizer are set per call by {@link #compute})
     * @param sftWeight lambda, finite and {@code >= 0}
     */
    public OtrLoss(OneTokenRollout.Options options, float sftWeight) {
        if (options == null) {
            throw new IllegalArgumentException("options: expected OneTokenRollout.Options, got null");
        }
        Checks.require(Float.isFinite(sftWeight) && sftWeight >= 0f, "sftWeight", "a finite value >= 0", sftWeight);
        this.options = options;
        this.sftWeight = sftWeight;
    }

    /** OTR alone with {@link OneTokenRollout.Options#defaults()} (K = 4, beta = 0.1, T = 1). */
    public static OtrLoss defaults() {
        return new OtrLoss(OneTokenRollout.Options.defaults(), 0f);
    }

    /**
     * The loss, its OTR and cross-entropy parts, the draws' hit rate, the learned tokens and
     * {@code gradScale} times the gradient w.r.t. the logits; closing closes the gradient.
     */
    public record Result(float loss, float rolloutLoss, float crossEntropy, double hitRate, long tokens, Tensor gradient)
            implements AutoCloseable {
        @Override
        public void close() {
            gradient.close();
        }
    }

    /**
     * The loss over {@code logits [B * L, V]} of {@code B} sequences of {@code tokens [B, L]} (row
     * {@code b L + t} predicts token {@code t + 1} of sequence {@code b}; the last position of each
     * sequence predicts nothing), learning only tokens at or after {@code promptLengths[b]} (a token
     * -1, e.g. padding, is not learned either).
     *
     * <p><b>Fresh noise for every row of a step.</b> Row {@code i}'s draws are keyed by the step's
     * seed and the position {@code firstPosition + i} ({@link dev.tokenkernels.ops.loss.TokenSampler}),
     * so rows that share both draw the same uniforms. With gradient accumulation, give each
     * micro-batch of a step its own range of positions, e.g. {@code firstPosition = microBatch * B * L}
     * (0 when a step has one batch). With data-parallel ranks, either give every rank a disjoint range
     * too ({@code (rank * microBatches + microBatch) * B * L}) or mix the rank into the base seed
     * ({@code options.withSeed(OtrLoss.stepSeed(baseSeed, rank))}), so that no two ranks draw alike.
     *
     * @param step the training step: the draws' seed is the base seed mixed with it
     * @param firstPosition the position of row 0 among all rows drawn in this step, {@code >= 0}
     */
    public Result compute(Tensor logits, Tensor tokens, int[] promptLengths, long step, long firstPosition,
                          float gradScale) {
        Checks.notNull("logits", logits);
        Checks.notNull("tokens", tokens);
        Checks.rank("tokens", tokens, 2, "[B, L]");
        Checks.dtype("tokens", tokens, DType.I32, DType.I64);
        int sequences = (int) tokens.dim(0);
        int length = (int) tokens.dim(1);
        Checks.rank("logits", logits, 2, "[B * L, V]");
        Checks.dim("logits", logits, 0, (long) sequences * length, "B * L, the token positions");
        Checks.require(promptLengths != null && promptLengths.length == sequences, "promptLengths",
                "one prompt length per sequence (" + sequences + ")", promptLengths == null ? "null" : promptLengths.length);
        Checks.require(firstPosition >= 0, "firstPosition", "a position >= 0", firstPosition);
        long vocab = logits.dim(1);
        long ignore = -1;
        int[] targets = new int[sequences * length];
        for (int b = 0; b < sequences; b++) {
            Checks.require(promptLengths[b] >= 0 && promptLengths[b] <= length, "promptLengths[" + b + "]",
                    "a length in [0, " + length + "]", promptLengths[b]);
            for (int t = 0; t < length; t++) {
                boolean learned = t + 1 < length && t + 1 >= promptLengths[b];
                if (!learned) {
                    targets[b * length + t] = (int) ignore;
                    continue;
                }
                long y = tokens.getLong((long) b * length + t + 1); // checked as a long: no narrowing before validation
                if (y != ignore && (y < 0 || y >= vocab)) {
                    throw new IllegalArgumentException("tokens[" + b + ", " + (t + 1) + "]: expected a token in [0, "
                            + vocab + ") or -1 (not learned), got " + y);
                }
                targets[b * length + t] = (int) y;
            }
        }
        OneTokenRollout.Options o = options.withSeed(stepSeed(options.seed(), step)).withFirstPosition(firstPosition)
                .withIgnoreIndex(ignore).withNormalizer(0);
        Tensor gradient = Tensor.allocate(DType.F32, logits.dim(0), logits.dim(1));
        try (Tensor y = Tensor.ofInts(targets, targets.length);
             OneTokenRollout.Result otr = OneTokenRollout.computeWithGradient(logits, y, o, gradScale, gradient)) {
            float crossEntropy = 0f;
            if (sftWeight != 0f && otr.tokens() > 0) { // d(-lambda mean logp) = -(lambda / n) d logp, added in place
                float[] c = new float[targets.length];
                java.util.Arrays.fill(c, (float) (-(double) sftWeight * gradScale / otr.tokens()));
                TargetLogProb.Options t = TargetLogProb.Options.defaults().withTemperature(options.temperature())
                        .withIgnoreIndex(ignore).accumulating().on(options.backend());
                try (Tensor coefficients = Tensor.of(c, c.length);
                     TargetLogProb.Result logp = TargetLogProb.computeWithGradient(logits, y, coefficients, t, gradient)) {
                    double sum = 0;
                    for (int i = 0; i < targets.length; i++) {
                        sum -= targets[i] == ignore ? 0 : logp.logProb().getFloat(i);
                    }
                    crossEntropy = (float) (sum / otr.tokens());
                }
            }
            return new Result(otr.loss() + sftWeight * crossEntropy, otr.loss(), crossEntropy, otr.hitRate(), otr.tokens(),
                    gradient);
        } catch (RuntimeException | Error e) {
            gradient.close();
            throw e;
        }
    }

    /**
     * The draws' seed of a step: the base seed advanced by the step and mixed by SplitMix64's
     * finalizer (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014).
     */
    public static long stepSeed(long seed, long step) {
        long z = seed + step * 0x9E3779B97F4A7C15L;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

}
