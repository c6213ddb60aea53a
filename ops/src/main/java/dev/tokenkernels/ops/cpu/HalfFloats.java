package dev.tokenkernels.ops.cpu;

import dev.tokenkernels.runtime.DType;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vectorized decoding of F16 and BF16 storage to fp32, one block at a time, so that every CPU op
 * keeps a single fp32 inner loop whatever the input dtype. Both decodings are exact.
 */
public final class HalfFloats {
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Integer> I = F.withLanes(int.class);
    private static final VectorSpecies<Short> S =
            VectorSpecies.of(short.class, VectorShape.forBitSize(F.vectorBitSize() / 2));

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

    private static void decodeBf16(MemorySegment src, long srcOffset, MemorySegment dst, int count) {
        // A plain loop: C2 vectorizes the widen-and-shift itself, faster than the Vector API's
        // shape-changing conversion.
        for (int i = 0; i < count; i++) {
            short h = src.get(ValueLayout.JAVA_SHORT_UNALIGNED, srcOffset + 2L * i);
            dst.set(ValueLayout.JAVA_INT_UNALIGNED, 4L * i, h << 16);
        }
    }

    /*
     * binary16 -> binary32 without a lookup table: shifting the exponent and mantissa into place
     * and multiplying by 2^112 rebiases the exponent (15 -> 127) and normalizes subnormals in one
     * rounding-free step; infinities and NaNs get the all-ones exponent explicitly.
     */
    private static void decodeF16(MemorySegment src, long srcOffset, MemorySegment dst, int count) {
        int i = 0;
        for (int upper = S.loopBound(count); i < upper; i += S.length()) {
            IntVector h = widen(src, srcOffset + 2L * i);
            IntVector magnitude = h.and(0x7FFF);
            IntVector sign = h.and(0x8000).lanewise(VectorOperators.LSHL, 16);
            IntVector shifted = magnitude.lanewise(VectorOperators.LSHL, 13);
            FloatVector finite = shifted.reinterpretAsFloats().mul(0x1p112f);
            VectorMask<Integer> special = magnitude.compare(VectorOperators.GE, 0x7C00);
            IntVector bits = finite.reinterpretAsInts().blend(shifted.or(0x7F800000), special).or(sign);
            bits.reinterpretAsFloats().intoMemorySegment(dst, 4L * i, NATIVE);
        }
        for (; i < count; i++) {
            short h = src.get(ValueLayout.JAVA_SHORT_UNALIGNED, srcOffset + 2L * i);
            dst.setAtIndex(ValueLayout.JAVA_FLOAT, i, Float.float16ToFloat(h));
        }
    }

    /** Loads one vector of 16-bit values, sign-extended to ints (callers mask what they need). */
    private static IntVector widen(MemorySegment src, long offset) {
        ShortVector h = ShortVector.fromMemorySegment(S, src, offset, NATIVE);
        return (IntVector) h.convertShape(VectorOperators.S2I, I, 0);
    }
}
