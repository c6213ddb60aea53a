package dev.tokenkernels.runtime;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.ref.WeakReference;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import org.junit.jupiter.api.Test;

class TensorTest {

    /**
     * A tensor from 2 MiB up: zero-filled, writable to its last byte, and (on Linux with native
     * access, as the tests run) mapped on a 2 MiB boundary for huge pages; closing frees it.
     */
    @Test
    void largeTensorsAreZeroedAlignedAndFreed() {
        long elements = 5L * (1 << 20) + 3; // 20 MiB + 12 bytes: not a whole number of huge pages
        for (int round = 0; round < 3; round++) { // mapped and unmapped again, nothing left over
            Tensor t = Tensor.allocate(DType.F32, elements);
            MemorySegment segment = t.segment();
            assertEquals(4 * elements, segment.byteSize());
            for (long i = 0; i < elements; i += 4099) {
                assertEquals(0f, t.getFloat(i), "element " + i);
            }
            assertEquals(0f, t.getFloat(elements - 1));
            t.setFloat(elements - 1, 7f);
            t.setFloat(0, -1f);
            assertEquals(7f, t.getFloat(elements - 1));
            assertEquals(-1f, t.getFloat(0));
            if (System.getProperty("os.name").startsWith("Linux") && Tensor.class.getModule().isNativeAccessEnabled()) {
                assertEquals(0, segment.address() % HostMemory.HUGE_PAGE, "a huge-page boundary");
            } else {
                assertEquals(0, segment.address() % Tensor.ALIGNMENT);
            }
            t.close();
            assertThrows(IllegalStateException.class, () -> t.getFloat(0));
        }
        try (Tensor small = Tensor.allocate(DType.F32, 1000)) { // below 2 MiB: the arena's memory
            assertEquals(0, small.segment().address() % Tensor.ALIGNMENT);
            assertEquals(0f, small.getFloat(999));
        }
    }

    @Test
    void copiesFloatArrays() {
        float[] values = {1, 2, 3, 4, 5, 6};
        try (Tensor t = Tensor.of(values, 2, 3)) {
            values[0] = 99; // the tensor holds a copy
            assertArrayEquals(new float[] {1, 2, 3, 4, 5, 6}, t.toFloatArray());
            assertArrayEquals(new long[] {2, 3}, t.shape());
            assertEquals(3, t.dim(-1));
            assertEquals(DType.F32, t.dtype());
            assertEquals(Device.CPU, t.device());
            assertEquals(24, t.byteSize());
            assertEquals(0, t.segment().address() % 64, "allocations are vector aligned");
        }
    }

    @Test
    void viewsDirectNativeOrderBuffersWithoutCopying() {
        FloatBuffer direct = ByteBuffer.allocateDirect(16).order(ByteOrder.nativeOrder()).asFloatBuffer();
        direct.put(new float[] {1, 2, 3, 4}).flip();
        try (Tensor t = Tensor.of(direct, 4)) {
            direct.put(0, 42); // visible through the view
            assertEquals(42f, t.getFloat(0));
        }
        FloatBuffer heap = FloatBuffer.wrap(new float[] {5, 6});
        try (Tensor t = Tensor.of(heap, 2)) {
            heap.put(0, 0);
            assertEquals(5f, t.getFloat(0));
        }
    }

    @Test
    void viewsNativeSegmentsAndCopiesHeapSegments() {
        try (Arena arena = Arena.ofShared()) {
            MemorySegment native_ = arena.allocate(8);
            Tensor t = Tensor.of(native_, DType.F32, 2);
            native_.setAtIndex(ValueLayout.JAVA_FLOAT, 1, 7f);
            assertEquals(7f, t.getFloat(1));
            t.close();
            assertEquals(7f, native_.getAtIndex(ValueLayout.JAVA_FLOAT, 1), "a view never frees the caller's memory");
        }
        float[] backing = {1, 2};
        try (Tensor t = Tensor.of(MemorySegment.ofArray(backing), DType.F32, 2)) {
            backing[0] = 9;
            assertEquals(1f, t.getFloat(0));
            assertTrue(t.segment().isNative());
        }
    }

