package dev.tokenkernels.ops.loss;

import dev.tokenkernels.ops.cpu.ExponentScale;
import dev.tokenkernels.ops.cpu.HalfFloats;
import dev.tokenkernels.ops.cpu.VectorMath;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector API implementation of {@link LogitStats}.
 *
 * <p>An online softmax by blocks that fit in L1: a first sweep finds the block's max of z; if it
 * raises the row's running max {@code m}, the running sums {@code s = sum 2^d} and
 * {@code t = sum 2^d d}, {@code d = fp32(z - m) log2(e) / T}, are rescaled once; a second sweep
 * (from L1) adds the block's terms, accumulated per lane in vectors and reduced at the end of the
 * block. Memory is read once and there is one exponential per element, not the two that a
 * per-element rescale costs. In base 2 the exponential needs no range reduction by ln 2
 * ({@link VectorMath#exp2NonPositive}); the difference before the scaling keeps classes near the
 * max exact at any magnitude of the logits. Keeping {@code t} relative to the max keeps the
 * entropy accurate when logits are large: {@code H = ln s - ln2 t / s},
 * {@code lse = fp32(m / T) + ln s} (the max rounded as {@code x = z / T} is, so that
 * {@code x - lse} is exact for the max class).
 */
final class LogitStatsCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    /** Columns per block: 8 KiB of fp32, well inside L1 next to the decode scratch. */
    static final int BLOCK = 2048;
    /** Differences are clamped here: exp is 0 below it, and the clamp turns {@code 0 * -inf} into 0. */
    private static final float EXP_FLOOR = VectorMath.EXP2_UNDERFLOW - 1;
    /** About this many elements per parallel task keeps the fork-join overhead negligible. */
    private static final int ELEMENTS_PER_TASK = 1 << 16;
    private static final double LN2 = Math.log(2);

    private LogitStatsCpu() {
    }

    static void run(CpuBackend cpu, Tensor logits, Tensor targets, float invT, long ignoreIndex,
                    LogitStats.Result out) {
        int vocab = (int) logits.dim(1);
        DType dtype = logits.dtype();
        MemorySegment z = logits.segment();
        MemorySegment max = out.max().segment();
        MemorySegment lse = out.lse().segment();
        MemorySegment entropy = out.entropy().segment();
        MemorySegment logProb = out.logProb() == null ? null : out.logProb().segment();
        MemorySegment y = targets == null ? null : targets.segment();
        boolean longTargets = targets != null && targets.dtype() == DType.I64;
        long rowBytes = (long) vocab * dtype.byteSize();
        int grain = Math.max(1, ELEMENTS_PER_TASK / vocab);

        cpu.parallelFor((int) logits.dim(0), grain, (from, to) -> {
            DecodeScratch scratch = dtype == DType.F32 ? null : new DecodeScratch();
            RowState state = new RowState();
            float[] stats = new float[3];
            for (int row = from; row < to; row++) {
                if (dtype == DType.F32) {
                    rowStatsF32(z, row * rowBytes, vocab, invT, state);
                } else {
                    rowStatsDecoded(z, row * rowBytes, dtype, vocab, invT, scratch, state);
                }
                state.finish(stats);
                max.setAtIndex(ValueLayout.JAVA_FLOAT, row, stats[0]);
                lse.setAtIndex(ValueLayout.JAVA_FLOAT, row, stats[1]);
                entropy.setAtIndex(ValueLayout.JAVA_FLOAT, row, stats[2]);
                if (logProb != null) {
                    long target = longTargets ? y.getAtIndex(ValueLayout.JAVA_LONG, row)
                            : y.getAtIndex(ValueLayout.JAVA_INT, row);
                    float lp = target == ignoreIndex ? 0f
                            : logProb(dtype.getFloat(z, (long) row * vocab + target) * invT, stats[1]);
                    logProb.setAtIndex(ValueLayout.JAVA_FLOAT, row, lp);
                }
            }
        });
    }

    /** {@code x - lse}, with the fully masked row (lse = -inf) giving -inf instead of NaN. */
    private static float logProb(float x, float lse) {
        return lse == Float.NEGATIVE_INFINITY && x == Float.NEGATIVE_INFINITY ? Float.NEGATIVE_INFINITY : x - lse;
    }

    /**
     * One F32 row, software-pipelined: the loop that adds block k's exponentials (from L1) also
     * streams block k+1 from memory for its max, so memory traffic overlaps the arithmetic.
     */
    static void rowStatsF32(MemorySegment z, long rowOffset, int vocab, float invT, RowState state) {
        state.reset(invT);
        float nextMax = blockMax(z, rowOffset, Math.min(BLOCK, vocab));
        for (int start = 0; start < vocab; start += BLOCK) {
            int len = Math.min(BLOCK, vocab - start);
            long base = rowOffset + 4L * start;
            boolean active = state.enterBlock(nextMax);
            int nextStart = start + BLOCK;
            if (nextStart < vocab) {
                int nextLen = Math.min(BLOCK, vocab - nextStart);
                long nextBase = base + 4L * BLOCK;
                nextMax = active ? sumExpAndNextMax(z, base, len, nextBase, nextLen, state)
                        : blockMax(z, nextBase, nextLen);
            } else if (active) {
                sumExp(z, base, len, state);
            }
        }
    }

    /** F16/BF16 bits and fp32 values of one block, padded to whole vectors with -inf. */
    private static final class DecodeScratch {
        final short[] bits = new short[BLOCK];
        final float[] values = new float[BLOCK];
    }

    /** One F16 or BF16 row: each block is decoded to fp32 in {@code scratch} (its max with it), then swept. */
    static void rowStatsDecoded(MemorySegment z, long rowOffset, DType dtype, int vocab, float invT,
                                DecodeScratch scratch, RowState state) {
        state.reset(invT);
        for (int start = 0; start < vocab; start += BLOCK) {
            int len = Math.min(BLOCK, vocab - start);
            float blockMax = HalfFloats.decodeMax(z, rowOffset + 2L * start, dtype, scratch.bits, scratch.values, len);
            java.util.Arrays.fill(scratch.values, len, F.loopBound(len + F.length() - 1), Float.NEGATIVE_INFINITY);
            if (state.enterBlock(blockMax)) {
                sumExp(scratch.values, len, state);
            }
        }
    }

    /**
     * {@link #sumExp} over block {@code [base, base + 4 len)} fused with {@link #blockMax} over the
     * next block {@code [nextBase, nextBase + 4 nextLen)}, {@code nextLen <= len}; returns the
     * next block's max.
     */
    private static float sumExpAndNextMax(MemorySegment z, long base, int len, long nextBase, int nextLen,
                                          RowState state) {
        ExponentScale exponents = state.exponents;
        FloatVector scaleBy = FloatVector.broadcast(F, exponents.loopScale());
        FloatVector minusMax = FloatVector.broadcast(F, exponents.offset(state.max));
        FloatVector s = FloatVector.zero(F);
        FloatVector t = FloatVector.zero(F);
        FloatVector m = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        boolean clamp = state.masked;
        int i = 0;
        for (int upper = F.loopBound(nextLen); i < upper; i += F.length()) {
            m = m.max(FloatVector.fromMemorySegment(F, z, nextBase + 4L * i, NATIVE));
            FloatVector logit = FloatVector.fromMemorySegment(F, z, base + 4L * i, NATIVE);
            FloatVector d = exponents.exponent(logit, minusMax, scaleBy);
            if (clamp) {
                d = clampBelow(d);
            }
            FloatVector e = VectorMath.exp2NonPositive(d);
            s = s.add(e);
            t = e.fma(d, t);
        }
        VectorMask<Float> nextTail = F.indexInRange(i, nextLen);
        if (nextTail.anyTrue()) {
            FloatVector x = FloatVector.fromMemorySegment(F, z, nextBase + 4L * i, NATIVE, nextTail);
            m = m.lanewise(VectorOperators.MAX, x, nextTail);
        }
        double weighted = VectorMath.sumLanes(t);
        if (Double.isNaN(weighted) && !clamp) { // a masked class: again, clamped, as the row's later blocks are
            state.masked = true;
            sumExp(z, base, i, state);
        } else {
            state.add(VectorMath.sumLanes(s), weighted);
        }
        if (i < len) {
            sumExp(z, base + 4L * i, len - i, state); // the rest of a block longer than the next
        }
        return m.reduceLanes(VectorOperators.MAX);
    }

    /**
     * Adds {@code e = 2^d} and {@code e d} over {@code d = (block[i] - max) invT2} to the state. A
     * method of its own so that the JIT compiles this loop with every vector in registers (in one
     * big method, the Vector API's inlining budget runs out and vectors get boxed). As in the
     * decoded {@link #sumExp(float[], int, RowState)}, only the tail is clamped in the loop until
     * the row has shown a masked class.
     */
    private static void sumExp(MemorySegment block, long base, int len, RowState state) {
        ExponentScale exponents = state.exponents;
        FloatVector scaleBy = FloatVector.broadcast(F, exponents.loopScale());
        FloatVector minusMax = FloatVector.broadcast(F, exponents.offset(state.max));
        FloatVector s = FloatVector.zero(F);
        FloatVector t = FloatVector.zero(F);
        boolean clamp = state.masked;
        int i = 0;
        for (int upper = F.loopBound(len); i < upper; i += F.length()) {
            FloatVector logit = FloatVector.fromMemorySegment(F, block, base + 4L * i, NATIVE);
            FloatVector d = exponents.exponent(logit, minusMax, scaleBy);
            if (clamp) {
                d = clampBelow(d);
            }
            FloatVector e = VectorMath.exp2NonPositive(d);
            s = s.add(e);
            t = e.fma(d, t);
        }
        VectorMask<Float> tail = F.indexInRange(i, len);
        if (tail.anyTrue()) {
            FloatVector logit = FloatVector.fromMemorySegment(F, block, base + 4L * i, NATIVE, tail);
            FloatVector d = clampBelow(exponents.exponent(logit, minusMax, scaleBy));
            FloatVector e = VectorMath.exp2NonPositive(d);
            s = s.add(e, tail);
            t = t.add(e.mul(d), tail);
        }
        double weighted = VectorMath.sumLanes(t);
        if (Double.isNaN(weighted) && !clamp) { // a masked class: again, clamped, as the row's later blocks are
            state.masked = true;
            sumExp(block, base, len, state);
            return;
        }
        state.add(VectorMath.sumLanes(s), weighted);
    }

    /**
     * {@link #sumExp} over the decoded values {@code block[0, len)}, padded with -inf to whole
     * vectors. Only the padded last vector is clamped in the loop (the clamp is two of the loop's
     * ~20 operations) until the row has shown a masked class ({@link RowState#masked}): a
     * {@code -inf} logit makes {@code sum e d} NaN, and the block is then summed again by
     * {@link #sumExpClamped}, as the row's later blocks are. The sums equal those of clamping every
     * vector: below the floor {@code e} is 0 either way.
     */
    private static void sumExp(float[] block, int len, RowState state) {
        if (state.masked) {
            sumExpClamped(block, len, state);
            return;
        }
        ExponentScale exponents = state.exponents;
        FloatVector scaleBy = FloatVector.broadcast(F, exponents.loopScale());
        FloatVector minusMax = FloatVector.broadcast(F, exponents.offset(state.max));
        FloatVector s = FloatVector.zero(F);
        FloatVector t = FloatVector.zero(F);
        int fullEnd = F.loopBound(len);
        for (int i = 0; i < fullEnd; i += F.length()) {
            FloatVector d = exponents.exponent(FloatVector.fromArray(F, block, i), minusMax, scaleBy);
            FloatVector e = VectorMath.exp2NonPositive(d);
            s = s.add(e);
            t = e.fma(d, t);
        }
        if (fullEnd < len) {
            FloatVector d = clampBelow(exponents.exponent(FloatVector.fromArray(F, block, fullEnd), minusMax, scaleBy));
            FloatVector e = VectorMath.exp2NonPositive(d);
            s = s.add(e);
            t = e.fma(d, t);
        }
        double weighted = VectorMath.sumLanes(t);
        if (Double.isNaN(weighted)) {
            state.masked = true;
            sumExpClamped(block, len, state);
            return;
        }
        state.add(VectorMath.sumLanes(s), weighted);
    }

    /** {@link #sumExp} over the decoded values with every {@code d} clamped below. */
    private static void sumExpClamped(float[] block, int len, RowState state) {
        ExponentScale exponents = state.exponents;
        FloatVector scaleBy = FloatVector.broadcast(F, exponents.loopScale());
        FloatVector minusMax = FloatVector.broadcast(F, exponents.offset(state.max));
        FloatVector s = FloatVector.zero(F);
        FloatVector t = FloatVector.zero(F);
        for (int i = 0; i < len; i += F.length()) {
            FloatVector d = clampBelow(exponents.exponent(FloatVector.fromArray(F, block, i), minusMax, scaleBy));
            FloatVector e = VectorMath.exp2NonPositive(d);
            s = s.add(e);
            t = e.fma(d, t);
        }
        state.add(VectorMath.sumLanes(s), VectorMath.sumLanes(t));
    }

    /** The largest element of {@code block[base .. base + 4 len)}; NaN if any element is NaN. */
    private static float blockMax(MemorySegment block, long base, int len) {
        FloatVector m = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        int i = 0;
        for (int upper = F.loopBound(len); i < upper; i += F.length()) {
            m = m.max(FloatVector.fromMemorySegment(F, block, base + 4L * i, NATIVE));
        }
        VectorMask<Float> tail = F.indexInRange(i, len);
        if (tail.anyTrue()) {
            m = m.lanewise(VectorOperators.MAX, FloatVector.fromMemorySegment(F, block, base + 4L * i, NATIVE, tail), tail);
        }
        return m.reduceLanes(VectorOperators.MAX);
    }

    /**
     * Raises differences below {@link #EXP_FLOOR} (where exp is 0 anyway) to it, so that
     * {@code exp(d) d} is 0 rather than NaN for masked ({@code -inf}) logits. NaN stays NaN.
     * A compare and a blend: cheaper than {@code max}, whose NaN rules cost extra instructions.
     */
    private static FloatVector clampBelow(FloatVector d) {
        return d.blend(EXP_FLOOR, d.lt(EXP_FLOOR));
    }

    /**
     * The online-softmax state of one row: the running max of its z and, relative to it, the sums
     * in base 2 ({@code d = (z - max) invT2}, {@code invT2 = log2(e) / T}).
     */
    static final class RowState {
        float max;
        float invT;
        ExponentScale exponents;
        boolean nan;
        /**
         * A block of this row held a {@code -inf} logit (a masked class): the row's later blocks
         * clamp in their loops rather than sum twice, so masked rows cost a block more, not double.
         */
        boolean masked;
        double sum;      // sum 2^d
        double weighted; // sum 2^d d

        void reset(float invT) {
            this.invT = invT;
            this.exponents = ExponentScale.of(invT);
            max = Float.NEGATIVE_INFINITY;
            nan = false;
            masked = false;
            sum = 0;
            weighted = 0;
        }

        /**
         * Takes in the max of the next block's z, rescaling the sums if it raises the running max.
         * Returns false while everything seen is -inf (there is nothing to add).
         */
        boolean enterBlock(float blockMax) {
            nan |= Float.isNaN(blockMax);
            if (blockMax > max) {
                if (max != Float.NEGATIVE_INFINITY) {
                    double shift = ((double) max - blockMax) * exponents.invT2();
                    double scale = Math.pow(2, shift);
                    weighted = (weighted + sum * shift) * scale;
                    sum *= scale;
                }
                max = blockMax;
            }
            return max != Float.NEGATIVE_INFINITY;
        }

        void add(double blockSum, double blockWeighted) {
            sum += blockSum;
            weighted += blockWeighted;
        }

        /** Writes max, lse and entropy, the special rows first. */
        void finish(float[] stats) {
            float x = max * invT; // the max of x = z / T, rounded as x is
            if (nan) {
                stats[0] = stats[1] = stats[2] = Float.NaN;
            } else if (x == Float.POSITIVE_INFINITY) {
                stats[0] = x;
                stats[1] = stats[2] = Float.NaN;
            } else if (x == Float.NEGATIVE_INFINITY) {
                stats[0] = stats[1] = x;
                stats[2] = 0f;
            } else {
                double logSum = Math.log(sum);
                stats[0] = x;
                stats[1] = (float) (x + logSum);
                stats[2] = (float) Math.max(0, logSum - LN2 * weighted / sum);
            }
        }
    }
}
