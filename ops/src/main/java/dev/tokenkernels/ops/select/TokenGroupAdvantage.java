package dev.tokenkernels.ops.select;

import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

/**
 * HAPO's Token-Level Group Average advantage (Liu et al., 2025, arXiv:2509.16591): per group of
 * responses to one prompt, the reward statistics are taken over the group's tokens, so a long
 * response weighs as much as its tokens do in a token-mean loss.
 *
 * <p>Responses are runs of tokens given by offsets {@code sequenceStarts [B + 1]} (as for
 * {@code PolicyLoss}); groups are runs of responses given by {@code groupStarts [G + 1]}. With
 * {@code L_i} the counted tokens of response {@code i} (its mask entries, or its length without
 * a mask) and {@code R_i} its reward, per group:
 * <pre>
 *   mu = sum L_i R_i / sum L_i,   sigma = sqrt(sum L_i (R_i - mu)^2 / sum L_i)   (population)
 *   A_i = (R_i - mu) / (sigma + 1e-6)
 * </pre>
 * If any response of the group with tokens has {@code |A_i| >= 5}, or the group has no counted
 * token, the group falls back to the GRPO advantage {@code (R_i - mean R) / (std R + 1e-6)} with
 * the unweighted mean and the <b>sample</b> standard deviation (denominator {@code m - 1}, as
 * {@code torch.std} in the released code); a group of one response uses mean 0 and std 1 there
 * (the released code's convention), so its advantage is {@code R / (1 + 1e-6)}. Statistics are in
 * float64. Every counted token of response {@code i} gets {@code A_i}; tokens outside the mask get 0.
 * (The released code also tests its padding positions, whose advantage is {@code -mu / sigma},
 * against the fallback threshold; that depends on the padded width, so it is not reproduced.)
 *
 * <p>Host code by design: the statistics are per group over a few thousand responses, and the
 * token-level work is counting each response's mask entries and filling runs of tokens with one
 * value, a memory-bound fill with no arithmetic that costs less than a device round trip.
 */
public final class TokenGroupAdvantage {
    /** Added to the standard deviation before dividing by it, in both the token-level and the fallback advantage. */
    public static final double EPSILON = 1e-6;
    /** A token-level advantage {@code |A_i|} at or above this makes the group fall back to GRPO's. */
    public static final double FALLBACK_THRESHOLD = 5;

    /**
     * Per response the advantage, per group whether it fell back to GRPO, and per token the
     * broadcast advantages (F32 [N]); closing closes the tensor.
     */
    public record Result(float[] sequenceAdvantages, boolean[] fellBack, Tensor tokenAdvantages) implements AutoCloseable {
        @Override
        public void close() {
            tokenAdvantages.close();
        }
    }

    private TokenGroupAdvantage() {
    }

    /**
     * The advantages of responses with finite {@code rewards [B]}, grouped by {@code groupStarts [G + 1]} over offsets
     * {@code sequenceStarts [B + 1]}; {@code mask} (U8 {@code [N]}, non-zero for counted tokens) may be null for all
     * tokens.
     */
    public static Result compute(float[] rewards, int[] sequenceStarts, int[] groupStarts, Tensor mask) {
        if (rewards == null) {
            throw new IllegalArgumentException("rewards: expected one reward per response, got null");
        }
        int b = rewards.length;
        for (int i = 0; i < b; i++) {
            Checks.require(Float.isFinite(rewards[i]), "rewards[" + i + "]", "a finite reward", rewards[i]);
        }
        int n = offsets("sequenceStarts", sequenceStarts, b, -1);
        offsets("groupStarts", groupStarts, -1, b);
        TokenVectors.mask(mask, n, "the tokens of sequenceStarts");
        long[] length = new long[b];
        MemorySegment m = mask == null ? null : mask.segment();
        for (int i = 0; i < b; i++) {
            if (m == null) {
                length[i] = sequenceStarts[i + 1] - sequenceStarts[i];
                continue;
            }
            for (int t = sequenceStarts[i]; t < sequenceStarts[i + 1]; t++) {
                length[i] += m.get(ValueLayout.JAVA_BYTE, t) != 0 ? 1 : 0;
            }
        }
        float[] advantage = new float[b];
        boolean[] fellBack = new boolean[groupStarts.length - 1];
        for (int g = 0; g + 1 < groupStarts.length; g++) {
            int from = groupStarts[g];
            int to = groupStarts[g + 1];
            double weight = 0;
            double weighted = 0;
            for (int i = from; i < to; i++) {
                weight += length[i];
                weighted += length[i] * (double) rewards[i];
            }
            boolean fallback = weight == 0;
            if (!fallback) {
                double mu = weighted / weight;
                double squares = 0;
                for (int i = from; i < to; i++) {
                    squares += length[i] * (rewards[i] - mu) * (rewards[i] - mu);
                }
                double sigma = Math.sqrt(squares / weight);
                for (int i = from; i < to; i++) {
                    double a = (rewards[i] - mu) / (sigma + EPSILON);
                    fallback |= length[i] > 0 && Math.abs(a) >= FALLBACK_THRESHOLD;
                    advantage[i] = (float) a;
                }
            }
            if (fallback) {
                grpo(rewards, from, to, advantage);
            }
            fellBack[g] = fallback;
        }
        float[] perToken = new float[n];
        for (int i = 0; i < b; i++) {
            if (m == null) {
                Arrays.fill(perToken, sequenceStarts[i], sequenceStarts[i + 1], advantage[i]);
                continue;
            }
            for (int t = sequenceStarts[i]; t < sequenceStarts[i + 1]; t++) {
                perToken[t] = m.get(ValueLayout.JAVA_BYTE, t) != 0 ? advantage[i] : 0f;
            }
        }
        return new Result(advantage, fellBack, n == 0 ? Tensor.allocate(DType.F32, 0) : Tensor.of(perToken, n));
    }

    /** GRPO's advantage of responses {@code [from, to)}: sample std; one response: mean 0, std 1. */
    static void grpo(float[] rewards, int from, int to, float[] out) {
        int m = to - from;
        double mean = 0;
        double std = 1;
        if (m > 1) {
            for (int i = from; i < to; i++) {
                mean += rewards[i];
            }
            mean /= m;
            double squares = 0;
            for (int i = from; i < to; i++) {
                squares += (rewards[i] - mean) * (rewards[i] - mean);
            }
            std = Math.sqrt(squares / (m - 1));
        }
        for (int i = from; i < to; i++) {
            out[i] = (float) ((rewards[i] - mean) / (std + EPSILON));
        }
    }

    /**
     * Checks offsets from 0 to {@code end} (non-decreasing), with {@code count + 1} entries when
     * {@code count >= 0}; returns the last offset.
     */
    static int offsets(String name, int[] starts, int count, int end) {
        if (starts == null || starts.length < 1) {
            throw new IllegalArgumentException(name + ": expected offsets [count + 1], got "
                    + (starts == null ? "null" : "an empty array"));
        }
        if (count >= 0) {
            Checks.require(starts.length == count + 1, name, (count + 1) + " offsets (one more than the "
                    + count + " responses)", starts.length);
        }
        Checks.require(starts[0] == 0, name, "offsets starting at 0", Arrays.toString(starts));
        for (int k = 0; k + 1 < starts.length; k++) {
            Checks.require(starts[k] <= starts[k + 1], name, "non-decreasing offsets", starts[k] + " > " + starts[k + 1]);
        }
        int last = starts[starts.length - 1];
        if (end >= 0) {
            Checks.require(last == end, name, "offsets ending at " + end, last);
        }
        return last;
    }
}