    /**
     * Segments the ops cannot use are refused by name: a confined one (the CPU backend's worker
     * threads failed on it with WrongThreadException, from a size on) and a misaligned one (the
     * bulk copies failed with the FFM's own message).
     */
    @Test
    void refusesConfinedAndMisalignedSegments() {
        try (Arena confined = Arena.ofConfined(); Arena shared = Arena.ofShared()) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> Tensor.of(confined.allocate(8, 8), DType.F32, 2));
            assertTrue(e.getMessage().startsWith("segment:") && e.getMessage().contains("confined"), e.getMessage());
            MemorySegment offByTwo = shared.allocate(12, 8).asSlice(2, 8);
            e = assertThrows(IllegalArgumentException.class, () -> Tensor.of(offByTwo, DType.F32, 2));
            assertTrue(e.getMessage().startsWith("segment:") && e.getMessage().contains("aligned"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class,
                    () -> Tensor.of(shared.allocate(12, 8).asSlice(1, 4), DType.BF16, 2));
            assertTrue(e.getMessage().contains("aligned to 2 bytes"), e.getMessage());
            try (Tensor ok = Tensor.of(shared.allocate(12, 8).asSlice(2, 4), DType.BF16, 2)) {
                assertEquals(2, ok.elementCount(), "BF16 at an even offset is aligned");
            }
        }
    }

    /** An element index out of range names the index and the tensor (it was the FFM's byte-offset message). */
    @Test
    void elementIndicesAreChecked() {
        try (Tensor t = Tensor.of(new float[] {1f}, 1); Tensor ints = Tensor.ofInts(new int[] {1, 2}, 2)) {
            IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class, () -> t.getFloat(5));
            assertTrue(e.getMessage().startsWith("index 5 outside [0, 1) of Tensor[F32 [1]"), e.getMessage());
            assertThrows(IndexOutOfBoundsException.class, () -> t.setFloat(-1, 0f));
            assertThrows(IndexOutOfBoundsException.class, () -> ints.getLong(2));
            assertEquals(2, ints.getLong(1));
        }
    }

    /** A reshaped view shares the memory, frees nothing when closed, and fails once its tensor is closed. */
    @Test
    void reshapeIsAViewOfTheSameMemory() {
        Tensor t = Tensor.of(new float[] {1, 2, 3, 4, 5, 6}, 2, 1, 3);
        Tensor rows = t.reshape(2, 3);
        assertArrayEquals(new long[] {2, 3}, rows.shape());
        rows.setFloat(4, 50f);
        assertEquals(50f, t.getFloat(4), "one memory");
        rows.close();
        assertEquals(50f, t.getFloat(4), "closing the view frees nothing");
        Tensor again = t.reshape(6);
        Tensor nested = again.reshape(3, 2);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> t.reshape(4));
        assertTrue(e.getMessage().startsWith("shape: expected 6 elements like [2, 1, 3]"), e.getMessage());
        t.close();
        assertThrows(IllegalStateException.class, () -> again.getFloat(0));
        assertTrue(again.isClosed(), "a view is closed with its tensor");
        assertTrue(nested.isClosed(), "and a view of a view too");
    }

    /**
     * A view keeps the tensor it shows alive: made from a temporary ({@code Tensor.of(...).reshape(...)},
     * as README suggests for {@code [B, L, V]} logits), it held only the segment, and once the GC
     * collected the source its cleaner closed the arena under the live view (found in review).
     */
    @Test
    void aViewOfATemporaryTensorStaysReadableAfterGc() throws InterruptedException {
        Tensor view = Tensor.of(new float[] {1, 2, 3, 4, 5, 6}, 2, 3).reshape(6);
        // wait until the GC has collected an unreachable tensor made the same way, then for its cleaner
        WeakReference<Tensor> probe = new WeakReference<>(Tensor.of(new float[] {0}, 1));
        for (int i = 0; i < 100 && probe.get() != null; i++) {
            System.gc();
            Thread.sleep(10);
        }
        Thread.sleep(200);
        assertEquals(6f, view.getFloat(5), "a live view reads its memory");
    }

    @Test
    void roundsToHalfPrecisionTypes() {
        float[] values = {1f, -2.5f, 65504f, 1e-7f, Float.NaN, Float.NEGATIVE_INFINITY, 3.14159f};
        try (Tensor h = Tensor.ofFloats(values, DType.F16, values.length);
             Tensor b = Tensor.ofFloats(values, DType.BF16, values.length)) {
            for (int i = 0; i < values.length; i++) {
                assertEquals(Float.float16ToFloat(Float.floatToFloat16(values[i])), h.getFloat(i));
            }
            assertEquals(3.140625f, b.getFloat(6)); // bf16 keeps 8 bits of mantissa
            assertTrue(Float.isNaN(b.getFloat(4)));
            assertEquals(Float.NEGATIVE_INFINITY, b.getFloat(5));
        }
    }

    @Test
    void bf16RoundsToNearestEven() {
        // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to the even one.
        assertEquals(1f, DType.bf16ToFloat(DType.floatToBf16(1f + 0x1p-8f)));
        assertEquals(1f + 0x1p-6f, DType.bf16ToFloat(DType.floatToBf16(1f + 0x1p-7f + 0x1p-8f)));
        assertEquals(1f + 0x1p-7f, DType.bf16ToFloat(DType.floatToBf16(1f + 0x1p-8f + 0x1p-12f)));
    }

    @Test
    void useAfterCloseIsAnIllegalStateException() {
        Tensor t = Tensor.of(new float[] {1}, 1);
        t.close();
        t.close(); // idempotent
        assertTrue(t.isClosed());
        assertThrows(IllegalStateException.class, t::segment);
        assertThrows(IllegalStateException.class, () -> t.getFloat(0));
        assertThrows(IllegalStateException.class, t::toFloatArray);
        assertTrue(t.toString().contains("closed"));
    }

    @Test
    void rejectsInconsistentShapes() {
        var e = assertThrows(IllegalArgumentException.class, () -> Tensor.of(new float[5], 2, 3));
        assertEquals("values: expected 6 elements for shape [2, 3], got 5 elements", e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Tensor.allocate(DType.F32, 2, -1));
        assertEquals("shape: expected dimensions >= 0, got [2, -1]", e.getMessage());
        assertThrows(ArithmeticException.class, () -> Tensor.allocate(DType.F32, Long.MAX_VALUE, 2));
        try (Arena arena = Arena.ofConfined()) {
            e = assertThrows(IllegalArgumentException.class, () -> Tensor.of(arena.allocate(10), DType.F32, 2));
            assertEquals("segment: expected 8 bytes for F32 [2], got 10 bytes", e.getMessage());
        }
        e = assertThrows(IllegalArgumentException.class, () -> Tensor.ofFloats(new float[1], DType.I8, 1));
        assertEquals("dtype: expected F32, F16 or BF16, got I8", e.getMessage());
    }

    @Test
    void integerTensorsReadBack() {
        try (Tensor i = Tensor.ofInts(new int[] {-3, 4}, 2); Tensor l = Tensor.ofLongs(new long[] {1L << 40}, 1)) {
            assertEquals(-3, i.getLong(0));
            assertEquals(1L << 40, l.getLong(0));
            assertThrows(IllegalStateException.class, () -> i.getFloat(0));
            assertFalse(i.dtype().isFloating());
        }
    }
}
