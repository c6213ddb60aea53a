package dev.tokenkernels.ops.cpu;

import jdk.incubator.vector.FloatVector;
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
    private static final float LOG2_E = 1.44269504088896341f;
    // ln 2 split so that n * LN2_HIGH is exact for the n that occur (Cody and Waite's reduction).
    private static final float LN2_HIGH = 0.693359375f;
    private static final float LN2_LOW = -2.12194440e-4f;
    /** 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits. */
    private static final float ROUND = 12582912f;

    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final FloatVector LOG2_E_V = FloatVector.broadcast(F, LOG2_E);
    private static final FloatVector ROUND_V = FloatVector.broadcast(F, ROUND);
    private static final FloatVector MINUS_LN2_HIGH = FloatVector.broadcast(F, -LN2_HIGH);
    private static final FloatVector MINUS_LN2_LOW = FloatVector.broadcast(F, -LN2_LOW);
    // 1/k! for the Horner steps of e^r.
    private static final FloatVector C7 = FloatVector.broadcast(F, 1f / 5040);
    private static final FloatVector C6 = FloatVector.broadcast(F, 1f / 720);
    private static final FloatVector C5 = FloatVector.broadcast(F, 1f / 120);
    private static final FloatVector C4 = FloatVector.broadcast(F, 1f / 24);
    private static final FloatVector C3 = FloatVector.broadcast(F, 1f / 6);
    private static final FloatVector C2 = FloatVector.broadcast(F, 0.5f);
    private static final FloatVector ONE = FloatVector.broadcast(F, 1f);

    private VectorMath() {
    }

    /**
     * {@code e^x} lane-wise for {@code x <= 0}: within about 1 ulp of the true value for
     * {@code x >= -86}, exactly 0 below (flushing results under about 4e-38), NaN for NaN.
     * Positive {@code x} are outside the contract. {@code x} must be of the preferred species.
     *
     * <p>Method: {@code x = n ln2 + r} with {@code |r| <= ln2 / 2}; {@code e^r} by its degree-7
     * Taylor polynomial (truncation error below 1e-8 relative); {@code 2^n} by adding {@code n} to
     * the exponent bits.
     */
    public static FloatVector expNonPositive(FloatVector x) {
        // No clamp: lanes below the underflow bound compute garbage that the final blend replaces.
        FloatVector shifted = x.fma(LOG2_E_V, ROUND_V);
        FloatVector n = shifted.sub(ROUND_V);
        FloatVector r = n.fma(MINUS_LN2_HIGH, x);
        r = n.fma(MINUS_LN2_LOW, r);
        FloatVector p = r.fma(C7, C6);
        p = p.fma(r, C5);
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
}
