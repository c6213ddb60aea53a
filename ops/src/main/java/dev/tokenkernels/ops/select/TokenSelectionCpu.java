package dev.tokenkernels.ops.select;

import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import jdk.incubator.vector.ByteVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector API implementation of {@link TokenSelection}: one vector pass turns the masked scores
 * into order-preserving keys and compacts them, with their indices, in index order (chunks in
 * parallel, then packed); radix select on 8-bit digits then keeps, pass after pass, only the
 * candidates of the chosen bin, stably, so the final candidates share the selected key in index
 * order and the residual rank indexes them (ties go to the lower index with no sort). The masks
 * are one more vector pass comparing each key (and index) with the selected one.
 */
final class TokenSelectionCpu {
    // Byte masks are read with as many lanes as the int vectors have, so at least 8 (64-bit byte vectors).
    private static final VectorSpecies<Integer> I = IntVector.SPECIES_PREFERRED.length() >= 8
            ? IntVector.SPECIES_PREFERRED : IntVector.SPECIES_256;
    private static final VectorSpecies<Float> F = VectorSpecies.of(float.class, I.vectorShape());
    private static final VectorSpecies<Byte> B = VectorSpecies.of(byte.class, VectorShape.forBitSize(I.length() * 8));
    private static final int CHUNK = 1 << 16;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();

    private TokenSelectionCpu() {
    }

    /** Signed int whose order is the IEEE total order of the float with these bits. */
    static int sortableKey(int bits) {
        return bits ^ ((bits >> 31) & 0x7fffffff);
    }

    private static IntVector sortableKeys(MemorySegment scores, long i, boolean largest) {
        IntVector bits = FloatVector.fromMemorySegment(F, scores, 4 * i, NATIVE).reinterpretAsInts();
        IntVector key = bits.lanewise(VectorOperators.XOR,
                bits.lanewise(VectorOperators.ASHR, 31).lanewise(VectorOperators.AND, 0x7fffffff));
        return largest ? key.lanewise(VectorOperators.NOT) : key;
    }

    private static VectorMask<Integer> masked(MemorySegment mask, long i) {
        return ByteVector.fromMemorySegment(B, mask, i, NATIVE).compare(VectorOperators.NE, (byte) 0).cast(I);
    }

    /** {@code {masked count, index of the first masked NaN or -1}}: the validation pass. */
    static long[] countAndFirstNan(Tensor scoresTensor, Tensor maskTensor) {
        return countAndFirstBad(scoresTensor, maskTensor, false);
    }

    /** {@code {masked count, index of the first masked NaN (or infinity, if rejected) or -1}}. */
    static long[] countAndFirstBad(Tensor scoresTensor, Tensor maskTensor, boolean rejectInfinite) {
        MemorySegment scores = scoresTensor.segment();
        MemorySegment mask = maskTensor == null ? null : maskTensor.segment();
        long n = scoresTensor.dim(0);
        long count = 0;
        long i = 0;
        for (; i < I.loopBound(n); i += I.length()) {
            FloatVector v = FloatVector.fromMemorySegment(F, scores, 4 * i, NATIVE);
            VectorMask<Float> nan = rejectInfinite ? v.test(VectorOperators.IS_FINITE).not() : v.test(VectorOperators.IS_NAN);
            if (mask != null) {
                VectorMask<Integer> m = masked(mask, i);
                nan = nan.and(m.cast(F));
                count += m.trueCount();
            } else {
                count += I.length();
            }
            if (nan.anyTrue()) {
                return new long[] {count, i + nan.firstTrue()};
            }
        }
        for (; i < n; i++) {
            boolean in = mask == null || mask.get(ValueLayout.JAVA_BYTE, i) != 0;
            float x = scores.getAtIndex(ValueLayout.JAVA_FLOAT, i);
            if (in && (rejectInfinite ? !Float.isFinite(x) : Float.isNaN(x))) {
                return new long[] {count, i};
            }
            count += in ? 1 : 0;
        }
        return new long[] {count, -1};
    }

    /** U8 [N]: 1 where the mask counts the entry (everywhere without a mask). */
    static Tensor copyMask(Tensor scores, Tensor maskTensor) {
        long n = scores.dim(0);
        Tensor out = Tensor.allocate(DType.U8, n);
        MemorySegment o = out.segment();
        if (maskTensor == null) {
            o.fill((byte) 1);
            return out;
        }
        MemorySegment mask = maskTensor.segment();
        for (long i = 0; i < n; i++) {
            o.set(ValueLayout.JAVA_BYTE, i, (byte) (mask.get(ValueLayout.JAVA_BYTE, i) != 0 ? 1 : 0));
        }
        return out;
    }

    /** The index of the job's entry; writes the mask {@code mode} into {@code out} when given. */
    static long run(CpuBackend cpu, TokenSelection.Job job, TokenSelection.MaskMode mode, Tensor out) {
        int n = job.n();
        MemorySegment scores = job.scores().segment();
        MemorySegment mask = job.mask() == null ? null : job.mask().segment();
        boolean largest = job.largest();
        int[] keys = new int[n];
        int[] index = new int[n];
        int chunks = TokenVectors.chunks(n, CHUNK);
        int[] counts = new int[chunks];
        cpu.parallelFor(chunks, 1, (from, to) -> {
            for (int c = from; c < to; c++) {
                counts[c] = compact(scores, mask, largest, c * CHUNK, TokenVectors.chunkEnd(c, n, CHUNK), keys, index);
            }
        });
        int m = 0;
        for (int c = 0; c < chunks; c++) { // pack the chunks' runs to the front, in index order
            System.arraycopy(keys, c * CHUNK, keys, m, counts[c]);
            System.arraycopy(index, c * CHUNK, index, m, counts[c]);
            m += counts[c];
        }
        int selected = radixSelect(keys, index, m, job.rank());
        if (mode != null) {
            int threshold = sortableKey(Float.floatToRawIntBits(job.scores().getFloat(selected)));
            int key = largest ? ~threshold : threshold;
            MemorySegment o = out.segment();
            cpu.parallelFor(chunks, 1, (from, to) -> {
                for (int c = from; c < to; c++) {
                    writeMask(scores, mask, largest, mode, key, selected, c * CHUNK, TokenVectors.chunkEnd(c, n, CHUNK), o);
                }
            });
        }
        return selected;
    }

