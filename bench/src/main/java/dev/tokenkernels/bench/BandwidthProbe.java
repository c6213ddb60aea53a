package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Memory read bandwidth as Java sees it: a Vector API sum over a buffer far larger than the
 * caches, with four independent accumulators so the loop is bound by loads, not by adds. Ops'
 * throughput is reported as a fraction of this, measured in the same run. The buffer is a
 * {@link Tensor}, the same kind of memory as the workloads' tensors (huge pages where the OS
 * grants them): the probe sees the TLB the ops see.
 */
public final class BandwidthProbe {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static volatile float sink;

    private BandwidthProbe() {
    }

    /** Best read bandwidth in GB/s (1e9 bytes/s) over {@code repeats} sweeps of {@code bytes} bytes. */
    public static double readGbPerSecond(CpuBackend cpu, long bytes, int repeats) {
        try (Tensor tensor = Tensor.allocate(DType.I8, bytes)) {
            MemorySegment buffer = tensor.segment();
            buffer.fill((byte) 1); // touch every page so the sweep measures reads, not page faults
            int chunks = cpu.threads() * 8;
            long chunkBytes = bytes / chunks / (4L * F.length() * 4) * (4L * F.length() * 4);
            double best = 0;
            for (int r = 0; r < repeats; r++) {
                long start = System.nanoTime();
                float[] partial = new float[chunks];
                cpu.parallelFor(chunks, 1, (from, to) -> {
                    for (int c = from; c < to; c++) {
                        partial[c] = sum(buffer, c * chunkBytes, chunkBytes);
                    }
                });
                long elapsed = System.nanoTime() - start;
                float total = 0;
                for (float p : partial) {
                    total += p;
                }
                sink = total;
                best = Math.max(best, chunkBytes * chunks / (double) elapsed);
            }
            return best;
        }
    }

    private static float sum(MemorySegment buffer, long offset, long length) {
        ByteOrder order = ByteOrder.nativeOrder();
        FloatVector a = FloatVector.zero(F);
        FloatVector b = FloatVector.zero(F);
        FloatVector c = FloatVector.zero(F);
        FloatVector d = FloatVector.zero(F);
        long step = 4L * F.length();
        for (long i = offset, end = offset + length; i < end; i += 4 * step) {
            a = a.add(FloatVector.fromMemorySegment(F, buffer, i, order));
            b = b.add(FloatVector.fromMemorySegment(F, buffer, i + step, order));
            c = c.add(FloatVector.fromMemorySegment(F, buffer, i + 2 * step, order));
            d = d.add(FloatVector.fromMemorySegment(F, buffer, i + 3 * step, order));
        }
        return a.add(b).add(c).add(d).reduceLanes(VectorOperators.ADD);
    }
}
