package dev.tokenkernels.ops.loss;

import dev.tokenkernels.ops.cpu.HalfFloats;
import dev.tokenkernels.ops.cpu.VectorMath;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector API implementation of {@link ProxyDistribution}: per row the max of {@code x = z * (1/T)},
 * for FIXED the log-sum-exp of the whole row, then the sum of {@code exp(x - max)} over the kept
 * classes and their count. Each sweep is its own small method (one inlined exponential each).
 * F16/BF16 rows are decoded into an fp32 scratch row first.
 */
final class ProxyDistributionCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    private static final int ELEMENTS_PER_TASK = 1 << 16;

    private ProxyDistributionCpu() {
    }

    static void run(CpuBackend cpu, ProxyDistribution.ProxyRows job) {
        int vocab = job.vocab();
        DType dtype = job.logits().dtype();
        MemorySegment z = job.logits().segment();
        MemorySegment logProb = job.out().logProb().segment();
        MemorySegment keptLse = job.out().keptLse().segment();
        MemorySegment keptCount = job.out().keptCount().segment();
        cpu.parallelFor(job.rows(), Math.max(1, ELEMENTS_PER_TASK / vocab), (from, to) -> {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment scratch = dtype == DType.F32 ? null : arena.allocate(4L * vocab, 64);
                double[] kept = new double[2];
                for (int row = from; row < to; row++) {
                    long start = (long) row * vocab * dtype.byteSize();
                    MemorySegment x = z;
                    long xo = start;
                    if (scratch != null) {
                        HalfFloats.decode(z, start, dtype, scratch, vocab);
                        x = scratch;
                        xo = 0;
                    }
                    float[] out = row(x, xo, vocab, job, job.targets()[row]);
                    logProb.setAtIndex(ValueLayout.JAVA_FLOAT, row, out[0]);
                    keptLse.setAtIndex(ValueLayout.JAVA_FLOAT, row, out[1]);
                    keptCount.setAtIndex(ValueLayout.JAVA_INT, row, (int) out[2]);
                }
            }
        });
    }

    /** {log-prob of the target, kept log-sum-exp, kept count} of one fp32 row. */
    private static float[] row(MemorySegment z, long zo, int n, ProxyDistribution.ProxyRows job, long target) {
        float invT = job.invT();
        float max = max(z, zo, n, invT);
        if (Float.isNaN(max) || max == Float.POSITIVE_INFINITY) {
            return new float[] {Float.NaN, Float.NaN, 0};
        }
        if (max == Float.NEGATIVE_INFINITY) {
            return new float[] {target == job.ignoreIndex() ? 0f : Float.NEGATIVE_INFINITY, Float.NEGATIVE_INFINITY, 0};
        }
        // Kept iff x - ref >= cut or x >= max, with ref = max (MIN_P) or the row's lse (FIXED).
        float cut = job.logThreshold();
        float ref = max;
        if (job.mode() == ProxyDistribution.Mode.FIXED) {
            ref = fixedReference(z, zo, n, invT, max);
        }
        double[] count = new double[1];
        float lse = max + (float) Math.log(sumExp(z, zo, n, invT, max, ref, cut, count));
        float lp = 0f;
        if (target != job.ignoreIndex()) {
            float x = z.get(ValueLayout.JAVA_FLOAT, zo + 4L * target) * invT;
            lp = x - ref >= cut || x >= max ? x - lse : Float.NEGATIVE_INFINITY;
        }
        return new float[] {lp, lse, (float) count[0]};
    }

    /** FIXED mode's reference point, the row's log-sum-exp of {@code x = z * invT} (rounded as a product). */
    static float fixedReference(MemorySegment z, long zo, int n, float invT, float max) {
        return max + (float) Math.log(sumExp(z, zo, n, invT, max, max, Float.NEGATIVE_INFINITY, null));
    }

    /** max of {@code z * invT}; NaN if any element is NaN. */
    private static float max(MemorySegment z, long zo, int n, float invT) {
        FloatVector m = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        int i = 0;
        for (int upper = F.loopBound(n); i < upper; i += F.length()) {
            m = m.max(FloatVector.fromMemorySegment(F, z, zo + 4L * i, NATIVE));
        }
        float max = m.reduceLanes(VectorOperators.MAX);
        for (; i < n; i++) {
            max = Math.max(max, z.get(ValueLayout.JAVA_FLOAT, zo + 4L * i));
        }
        return max * invT;
    }

    /**
     * {@code sum exp(x - max)} over the kept classes, {@code x - ref >= cut} or {@code x >= max}
     * ({@code x = z * invT} rounded as a product, differences rounded as differences: the rule the
     * kernel applies too), counting them into {@code count[0]} if it is not null.
     */
    private static double sumExp(MemorySegment z, long zo, int n, float invT, float max, float ref, float cut,
                                 double[] count) {
        FloatVector a = FloatVector.broadcast(F, invT);
        FloatVector minusMax = FloatVector.broadcast(F, -max);
        FloatVector minusRef = FloatVector.broadcast(F, -ref);
        FloatVector sum = FloatVector.zero(F);
        FloatVector kept = FloatVector.zero(F);
        int i = 0;
        for (int upper = F.loopBound(n); i < upper; i += F.length()) {
            FloatVector x = FloatVector.fromMemorySegment(F, z, zo + 4L * i, NATIVE).mul(a);
            FloatVector d = x.add(minusMax);
            VectorMask<Float> keep = x.add(minusRef).compare(VectorOperators.GE, cut).or(d.compare(VectorOperators.GE, 0f));
            if (keep.anyTrue()) { // kept classes are few (min-p keeps the head): most vectors skip the exp
                sum = sum.add(VectorMath.expNonPositive(d).blend(0f, keep.not()));
                kept = kept.add(FloatVector.zero(F).blend(1f, keep));
            }
        }
        double total = VectorMath.sumLanes(sum);
        double counted = VectorMath.sumLanes(kept);
        for (; i < n; i++) {
            float x = z.get(ValueLayout.JAVA_FLOAT, zo + 4L * i) * invT;
            if (x - ref >= cut || x - max >= 0f) {
                total += Math.exp(x - max);
                counted++;
            }
        }
        if (count != null) {
            count[0] = counted;
        }
        return total;
    }
}
