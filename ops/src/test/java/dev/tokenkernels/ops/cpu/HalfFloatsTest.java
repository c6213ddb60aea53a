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
            HalfFloats.decode(src, 2, DType.F16, dst, n);
            for (int i = 0; i < n; i++) {
                float expected = Float.float16ToFloat((short) i);
                float actual = dst.getAtIndex(ValueLayout.JAVA_FLOAT, i);
                assertEquals(Float.floatToIntBits(expected), Float.floatToIntBits(actual), "f16 bits " + i);
            }
            HalfFloats.decode(src, 2, DType.BF16, dst, n);
            for (int i = 0; i < n; i++) {
                float expected = Float.intBitsToFloat(i << 16);
                float actual = dst.getAtIndex(ValueLayout.JAVA_FLOAT, i);
                assertEquals(Float.floatToIntBits(expected), Float.floatToIntBits(actual), "bf16 bits " + i);
            }
        }
    }

    @Test
    void rejectsOtherTypes() {
        assertThrows(IllegalArgumentException.class,
                () -> HalfFloats.decode(MemorySegment.NULL, 0, DType.F32, MemorySegment.NULL, 0));
    }
}
