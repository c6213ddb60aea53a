package dev.tokenkernels.methods;

import dev.tokenkernels.ops.select.TokenSelection;
import dev.tokenkernels.ops.select.TokenTerms;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.math.BigDecimal;
import java.math.RoundingMode;
import java.util.Arrays;
import java.util.Comparator;
import java.util.stream.IntStream;

/**
 * D^3S, dynamic dual-level down-sampling (Wang et al., 2025, "Learning More with Less: A Dynamic
 * Dual-Level Down-Sampling Framework for Efficient Policy Optimization", arXiv:2509.22115): train
 * on fewer responses and fewer tokens, those with the most learning signal, and relax the
 * down-sampling as training goes on.
 *
 * <ol>
 * <li><b>Sample level.</b> In each group (the responses to one prompt) keep the {@code m}
 *     responses whose advantages have the largest variance (population variance, {@code 1/m}):
 *     the best of the {@code m + 1} sets "the k largest and the m - k smallest advantages",
 *     {@code k = 0..m} (ties in value by the lower index; among equally good sets the smallest k).
 *     A group of at most {@code m} responses is kept whole. {@link #maxVarianceSubset}.</li>
 * <li><b>Token level.</b> Over the counted tokens of the kept responses (the whole batch), keep
 *     the {@code ceil(K n)} tokens with the largest {@code |A_t| H_t} ({@link TokenTerms#advantageEntropyScore},
 *     {@link TokenSelection#topK}: exactly that many, ties to the lower index, the same tokens on every backend).</li>
 * <li><b>Schedule.</b> At training progress {@code p in [0, 1]},
 *     {@code [m, K] = (1 - p) [N0, K0] + p [N1, K1]}: {@code m} rounded half up to an integer,
 *     {@code K} a fraction in (0, 1] not rounded ({@link Schedule}; both in exact decimal arithmetic
 *     on the decimals the parameters print as, like {@link TokenSelection}'s quantile ranks). Start
 *     aggressive (small {@code N0}, {@code K0}), end relaxed.</li>
 * </ol>
 *
 * <p><b>Why "k largest + (m - k) smallest" is optimal.</b> Sort the group's advantages. Take a
 * best subset S of size m and suppose its complement is not one contiguous block of the sorted
 * order: then some kept y lies between two dropped {@code x < y < x'} (sorted positions). Replacing y by
 * a value v with the rest of S fixed, the variance is {@code g(v) = (sum a^2 + v^2)/m - ((sum a + v)/m)^2},
 * a quadratic in v with leading coefficient {@code (m - 1)/m^2 >= 0}, so convex: on the interval
 * {@code [x, x']} it is largest at an end, {@code max(g(x), g(x')) >= g(y)}. Swapping y for that
 * end keeps the variance at least as large; among best subsets take one whose kept positions are
 * as far from the middle of the sorted order as possible, and no such y can remain (when g is
 * constant on the interval either end is as good, and one is farther out). So some best subset
 * has a contiguous complement, i.e. is "the k largest and the m - k smallest" for some k, and
 * searching k = 0..m finds the maximum. Cost O(m^2 + s log s) per group of s responses.
 *
 * <p>The returned mask feeds any loss: {@link TokenSelection#ignoreUnselected} turns it into
 * targets with the ignore index for {@code PolicyLoss} (tokens of dropped responses are simply
 * not counted; sequence offsets stay as they are).
 */
public final class D3sSelector {

    /**
     * The down-sampling schedule: responses kept per group and the fraction of tokens kept, at
     * progress 0 and at progress 1.
     */
    public record Schedule(int samplesStart, double tokenFractionStart, int samplesEnd, double tokenFractionEnd) {
        private static final BigDecimal HALF = new BigDecimal("0.5");

        /** Checks both response counts are at least 1 and both token fractions are in (0, 1]. */
        public Schedule {
            Checks.require(samplesStart >= 1, "samplesStart", "at least 1 response per group", samplesStart);
            Checks.require(samplesEnd >= 1, "samplesEnd", "at least 1 response per group", samplesEnd);
            Checks.require(tokenFractionStart > 0 && tokenFractionStart <= 1, "tokenFractionStart",
                    "a fraction in (0, 1]", tokenFractionStart);
            Checks.require(tokenFractionEnd > 0 && tokenFractionEnd <= 1, "tokenFractionEnd", "a fraction in (0, 1]",
                    tokenFractionEnd);
        }

        /**
         * {@code m = floor((1 - p) N0 + p N1 + 1/2)}, in exact decimal arithmetic on the decimal
         * {@code p} prints as: 4.5 rounds to 5 (in float64, (1 - 0.7) * 1 + 0.7 * 6 is 4.499999999999999).
         */
        public int samplesAt(double progress) {
            checkProgress(progress);
            return interpolate(progress, BigDecimal.valueOf(samplesStart), BigDecimal.valueOf(samplesEnd))
                    .add(HALF).setScale(0, RoundingMode.FLOOR).intValueExact();
        }

