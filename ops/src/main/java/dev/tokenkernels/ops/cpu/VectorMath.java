package dev.tokenkernels.ops.cpu;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Math building blocks for the CPU ops, inlined into their loops.
 *
 * <p>Why not {@code lanewise(EXP)}: on x86 it is an out-of-line call into the JDK's vector math
 * library, which spills the loop's registers each time; the inline version below is several
 * times faster inside a softmax loop and accurate to about 1 ulp over the range softmax uses.
 */
public final class VectorMath {
    /** Below this, {@code e^x} is (treated as) 0: {@code e^-86} is the smallest power whose scaling stays normal. */
    public static final float EXP_UNDERFLOW = -86f;
    /** Below this, {@code 2^x} is (treated as) 0: the bound of {@link #EXP_UNDERFLOW} in base 2. */
    public static final float EXP2_UNDERFLOW = -124f;
    /** {@code log2 e}, by which the base-2 sweeps scale their logits. */
    public static final float LOG2_E = 1.44269504088896341f;
    // ln 2 split so that n * LN2_HIGH is exact for the n that occur (Cody and Waite's reduction).
    private static final float LN2_HIGH = 0.693359375f;
    private static final float LN2_LOW = -2.12194440e-4f;
    /** 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits. */
    private static final float ROUND = 12582912f;

    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final VectorSpecies<Integer> I = IntVector.SPECIES_PREFERRED;
    /** {@link #orderKey} of {@code -inf}: the keys below it are NaNs with the sign bit set. */
    private static final int NEGATIVE_INFINITY_KEY = orderKey(Float.floatToRawIntBits(Float.NEGATIVE_INFINITY));
    private static final FloatVector LOG2_E_V = FloatVector.broadcast(F, LOG2_E);
    private static final FloatVector ROUND_V = FloatVector.broadcast(F, ROUND);
    private static final FloatVector MINUS_LN2_HIGH = FloatVector.broadcast(F, -LN2_HIGH);
    private static final FloatVector MINUS_LN2_LOW = FloatVector.broadcast(F, -LN2_LOW);
    // e^r ~ 1 + r + c2 r^2 + ... + c6 r^6 on |r| <= ln2 / 2: a least-squares fit of the relative
    // error on Chebyshev nodes (max 4e-9 before the coefficients' rounding), as accurate as the
    // degree-7 Taylor polynomial with one multiply-add less. Hex so kernels/include/vector_math.cuh
    // can hold the same floats.
    private static final FloatVector C6 = FloatVector.broadcast(F, 0x1.687c24p-10f);
    private static final FloatVector C5 = FloatVector.broadcast(F, 0x1.123b94p-7f);
    private static final FloatVector C4 = FloatVector.broadcast(F, 0x1.555b58p-5f);
    private static final FloatVector C3 = FloatVector.broadcast(F, 0x1.55548ep-3f);
    private static final FloatVector C2 = FloatVector.broadcast(F, 0x1.fffff8p-2f);
    private static final FloatVector ONE = FloatVector.broadcast(F, 1f);

    // 2^r = e^(r ln 2) on |r| <= 1/2: the same fit, K_j = C_j (ln 2)^j rounded to float.
    private static final FloatVector K1 = FloatVector.broadcast(F, 0x1.62e43p-1f);
    private static final FloatVector K2 = FloatVector.broadcast(F, 0x1.ebfbd8p-3f);
    private static final FloatVector K3 = FloatVector.broadcast(F, 0x1.c6af84p-5f);
    private static final FloatVector K4 = FloatVector.broadcast(F, 0x1.3b3044p-7f);
    private static final FloatVector K5 = FloatVector.broadcast(F, 0x1.5f0618p-10f);
    private static final FloatVector K6 = FloatVector.broadcast(F, 0x1.3fd67ep-13f);

    private static final FloatVector LN2_V = FloatVector.broadcast(F, 0.69314718055994531f);
    private static final FloatVector SQRT2 = FloatVector.broadcast(F, 1.41421356f);
    private static final FloatVector TWO_POW_23 = FloatVector.broadcast(F, 8388608f);
    // 2 / (2k + 1) for the odd series of 2 atanh(s) = log((1 + s) / (1 - s)).
    private static final FloatVector L9 = FloatVector.broadcast(F, 2f / 9);
    private static final FloatVector L7 = FloatVector.broadcast(F, 2f / 7);
    private static final FloatVector L5 = FloatVector.broadcast(F, 2f / 5);
    private static final FloatVector L3 = FloatVector.broadcast(F, 2f / 3);
    private static final FloatVector TWO = FloatVector.broadcast(F, 2f);

