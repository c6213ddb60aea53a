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
 * <p>{@link #logSumExp} reads the row from memory once, in blocks small enough for L1: a block's
 * max, then {@code e = exp(x - m_b)} into scratch with {@code m_b} the running max so far, the
 * running sum rescaled in float64 when the max grows. {@link #gradient} reads the row again (from
 * cache) and the scratch, with {@code p = e exp(m_b - lse)}, and writes the gradient straight into
 * the caller's buffer. BF16 rows are widened in registers; F16 rows are decoded to scratch first.
 * One instance per thread: it holds the scratch.
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
    private final float[] exps;
    private final float[] blockMax;
    private final MemorySegment decoded;

    private MemorySegment row;
    private long rowOffset;
    private boolean bf16;

    SoftmaxRowCpu(int vocab, DType dtype) {
        this.vocab = vocab;
        this.exps = new float[(vocab + F.length() - 1) / F.length() * F.length()];
        this.blockMax = new float[(vocab + BLOCK - 1) / BLOCK];
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
                continue;
            }
            FloatVector s = FloatVector.zero(F);
            for (int i = start; i < end; i += F.length()) {
                FloatVector e = VectorMath.expNonPositive(load(i, end, invT).sub(running));
                s = s.add(e);
                e.intoArray(exps, i); // lanes past the row are exp(-inf) = 0, into the padding
            }
            sum += s.reduceLanes(VectorOperators.ADD);
        }
        return running == Float.NEGATIVE_INFINITY ? running : (float) (running + Math.log(sum));
    }

    /**
     * Writes {@code -c p} of the current row into {@code gradient} at byte offset {@code gradOffset}
     * (added to what is there when {@code accumulate}) and returns {@code sum p log p}; needs the
     * finite {@code lse} of the last {@link #logSumExp}. The caller adds {@code c} at the target.
     */
    double gradient(float invT, float lse, float c, MemorySegment gradient, long gradOffset, boolean accumulate) {
        FloatVector minusC = FloatVector.broadcast(F, -c);
        double plogp = 0;
        for (int b = 0, start = 0; start < vocab; b++, start += BLOCK) {
            int end = Math.min(vocab, start + BLOCK);
            FloatVector scale = FloatVector.broadcast(F, (float) Math.exp((double) blockMax[b] - lse));
            FloatVector s = FloatVector.zero(F);
            int fullEnd = start + (end - start) / F.length() * F.length();
            for (int i = start; i < fullEnd; i += F.length()) {
                FloatVector p = FloatVector.fromArray(F, exps, i).mul(scale);
                s = s.add(plogp(p, load(i, end, invT), lse));
                if (gradient != null) {
                    long at = gradOffset + 4L * i;
                    FloatVector base = accumulate ? FloatVector.fromMemorySegment(F, gradient, at, ORDER)
                            : FloatVector.zero(F);
                    p.fma(minusC, base).intoMemorySegment(gradient, at, ORDER);
                }
            }
            if (fullEnd < end) { // the row's last, partial vector
                VectorMask<Float> inRange = F.indexInRange(fullEnd, end);
                FloatVector p = FloatVector.fromArray(F, exps, fullEnd).mul(scale);
                s = s.add(plogp(p, load(fullEnd, end, invT), lse));
                if (gradient != null) {
                    long at = gradOffset + 4L * fullEnd;
                    FloatVector base = accumulate ? FloatVector.fromMemorySegment(F, gradient, at, ORDER, inRange)
                            : FloatVector.zero(F);
                    p.fma(minusC, base).intoMemorySegment(gradient, at, ORDER, inRange);
                }
            }
            plogp += s.reduceLanes(VectorOperators.ADD);
        }
        return plogp;
    }

    /** {@code p log p} with {@code log p = x - lse}, 0 where {@code p = 0} (masked classes, the row's padding). */
    private static FloatVector plogp(FloatVector p, FloatVector x, float lse) {
        // x - lse <= 0 up to rounding; 0 * -inf would be NaN
        return p.mul(x.sub(lse).min(0f)).blend(0f, p.eq(0f));
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
