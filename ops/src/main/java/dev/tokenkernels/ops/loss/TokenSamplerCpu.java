package dev.tokenkernels.ops.loss;

import dev.tokenkernels.ops.cpu.HalfFloats;
import dev.tokenkernels.ops.cpu.Philox;
import dev.tokenkernels.ops.cpu.VectorMath;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector API implementation of {@link TokenSampler}: per row {@code x = z * (1/T)} into a scratch
 * row padded with {@code -inf}, its log-sum-exp, then per group of four samples the candidates
 * (with their {@code r = 1 / e^(x - max)}) and one sweep over them in blocks of 256: Philox for the
 * block (one lane per counter), the exponentials of the block, and per sample and lane the least
 * race score {@code E * r} and its index. Lanes combine by (score, lowest index) at the end, the
 * order-free argmin the kernel computes too.
 */
final class TokenSamplerCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Integer> I = IntVector.SPECIES_PREFERRED;
    private static final int ELEMENTS_PER_TASK = 1 << 16;
    /** Vocabulary entries whose noise is drawn at once: Philox and the logs run in tight loops of their own. */
    private static final int BLOCK = 256;

    private TokenSamplerCpu() {
    }

    static void run(CpuBackend cpu, TokenSampler.Draw draw) {
        int vocab = draw.vocab();
        int k = draw.samples();
        cpu.parallelFor(draw.rows(), Math.max(1, ELEMENTS_PER_TASK / vocab), (from, to) -> {
            Scratch s = new Scratch(vocab);
            for (int row = from; row < to; row++) {
                if (!draw.drawn(row)) {
                    Arrays.fill(draw.sample(), row * k, row * k + k, -1);
                    Arrays.fill(draw.logProb(), row * k, row * k + k, 0f);
                    continue;
                }
                float lse = s.load(draw.logits(), row, draw.invT());
                sampleRow(s, vocab, lse, draw, row);
            }
        });
    }

    /** Per-thread buffers: the scaled row and the argmax state of one group of samples. */
    static final class Scratch {
        final float[] x;
        final int[] bits = new int[4 * BLOCK];
        final float[] noise = new float[4 * BLOCK];
        final float[] bestScore = new float[4 * Philox.LANES];
        final int[] bestIndex = new int[4 * Philox.LANES];
        final int[] winner = new int[4];
        final int[] candidate;
        final float[] candidateR;

        Scratch(int vocab) {
            int padded = (vocab + F.length() - 1) / F.length() * F.length();
            x = new float[padded];
            Arrays.fill(x, vocab, padded, Float.NEGATIVE_INFINITY);
            candidate = new int[padded];
            candidateR = new float[padded];
        }

        /** Decodes row {@code row} of {@code logits} into {@code x}, scales it and returns its log-sum-exp. */
        float load(dev.tokenkernels.runtime.Tensor logits, int row, float invT) {
            int vocab = (int) logits.dim(1);
            DType dtype = logits.dtype();
            long rowOffset = (long) row * vocab;
            MemorySegment z = logits.segment();
            if (dtype == DType.F32) {
                MemorySegment.copy(z, ValueLayout.JAVA_FLOAT, 4 * rowOffset, x, 0, vocab);
            } else {
                HalfFloats.decode(z, rowOffset * dtype.byteSize(), dtype, MemorySegment.ofArray(x), vocab);
            }
            return scaleAndLogSumExp(x, invT);
        }
    }

    /**
     * Scales the row (padded with {@code -inf} to whole vectors) by {@code invT} in place and
     * returns its log-sum-exp: NaN if any element is NaN or the max is {@code +inf}, {@code -inf}
     * if all are {@code -inf}. The sampler keeps the scaled row: its race scores read it, and the
     * kernel forms {@code z * invT} the same way, bit for bit.
     */
    private static float scaleAndLogSumExp(float[] x, float invT) {
        FloatVector m = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        boolean nan = false;
        for (int i = 0; i < x.length; i += F.length()) {
            FloatVector v = FloatVector.fromArray(F, x, i).mul(invT);
            v.intoArray(x, i);
            nan |= v.test(VectorOperators.IS_NAN).anyTrue();
            m = m.max(v);
        }
        float max = m.reduceLanes(VectorOperators.MAX);
        if (nan || max == Float.POSITIVE_INFINITY) {
            return Float.NaN;
        }
        if (max == Float.NEGATIVE_INFINITY) {
            return max;
        }
        FloatVector sum = FloatVector.zero(F);
        for (int i = 0; i < x.length; i += F.length()) {
            sum = sum.add(VectorMath.expNonPositive(FloatVector.fromArray(F, x, i).sub(max)));
        }
        return max + (float) Math.log(VectorMath.sumLanes(sum));
    }

    /**
     * Draws the row's samples from the scaled row in {@code s.x} into {@code draw.sample()} and
     * their log-probabilities into {@code draw.logProb()}: -1 and NaN when {@code lse} is not finite.
     */
    static void sampleRow(Scratch s, int vocab, float lse, TokenSampler.Draw draw, int row) {
        int k = draw.samples();
        int at = row * k;
        if (!Float.isFinite(lse)) { // NaN, +inf or all -inf: no distribution
            Arrays.fill(draw.sample(), at, at + k, -1);
            Arrays.fill(draw.logProb(), at, at + k, Float.NaN);
            return;
        }
        long position = draw.firstPosition() + row;
        int top = top(s.x);
        for (int group = 0; group * 4 < k; group++) {
            int count = Math.min(4, k - group * 4);
            argminGroup(s, top, group, count, (int) position, (int) (position >>> 32), draw.key0(),
                    draw.key1());
            for (int w = 0; w < count; w++) {
                int a = s.winner[w];
                draw.sample()[at + group * 4 + w] = a;
                draw.logProb()[at + group * 4 + w] = s.x[a] - lse;
            }
        }
    }

    /**
     * The winners of samples {@code 4 group .. 4 group + count - 1}, into {@code s.winner[0 .. count - 1]}:
     * per sample the lowest index of the least race score {@code E_v * r_v} (see {@link TokenSampler}).
     *
     * <p>Only candidates get noise. Every exponential is at least {@link #MIN_EXPONENTIAL}, so an
     * entry whose {@code MIN_EXPONENTIAL * r_v} exceeds {@code T}, the largest score of the row's
     * first largest entry over the group's samples, scores above every sample's winner (products
     * round monotonically) and can neither win nor tie. In terms of {@code d = x_v - m} that holds
     * for {@code d < -(log(T / MIN_EXPONENTIAL) + RACE_MARGIN)}: the margin covers the rounding of
     * {@code e^d}, {@code 1 / w} and the product many times over. Skipping such entries changes no
     * draw; on peaked rows (most entries far below the top, as in trained language models) it
     * skips most of the Philox calls and logs.
     */
    private static void argminGroup(Scratch s, int top, int group, int count, int positionLow,
                                    int positionHigh, int key0, int key1) {
        int lanes = Philox.LANES;
        float[] x = s.x;
        float max = x[top];
        // The top entry's scores, by the same vector code as every other entry's (its r is 1 / e^0).
        Philox.blocks(top, lanes, group, positionLow, positionHigh, key0, key1, s.bits);
        exponentials(s.bits, s.noise, count * lanes);
        float rTop = 1f / VectorMath.expNonPositive(FloatVector.zero(F)).lane(0);
        float threshold = 0f;
        for (int w = 0; w < count; w++) {
            threshold = Math.max(threshold, s.noise[w * lanes] * rTop);
        }
        float cut = (float) -(Math.log(threshold / (double) MIN_EXPONENTIAL) + RACE_MARGIN);
        int n = candidates(s, max, cut);
        Arrays.fill(s.bestScore, Float.POSITIVE_INFINITY);
        Arrays.fill(s.bestIndex, Integer.MAX_VALUE);
        for (int from = 0; from < n; from += BLOCK) {
            int size = Math.min(BLOCK, n - from); // n is a multiple of the lanes
            Philox.blocks(s.candidate, from, size, group, positionLow, positionHigh, key0, key1, s.bits);
            exponentials(s.bits, s.noise, count * size);
            for (int w = 0; w < count; w++) {
                keepBest(s, w, from, size);
            }
        }
        for (int w = 0; w < count; w++) {
            FloatVector best = FloatVector.fromArray(F, s.bestScore, w * lanes);
            float least = best.reduceLanes(VectorOperators.MIN);
            s.winner[w] = IntVector.fromArray(I, s.bestIndex, w * lanes)
                    .blend(Integer.MAX_VALUE, best.compare(VectorOperators.NE, least).cast(I))
                    .reduceLanes(VectorOperators.MIN);
        }
    }

    /**
     * Sample {@code w}'s least scores so far per lane against candidates {@code [from, from + size)}.
     * A method of its own, with arrays in and out: inlined into {@link #argminGroup}, whose Philox
     * and logs fill C2's node budget, this loop ran through the Vector API's Java fallback in four
     * of five JVMs that had run LogitStats first (JFR: {@code FloatVector.lanewiseTemplate} under
     * it; the sampler twice as slow).
     */
    private static void keepBest(Scratch s, int w, int from, int size) {
        int lanes = Philox.LANES;
        FloatVector best = FloatVector.fromArray(F, s.bestScore, w * lanes);
        IntVector bestIndex = IntVector.fromArray(I, s.bestIndex, w * lanes);
        for (int j = 0; j < size; j += lanes) {
            FloatVector score = FloatVector.fromArray(F, s.noise, w * size + j)
                    .mul(FloatVector.fromArray(F, s.candidateR, from + j));
            VectorMask<Float> better = score.compare(VectorOperators.LT, best); // strict: a lane keeps its first
            best = best.blend(score, better);
            bestIndex = bestIndex.blend(IntVector.fromArray(I, s.candidate, from + j), better.cast(I));
        }
        best.intoArray(s.bestScore, w * lanes);
        bestIndex.intoArray(s.bestIndex, w * lanes);
    }

    /**
     * No exponential {@code -log u} is below this: the least, at {@code u = 1 - 2^-24}, is about
     * 5.96e-8 (TwinLogTest checks all 2^23; {@code kMinExponential} in gumbel_max.cuh is the same).
     */
    private static final float MIN_EXPONENTIAL = 5.9e-8f;
    /** Slack of the skip rule's cut, in {@code log} units (the roundings it covers are below 1e-5). */
    private static final double RACE_MARGIN = 0.01;

    /**
     * The entries with {@code x - max >= cut}, in increasing order, into {@code s.candidate} and
     * their {@code r = 1 / e^(x - max)} into {@code s.candidateR}, padded to whole vectors with
     * {@code r = +inf} (whose score never wins); returns the padded count.
     */
    private static int candidates(Scratch s, float max, float cut) {
        float[] x = s.x;
        int n = 0;
        for (int i = 0; i < x.length; i += F.length()) {
            long mask = FloatVector.fromArray(F, x, i).sub(max).compare(VectorOperators.GE, cut).toLong();
            while (mask != 0) {
                int lane = Long.numberOfTrailingZeros(mask);
                s.candidate[n] = i + lane;
                s.candidateR[n++] = x[i + lane];
                mask &= mask - 1;
            }
        }
        while (n % F.length() != 0) {
            s.candidate[n] = 0;
            s.candidateR[n++] = Float.NEGATIVE_INFINITY;
        }
        // The same operations as the kernel's: d = x - max, w = e^d (0 for -inf), r = 1 / w.
        for (int i = 0; i < n; i += F.length()) {
            FloatVector w = VectorMath.expNonPositive(FloatVector.fromArray(F, s.candidateR, i).sub(max));
            FloatVector.broadcast(F, 1f).div(w).intoArray(s.candidateR, i);
        }
        return n;
    }

    /** The first index of the largest {@code x} (the row has a finite one). */
    private static int top(float[] x) {
        float max = VectorMath.max(x, x.length);
        int i = 0;
        while (x[i] != max) {
            i++;
        }
        return i;
    }

    /** {@code e[i] = -log u_i} with {@code u_i = (2 m + 1) 2^-24}, {@code m = bits[i] >>> 9}: the exponentials of the race. */
    private static void exponentials(int[] bits, float[] e, int n) {
        for (int i = 0; i < n; i += F.length()) {
            IntVector m = IntVector.fromArray(I, bits, i).lanewise(VectorOperators.LSHR, 9)
                    .lanewise(VectorOperators.LSHL, 1).or(1);
            FloatVector u = ((FloatVector) m.convert(VectorOperators.I2F, 0)).mul(0x1p-24f); // exact
            VectorMath.log(u).neg().intoArray(e, i);
        }
    }
}
