package dev.tokenkernels.ops.select;

import dev.tokenkernels.ops.cpu.VectorMath;
import dev.tokenkernels.runtime.CpuBackend;
import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import jdk.incubator.vector.ByteVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
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
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    /**
     * The mask's bytes for one float vector: as many lanes, but at least 64 bits (the narrowest
     * byte vector), so with 128-bit floats (4 lanes, e.g. NEON) the low lanes of 8 are used.
     */
    private static final VectorSpecies<Byte> B = VectorSpecies.of(byte.class,
            VectorShape.forBitSize(Math.max(64, F.length() * 8)));
    private static final VectorSpecies<Integer> I = VectorSpecies.of(int.class, F.vectorShape());
    private static final int CHUNK = 1 << 16;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();

    private EntropyNormalizationCpu() {
    }

    /** Lanes in range that the mask counts. */
    static VectorMask<Float> counted(MemorySegment mask, int i, int n) {
        VectorMask<Float> inRange = F.indexInRange(i, n);
        if (mask == null) {
            return inRange;
        }
        // widened to F's lane count (the low lanes of B): a byte mask cast needs equal lane counts
        IntVector flags = (IntVector) ByteVector.fromMemorySegment(B, mask, i, NATIVE, B.indexInRange(i, n))
                .convertShape(VectorOperators.B2I, I, 0);
        return flags.compare(VectorOperators.NE, 0).cast(F).and(inRange);
    }

    /**
     * {@code e - pivot} for the lanes of {@code h} ({@link EntropyNormalization}'s "Exactness"):
     * from the ratio {@code w = f / f_p} to the pivot's floored entropy, {@code ln(w) u / (w - 1)}
     * with {@code u = (f - f_p) / f_p} (0 where {@code w = 1}), wherever {@code w} is a normal
     * float; {@code ln f - pivot} where it is not (then {@code |e - pivot| > 87}). One log per lane.
     */
    static FloatVector centered(FloatVector h, float pivotEntropy, float pivot) {
        FloatVector floored = h.max(EntropyNormalization.ENTROPY_FLOOR);
        FloatVector ratio = floored.div(pivotEntropy);
        FloatVector u = floored.sub(pivotEntropy).div(pivotEntropy);
        VectorMask<Float> normal = ratio.compare(VectorOperators.GE, Float.MIN_NORMAL)
                .and(ratio.compare(VectorOperators.LE, Float.MAX_VALUE));
        FloatVector log = VectorMath.log(floored.blend(ratio, normal));
        FloatVector fromRatio = log.mul(u.div(ratio.sub(1f))).blend(0f, ratio.compare(VectorOperators.EQ, 1f));
        return log.sub(pivot).blend(fromRatio, normal);
    }

    static EntropyNormalization.Stats stats(CpuBackend cpu, EntropyNormalization.Job job) {
        int n = job.n();
        MemorySegment h = job.entropy().segment();
        MemorySegment mask = job.mask() == null ? null : job.mask().segment();
        MemorySegment out = job.out().segment();
        float pivot = job.pivot();
        float pivotEntropy = job.pivotEntropy();
        int chunks = TokenVectors.chunks(n, CHUNK);
        double[] sums = new double[chunks];
        float[] max = new float[chunks];
        float[] min = new float[chunks];
        cpu.parallelFor(chunks, 1, (from, to) -> {
            for (int c = from; c < to; c++) {
                FloatVector sum = FloatVector.zero(F);
                FloatVector hi = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
                FloatVector lo = FloatVector.broadcast(F, Float.POSITIVE_INFINITY);
                int end = TokenVectors.chunkEnd(c, n, CHUNK);
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
        return new EntropyNormalization.Stats(total, hi, lo);
    }

    /** Turns the {@code e - pivot} that {@link #stats} left in the output into {@code h_hat}, in place. */
    static void normalize(CpuBackend cpu, EntropyNormalization.Job job, float s, float p, float q) {
        int n = job.n();
        MemorySegment mask = job.mask() == null ? null : job.mask().segment();
        MemorySegment out = job.out().segment();
        float negativeScale = job.releasedSigns() ? -q : q;
        int chunks = TokenVectors.chunks(n, CHUNK);
        cpu.parallelFor(chunks, 1, (from, to) -> {
            for (int c = from; c < to; c++) {
                int end = TokenVectors.chunkEnd(c, n, CHUNK);
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