    private VectorMath() {
    }

    /**
     * Natural {@code log x} lane-wise for {@code x >= 0}: within 3 ulp for positive
     * {@code x} (subnormals included), {@code -inf} for 0, {@code +inf} for {@code +inf}, NaN for
     * NaN. Negative {@code x} are outside the contract.
     *
     * <p>Method: {@code x = 2^e m} with {@code m} in {@code [sqrt(1/2), sqrt(2))};
     * {@code log m = 2 atanh(s)}, {@code s = (m - 1) / (m + 1)}, {@code |s| <= 0.172}, by its odd
     * series to {@code s^9} (truncation below 3e-9 relative).
     */
    public static FloatVector log(FloatVector x) {
        VectorMask<Float> subnormal = x.lt(Float.MIN_NORMAL);
        FloatVector scaled = x.blend(x.mul(TWO_POW_23), subnormal);
        IntVector bits = scaled.reinterpretAsInts();
        IntVector exponent = bits.lanewise(VectorOperators.LSHR, 23).sub(127);
        FloatVector m = bits.and(0x007fffff).or(0x3f800000).reinterpretAsFloats(); // [1, 2)
        VectorMask<Float> high = m.compare(VectorOperators.GE, SQRT2);
        m = m.blend(m.mul(0.5f), high);
        FloatVector e = ((FloatVector) exponent.convert(VectorOperators.I2F, 0))
                .add(FloatVector.broadcast(F, 1f), high)
                .sub(FloatVector.broadcast(F, 23f), subnormal);
        FloatVector s = m.sub(1f).div(m.add(1f));
        FloatVector s2 = s.mul(s);
        FloatVector series = s2.fma(L9, L7).fma(s2, L5).fma(s2, L3).fma(s2, TWO).mul(s);
        FloatVector result = e.fma(LN2_V, series);
        result = result.blend(Float.NEGATIVE_INFINITY, x.eq(0f));
        return result.blend(x, x.eq(Float.POSITIVE_INFINITY).or(x.test(VectorOperators.IS_NAN)));
    }

    /**
     * {@code e^x} lane-wise for {@code x <= 0}: within about 1 ulp of the true value for
     * {@code x >= -86}, exactly 0 below (flushing results under about 4e-38), NaN for the NaN
     * arithmetic makes (a NaN with payload bits in its low mantissa may come out as garbage: the
     * sweeps reject rows with a NaN before they exponentiate).
     * Positive {@code x} are outside the contract. {@code x} must be of the preferred species.
     *
     * <p>Method: {@code x = n ln2 + r} with {@code |r| <= ln2 / 2}; {@code e^r} by a degree-6
     * polynomial fitted to it (error below 1e-8 relative, 0.9 ulp worst over a dense sweep of
     * {@code [-86, 0]}; 25% faster than the degree-7 Taylor polynomial it replaced); {@code 2^n}
     * by adding {@code n} to the exponent bits.
     */
    public static FloatVector expNonPositive(FloatVector x) {
        // No clamp: lanes below the underflow bound compute garbage that the final blend replaces.
        FloatVector shifted = x.fma(LOG2_E_V, ROUND_V);
        FloatVector n = shifted.sub(ROUND_V);
        FloatVector r = n.fma(MINUS_LN2_HIGH, x);
        r = n.fma(MINUS_LN2_LOW, r);
        FloatVector p = r.fma(C6, C5);
        p = p.fma(r, C4);
        p = p.fma(r, C3);
        p = p.fma(r, C2);
        p = p.fma(r, ONE);
        p = p.fma(r, ONE);
        // The low bits of `shifted` hold n; shifted << 23 is n << 23 (the rest shifts out), which
        // added to p's bits multiplies p by 2^n. For NaN lanes it adds 0 and p stays NaN.
        FloatVector scaled = p.reinterpretAsInts()
                .add(shifted.reinterpretAsInts().lanewise(VectorOperators.LSHL, 23))
                .reinterpretAsFloats();
        return scaled.blend(0f, x.lt(EXP_UNDERFLOW));
    }

