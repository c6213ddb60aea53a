package dev.tokenkernels.ops.select;

import dev.tokenkernels.ops.cpu.VectorMath;
import dev.tokenkernels.runtime.CpuBackend;
import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import jdk.incubator.vector.ByteVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector API implementation of {@link EntropyNormalization}: chunks of tokens in parallel, each
 * giving its sum of squares and extremes of {@code e - pivot} (and leaving {@code e - pivot} in the
 * output), combined in float64 in chunk order; then one pass turning the output into {@code h_hat}.
 * A token whose floored entropy equals the pivot's bitwise gets {@code e - pivot = 0} by a compare,
 * not by subtracting two logs taken in separate calls. The log is {@link VectorMath#log}, not
 * {@code lanewise(LOG)}: the JDK's compiled vector LOG and its interpreted fallback round
 * differently on a few percent of inputs, so results changed once C2 compiled the op.
 */
final class EntropyNormalizationCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED.length() >= 8
            ? FloatVector.SPECIES_PREFERRED : FloatVector.SPECIES_256;
    private static final VectorSpecies<Byte> B = VectorSpecies.of(byte.class, VectorShape.forBitSize(F.length() * 8));
    private static final int CHUNK = 1 << 16;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();

    private EntropyNormalizationCpu() {
    }

    static FloatVector logEntropy(FloatVector h) {
        return VectorMath.log(h.max(EntropyNormalization.ENTROPY_FLOOR));
    }

    /** Lanes in range that the mask counts. */
    static VectorMask<Float> counted(MemorySegment mask, int i, int n) {
        VectorMask<Float> inRange = F.indexInRange(i, n);
        if (mask == null) {
            return inRange;
        }
        return ByteVector.fromMemorySegment(B, mask, i, NATIVE, B.indexInRange(i, n)).compare(VectorOperators.NE,
                (byte) 0).cast(F).and(inRange);
    }

    static float pivot(EntropyNormalization.Job job) {
        return logEntropy(FloatVector.broadcast(F, job.entropy().getFloat(job.pivotIndex()))).lane(0);
    }

    /** {@code e - pivot} for the lanes of {@code h}, exactly 0 where the floored entropy is the pivot's. */
    static FloatVector centered(FloatVector h, float pivotEntropy, float pivot) {
        FloatVector floored = h.max(EntropyNormalization.ENTROPY_FLOOR);
        return VectorMath.log(floored).sub(pivot)
                .blend(0f, floored.compare(VectorOperators.EQ, pivotEntropy));
    }

    static EntropyNormalization.Stats stats(CpuBackend cpu, EntropyNormalization.Job job) {
        int n = job.n();
        MemorySegment h = job.entropy().segment();
        MemorySegment mask = job.mask() == null ? null : job.mask().segment();
        MemorySegment out = job.out().segment();
        float pivot = pivot(job);
        float pivotEntropy = Math.max(job.entropy().getFloat(job.pivotIndex()), EntropyNormalization.ENTROPY_FLOOR);
        int chunks = (n + CHUNK - 1) / CHUNK;
        double[] sums = new double[chunks];
        float[] max = new float[chunks];
        float[] min = new float[chunks];
        cpu.parallelFor(chunks, 1, (from, to) -> {
            for (int c = from; c < to; c++) {
                FloatVector sum = FloatVector.zero(F);
                FloatVector hi = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
                FloatVector lo = FloatVector.broadcast(F, Float.POSITIVE_INFINITY);
                int end = Math.min(n, (c + 1) * CHUNK);
                for (int i = c * CHUNK; i < end; i += F.length()) {
                    VectorMask<Float> m = counted(mask, i, end);
                    FloatVector d = centered(FloatVector.fromMemorySegment(F, h, 4L * i, NATIVE, m), pivotEntropy, pivot);
                    // kept for the second pass, so each token's log is taken once (0 outside the mask)
                    FloatVector.zero(F).blend(d, m).intoMemorySegment(out, 4L * i, NATIVE, F.indexInRange(i, end));
                    sum = sum.add(d.mul(d), m);
                    hi = hi.max(d.blend(Float.NEGATIVE_INFINITY, m.not()));
                    lo = lo.min(d.blend(Float.POSITIVE_INFINITY, m.not()));
                }
                sums[c] = VectorMath.sumLanes(sum);
                max[c] = hi.reduceLanes(VectorOperators.MAX);
                min[c] = lo.reduceLanes(VectorOperators.MIN);
            }
        });
        double total = 0;
        float hi = Float.NEGATIVE_INFINITY;
        float lo = Float.POSITIVE_INFINITY;
        for (int c = 0; c < chunks; c++) {
            total += sums[c];
            hi = Math.max(hi, max[c]);
            lo = Math.min(lo, min[c]);
        }
        return new EntropyNormalization.Stats(total, hi, lo, pivot);
    }

    /** Turns the {@code e - pivot} that {@link #stats} left in the output into {@code h_hat}, in place. */
    static void normalize(CpuBackend cpu, EntropyNormalization.Job job, float s, float p, float q) {
        int n = job.n();
        MemorySegment mask = job.mask() == null ? null : job.mask().segment();
        MemorySegment out = job.out().segment();
        float negativeScale = job.releasedSigns() ? -q : q;
        int chunks = (n + CHUNK - 1) / CHUNK;
        cpu.parallelFor(chunks, 1, (from, to) -> {
            for (int c = from; c < to; c++) {
                int end = Math.min(n, (c + 1) * CHUNK);
                for (int i = c * CHUNK; i < end; i += F.length()) {
                    VectorMask<Float> m = counted(mask, i, end);
                    FloatVector ht = FloatVector.fromMemorySegment(F, out, 4L * i, NATIVE, m).div(s);
                    VectorMask<Float> positive = ht.compare(VectorOperators.GT, 0f);
                    FloatVector hHat = ht.div(negativeScale).blend(ht.div(p), positive);
                    FloatVector.zero(F).blend(hHat, m).intoMemorySegment(out, 4L * i, NATIVE, F.indexInRange(i, end));
                }
            }
        });
    }
}
