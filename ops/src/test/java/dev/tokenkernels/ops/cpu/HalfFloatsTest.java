package dev.tokenkernels.ops.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.tokenkernels.runtime.DType;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import org.junit.jupiter.api.Test;

class HalfFloatsTest {

    /** Every one of the 65536 bit patterns decodes exactly (NaNs to a NaN), from an odd offset. */
    @Test
    void decodesEveryBitPatternExactly() {
        try (Arena arena = Arena.ofConfined()) {
            int n = 1 << 16;
            MemorySegment src = arena.allocate(2L * n + 2);
            for (int i = 0; i < n; i++) {
                src.set(ValueLayout.JAVA_SHORT_UNALIGNED, 2 + 2L * i, (short) i);
            }
            MemorySegment dst = arena.allocate(4L * n);
            float[] array = new float[n];
            short[] bits = new short[n];
            HalfFloats.decode(src, 2, DType.F16, dst, n);
            HalfFloats.decode(src, 2, DType.F16, bits, array, n);
            for (int i = 0; i < n; i++) {
                int expected = Float.floatToIntBits(Float.float16ToFloat((short) i));
                assertEquals(expected, Float.floatToIntBits(dst.getAtIndex(ValueLayout.JAVA_FLOAT, i)), "f16 bits " + i);
                assertEquals(expected, Float.floatToIntBits(array[i]), "f16 bits into an array " + i);
            }
            HalfFloats.decode(src, 2, DType.BF16, dst, n);
            HalfFloats.decode(src, 2, DType.BF16, bits, array, n);
            for (int i = 0; i < n; i++) {
                int expected = Float.floatToIntBits(Float.intBitsToFloat(i << 16));
                assertEquals(expected, Float.floatToIntBits(dst.getAtIndex(ValueLayout.JAVA_FLOAT, i)), "bf16 bits " + i);
                assertEquals(expected, Float.floatToIntBits(array[i]), "bf16 bits into an array " + i);
            }
        }
    }

    @Test
    void rejectsOtherTypes() {
        assertThrows(IllegalArgumentException.class,
                () -> HalfFloats.decode(MemorySegment.NULL, 0, DType.F32, MemorySegment.NULL, 0));
        assertThrows(IllegalArgumentException.class,
                () -> HalfFloats.decode(MemorySegment.NULL, 0, DType.F32, new short[0], new float[0], 0));
    }
}
