package dev.tokenkernels.ops.loss;

import dev.tokenkernels.ops.cpu.HalfFloats;
import dev.tokenkernels.ops.cpu.VectorMath;
import dev.tokenkernels.runtime.DType;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * The softmax of one logits row {@code x = z / T} in two sweeps with one exponential per element,
 * for the fused token losses that need {@code log softmax(x)[y]}, the gradient
 * {@code c (onehot(y) - softmax(x))} and the entropy of the row.
 *
 * <p>{@link #logSumExp} reads the row from memory once, in blocks of 2048 whose logits and
 * exponentials stay in L1: a block is copied (F32) or decoded (F16, BF16) into an fp32 array and
 * its max taken ({@code max(z) / T} is {@code max(z / T)} for {@code T > 0}: rounding is
 * monotonic), then {@code e = exp(x - m_b)} with {@code x = fp32(z / T)} (rounded as the CUDA
 * kernels round it) goes into a row of scratch, {@code m_b} being the running max so far; the
 * running sum is rescaled in float64 when the max grows, and per block {@code sum e} and (for the
 * entropy) {@code sum e (x - m_b)} are kept. {@link #gradient} reads
 * only the scratch ({@code p = e exp(m_b - lse)}, from L2 while {@code 4V} bytes fit; one multiply-
 * add per element) and writes the gradient a block at a time, by one bulk copy each;
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

    private final int vocab;
    private final boolean entropy;
    private final float[] exps;
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
    /** The last {@link #logSumExp} in fp64. */
    private double lastLogSumExp = Double.NaN;

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
     * is {@code +inf}, {@code -inf} if every element is {@code -inf}. Fills the scratch that
     * {@link #gradient} reads.
     */
    float logSumExp(float invT) {
        lastLogSumExp = Double.NaN;
        float running = Float.NEGATIVE_INFINITY;
        double sum = 0;
        for (int b = 0, start = 0; start < vocab; b++, start += BLOCK) {
            int end = Math.min(vocab, start + BLOCK);
            float blockMaximum = loadBlock(start, end) * invT;
            if (Float.isNaN(blockMaximum) || blockMaximum == Float.POSITIVE_INFINITY) {
                return Float.NaN;
            }
            if (blockMaximum > running) {
                sum *= Math.exp((double) running - blockMaximum); // 0 while running is -inf
                running = blockMaximum;
            }
            blockMax[b] = running;
            if (running == Float.NEGATIVE_INFINITY) { // nothing but -inf so far: all weights 0
                java.util.Arrays.fill(exps, start, end, 0f);
                blockExpSum[b] = 0;
                blockExpLog[b] = 0;
                continue;
            }
            exponentiateBlock(b, start, end - start, invT, running);
            sum += blockExpSum[b];
        }
        lastLogSumExp = running + Math.log(sum);
        return running == Float.NEGATIVE_INFINITY ? running : (float) lastLogSumExp;
    }

    /**
     * {@code sum p log p} of the current row, from the block sums of the last {@link #logSumExp}
     * (made with {@code entropy}) and its finite {@code lse}: per block
     * {@code exp(m_b - lse) (sum e (x - m_b) + (m_b - lse) sum e)}.
     */
    double sumPLogP(float lse) {
        blockScales(lse);
        double total = 0;
        for (int b = 0; b < blockMax.length; b++) {
            if (blockExpSum[b] != 0) {
                double shift = blockMax[b] - exact(lse);
                total += blockScale[b] * (blockExpLog[b] + shift * blockExpSum[b]);
            }
        }
        return total;
    }

    /**
     * The unrounded lse where the caller passes the last one back: the fp32 one is off by up to
     * half an ulp of |lse|, which would scale every p.
     */
    private double exact(float lse) {
        return lse == (float) lastLogSumExp ? lastLogSumExp : lse;
    }

    /** {@code exp(m_b - lse)} per block, one exp per change of the running max (a few a row). */
    private void blockScales(float lse) {
        double exact = exact(lse);
        for (int b = 0; b < blockMax.length; b++) {
            blockScale[b] = b > 0 && blockMax[b] == blockMax[b - 1] ? blockScale[b - 1]
                    : Math.exp(blockMax[b] - exact);
        }
    }

    /**
     * Writes {@code -c p} of the current row into {@code gradient} at byte offset {@code gradOffset}
     * (added to what is there when {@code accumulate}); needs the finite {@code lse} of the last
     * {@link #logSumExp}. Reads only the scratch, not the row. The caller adds {@code c} at the target.
     */
    void gradient(float lse, float c, MemorySegment gradient, long gradOffset, boolean accumulate) {
        blockScales(lse);
        for (int b = 0, start = 0; start < vocab; b++, start += BLOCK) {
            int length = Math.min(vocab, start + BLOCK) - start;
            long at = gradOffset + 4L * start;
            // -c p = e (-c exp(m_b - lse)); the fma onto +0 keeps a zero p at +0, not -0
            FloatVector minusCScale = FloatVector.broadcast(F, (float) (-c * blockScale[b]));
            if (accumulate) { // two loops, not a test in one
                MemorySegment.copy(gradient, ValueLayout.JAVA_FLOAT_UNALIGNED, at, staged, 0, length);
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
            MemorySegment.copy(staged, 0, gradient, ValueLayout.JAVA_FLOAT_UNALIGNED, at, length);
        }
    }

    /**
     * Copies (F32) or decodes (F16, BF16) the current row's {@code [start, end)} into {@link #staged},
     * {@code -inf} in the lanes of the last vector past {@code end}, and returns their max.
     */
    private float loadBlock(int start, int end) {
        int length = end - start;
        if (dtype == DType.F32) {
            MemorySegment.copy(row, ValueLayout.JAVA_FLOAT_UNALIGNED, rowOffset + 4L * start, staged, 0, length);
        } else {
            HalfFloats.decode(row, rowOffset + 2L * start, dtype, bits, staged, length);
        }
        int vectorLength = F.loopBound(length + F.length() - 1);
        java.util.Arrays.fill(staged, length, vectorLength, Float.NEGATIVE_INFINITY);
        FloatVector m = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        for (int i = 0; i < vectorLength; i += F.length()) {
            m = m.max(FloatVector.fromArray(F, staged, i)); // Math.max semantics: a NaN lane stays NaN
        }
        return m.reduceLanes(VectorOperators.MAX);
    }

    /**
     * {@code e = exp(x - m_b)} of the staged block {@code b} into the scratch at {@code start},
     * its {@code sum e} and (with the entropy) {@code sum e (x - m_b)}, {@code x = fp32(z / T)}: the
     * rounded product, which {@code m_b} is the max of (a multiply-add of the exact product would
     * miss {@code m_b} by up to half an ulp of it, which for huge {@code |x|} is more than the range of
     * exp). Where {@code z = -inf} (a masked class, or a padding lane of the last
     * vector), {@code e} is 0 and {@code 0 * -inf} is NaN: the last vector clamps, and a block
     * whose sum came out NaN takes its entropy term again clamped (rare: not in the hot loop).
     */
    private void exponentiateBlock(int b, int start, int length, float invT, float running) {
        FloatVector scale = FloatVector.broadcast(F, invT);
        FloatVector minusRunning = FloatVector.broadcast(F, -running);
        FloatVector s = FloatVector.zero(F);
        FloatVector ed = FloatVector.zero(F);
        int fullEnd = F.loopBound(length);
        for (int i = 0; i < fullEnd; i += F.length()) {
            FloatVector d = FloatVector.fromArray(F, staged, i).mul(scale).add(minusRunning);
            FloatVector e = VectorMath.expNonPositive(d);
            s = s.add(e);
            if (entropy) {
                ed = e.fma(d, ed);
            }
            e.intoArray(exps, start + i);
        }
        if (fullEnd < length) {
            FloatVector d = FloatVector.fromArray(F, staged, fullEnd).mul(scale).add(minusRunning);
            FloatVector e = VectorMath.expNonPositive(d);
            s = s.add(e);
            if (entropy) {
                ed = e.fma(d.max(-128f), ed);
            }
            e.intoArray(exps, start + fullEnd);
        }
        blockExpSum[b] = s.reduceLanes(VectorOperators.ADD);
        double expLog = entropy ? ed.reduceLanes(VectorOperators.ADD) : 0;
        if (Double.isNaN(expLog)) {
            expLog = clampedExpLog(length, invT, running);
        }
        blockExpLog[b] = expLog;
    }

    /** {@code sum e (x - m_b)} of the staged block with {@code x - m_b} clamped to -128 (e is 0 below). */
    private double clampedExpLog(int length, float invT, float running) {
        FloatVector scale = FloatVector.broadcast(F, invT);
        FloatVector minusRunning = FloatVector.broadcast(F, -running);
        FloatVector ed = FloatVector.zero(F);
        for (int i = 0; i < length; i += F.length()) {
            FloatVector d = FloatVector.fromArray(F, staged, i).mul(scale).add(minusRunning);
            ed = VectorMath.expNonPositive(d).fma(d.max(-128f), ed);
        }
        return ed.reduceLanes(VectorOperators.ADD);
    }
}
