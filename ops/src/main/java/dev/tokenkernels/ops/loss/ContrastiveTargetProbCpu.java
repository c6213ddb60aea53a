package dev.tokenkernels.ops.loss;

import dev.tokenkernels.ops.cpu.HalfFloats;
import dev.tokenkernels.ops.cpu.VectorMath;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.Arrays;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector API implementation of {@link ContrastiveTargetProb}: per row the two models' logits are
 * read once (F32 straight from the tensor, 16-bit decoded into scratch), combined into a scratch
 * row {@code x = fma(lambda, zp - zn, zp) * (1/T)} padded with {@code -inf} while its max is
 * taken, then {@code sum exp(x - max)} from that cached row.
 */
final class ContrastiveTargetProbCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    private static final int ELEMENTS_PER_TASK = 1 << 16;

    private ContrastiveTargetProbCpu() {
    }

    static void run(CpuBackend cpu, ContrastiveTargetProb.Rows job) {
        int vocab = job.vocab();
        int padded = (vocab + F.length() - 1) / F.length() * F.length();
        cpu.parallelFor(job.rows(), Math.max(1, ELEMENTS_PER_TASK / vocab), (from, to) -> {
            float[] x = new float[padded];
            Arrays.fill(x, vocab, padded, Float.NEGATIVE_INFINITY);
            try (Arena arena = Arena.ofConfined()) {
                Row positive = new Row(job.positive(), vocab, arena);
                Row negative = new Row(job.negative(), vocab, arena);
                for (int row = from; row < to; row++) {
                    int target = job.targets()[row];
                    if (target < 0) { // ignored: not read
                        job.logProb()[row] = 0f;
                        job.prob()[row] = 0f;
                        continue;
                    }
                    positive.load(row);
                    negative.load(row);
                    float lse = combineAndLogSumExp(positive, negative, vocab, job.lambda(), job.invT(), x);
                    float lp = Float.isFinite(lse) ? Math.min(x[target] - lse, 0f) : lse;
                    job.logProb()[row] = lp;
                    job.prob()[row] = (float) Math.exp(lp);
                }
            }
        });
    }

    /**
     * Writes the combined row into {@code x} and returns its log-sum-exp: NaN if an input element is
     * NaN or {@code +inf}, an element of {@code x} is NaN or the max is {@code +inf}; {@code -inf}
     * if every class is masked.
     */
    private static float combineAndLogSumExp(Row positive, Row negative, int n, float lambda, float invT, float[] x) {
        MemorySegment ps = positive.segment;
        MemorySegment ns = negative.segment;
        long po = positive.offset;
        long no = negative.offset;
        FloatVector a = FloatVector.broadcast(F, lambda);
        FloatVector m = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        // at lambda 0 z_neg only decides whether the row is NaN: x is z_pos / T (z_neg read as z_pos)
        boolean contrast = lambda > 0f;
        boolean nan = false;
        int i = 0;
        for (int upper = F.loopBound(n); i < upper; i += F.length()) {
            FloatVector p = FloatVector.fromMemorySegment(F, ps, po + 4L * i, NATIVE);
            FloatVector q = FloatVector.fromMemorySegment(F, ns, no + 4L * i, NATIVE);
            nan |= p.test(VectorOperators.IS_NAN).or(p.eq(Float.POSITIVE_INFINITY))
                    .or(q.test(VectorOperators.IS_NAN)).or(q.eq(Float.POSITIVE_INFINITY)).anyTrue();
            VectorMask<Float> masked = contrast ? p.eq(Float.NEGATIVE_INFINITY).or(q.eq(Float.NEGATIVE_INFINITY))
                    : p.eq(Float.NEGATIVE_INFINITY);
            FloatVector v = p.sub(contrast ? q : p).fma(a, p).mul(invT).blend(Float.NEGATIVE_INFINITY, masked);
            v.intoArray(x, i);
            nan |= v.test(VectorOperators.IS_NAN).anyTrue();
            m = m.max(v);
        }
        float max = m.reduceLanes(VectorOperators.MAX);
        for (; i < n; i++) {
            float p = ps.get(ValueLayout.JAVA_FLOAT_UNALIGNED, po + 4L * i);
            float q = ns.get(ValueLayout.JAVA_FLOAT_UNALIGNED, no + 4L * i);
            nan |= Float.isNaN(p) || Float.isNaN(q) || p == Float.POSITIVE_INFINITY || q == Float.POSITIVE_INFINITY;
            boolean masked = p == Float.NEGATIVE_INFINITY || contrast && q == Float.NEGATIVE_INFINITY;
            x[i] = masked ? Float.NEGATIVE_INFINITY : Math.fma(lambda, p - (contrast ? q : p), p) * invT;
            nan |= Float.isNaN(x[i]);
            max = Math.max(max, x[i]);
        }
        if (nan || max == Float.POSITIVE_INFINITY) {
            return Float.NaN;
        }
        if (max == Float.NEGATIVE_INFINITY) {
            return max;
        }
        FloatVector sum = FloatVector.zero(F);
        for (int k = 0; k < x.length; k += F.length()) {
            sum = sum.add(VectorMath.expNonPositive(FloatVector.fromArray(F, x, k).sub(max)));
        }
        return max + (float) Math.log(VectorMath.sumLanes(sum));
    }

    /** A row as fp32: the tensor's own memory for F32, else decoded into scratch. */
    private static final class Row {
        private final MemorySegment source;
        private final DType dtype;
        private final int length;
        private final MemorySegment scratch;
        MemorySegment segment;
        long offset;

        Row(Tensor t, int length, Arena arena) {
            this.source = t.segment();
            this.dtype = t.dtype();
            this.length = length;
            this.scratch = dtype == DType.F32 ? null : arena.allocate(4L * length, 64);
        }

        void load(int row) {
            long start = (long) row * length * dtype.byteSize();
            if (scratch == null) {
                segment = source;
                offset = start;
            } else {
                HalfFloats.decode(source, start, dtype, scratch, length);
                segment = scratch;
                offset = 0;
            }
        }
    }
}
