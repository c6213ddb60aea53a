package dev.tokenkernels.ops.loss;

import dev.tokenkernels.ops.cpu.ExponentScale;
import dev.tokenkernels.ops.cpu.HalfFloats;
import dev.tokenkernels.ops.cpu.VectorMath;
import dev.tokenkernels.runtime.DType;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * The softmax of one logits row {@code x = z / T} in two sweeps with one exponential per element,
 * for the fused token losses that need {@code log softmax(x)[y]}, the gradient
 * {@code c (onehot(y) - softmax(x))} and the entropy of the row.
 *
 * <p>{@link #logSumExp} reads the row from memory once, in blocks of 2048 whose logits and
 * exponentials stay in L1: a block is copied (F32) or decoded (F16, BF16, with its max) into an
 * fp32 array and the max of its z taken (for {@code T > 0} the max class of z is that of z / T),
 * then {@code e = 2^d2}, {@code d2 = fp32(z - m_b) log2(e) / T}, goes into a row of scratch,
 * {@code m_b} being the running max of z so far: in base 2 the exponential needs no range reduction
 * by ln 2 ({@link VectorMath#exp2NonPositive}), and the difference before the scaling keeps the
 * classes near the max exact. The running sum {@code S} is rescaled in float64 when the max grows,
 * and per block {@code sum e} and (for the entropy) {@code sum e d2} are kept; the lse returned is
 * {@code fp32(max z / T) + ln S}. {@link #gradient} reads only the scratch
 * ({@code p = e 2^((m_b - M) log2(e) / T) / S}, from L2 while {@code 4V} bytes fit; one multiply-
 * add per element) and writes the gradient a block at a time (one bulk copy each, after rounding
 * for an F16/BF16 gradient);
 * {@link #sumPLogP} is a sum over blocks. One instance per thread: it holds the scratch.
 *
 * <p>Every loop runs on Java arrays, one loop for all dtypes: a Vector API access to a memory
 * segment costs several times one to an array, and a dtype branch inside a loop once made C2 trap
 * and recompile it without end (its profiled loop predication, with the JDK's shared segment
 * checks' profile mixed by other ops).
 */
final class SoftmaxRowCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    /** Elements per block: the block's logits and exponentials stay in a 32 KiB L1. */
    private static final int BLOCK = 2048;
    private static final double LN2 = Math.log(2);

    private final int vocab;
    private final boolean entropy;
    private final float[] exps;

    /** Per block, the running max of z when it was exponentiated ({@code m_b}). */
    private final float[] blockMax;
    private final double[] blockExpSum;
    private final double[] blockExpLog;
    private final double[] blockScale;
    /**
     * One block of the row on its way in and of the gradient on its way out: a Vector API load or
     * store on a memory segment costs several times one on an array (its checks stay in the loop).
     */
    private final float[] staged = new float[BLOCK];
    /** F16 and BF16 bits of one block, for their decoding. */
    private final short[] bits = new short[BLOCK];
    /** Of the last {@link #logSumExp}, if finite ({@code valid}): the max of z, S, and log2(e) / T. */
    private float lastMax;
    private double lastSum;
    private float lastInvT2;
    private boolean valid;
    /**
     * The current row has shown a {@code -inf} logit (a masked class): its later blocks clamp the
     * entropy term in their loop rather than exponentiate twice, so masked rows cost a block more,
     * not double.
     */
    private boolean masked;

    private MemorySegment row;
    private long rowOffset;
    private DType dtype;

    /** With {@code entropy}, {@link #logSumExp} also keeps what {@link #sumPLogP} needs. */
    SoftmaxRowCpu(int vocab, boolean entropy) {
        this.vocab = vocab;
        this.entropy = entropy;
        this.exps = new float[(vocab + F.length() - 1) / F.length() * F.length()];
        int blocks = (vocab + BLOCK - 1) / BLOCK;
        this.blockMax = new float[blocks];
        this.blockExpSum = new double[blocks];
        this.blockExpLog = new double[blocks];
        this.blockScale = new double[blocks];
    }

    /** Makes row {@code index} of {@code logits} ({@code [N, vocab]}, F32, BF16 or F16) the current row. */
    void select(MemorySegment logits, DType dtype, long index) {
        row = logits;
        rowOffset = index * vocab * dtype.byteSize();
        this.dtype = dtype;
    }

    /** {@code z[i] * invT} of the current row. */
    float scaled(int i, float invT) {
        return dtype.getFloat(row, rowOffset / dtype.byteSize() + i) * invT;
    }

    /**
     * The log-sum-exp of the current row times {@code invT}: NaN if an element is NaN or the max
     * is {@code +inf}, {@code -inf} if every element is {@code -inf}. Fills the scratch and block
     * sums that {@link #sumPLogP} and {@link #gradient} read.
     */
    float logSumExp(float invT) {
        ExponentScale exponents = ExponentScale.of(invT);
        float invT2 = exponents.invT2();
        float running = Float.NEGATIVE_INFINITY;
        double sum = 0;
        valid = false;
        masked = false;
        for (int b = 0, start = 0; start < vocab; b++, start += BLOCK) {
            int end = Math.min(vocab, start + BLOCK);
            float blockMaximum = loadBlock(start, end);
            if (!(blockMaximum * invT < Float.POSITIVE_INFINITY)) { // NaN compares false
                return Float.NaN;
            }
            if (blockMaximum > running) {
                sum *= Math.pow(2, ((double) running - blockMaximum) * invT2); // 0 while running is -inf
                running = blockMaximum;
            }
            blockMax[b] = running;
            if (running == Float.NEGATIVE_INFINITY) { // nothing but -inf so far: all weights 0
                java.util.Arrays.fill(exps, start, end, 0f);
                blockExpSum[b] = 0;
                blockExpLog[b] = 0;
                continue;
            }
            exponentiateBlock(b, start, end - start, exponents, running);
            sum += blockExpSum[b];
        }
        if (running == Float.NEGATIVE_INFINITY) {
            return running;
        }
        lastMax = running;
        lastSum = sum;
        lastInvT2 = invT2;
        valid = true;
        // The max as x_y = fp32(z_y / T) rounds it: log p_y = x_y - lse is exact for the max class.
        return (float) (running * invT + Math.log(sum));
    }

    /**
     * {@code sum p log p} of the current row, from the block sums of the last finite
     * {@link #logSumExp} (made with {@code entropy}): per block
     * {@code scale_b (ln2 sum e d2 + shift_b sum e)}, {@code log p = ln2 d2 + shift_b}.
     */
    double sumPLogP() {
        blockScales();
        double lnSum = Math.log(lastSum);
        double total = 0;
        for (int b = 0; b < blockMax.length; b++) {
            if (blockExpSum[b] != 0) {
                total += blockScale[b] * (LN2 * blockExpLog[b] + blockShift(b, lnSum) * blockExpSum[b]);
            }
        }
        return total;
    }

    /** {@code log p - ln2 d2} in block b: {@code ln2 (m_b - M) invT2 - ln S}. */
    private double blockShift(int b, double lnSum) {
        return LN2 * (((double) blockMax[b] - lastMax) * lastInvT2) - lnSum;
    }

    /** {@code 2^((m_b - M) invT2) / S} per block: {@code p = e scale_b}; one power per change of the running max (a few a row). */
    private void blockScales() {
        if (!valid) {
            throw new IllegalStateException("no finite log-sum-exp of the current row");
        }
        for (int b = 0; b < blockMax.length; b++) {
            blockScale[b] = b > 0 && blockMax[b] == blockMax[b - 1] ? blockScale[b - 1]
                    : Math.pow(2, ((double) blockMax[b] - lastMax) * lastInvT2) / lastSum;
        }
    }

    /**
     * Writes the gradient {@code c (onehot(target) - p)} of the current row into row {@code row} of
     * {@code gradient} ({@code [N, vocab]} of {@code type}: F32, F16 or BF16; each value formed in
     * fp32, with what the row holds added first when {@code accumulate}, and rounded once), after
     * a finite {@link #logSumExp}. Reads only the scratch, not the logits.
     */
    void gradient(float c, int target, MemorySegment gradient, DType type, long row, boolean accumulate) {
        blockScales();
        long rowStart = row * vocab * type.byteSize();
        for (int b = 0, start = 0; start < vocab; b++, start += BLOCK) {
            int length = Math.min(vocab, start + BLOCK) - start;
            long at = rowStart + (long) start * type.byteSize();
            // -c p = e (-c scale_b); the fma onto +0 keeps a zero p at +0, not -0
            FloatVector minusCScale = FloatVector.broadcast(F, (float) (-c * blockScale[b]));
            if (accumulate) { // two loops, not a test in one
                if (type == DType.F32) {
                    MemorySegment.copy(gradient, ValueLayout.JAVA_FLOAT_UNALIGNED, at, staged, 0, length);
                } else {
                    HalfFloats.decode(gradient, at, type, bits, staged, length);
                }
                for (int i = 0; i < length; i += F.length()) {
                    FloatVector.fromArray(F, exps, start + i)
                            .fma(minusCScale, FloatVector.fromArray(F, staged, i)).intoArray(staged, i);
                }
            } else {
                FloatVector zero = FloatVector.zero(F);
                for (int i = 0; i < length; i += F.length()) {
                    FloatVector.fromArray(F, exps, start + i).fma(minusCScale, zero).intoArray(staged, i);
                }
            }
            if (target >= start && target < start + length) {
                staged[target - start] += c;
            }
            HalfFloats.store(staged, length, type, bits, gradient, at);
        }
    }

    /**
     * Copies (F32) or decodes (F16, BF16) the current row's {@code [start, end)} into {@link #staged},
     * {@code -inf} in the lanes of the last vector past {@code end}, and returns their max.
     */
    private float loadBlock(int start, int end) {
        int length = end - start;
        int vectorLength = F.loopBound(length + F.length() - 1);
        if (dtype != DType.F32) { // the max taken while decoding
            float max = HalfFloats.decodeMax(row, rowOffset + 2L * start, dtype, bits, staged, length);
            java.util.Arrays.fill(staged, length, vectorLength, Float.NEGATIVE_INFINITY);
            return max;
        }
        MemorySegment.copy(row, ValueLayout.JAVA_FLOAT_UNALIGNED, rowOffset + 4L * start, staged, 0, length);
        java.util.Arrays.fill(staged, length, vectorLength, Float.NEGATIVE_INFINITY);
        return VectorMath.max(staged, vectorLength);
    }

    /**
     * {@code e = 2^d2} of the staged block {@code b} into the scratch at {@code start}, its
     * {@code sum e} and (with the entropy) {@code sum e d2}, {@code d2 = fp32(z - m_b) invT2}: the
     * difference first, exact for the classes near the max that carry the mass (a product
     * {@code z invT2} rounded at the logits' magnitude would cost them up to 1e-6 relative at
     * {@code |x| = 100}), and 0 for the max itself. Where {@code z = -inf} (a masked class, or a
     * padding lane of the last vector), {@code e} is 0 and {@code 0 * -inf} is NaN: the last vector
     * clamps, and a block whose sum came out NaN is done again by {@link #exponentiateBlockClamped},
     * as the row's later blocks are ({@link #masked}).
     */
    private void exponentiateBlock(int b, int start, int length, ExponentScale exponents, float running) {
        if (masked) {
            exponentiateBlockClamped(b, start, length, exponents, running);
            return;
        }
        FloatVector scale = FloatVector.broadcast(F, exponents.loopScale());
        FloatVector minusRunning = FloatVector.broadcast(F, exponents.offset(running));
        FloatVector s = FloatVector.zero(F);
        FloatVector ed = FloatVector.zero(F);
        int fullEnd = F.loopBound(length);
        for (int i = 0; i < fullEnd; i += F.length()) {
            FloatVector d = exponents.exponent(FloatVector.fromArray(F, staged, i), minusRunning, scale);
            FloatVector e = VectorMath.exp2NonPositive(d);
            s = s.add(e);
            if (entropy) {
                ed = e.fma(d, ed);
            }
            e.intoArray(exps, start + i);
        }
        if (fullEnd < length) {
            FloatVector d = exponents.exponent(FloatVector.fromArray(F, staged, fullEnd), minusRunning, scale);
            FloatVector e = VectorMath.exp2NonPositive(d);
            s = s.add(e);
            if (entropy) {
                ed = e.fma(entropyFloor(d), ed);
            }
            e.intoArray(exps, start + fullEnd);
        }
        double expLog = entropy ? VectorMath.sumLanes(ed) : 0;
        if (Double.isNaN(expLog)) {
            masked = true;
            exponentiateBlockClamped(b, start, length, exponents, running);
            return;
        }
        blockExpSum[b] = VectorMath.sumLanes(s);
        blockExpLog[b] = expLog;
    }

    /**
     * {@link #exponentiateBlock} with {@code d2} clamped to -256 in the entropy term of every
     * vector: a block with a masked class, and the row's blocks after it. The same sums.
     */
    private void exponentiateBlockClamped(int b, int start, int length, ExponentScale exponents, float running) {
        FloatVector scale = FloatVector.broadcast(F, exponents.loopScale());
        FloatVector minusRunning = FloatVector.broadcast(F, exponents.offset(running));
        FloatVector s = FloatVector.zero(F);
        FloatVector ed = FloatVector.zero(F);
        for (int i = 0; i < length; i += F.length()) {
            FloatVector d = exponents.exponent(FloatVector.fromArray(F, staged, i), minusRunning, scale);
            FloatVector e = VectorMath.exp2NonPositive(d);
            s = s.add(e);
            ed = e.fma(entropyFloor(d), ed);
            e.intoArray(exps, start + i);
        }
        blockExpSum[b] = VectorMath.sumLanes(s);
        blockExpLog[b] = VectorMath.sumLanes(ed);
    }

    /** {@code d2} raised to -256 (where {@code e} is 0 anyway), so that {@code e d2} is 0, not {@code 0 * -inf}. */
    private static FloatVector entropyFloor(FloatVector d) {
        return d.blend(-256f, d.lt(-256f));
    }

}
