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
 * grants them): the probe sees the TLB the ops see. It is allocated and touched once, so that a
 * sweep can run right before each timed run of an op.
 */
public final class BandwidthProbe implements AutoCloseable {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static volatile float sink;

    private final Tensor buffer;

    /** A probe over {@code bytes} bytes (far larger than the last-level cache), every page touched. */
    public BandwidthProbe(long bytes) {
        buffer = Tensor.allocate(DType.I8, bytes);
        buffer.segment().fill((byte) 1); // a sweep then measures reads, not page faults
    }

    /** The read bandwidth of one sweep with {@code cpu}'s threads, in GB/s (1e9 bytes/s). */
    public double sweep(CpuBackend cpu) {
        MemorySegment memory = buffer.segment();
        int chunks = cpu.threads() * 8;
        long chunkBytes = memory.byteSize() / chunks / (4L * F.length() * 4) * (4L * F.length() * 4);
        long start = System.nanoTime();
        float[] partial = new float[chunks];
        cpu.parallelFor(chunks, 1, (from, to) -> {
            for (int c = from; c < to; c++) {
                partial[c] = sum(memory, c * chunkBytes, chunkBytes);
            }
        });
        long elapsed = System.nanoTime() - start;
        float total = 0;
        for (float p : partial) {
            total += p;
        }
        sink = total;
        return chunkBytes * chunks / (double) elapsed;
    }

    /** The best of {@code sweeps} sweeps, in GB/s. */
    public double best(CpuBackend cpu, int sweeps) {
        double best = 0;
        for (int i = 0; i < sweeps; i++) {
            best = Math.max(best, sweep(cpu));
        }
        return best;
    }

    @Override
    public void close() {
        buffer.close();
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