        /** {@code K = (1 - p) K0 + p K1}, the decimal of {@link #tokenFractionDecimal} rounded to a double. */
        public double tokenFractionAt(double progress) {
            return tokenFractionDecimal(progress).doubleValue();
        }

        /**
         * {@code K} exactly, from the decimals {@code p}, {@code K0} and {@code K1} print as, so that
         * the token count {@code ceil(K n)} is that of the decimal (0.07 of 100 tokens is 7, where
         * float64 has 0.07 * 100 = 7.000000000000001).
         */
        BigDecimal tokenFractionDecimal(double progress) {
            checkProgress(progress);
            return interpolate(progress, BigDecimal.valueOf(tokenFractionStart), BigDecimal.valueOf(tokenFractionEnd))
                    .min(BigDecimal.ONE);
        }

        private static BigDecimal interpolate(double progress, BigDecimal start, BigDecimal end) {
            BigDecimal p = BigDecimal.valueOf(progress);
            return BigDecimal.ONE.subtract(p).multiply(start).add(p.multiply(end));
        }

        private static void checkProgress(double p) {
            Checks.require(p >= 0 && p <= 1, "progress", "a training progress in [0, 1]", p);
        }
    }

    /**
     * The kept responses (ascending), the token mask (U8 [N], closed with this), how many tokens
     * it keeps, and the schedule's {@code m} and {@code K} at this progress.
     */
    public record Selection(int[] keptSequences, Tensor tokenMask, long keptTokens, int samplesPerGroup,
                            double tokenFraction) implements AutoCloseable {
        /** Copies {@code keptSequences}: the caller's array cannot change the selection. */
        public Selection {
            keptSequences = keptSequences.clone();
        }

        /** A copy: the selection cannot be changed through it. */
        @Override
        public int[] keptSequences() {
            return keptSequences.clone();
        }

        @Override
        public void close() {
            tokenMask.close();
        }
    }

    private final Schedule schedule;
    private final Backend backend;

    /**
     * A selector following {@code schedule}.
     *
     * @param schedule the down-sampling schedule
     * @param backend where the token ops run, or null for the default backend
     */
    public D3sSelector(Schedule schedule, Backend backend) {
        if (schedule == null) {
            throw new IllegalArgumentException("schedule: expected a Schedule, got null");
        }
        this.schedule = schedule;
        this.backend = backend;
    }

    /**
     * Both levels at training progress {@code progress}.
     *
     * @param sequenceAdvantages the advantage of each response [B] (the sample level's A_i), finite
     * @param sequenceStarts token offsets of the responses [B + 1], non-decreasing from 0 to N
     * @param groupStarts response offsets of the groups [G + 1], non-decreasing from 0 to B
     * @param tokenAdvantages F32 [N], the per-token advantages (finite at every token)
     * @param entropy F32 [N], the per-token policy entropies (finite and >= 0 at every token, padding included)
     * @param mask U8 [N] of the tokens that count, or null for all
     */
    public Selection select(float[] sequenceAdvantages, int[] sequenceStarts, int[] groupStarts, Tensor tokenAdvantages,
                            Tensor entropy, Tensor mask, double progress) {
        int m = schedule.samplesAt(progress);
        BigDecimal fraction = schedule.tokenFractionDecimal(progress);
        if (sequenceAdvantages == null) {
            throw new IllegalArgumentException("sequenceAdvantages: expected one advantage per response, got null");
        }
        int b = sequenceAdvantages.length;
        for (int i = 0; i < b; i++) {
            // a NaN would make the variance search keep an arbitrary set
            Checks.require(Float.isFinite(sequenceAdvantages[i]), "sequenceAdvantages[" + i + "]",
                    "a finite advantage", sequenceAdvantages[i]);
        }
        Checks.require(sequenceStarts != null && sequenceStarts.length == b + 1, "sequenceStarts",
                (b + 1) + " offsets (one more than the responses)", sequenceStarts == null ? "null" : sequenceStarts.length);
        Checks.require(groupStarts != null && groupStarts.length >= 1 && groupStarts[0] == 0
                && groupStarts[groupStarts.length - 1] == b, "groupStarts", "offsets from 0 to " + b,
                Arrays.toString(groupStarts));
        nonDecreasing("groupStarts", groupStarts);
        Checks.notNull("tokenAdvantages", tokenAdvantages);
        Checks.rank("tokenAdvantages", tokenAdvantages, 1, "[N]");
        long n = tokenAdvantages.dim(0);
        Checks.require(sequenceStarts[0] == 0 && sequenceStarts[b] == n, "sequenceStarts", "offsets from 0 to N = " + n,
                Arrays.toString(sequenceStarts));
        nonDecreasing("sequenceStarts", sequenceStarts); // with 0 and N at the ends: all within [0, N]
        if (mask != null) {
            Checks.rank("mask", mask, 1, "[N]");
            Checks.dtype("mask", mask, DType.U8);
            Checks.dim("mask", mask, 0, n, "N, the entries of tokenAdvantages");
        }
        int[] kept = IntStream.range(0, groupStarts.length - 1).flatMap(g ->
                Arrays.stream(maxVarianceSubset(sequenceAdvantages, groupStarts[g], groupStarts[g + 1], m))).toArray();
        try (Tensor candidates = Tensor.allocate(DType.U8, n);
             Tensor scores = TokenTerms.advantageEntropyScore(tokenAdvantages, entropy,
                     TokenTerms.Options.defaults().on(backend))) {
            MemorySegment c = candidates.segment();
            long count = 0;
            for (int i : kept) {
                long from = sequenceStarts[i];
                long length = sequenceStarts[i + 1] - from;
                if (mask == null) {
                    c.asSlice(from, length).fill((byte) 1);
                    count += length;
                } else {
                    MemorySegment.copy(mask.segment(), from, c, from, length);
                    for (long t = from; t < from + length; t++) {
                        count += c.get(ValueLayout.JAVA_BYTE, t) != 0 ? 1 : 0;
                    }
                }
            }
            long k = fraction.multiply(BigDecimal.valueOf(count)).setScale(0, RoundingMode.CEILING).longValueExact();
            Tensor tokenMask = TokenSelection.topK(scores, candidates, k, TokenSelection.Options.defaults().on(backend));
            return new Selection(kept, tokenMask, Math.min(k, count), m, fraction.doubleValue());
        }
    }

