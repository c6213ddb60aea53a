package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.DeviceBuffer;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/** The cuda-emu backend shared by the tests of this module, and array <-> device copies. */
final class EmuDevice {
    private static CudaKernelBackend backend;

    private EmuDevice() {
    }

    /** Started once per JVM; a machine without a host compiler fails the tests, it does not skip them. */
    static synchronized CudaKernelBackend backend() {
        if (backend == null) {
            backend = (CudaKernelBackend) new CudaEmuBackendProvider().start();
        }
        return backend;
    }

    static DeviceBuffer upload(float[] values) {
        DeviceBuffer b = backend().allocate(Math.max(4L, 4L * values.length));
        backend().copyToDevice(MemorySegment.ofArray(values), b);
        return b;
    }

    static DeviceBuffer upload(int[] values) {
        DeviceBuffer b = backend().allocate(Math.max(4L, 4L * values.length));
        backend().copyToDevice(MemorySegment.ofArray(values), b);
        return b;
    }

    static DeviceBuffer upload(long[] values) {
        DeviceBuffer b = backend().allocate(Math.max(8L, 8L * values.length));
        backend().copyToDevice(MemorySegment.ofArray(values), b);
        return b;
    }

    static float[] floats(DeviceBuffer b, int count) {
        float[] out = new float[count];
        backend().copyToHost(b, MemorySegment.ofArray(out));
        return out;
    }

    static int[] ints(DeviceBuffer b, int count) {
        int[] out = new int[count];
        backend().copyToHost(b, MemorySegment.ofArray(out));
        return out;
    }

    static long[] longs(DeviceBuffer b, int count) {
        long[] out = new long[count];
        backend().copyToHost(b, MemorySegment.ofArray(out));
        return out;
    }

    static short[] shorts(DeviceBuffer b, int count) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = arena.allocate(2L * count);
            backend().copyToHost(b, s);
            return s.toArray(ValueLayout.JAVA_SHORT);
        }
    }
}
