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
 * row padded with {@code -inf}, its log-sum-exp, then per group of four samples one sweep over
 * blocks of 256 entries: Philox for the block (one lane per counter), the noise of the block, and
 * per sample and lane the best score and its index. Lanes combine by (score, lowest index) at the
 * end, the order-free argmax the kernel computes too.
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
        final float[] candidateX;

        Scratch(int vocab) {
            int padded = (vocab + F.length() - 1) / F.length() * F.length();
            x = new float[padded];
            Arrays.fill(x, vocab, padded, Float.NEGATIVE_INFINITY);
            candidate = new int[padded];
            candidateX = new float[padded];
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
     * if all are {@code -inf}. The sampler keeps the scaled row: its Gumbel scores read it, and the
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
        return max + (float) Math.log(sum.reduceLanes(VectorOperators.ADD));
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
            argmaxGroup(s, top, group, count, (int) position, (int) (position >>> 32), draw.key0(),
                    draw.key1());
            for (int w = 0; w < count; w++) {
                int a = s.winner[w];
                draw.sample()[at + group * 4 + w] = a;
                draw.logProb()[at + group * 4 + w] = s.x[a] - lse;
            }
        }
    }

    /**
     * The winners of samples {@code 4 group .. 4 group + count - 1}, into {@code s.winner[0 .. count - 1]}.
     *
     * <p>Only candidates get noise: the noise {@code -log E} never exceeds 16.64 (the uniforms stop at
     * {@code 1 - 2^-24}), so an entry with {@code x + 18 < T}, where {@code T} is the lowest score of
     * the row's first largest entry over the group's samples, scores below every sample's winner and
     * cannot win or tie. Skipping it changes no draw; on peaked rows (most entries far below the
     * top, as in trained language models) it skips most of the Philox calls and logs.
     */
    private static void argmaxGroup(Scratch s, int top, int group, int count, int positionLow,
                                    int positionHigh, int key0, int key1) {
        int lanes = Philox.LANES;
        float[] x = s.x;
        // The top entry's scores, by the same vector code as every other entry's.
        Philox.blocks(top, lanes, group, positionLow, positionHigh, key0, key1, s.bits);
        logExponentials(s.bits, s.noise, count * lanes);
        float threshold = Float.POSITIVE_INFINITY;
        for (int w = 0; w < count; w++) {
            threshold = Math.min(threshold, x[top] - s.noise[w * lanes]);
        }
        int n = candidates(s, threshold);
        Arrays.fill(s.bestScore, Float.NEGATIVE_INFINITY);
        Arrays.fill(s.bestIndex, Integer.MAX_VALUE);
        for (int from = 0; from < n; from += BLOCK) {
            int size = Math.min(BLOCK, n - from); // n is a multiple of the lanes
            Philox.blocks(s.candidate, from, size, group, positionLow, positionHigh, key0, key1, s.bits);
            logExponentials(s.bits, s.noise, count * size);
            for (int w = 0; w < count; w++) {
                FloatVector best = FloatVector.fromArray(F, s.bestScore, w * lanes);
                IntVector bestIndex = IntVector.fromArray(I, s.bestIndex, w * lanes);
                for (int j = 0; j < size; j += lanes) {
                    FloatVector score = FloatVector.fromArray(F, s.candidateX, from + j)
                            .sub(FloatVector.fromArray(F, s.noise, w * size + j));
                    VectorMask<Float> better = score.compare(VectorOperators.GT, best); // strict: a lane keeps its first
                    best = best.blend(score, better);
                    bestIndex = bestIndex.blend(IntVector.fromArray(I, s.candidate, from + j), better.cast(I));
                }
                best.intoArray(s.bestScore, w * lanes);
                bestIndex.intoArray(s.bestIndex, w * lanes);
            }
        }
        for (int w = 0; w < count; w++) {
            FloatVector best = FloatVector.fromArray(F, s.bestScore, w * lanes);
            float max = best.reduceLanes(VectorOperators.MAX);
            s.winner[w] = IntVector.fromArray(I, s.bestIndex, w * lanes)
                    .blend(Integer.MAX_VALUE, best.compare(VectorOperators.NE, max).cast(I))
                    .reduceLanes(VectorOperators.MIN);
        }
    }

    /** Above this, the noise {@code -log E} cannot be (its largest value is 16.64). */
    private static final float NOISE_BOUND = 18f;

    /**
     * The entries with {@code x + NOISE_BOUND >= threshold}, in increasing order, into
     * {@code s.candidate} and their {@code x} into {@code s.candidateX}, padded to whole vectors
     * with {@code -inf} (which never wins); returns the padded count.
     */
    private static int candidates(Scratch s, float threshold) {
        float[] x = s.x;
        int n = 0;
        for (int i = 0; i < x.length; i += F.length()) {
            long mask = FloatVector.fromArray(F, x, i).add(NOISE_BOUND).compare(VectorOperators.GE, threshold).toLong();
            while (mask != 0) {
                int lane = Long.numberOfTrailingZeros(mask);
                s.candidate[n] = i + lane;
                s.candidateX[n++] = x[i + lane];
                mask &= mask - 1;
            }
        }
        while (n % F.length() != 0) {
            s.candidate[n] = 0;
            s.candidateX[n++] = Float.NEGATIVE_INFINITY;
        }
        return n;
    }

    /** The first index of the largest {@code x} (the row has a finite one). */
    private static int top(float[] x) {
        FloatVector m = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        for (int i = 0; i < x.length; i += F.length()) {
            m = m.max(FloatVector.fromArray(F, x, i));
        }
        float max = m.reduceLanes(VectorOperators.MAX);
        int i = 0;
        while (x[i] != max) {
            i++;
        }
        return i;
    }

    /**
     * {@code noise[i] = log(-log u_i)} with {@code u_i = (2 m + 1) 2^-24}, {@code m = bits[i] >>> 9}:
     * the Gumbel noise, negated. Two loops in methods of their own, one log each, so that the JIT
     * inlines every log (with two in one loop it gives up on the second and boxes the vectors).
     */
    private static void logExponentials(int[] bits, float[] noise, int n) {
        exponentials(bits, noise, n);
        logs(noise, n);
    }

    /** {@code e[i] = -log u_i}. */
    private static void exponentials(int[] bits, float[] e, int n) {
        for (int i = 0; i < n; i += F.length()) {
            IntVector m = IntVector.fromArray(I, bits, i).lanewise(VectorOperators.LSHR, 9)
                    .lanewise(VectorOperators.LSHL, 1).or(1);
            FloatVector u = ((FloatVector) m.convert(VectorOperators.I2F, 0)).mul(0x1p-24f); // exact
            VectorMath.log(u).neg().intoArray(e, i);
        }
    }

    /** {@code a[i] = log a[i]}. */
    private static void logs(float[] a, int n) {
        for (int i = 0; i < n; i += F.length()) {
            VectorMath.log(FloatVector.fromArray(F, a, i)).intoArray(a, i);
        }
    }
}
