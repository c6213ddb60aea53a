package dev.tokenkernels.ops.cpu;

import dev.tokenkernels.runtime.DType;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * Decoding of F16 and BF16 storage to fp32, one block at a time, so that every CPU op keeps a
 * single fp32 inner loop whatever the input dtype (both decodings are exact), and the way back
 * for outputs such as gradients ({@link #store}, rounded to nearest even).
 *
 * <p>Into a Java array (bulk copy of the bits, then a loop over arrays): C2 vectorizes the plain
 * F16 loop itself ({@code vcvtph2ps} on x86) but not the BF16 one (about 0.8 ns/element on an
 * AVX2 machine), which is a Vector API loop (0.12 ns/element). Into a segment: plain loops.
 */
public final class HalfFloats {
    private static final VectorSpecies<Integer> I = IntVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    /** Shorts of half the preferred width: widened, one int vector. */
    private static final VectorSpecies<Short> S = VectorSpecies.of(short.class,
            VectorShape.forBitSize(I.vectorBitSize() / 2));

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
            case BF16 -> widenBf16(bits, dst, count);
            case F16 -> {
                for (int i = 0; i < count; i++) {
                    dst[i] = Float.float16ToFloat(bits[i]);
                }
            }
            default -> throw new IllegalArgumentException("dtype: expected F16 or BF16, got " + dtype);
        }
    }

    /**
     * As {@link #decode(MemorySegment, long, DType, short[], float[], int)}, returning the max of
     * the decoded values ({@code Math.max} semantics: NaN if one is NaN; {@code -inf} for none).
     * BF16 takes it in the decoding loop, saving the softmax sweeps a pass over the block.
     */
    public static float decodeMax(MemorySegment src, long srcOffset, DType dtype, short[] bits, float[] dst,
                                  int count) {
        float max;
        int i;
        if (dtype == DType.BF16) {
            MemorySegment.copy(src, ValueLayout.JAVA_SHORT_UNALIGNED, srcOffset, bits, 0, count);
            IntVector highest = IntVector.broadcast(I, Integer.MIN_VALUE);
            IntVector lowest = IntVector.broadcast(I, Integer.MAX_VALUE);
            int upper = S.loopBound(count);
            for (i = 0; i < upper; i += S.length()) {
                IntVector v = ((IntVector) ShortVector.fromArray(S, bits, i).convertShape(VectorOperators.S2I, I, 0))
                        .lanewise(VectorOperators.LSHL, 16);
                v.reinterpretAsFloats().intoArray(dst, i);
                IntVector key = VectorMath.orderKey(v);
                highest = highest.max(key);
                lowest = lowest.min(key);
            }
            max = VectorMath.maxOfKeys(highest, lowest);
            for (int j = i; j < count; j++) {
                dst[j] = Float.intBitsToFloat(bits[j] << 16);
            }
        } else {
            decode(src, srcOffset, dtype, bits, dst, count);
            i = F.loopBound(count);
            max = VectorMath.max(dst, i);
        }
        for (; i < count; i++) {
            max = Math.max(max, dst[i]);
        }
        return max;
    }

    /**
     * Stores fp32 values {@code src[0, count)} as {@code dtype} at byte {@code dstOffset} of
     * {@code dst}: F32 copied, F16 and BF16 rounded to nearest even through {@code bits} (at least
     * {@code count} long), as {@link DType#setFloat} rounds one value (a BF16 NaN keeps its sign
     * and high payload bits and is made quiet).
     */
    public static void store(float[] src, int count, DType dtype, short[] bits, MemorySegment dst, long dstOffset) {
        switch (dtype) {
            case F32 -> MemorySegment.copy(src, 0, dst, ValueLayout.JAVA_FLOAT_UNALIGNED, dstOffset, count);
            case BF16 -> narrowBf16(src, bits, count);
            case F16 -> {
                for (int i = 0; i < count; i++) {
                    bits[i] = Float.floatToFloat16(src[i]);
                }
            }
            default -> throw new IllegalArgumentException("dtype: expected F32, F16 or BF16, got " + dtype);
        }
        if (dtype != DType.F32) {
            MemorySegment.copy(bits, 0, dst, ValueLayout.JAVA_SHORT_UNALIGNED, dstOffset, count);
        }
    }

    /**
     * Sets elements {@code [first, first + count)} of {@code dst} (of {@code dtype}: F32, F16 or
     * BF16) to {@code value}, rounded as {@link DType#setFloat} rounds it: a row of zeros or NaNs
     * for an output row that is not computed.
     */
    public static void fill(MemorySegment dst, DType dtype, long first, int count, float value) {
        if (Float.floatToRawIntBits(value) == 0) { // +0 is all zero bits in every dtype
            dst.asSlice(first * dtype.byteSize(), (long) count * dtype.byteSize()).fill((byte) 0);
            return;
        }
        for (int i = 0; i < count; i++) {
            dtype.setFloat(dst, first + i, value);
        }
    }

    /**
     * The high half of each float rounded to nearest even (add {@code 0x7fff} plus the kept half's
     * lowest bit, keep the high half), a vector at a time; NaN lanes keep their high half with the
     * quiet bit set, where the rounding add could carry them into an infinity.
     */
    private static void narrowBf16(float[] src, short[] bits, int count) {
        int i = 0;
        for (int upper = S.loopBound(count); i < upper; i += S.length()) {
            IntVector b = FloatVector.fromArray(F, src, i).reinterpretAsInts();
            IntVector high = b.lanewise(VectorOperators.LSHR, 16);
            IntVector rounded = b.add(high.and(1).add(0x7fff)).lanewise(VectorOperators.LSHR, 16);
            IntVector nan = high.or(0x40);
            ((ShortVector) rounded.blend(nan, b.and(0x7fffffff).compare(VectorOperators.GT, 0x7f800000))
                    .convertShape(VectorOperators.I2S, S, 0)).intoArray(bits, i);
        }
        for (; i < count; i++) {
            bits[i] = DType.floatToBf16(src[i]);
        }
    }

    /**
     * bf16 is the high half of a float32: widen and shift into place, a vector at a time (C2 does
     * not vectorize the plain loop; this one measured about 5x faster), the rest one by one.
     */
    private static void widenBf16(short[] bits, float[] dst, int count) {
        int i = 0;
        for (int upper = S.loopBound(count); i < upper; i += S.length()) {
            ((IntVector) ShortVector.fromArray(S, bits, i).convertShape(VectorOperators.S2I, I, 0))
                    .lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats().intoArray(dst, i);
        }
        for (; i < count; i++) {
            dst[i] = Float.intBitsToFloat(bits[i] << 16);
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
