package dev.tokenkernels.runtime;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Element types a {@link Tensor} can hold. Floating types are decoded to fp32 by the ops, which
 * do all their math in fp32 (or wider) whatever the storage type.
 */
public enum DType {
    /** IEEE 754 binary32. */
    F32(4, true),
    /** IEEE 754 binary16. */
    F16(2, true),
    /** bfloat16: the upper 16 bits of an fp32. */
    BF16(2, true),
    /** Signed 8-bit integer. */
    I8(1, false),
    /** Unsigned 8-bit integer. */
    U8(1, false),
    /** Signed 32-bit integer, e.g. token ids. */
    I32(4, false),
    /** Signed 64-bit integer. */
    I64(8, false);

    private final int byteSize;
    private final boolean floating;

    DType(int byteSize, boolean floating) {
        this.byteSize = byteSize;
        this.floating = floating;
    }

    /** Bytes per element. */
    public int byteSize() {
        return byteSize;
    }

    /** Whether this is a floating-point type (F32, F16, BF16). */
    public boolean isFloating() {
        return floating;
    }

    /** bfloat16 bits of {@code value}, rounded to nearest even; NaN stays a (quiet) NaN. */
    public static short floatToBf16(float value) {
        int bits = Float.floatToRawIntBits(value);
        if (Float.isNaN(value)) {
            return (short) ((bits >>> 16) | 0x0040);
        }
        int roundingBias = 0x7FFF + ((bits >>> 16) & 1);
        return (short) ((bits + roundingBias) >>> 16);
    }

    /** The fp32 value of bfloat16 bits (exact). */
    public static float bf16ToFloat(short bits) {
        return Float.intBitsToFloat((bits & 0xFFFF) << 16);
    }

    /**
     * Element {@code index} of {@code segment} holding this floating type, decoded to fp32 (one
     * element: for loops, decode blocks instead).
     */
    public float getFloat(MemorySegment segment, long index) {
        return switch (this) {
            case F32 -> segment.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, index);
            case F16 -> Float.float16ToFloat(segment.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index));
            case BF16 -> bf16ToFloat(segment.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index));
            default -> throw new IllegalStateException("getFloat on " + this + " elements");
        };
    }

    /**
     * Stores {@code value} as element {@code index} of {@code segment} holding this floating type,
     * rounded to nearest even for F16 and BF16 (one element: loops store whole blocks, as the ops
     * module's {@code HalfFloats.store} does).
     */
    public void setFloat(MemorySegment segment, long index, float value) {
        switch (this) {
            case F32 -> segment.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, index, value);
            case F16 -> segment.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index, Float.floatToFloat16(value));
            case BF16 -> segment.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index, floatToBf16(value));
            default -> throw new IllegalStateException("setFloat on " + this + " elements");
        }
    }
}
