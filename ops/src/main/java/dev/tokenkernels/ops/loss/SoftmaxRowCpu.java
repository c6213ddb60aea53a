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
 * exponentials stay in L1: a block's max, then {@code e = exp(x - m_b)} into a row of scratch
 * with {@code m_b} the running max so far, the running sum rescaled in float64 when the max grows,
 * and per block {@code sum e} and (for the entropy) {@code sum e (x - m_b)}. {@link #gradient}
 * reads only the scratch ({@code p = e exp(m_b - lse)}; from L2 while {@code 4V} bytes fit) and
 * writes the gradient straight into the caller's buffer; {@link #sumPLogP} is a sum over blocks.
 * BF16 rows are widened in registers; F16 rows are decoded to scratch first. One instance per
 * thread: it holds the scratch.
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
        float running = Float.NEGATIVE_INFINITY;
        double sum = 0;
        for (int b = 0, start = 0; start < vocab; b++, start += BLOCK) {
            int end = Math.min(vocab, start + BLOCK);
            FloatVector m = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
            for (int i = start; i < end; i += F.length()) {
                m = m.max(load(i, end, invT)); // Math.max semantics: a NaN lane stays NaN
            }
            float blockMaximum = m.reduceLanes(VectorOperators.MAX);
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
            FloatVector s = FloatVector.zero(F);
            FloatVector ed = FloatVector.zero(F);
            for (int i = start; i < end; i += F.length()) {
                FloatVector d = load(i, end, invT).sub(running);
                FloatVector e = VectorMath.expNonPositive(d);
                s = s.add(e);
                if (entropy) { // e (x - m_b); where e is 0 (d below -87), the clamp keeps 0 * -inf out
                    ed = e.fma(d.max(-128f), ed);
                }
                e.intoArray(exps, i); // lanes past the row are exp(-inf) = 0, into the padding
            }
            blockExpSum[b] = s.reduceLanes(VectorOperators.ADD);
            blockExpLog[b] = entropy ? ed.reduceLanes(VectorOperators.ADD) : 0;
            sum += blockExpSum[b];
        }
        return running == Float.NEGATIVE_INFINITY ? running : (float) (running + Math.log(sum));
    }

    /**
     * {@code sum p log p} of the current row, from the block sums of the last {@link #logSumExp}
     * (made with {@code entropy}) and its finite {@code lse}: per block
     * {@code exp(m_b - lse) (sum e (x - m_b) + (m_b - lse) sum e)}.
     */
    double sumPLogP(float lse) {
        double total = 0;
        for (int b = 0; b < blockMax.length; b++) {
            if (blockExpSum[b] != 0) {
                double shift = (double) blockMax[b] - lse;
                total += Math.exp(shift) * (blockExpLog[b] + shift * blockExpSum[b]);
            }
        }
        return total;
    }

    /**
     * Writes {@code -c p} of the current row into {@code gradient} at byte offset {@code gradOffset}
     * (added to what is there when {@code accumulate}); needs the finite {@code lse} of the last
     * {@link #logSumExp}. Reads only the scratch, not the row. The caller adds {@code c} at the target.
     */
    void gradient(float lse, float c, MemorySegment gradient, long gradOffset, boolean accumulate) {
        FloatVector minusC = FloatVector.broadcast(F, -c);
        for (int b = 0, start = 0; start < vocab; b++, start += BLOCK) {
            int end = Math.min(vocab, start + BLOCK);
            FloatVector scale = FloatVector.broadcast(F, (float) Math.exp((double) blockMax[b] - lse));
            int fullEnd = start + (end - start) / F.length() * F.length();
            for (int i = start; i < fullEnd; i += F.length()) {
                long at = gradOffset + 4L * i;
                FloatVector p = FloatVector.fromArray(F, exps, i).mul(scale);
                FloatVector base = accumulate ? FloatVector.fromMemorySegment(F, gradient, at, ORDER)
                        : FloatVector.zero(F);
                p.fma(minusC, base).intoMemorySegment(gradient, at, ORDER);
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

    /** {@code z[i, i + lanes) * invT} of the current row; lanes at or past {@code end} are {@code -inf}. */
    private FloatVector load(int i, int end, float invT) {
        boolean full = i + F.length() <= end;
        FloatVector z;
        if (bf16) {
            long at = rowOffset + 2L * i;
            ShortVector h = full ? ShortVector.fromMemorySegment(S, row, at, ORDER)
                    : ShortVector.fromMemorySegment(S, row, at, ORDER, S.indexInRange(i, end));
            // bf16 is the high half of a float32: widen and shift into place
            z = ((IntVector) h.convertShape(VectorOperators.S2I, I, 0)).lanewise(VectorOperators.LSHL, 16)
                    .reinterpretAsFloats();
        } else {
            long at = rowOffset + 4L * i;
            z = full ? FloatVector.fromMemorySegment(F, row, at, ORDER)
                    : FloatVector.fromMemorySegment(F, row, at, ORDER, F.indexInRange(i, end));
        }
        z = z.mul(invT);
        return full ? z : z.blend(Float.NEGATIVE_INFINITY, F.indexInRange(i, end).not());
    }
}
