package dev.tokenkernels.ops.cpu;

import dev.tokenkernels.runtime.DType;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Decoding of F16 and BF16 storage to fp32, one block at a time, so that every CPU op keeps a
 * single fp32 inner loop whatever the input dtype. Both decodings are exact.
 *
 * <p>These are plain loops on purpose: C2 vectorizes them itself (a widening shift for BF16,
 * {@code vcvtph2ps} for F16 on x86), and in measurements they were as fast as Vector API
 * versions, whose shape-changing conversions the JIT does not always intrinsify.
 */
public final class HalfFloats {
    private HalfFloats() {
    }

    /**
     * Decodes {@code count} elements of {@code dtype} (F16 or BF16) starting at byte
     * {@code srcOffset} of {@code src} into fp32 at the start of {@code dst}.
     */
    public static void decode(MemorySegment src, long srcOffset, DType dtype, MemorySegment dst, int count) {
        switch (dtype) {
            case BF16 -> decodeBf16(src, srcOffset, dst, count);
            case F16 -> decodeF16(src, srcOffset, dst, count);
            default -> throw new IllegalArgumentException("dtype: expected F16 or BF16, got " + dtype);
        }
    }

    /**
     * As {@link #decode(MemorySegment, long, DType, MemorySegment, int)}, into {@code dst[0, count)},
     * through {@code bits} (at least {@code count} long): a bulk copy, then a loop over arrays,
     * which C2 vectorizes where it does not vectorize the same loop over a segment.
     */
    public static void decode(MemorySegment src, long srcOffset, DType dtype, short[] bits, float[] dst, int count) {
        MemorySegment.copy(src, ValueLayout.JAVA_SHORT_UNALIGNED, srcOffset, bits, 0, count);
        switch (dtype) {
            case BF16 -> {
                for (int i = 0; i < count; i++) {
                    dst[i] = Float.intBitsToFloat(bits[i] << 16);
                }
            }
            case F16 -> {
                for (int i = 0; i < count; i++) {
                    dst[i] = Float.float16ToFloat(bits[i]);
                }
            }
            default -> throw new IllegalArgumentException("dtype: expected F16 or BF16, got " + dtype);
        }
    }

    private static void decodeBf16(MemorySegment src, long srcOffset, MemorySegment dst, int count) {
        for (int i = 0; i < count; i++) {
            short h = src.get(ValueLayout.JAVA_SHORT_UNALIGNED, srcOffset + 2L * i);
            dst.set(ValueLayout.JAVA_INT_UNALIGNED, 4L * i, h << 16);
        }
    }

    private static void decodeF16(MemorySegment src, long srcOffset, MemorySegment dst, int count) {
        for (int i = 0; i < count; i++) {
            short h = src.get(ValueLayout.JAVA_SHORT_UNALIGNED, srcOffset + 2L * i);
            dst.set(ValueLayout.JAVA_FLOAT_UNALIGNED, 4L * i, Float.float16ToFloat(h));
        }
    }
}
