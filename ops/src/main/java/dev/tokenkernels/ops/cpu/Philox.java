package dev.tokenkernels.ops.cpu;

import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.LongVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Philox4x32-10, the counter-based random number generator of Salmon, Moraes, Dror and Shaw,
 * "Parallel random numbers: as easy as 1, 2, 3" (SC 2011): a 128-bit counter and a 64-bit key map
 * to 128 random bits by ten rounds of two 32x32-to-64-bit multiplications, xors and a Weyl key
 * schedule. Being a pure function of (counter, key) it gives every backend the same numbers
 * without sharing state: {@code kernels/include/philox.cuh} is its CUDA twin, and both are
 * checked against the published known-answer vectors of the Random123 distribution
 * ({@code examples/kat_vectors}).
 *
 * <p>{@link #blocks} runs one lane of the preferred int species per counter (8 on AVX2, 16 on
 * AVX-512): the words of two counters share a 64-bit lane, and the low and high halves are
 * multiplied separately as zero-extended 32-bit values, which the JIT turns into {@code vpmuludq}
 * (twice as fast as assembling the products from 16-bit halves in int lanes, measured on AVX2).
 */
public final class Philox {
    /** Multipliers and Weyl increments of Philox4x32 (Salmon et al., 2011, table 2). */
    public static final int M0 = 0xD2511F53;
    /** Multiplier of counter word 2. */
    public static final int M1 = 0xCD9E8D57;
    /** Weyl increment of key word 0, added before every round but the first. */
    public static final int W0 = 0x9E3779B9;
    /** Weyl increment of key word 1, added before every round but the first. */
    public static final int W1 = 0xBB67AE85;
    /** Rounds per block: Philox4x32-10. */
    public static final int ROUNDS = 10;

    private static final VectorSpecies<Integer> I = IntVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Long> L = LongVector.SPECIES_PREFERRED;
    /** Counters per {@link #blocks} call: the lanes of the preferred int species. */
    public static final int LANES = I.length();
    private static final IntVector IOTA = IntVector.zero(I).addIndex(1);
    private static final long LOW = 0xffffffffL;
    private static final long HIGH = 0xffffffff00000000L;

    private Philox() {
    }

    /** The four output words for counter {@code (c0, c1, c2, c3)} and key {@code (k0, k1)}, into {@code out[0..3]}. */
    public static void block(int c0, int c1, int c2, int c3, int k0, int k1, int[] out) {
        for (int round = 0; round < ROUNDS; round++) {
            if (round > 0) {
                k0 += W0;
                k1 += W1;
            }
            long p0 = (M0 & LOW) * (c0 & LOW);
            long p1 = (M1 & LOW) * (c2 & LOW);
            int n0 = (int) (p1 >>> 32) ^ c1 ^ k0;
            int n2 = (int) (p0 >>> 32) ^ c3 ^ k1;
            c0 = n0;
            c1 = (int) p1;
            c2 = n2;
            c3 = (int) p0;
        }
        out[0] = c0;
        out[1] = c1;
        out[2] = c2;
        out[3] = c3;
    }

    /**
     * {@link #LANES} blocks at once: for {@code j < LANES} the words of counter
     * {@code (first + j, c1, c2, c3)} under key {@code (k0, k1)}, word {@code w} into
     * {@code out[w * LANES + j]} ({@code out} holds at least {@code 4 * LANES}).
     */
    public static void blocks(int first, int c1, int c2, int c3, int k0, int k1, int[] out) {
        blocks(first, LANES, c1, c2, c3, k0, k1, out);
    }

    /**
     * {@code n} blocks ({@code n} a multiple of {@link #LANES}): for {@code j < n} the words of
     * counter {@code (first + j, c1, c2, c3)} under key {@code (k0, k1)}, word {@code w} into
     * {@code out[w * n + j]}.
     */
    public static void blocks(int first, int n, int c1, int c2, int c3, int k0, int k1, int[] out) {
        for (int j = 0; j < n; j += LANES) {
            lanes(null, first + j, c1, c2, c3, k0, k1, out, j, n);
        }
    }

    /**
     * {@code n} blocks ({@code n} a multiple of {@link #LANES}) at the first counter words
     * {@code c0[from .. from + n)}: word {@code w} of counter {@code (c0[from + j], c1, c2, c3)} into
     * {@code out[w * n + j]}.
     */
    public static void blocks(int[] c0, int from, int n, int c1, int c2, int c3, int k0, int k1, int[] out) {
        for (int j = 0; j < n; j += LANES) {
            lanes(c0, from + j, c1, c2, c3, k0, k1, out, j, n);
        }
    }

    /** One vector of counters: first words {@code c0[first ..]}, or {@code first + lane} when {@code c0} is null. */
    private static void lanes(int[] c0, int first, int c1, int c2, int c3, int k0, int k1, int[] out, int at,
                              int stride) {
        // Two counters per 64-bit lane: the one of the even int lane in the low half, the odd one in the high half.
        IntVector words = c0 == null ? IOTA.add(first) : IntVector.fromArray(I, c0, first);
        LongVector a0 = words.reinterpretAsLongs();
        LongVector a1 = LongVector.broadcast(L, pair(c1));
        LongVector a2 = LongVector.broadcast(L, pair(c2));
        LongVector a3 = LongVector.broadcast(L, pair(c3));
        for (int round = 0; round < ROUNDS; round++) {
            if (round > 0) {
                k0 += W0;
                k1 += W1;
            }
            // 32x32-bit products of the low and the high halves separately (the JIT emits vpmuludq).
            LongVector even0 = a0.and(LOW).mul(M0 & LOW);
            LongVector odd0 = a0.lanewise(VectorOperators.LSHR, 32).mul(M0 & LOW);
            LongVector even2 = a2.and(LOW).mul(M1 & LOW);
            LongVector odd2 = a2.lanewise(VectorOperators.LSHR, 32).mul(M1 & LOW);
            LongVector hi0 = even0.lanewise(VectorOperators.LSHR, 32).or(odd0.and(HIGH));
            LongVector lo0 = even0.and(LOW).or(odd0.lanewise(VectorOperators.LSHL, 32));
            LongVector hi2 = even2.lanewise(VectorOperators.LSHR, 32).or(odd2.and(HIGH));
            LongVector lo2 = even2.and(LOW).or(odd2.lanewise(VectorOperators.LSHL, 32));
            LongVector n0 = hi2.lanewise(VectorOperators.XOR, a1).lanewise(VectorOperators.XOR, pair(k0));
            LongVector n2 = hi0.lanewise(VectorOperators.XOR, a3).lanewise(VectorOperators.XOR, pair(k1));
            a0 = n0;
            a1 = lo2;
            a2 = n2;
            a3 = lo0;
        }
        a0.reinterpretAsInts().intoArray(out, at);
        a1.reinterpretAsInts().intoArray(out, at + stride);
        a2.reinterpretAsInts().intoArray(out, at + 2 * stride);
        a3.reinterpretAsInts().intoArray(out, at + 3 * stride);
    }

    /** {@code x} in both halves of a 64-bit lane. */
    private static long pair(int x) {
        return (x & LOW) | ((long) x << 32);
    }

    /**
     * A uniform float in the open interval (0, 1) from 23 random bits: {@code (2 m + 1) 2^-24} for
     * {@code m = bits >>> 9}, exact in fp32 on every backend (the odd numerator keeps 0 and 1 out).
     */
    public static float uniform(int bits) {
        return (((bits >>> 9) << 1) | 1) * 0x1p-24f;
    }
}
