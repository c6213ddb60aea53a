package dev.tokenkernels.ops.loss;

import dev.tokenkernels.ops.cpu.HalfFloats;
import dev.tokenkernels.ops.cpu.VectorMath;
import dev.tokenkernels.runtime.DType;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * The softmax of one logits row {@code x = z / T} in two sweeps with one exponential per element,
 * for the fused token losses that need {@code log softmax(x)[y]}, the gradient
 * {@code c (onehot(y) - softmax(x))} and the entropy of the row.
 *
 * <p>{@link #logSumExp} reads the row from memory once, in blocks of 2048 whose logits and
 * exponentials stay in L1: a block's {@code x = z / T} into a row of scratch (BF16 widened in
 * registers on the way) and its max, then {@code e = exp(x - m_b)} in place with {@code m_b} the
 * running max so far, the running sum rescaled in float64 when the max grows, and per block
 * {@code sum e} and (for the entropy) {@code sum e (x - m_b)}. {@link #gradient} reads only the
 * scratch ({@code p = e exp(m_b - lse)}; from L2 while {@code 4V} bytes fit) and writes the
 * gradient straight into the caller's buffer; {@link #sumPLogP} is a sum over blocks. F16 rows
 * are decoded to scratch first. One instance per thread: it holds the scratch.
 *
 * <p>Every hot loop is branch-free: one loop per dtype (and per accumulate), chosen outside it,
 * and the partial last vector after it. With the F32 load inside the BF16 loop (one loop for both
 * dtypes), C2 hoisted checks of the untaken branch out of the loop on its profile ("profiled loop
 * predication"): in a JVM that had also run ops with confined scratch arenas (which mix the
 * profile of the JDK's shared {@code MemorySessionImpl.checkValidStateRaw}), the BF16 loop hit a
 * {@code profile_predicate} trap right after every recompilation, about 10x slower until C2's
 * per-method trap limit.
 */
final class SoftmaxRowCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Short> S = VectorSpecies.of(short.class,
            VectorShape.forBitSize(F.vectorBitSize() / 2));
    private static final VectorSpecies<Integer> I = IntVector.SPECIES_PREFERRED;
    private static final ByteOrder ORDER = ByteOrder.nativeOrder();
    /** Elements per block: the block's logits and exponentials stay in a 32 KiB L1. */
    private static final int BLOCK = 2048;

    private final int vocab;
    private final boolean entropy;
    private final float[] exps;
    private final float[] blockMax;
    private final double[] blockExpSum;
    private final double[] blockExpLog;
    private final double[] blockScale;
    /** The last {@link #logSumExp} in fp64. */
    private double lastLogSumExp = Double.NaN;
    private final MemorySegment decoded;

    private MemorySegment row;
    private long rowOffset;
    private boolean bf16;

    /** With {@code entropy}, {@link #logSumExp} also keeps what {@link #sumPLogP} needs. */
    SoftmaxRowCpu(int vocab, DType dtype, boolean entropy) {
        this.vocab = vocab;
        this.entropy = entropy;
        this.exps = new float[(vocab + F.length() - 1) / F.length() * F.length()];
        int blocks = (vocab + BLOCK - 1) / BLOCK;
        this.blockMax = new float[blocks];
        this.blockExpSum = new double[blocks];
        this.blockExpLog = new double[blocks];
        this.blockScale = new double[blocks];
        this.decoded = dtype == DType.F16 ? MemorySegment.ofArray(new float[vocab]) : null;
    }

    /** Makes row {@code index} of {@code logits} ({@code [N, vocab]}, F32, BF16 or F16) the current row. */
    void select(MemorySegment logits, DType dtype, long index) {
        long byteOffset = index * vocab * dtype.byteSize();
        if (dtype == DType.F16) {
            HalfFloats.decode(logits, byteOffset, dtype, decoded, vocab);
            row = decoded;
            rowOffset = 0;
            bf16 = false;
        } else {
            row = logits;
            rowOffset = byteOffset;
            bf16 = dtype == DType.BF16;
        }
    }

    /** {@code z[i] * invT} of the current row. */
    float scaled(int i, float invT) {
        float z = bf16 ? Float.intBitsToFloat(row.get(ValueLayout.JAVA_SHORT_UNALIGNED, rowOffset + 2L * i) << 16)
                : row.get(ValueLayout.JAVA_FLOAT_UNALIGNED, rowOffset + 4L * i);
        return z * invT;
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
            // One loop per dtype, chosen outside it: see the class comment on why no loop may
            // hold the other dtype's load.
            float blockMaximum = bf16 ? scaleBf16(start, end, invT) : scaleF32(start, end, invT);
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
            // x = z / T of the block is in the scratch (padding lanes -inf, whose e is 0): e replaces it
            int vectorEnd = Math.min(exps.length, start + BLOCK);
            FloatVector s = FloatVector.zero(F);
            FloatVector ed = FloatVector.zero(F);
            for (int i = start; i < vectorEnd; i += F.length()) {
                FloatVector d = FloatVector.fromArray(F, exps, i).sub(running);
                FloatVector e = VectorMath.expNonPositive(d);
                s = s.add(e);
                if (entropy) { // e (x - m_b); where e is 0 (d below -87), the clamp keeps 0 * -inf out
                    ed = e.fma(d.max(-128f), ed);
                }
                e.intoArray(exps, i);
            }
            blockExpSum[b] = s.reduceLanes(VectorOperators.ADD);
            blockExpLog[b] = entropy ? ed.reduceLanes(VectorOperators.ADD) : 0;
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
        FloatVector minusC = FloatVector.broadcast(F, -c);
        blockScales(lse);
        for (int b = 0, start = 0; start < vocab; b++, start += BLOCK) {
            int end = Math.min(vocab, start + BLOCK);
            FloatVector scale = FloatVector.broadcast(F, (float) blockScale[b]);
            int fullEnd = start + F.loopBound(end - start);
            if (accumulate) { // two loops, not a test in one: see the class comment
                for (int i = start; i < fullEnd; i += F.length()) {
                    long at = gradOffset + 4L * i;
                    FloatVector p = FloatVector.fromArray(F, exps, i).mul(scale);
                    p.fma(minusC, FloatVector.fromMemorySegment(F, gradient, at, ORDER))
                            .intoMemorySegment(gradient, at, ORDER);
                }
            } else {
                FloatVector zero = FloatVector.zero(F); // fma onto +0, as the tail: a zero p gives +0, not -0
                for (int i = start; i < fullEnd; i += F.length()) {
                    FloatVector p = FloatVector.fromArray(F, exps, i).mul(scale);
                    p.fma(minusC, zero).intoMemorySegment(gradient, gradOffset + 4L * i, ORDER);
                }
            }
            if (fullEnd < end) { // the row's last, partial vector
                VectorMask<Float> inRange = F.indexInRange(fullEnd, end);
                long at = gradOffset + 4L * fullEnd;
                FloatVector p = FloatVector.fromArray(F, exps, fullEnd).mul(scale);
                FloatVector base = accumulate ? FloatVector.fromMemorySegment(F, gradient, at, ORDER, inRange)
                        : FloatVector.zero(F);
                p.fma(minusC, base).intoMemorySegment(gradient, at, ORDER, inRange);
            }
        }
    }

    /**
     * Writes {@code x = z * invT} of the current BF16 row's {@code [start, end)} into the scratch,
     * {@code -inf} in the lanes of the last vector past {@code end}, and returns their max.
     */
    private float scaleBf16(int start, int end, float invT) {
        FloatVector m = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        int fullEnd = start + F.loopBound(end - start);
        for (int i = start; i < fullEnd; i += F.length()) {
            FloatVector x = widen(ShortVector.fromMemorySegment(S, row, rowOffset + 2L * i, ORDER)).mul(invT);
            m = m.max(x); // Math.max semantics: a NaN lane stays NaN
            x.intoArray(exps, i);
        }
        if (fullEnd < end) {
            ShortVector h = ShortVector.fromMemorySegment(S, row, rowOffset + 2L * fullEnd, ORDER,
                    S.indexInRange(fullEnd, end));
            m = m.max(padded(widen(h).mul(invT), fullEnd, end));
        }
        return m.reduceLanes(VectorOperators.MAX);
    }

    /** {@link #scaleBf16} for an F32 row. */
    private float scaleF32(int start, int end, float invT) {
        FloatVector m = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        int fullEnd = start + F.loopBound(end - start);
        for (int i = start; i < fullEnd; i += F.length()) {
            FloatVector x = FloatVector.fromMemorySegment(F, row, rowOffset + 4L * i, ORDER).mul(invT);
            m = m.max(x);
            x.intoArray(exps, i);
        }
        if (fullEnd < end) {
            FloatVector z = FloatVector.fromMemorySegment(F, row, rowOffset + 4L * fullEnd, ORDER,
                    F.indexInRange(fullEnd, end));
            m = m.max(padded(z.mul(invT), fullEnd, end));
        }
        return m.reduceLanes(VectorOperators.MAX);
    }

    /** bf16 is the high half of a float32: widen and shift into place. */
    private static FloatVector widen(ShortVector h) {
        return ((IntVector) h.convertShape(VectorOperators.S2I, I, 0)).lanewise(VectorOperators.LSHL, 16)
                .reinterpretAsFloats();
    }

    /** The row's last vector {@code x} (from {@code i}) with {@code -inf} past {@code end}, stored into the scratch. */
    private FloatVector padded(FloatVector x, int i, int end) {
        FloatVector p = x.blend(Float.NEGATIVE_INFINITY, F.indexInRange(i, end).not());
        p.intoArray(exps, i);
        return p;
    }
}