    /**
     * {@code 2^x} lane-wise for {@code x <= 0}: within 2 ulp of the true value for
     * {@code x >= -124}, exactly 0 below, NaN for the NaN arithmetic makes (not for every payload:
     * as {@link #expNonPositive}). Positive {@code x} are outside the contract.
     * For the softmax sweeps, which scale their logits by {@code log2 e / T} once: about 20% faster
     * in a loop than {@link #expNonPositive} (no Cody-Waite reduction, a shorter chain of
     * dependent operations), at a slightly larger error (1.6 ulp worst over a dense sweep, mean 0.08).
     *
     * <p>Method: {@code n = round(x)}, {@code r = x - n} (exact, {@code |r| <= 1/2});
     * {@code 2^r} by {@link #expNonPositive}'s polynomial in {@code r ln 2}, evaluated in Estrin's
     * scheme (pairs of terms, then {@code r^2} and {@code r^4}: 3 multiply-adds deep instead of 6);
     * {@code 2^n} by adding {@code n} to the exponent bits.
     */
    public static FloatVector exp2NonPositive(FloatVector x) {
        FloatVector shifted = x.add(ROUND_V); // n in the low mantissa bits (round to nearest)
        FloatVector r = x.sub(shifted.sub(ROUND_V));
        FloatVector r2 = r.mul(r);
        FloatVector r4 = r2.mul(r2);
        FloatVector low = r2.fma(r.fma(K3, K2), r.fma(K1, ONE));
        FloatVector high = r2.fma(K6, r.fma(K5, K4));
        FloatVector p = r4.fma(high, low);
        FloatVector scaled = p.reinterpretAsInts()
                .add(shifted.reinterpretAsInts().lanewise(VectorOperators.LSHL, 23))
                .reinterpretAsFloats();
        return scaled.blend(0f, x.lt(EXP2_UNDERFLOW));
    }

    /**
     * The float bits {@code b} mapped to ints that order as the floats do ({@code -0 < +0}; the
     * magnitude bits of negatives flipped): the max of floats by an integer max of their keys, a
     * few integer operations a vector where {@link FloatVector#max} (Java's NaN and signed-zero
     * rules) takes five, three of them blends; a max loop over an L1 block measured 0.09 against
     * 0.15 ns/element. NaNs order outside {@code [-inf, +inf]}: above with the sign bit clear,
     * below with it set, so a max needs the keys' min too ({@link #maxOfKeys}).
     */
    public static IntVector orderKey(IntVector b) {
        return b.lanewise(VectorOperators.XOR, b.lanewise(VectorOperators.ASHR, 31).lanewise(VectorOperators.LSHR, 1));
    }

    /** {@link #orderKey} of one float's bits (its own inverse). */
    public static int orderKey(int b) {
        return b ^ ((b >> 31) >>> 1);
    }

    /**
     * The max of the floats whose keys' lane-wise max and min these are, as a {@code Math.max}
     * fold gives it: NaN if one was NaN, {@code -inf} for none (the lanes still at
     * {@code Integer.MIN_VALUE} and {@code MAX_VALUE}).
     */
    public static float maxOfKeys(IntVector highest, IntVector lowest) {
        if (lowest.reduceLanes(VectorOperators.MIN) < NEGATIVE_INFINITY_KEY) {
            return Float.NaN;
        }
        int high = highest.reduceLanes(VectorOperators.MAX);
        return high == Integer.MIN_VALUE ? Float.NEGATIVE_INFINITY : Float.intBitsToFloat(orderKey(high));
    }

    /**
     * The max of {@code x[0, length)}, {@code length} a multiple of the preferred vector length,
     * as a {@code Math.max} fold gives it (by {@link #orderKey}).
     */
    public static float max(float[] x, int length) {
        IntVector highest = IntVector.broadcast(I, Integer.MIN_VALUE);
        IntVector lowest = IntVector.broadcast(I, Integer.MAX_VALUE);
        for (int i = 0; i < length; i += F.length()) {
            IntVector key = orderKey(FloatVector.fromArray(F, x, i).reinterpretAsInts());
            highest = highest.max(key);
            lowest = lowest.min(key);
        }
        return maxOfKeys(highest, lowest);
    }

    /**
     * The sum of {@code v}'s lanes in lane order, in fp64: the same bits whether or not C2 has
     * compiled the caller. {@code reduceLanes(ADD)}'s order is unspecified, and its interpreted
     * fallback (lane by lane) and C2's intrinsic (halves) differ, so an op's first calls and later
     * ones could differ in the last bits. An array and a scalar loop: small enough to keep a hot
     * method's vector code within C2's inlining budget (lane-wise rotations cost LogitStats' BF16
     * sweep 20%). Once per block in the sweeps.
     */
    public static double sumLanes(FloatVector v) {
        float[] lanes = v.toArray();
        double sum = 0;
        for (float lane : lanes) {
            sum += lane;
        }
        return sum;
    }
}
