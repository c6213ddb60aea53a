package dev.tokenkernels.ops.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

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

    /** decodeMax decodes as decode does and returns the max, NaN if one is NaN, -inf for no element. */
    @Test
    void decodeMaxDecodesAndTakesTheMax() {
        java.util.SplittableRandom random = new java.util.SplittableRandom(3);
        try (Arena arena = Arena.ofConfined()) {
            for (DType dtype : new DType[] {DType.BF16, DType.F16}) {
                for (int count : new int[] {0, 1, 7, 8, 9, 16, 31, 2048}) {
                    for (int nanAt : new int[] {-1, count - 1, count / 2}) {
                        MemorySegment src = arena.allocate(2L * count + 2);
                        short[] expectedBits = new short[count];
                        for (int i = 0; i < count; i++) {
                            float v = (float) random.nextGaussian() * 100 - 50;
                            expectedBits[i] = dtype == DType.BF16 ? (short) (Float.floatToIntBits(v) >>> 16)
                                    : Float.floatToFloat16(v);
                        }
                        if (nanAt >= 0 && nanAt < count) {
                            expectedBits[nanAt] = (short) 0x7fc0;
                        }
                        float expectedMax = Float.NEGATIVE_INFINITY;
                        for (int i = 0; i < count; i++) {
                            src.set(ValueLayout.JAVA_SHORT_UNALIGNED, 2 + 2L * i, expectedBits[i]);
                            expectedMax = Math.max(expectedMax, dtype.getFloat(src, 1 + i));
                        }
                        float[] decoded = new float[count];
                        float max = HalfFloats.decodeMax(src, 2, dtype, new short[count], decoded, count);
                        String at = dtype + " count " + count + " NaN at " + nanAt;
                        assertEquals(expectedMax, max, at); // assertEquals treats NaN as equal to NaN
                        for (int i = 0; i < count; i++) {
                            assertEquals(dtype.getFloat(src, 1 + i), decoded[i], at + " element " + i);
                        }
                    }
                }
            }
        }
    }

    /**
     * decodeMax on blocks of random bit patterns (NaNs of both signs and with any payload,
     * infinities, subnormals, zeros of both signs) agrees with a Math.max fold bit for bit.
     */
    @Test
    void decodeMaxAgreesWithMathMaxOnEveryKindOfBits() {
        java.util.SplittableRandom random = new java.util.SplittableRandom(5);
        short[] specials = {0, (short) 0x8000, (short) 0xff80, 0x7f80, 0x7f81, (short) 0xffc0, (short) 0xff81,
            (short) 0xffff, 0x0001, (short) 0x8001};
        try (Arena arena = Arena.ofConfined()) {
            for (DType dtype : new DType[] {DType.BF16, DType.F16}) {
                for (int trial = 0; trial < 3000; trial++) {
                    int count = 1 + random.nextInt(40);
                    MemorySegment src = arena.allocate(2L * count);
                    float expected = Float.NEGATIVE_INFINITY;
                    for (int i = 0; i < count; i++) {
                        short bits = trial % 2 == 0 ? (short) random.nextInt()
                                : random.nextInt(4) == 0 ? specials[random.nextInt(specials.length)]
                                : (short) (random.nextInt(0x200) + (random.nextBoolean() ? 0x3f00 : 0xbf00));
                        src.set(ValueLayout.JAVA_SHORT_UNALIGNED, 2L * i, bits);
                        expected = Math.max(expected, dtype.getFloat(src, i));
                    }
                    float max = HalfFloats.decodeMax(src, 0, dtype, new short[count], new float[count], count);
                    assertEquals(expected, max, dtype + " trial " + trial); // NaNs compare equal, -0 != +0
                }
            }
        }
    }

    /**
     * store rounds as DType.setFloat does, bit for bit (BF16 by a vector loop and a scalar tail,
     * NaNs of any payload and sign included), at an odd byte offset; F32 is copied.
     */
    @Test
    void storeRoundsAsSetFloatDoes() {
        java.util.SplittableRandom random = new java.util.SplittableRandom(8);
        try (Arena arena = Arena.ofConfined()) {
            for (DType dtype : new DType[] {DType.BF16, DType.F16, DType.F32}) {
                for (int count : new int[] {0, 1, 7, 8, 9, 31, 2048}) {
                    float[] src = new float[count];
                    for (int i = 0; i < count; i++) {
                        src[i] = switch (i % 4) {
                            case 0 -> Float.intBitsToFloat(random.nextInt()); // NaN payloads too
                            case 1 -> Float.intBitsToFloat((random.nextInt() & 0xffff0000) | 0x8000); // bf16 ties
                            case 2 -> (float) random.nextGaussian() * 1e-6f;
                            default -> (float) random.nextGaussian() * 70000f; // around f16 overflow
                        };
                    }
                    MemorySegment dst = arena.allocate(dtype.byteSize() * (count + 1L));
                    MemorySegment expected = arena.allocate(dtype.byteSize() * (count + 1L));
                    HalfFloats.store(src, count, dtype, new short[count], dst, dtype.byteSize());
                    for (int i = 0; i < count; i++) {
                        dtype.setFloat(expected, 1 + i, src[i]);
                        String at = dtype + " count " + count + " element " + i;
                        if (dtype == DType.F16 && Float.isNaN(src[i])) { // Java fixes no F16 NaN bits
                            assertTrue(Float.isNaN(dtype.getFloat(dst, 1 + i)), at);
                        } else if (dtype == DType.F32) {
                            assertEquals(Float.floatToRawIntBits(src[i]), dst.getAtIndex(ValueLayout.JAVA_INT_UNALIGNED, 1 + i), at);
                        } else {
                            assertEquals(expected.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, 1 + i),
                                    dst.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, 1 + i), at);
                        }
                    }
                }
            }
        }
        assertThrows(IllegalArgumentException.class,
                () -> HalfFloats.store(new float[0], 0, DType.I32, new short[0], MemorySegment.NULL, 0));
    }

    @Test
    void rejectsOtherTypes() {
        assertThrows(IllegalArgumentException.class,
                () -> HalfFloats.decode(MemorySegment.NULL, 0, DType.F32, MemorySegment.NULL, 0));
        assertThrows(IllegalArgumentException.class,
                () -> HalfFloats.decode(MemorySegment.NULL, 0, DType.F32, new short[0], new float[0], 0));
        assertThrows(IllegalArgumentException.class,
                () -> HalfFloats.decodeMax(MemorySegment.NULL, 0, DType.F32, new short[0], new float[0], 0));
    }
}