    /**
     * Writes the unsigned keys ({@code sortable ^ MIN_VALUE}) and indices of the masked entries of
     * {@code [from, to)} to the front of that same range of {@code keys} and {@code index}; their count.
     * A compressed store writes whole vectors, but never past the range: its start is at most the
     * current element.
     */
    private static int compact(MemorySegment scores, MemorySegment mask, boolean largest, int from, int to,
                               int[] keys, int[] index) {
        int w = from;
        int i = from;
        IntVector lanes = IntVector.zero(I).addIndex(1);
        for (; i + I.length() <= to; i += I.length()) {
            IntVector key = sortableKeys(scores, i, largest).lanewise(VectorOperators.XOR, Integer.MIN_VALUE);
            IntVector at = lanes.add(i);
            if (mask == null) {
                key.intoArray(keys, w);
                at.intoArray(index, w);
                w += I.length();
            } else {
                VectorMask<Integer> m = masked(mask, i);
                key.compress(m).intoArray(keys, w);
                at.compress(m).intoArray(index, w);
                w += m.trueCount();
            }
        }
        for (; i < to; i++) {
            if (mask == null || mask.get(ValueLayout.JAVA_BYTE, i) != 0) {
                int k = sortableKey(Float.floatToRawIntBits(scores.getAtIndex(ValueLayout.JAVA_FLOAT, i)));
                keys[w] = (largest ? ~k : k) ^ Integer.MIN_VALUE;
                index[w++] = i;
            }
        }
        return w - from;
    }

    /**
     * The index of the element of 1-based rank {@code rank} in ascending (unsigned key, index)
     * order among the first {@code m} candidates (given in index order); reorders the arrays.
     */
    static int radixSelect(int[] keys, int[] index, int m, long rank) {
        int[] histogram = new int[256];
        long r = rank;
        for (int shift = 24; shift >= 0; shift -= 8) {
            java.util.Arrays.fill(histogram, 0);
            for (int j = 0; j < m; j++) {
                histogram[(keys[j] >>> shift) & 0xff]++;
            }
            int bin = 0;
            long before = 0;
            while (r > before + histogram[bin]) {
                before += histogram[bin++];
            }
            r -= before;
            if (histogram[bin] == m) {
                continue; // every candidate is in this bin
            }
            // Stable, in place, branch-free (the bin may hold any share of the candidates): compressed
            // stores write at w <= j, inside the vector just read.
            int w = 0;
            int j = 0;
            for (; j + I.length() <= m; j += I.length()) {
                IntVector k = IntVector.fromArray(I, keys, j);
                VectorMask<Integer> in = k.lanewise(VectorOperators.LSHR, shift).lanewise(VectorOperators.AND, 0xff)
                        .compare(VectorOperators.EQ, bin);
                IntVector at = IntVector.fromArray(I, index, j);
                k.compress(in).intoArray(keys, w);
                at.compress(in).intoArray(index, w);
                w += in.trueCount();
            }
            for (; j < m; j++) {
                keys[w] = keys[j];
                index[w] = index[j];
                w += ((keys[j] >>> shift) & 0xff) == bin ? 1 : 0;
            }
            m = w;
        }
        return index[(int) r - 1];
    }

    /** Mask bytes of {@code [from, to)}: {@code UP_TO} keeps {@code (key, i) <= (threshold, selected)}, {@code AT_LEAST_VALUE} {@code key >= threshold}. */
    private static void writeMask(MemorySegment scores, MemorySegment mask, boolean largest,
                                  TokenSelection.MaskMode mode, int threshold, int selected, int from, int to,
                                  MemorySegment out) {
        boolean upTo = mode == TokenSelection.MaskMode.UP_TO;
        IntVector lanes = IntVector.zero(I).addIndex(1);
        ByteVector zero = ByteVector.zero(B);
        int i = from;
        for (; i + I.length() <= to; i += I.length()) {
            IntVector key = sortableKeys(scores, i, largest);
            VectorMask<Integer> keep;
            if (upTo) {
                keep = key.compare(VectorOperators.LT, threshold).or(key.compare(VectorOperators.EQ, threshold)
                        .and(lanes.add(i).compare(VectorOperators.LE, selected)));
            } else {
                keep = key.compare(VectorOperators.GE, threshold);
            }
            if (mask != null) {
                keep = keep.and(masked(mask, i));
            }
            zero.blend((byte) 1, keep.cast(B)).intoMemorySegment(out, i, NATIVE);
        }
        for (; i < to; i++) {
            int k = sortableKey(Float.floatToRawIntBits(scores.getAtIndex(ValueLayout.JAVA_FLOAT, i)));
            k = largest ? ~k : k;
            boolean keep = upTo ? k < threshold || (k == threshold && i <= selected) : k >= threshold;
            keep &= mask == null || mask.get(ValueLayout.JAVA_BYTE, i) != 0;
            out.set(ValueLayout.JAVA_BYTE, i, (byte) (keep ? 1 : 0));
        }
    }
}