    private static void nonDecreasing(String name, int[] starts) {
        for (int k = 0; k + 1 < starts.length; k++) {
            Checks.require(starts[k] <= starts[k + 1], name, "non-decreasing offsets", starts[k] + " > " + starts[k + 1]);
        }
    }

    /**
     * Indices (ascending) of the {@code min(m, to - from)} of {@code values[from, to)} with the
     * largest population variance, searched over "k largest + (m - k) smallest"; see the class doc.
     */
    public static int[] maxVarianceSubset(float[] values, int from, int to, int m) {
        if (values == null) {
            throw new IllegalArgumentException("values: expected an array of advantages, got null");
        }
        Checks.require(m >= 0, "m", "a count >= 0", m);
        Checks.require(from >= 0 && from <= to && to <= values.length, "range", "0 <= from <= to <= " + values.length,
                from + ".." + to);
        for (int i = from; i < to; i++) { // a NaN would make the search keep an arbitrary set
            Checks.require(Float.isFinite(values[i]), "values[" + i + "]", "a finite advantage", values[i]);
        }
        int size = to - from;
        if (m >= size) {
            return IntStream.range(from, to).toArray();
        }
        Integer[] sorted = IntStream.range(from, to).boxed().toArray(Integer[]::new);
        // + 0.0 makes -0.0 equal to 0.0, as the runs of ties in lowestIndicesOfTies see them
        Arrays.sort(sorted, Comparator.<Integer>comparingDouble(i -> values[i] + 0.0).thenComparing(i -> i));
        int bestK = 0;
        double best = Double.NEGATIVE_INFINITY;
        for (int k = 0; k <= m; k++) {
            double sum = 0;
            for (int j = 0; j < m; j++) {
                sum += values[pick(sorted, size, m, k, j)];
            }
            double mean = sum / m;
            double squares = 0;
            for (int j = 0; j < m; j++) {
                double d = values[pick(sorted, size, m, k, j)] - mean;
                squares += d * d;
            }
            double variance = m == 0 ? 0 : squares / m;
            if (variance > best) {
                best = variance;
                bestK = k;
            }
        }
        return lowestIndicesOfTies(values, sorted, m, bestK);
    }

    /**
     * The indices of "the k largest and m - k smallest" with ties in value going to the lower
     * index: per run of equal values in {@code sorted} (ascending by value, then index), as many
     * as the picked positions hold, taken from the run's start. The values picked, and so the
     * variance, are those of the positions.
     */
    private static int[] lowestIndicesOfTies(float[] values, Integer[] sorted, int m, int k) {
        boolean[] picked = new boolean[sorted.length];
        for (int j = 0; j < m; j++) {
            picked[j < m - k ? j : sorted.length - (m - j)] = true;
        }
        int[] chosen = new int[m];
        int n = 0;
        for (int run = 0, end; run < sorted.length; run = end) {
            int count = 0;
            for (end = run; end < sorted.length && values[sorted[end]] == values[sorted[run]]; end++) {
                count += picked[end] ? 1 : 0;
            }
            for (int i = run; i < run + count; i++) {
                chosen[n++] = sorted[i];
            }
        }
        Arrays.sort(chosen);
        return chosen;
    }

    /** The j-th member of "the m - k smallest, then the k largest" of the sorted indices. */
    private static int pick(Integer[] sorted, int size, int m, int k, int j) {
        return j < m - k ? sorted[j] : sorted[size - (j - (m - k)) - 1];
    }
}
