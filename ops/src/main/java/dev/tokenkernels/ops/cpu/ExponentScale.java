package dev.tokenkernels.ops.cpu;

import jdk.incubator.vector.FloatVector;

/**
 * How the base-2 softmax sweeps turn a logit {@code z} and a running max {@code m} into the
 * exponent {@code d = fp32(z - m) invT2} of {@code 2^d}, {@code invT2 = log2(e) / T}: the
 * difference first (exact for the classes near the max that carry the mass), then the scale.
 *
 * <p>When {@code invT2 < 2^-120} (T above about 1e36) a difference beyond the float range
 * ({@code |z| ~ 2e38}) still has a nonzero {@code 2^d}; then the sweeps take
 * {@code fp32(z/2 - m/2) (2 invT2)} ({@code halved}), whose halves cannot overflow. Above that
 * scale an overflowing difference has {@code |d| > 256}, where {@code 2^d} is 0 anyway. The
 * branch is the same for a whole sweep, so the loops keep the plain add: a multiply-add in its
 * place lengthens their dependent chain (measured 8% slower).
 *
 * @param invT2 {@code log2(e) / T}, as the sweeps' rescaling in fp64 uses it
 * @param halved whether the loops form halved differences
 */
public record ExponentScale(float invT2, boolean halved) {
    private static final FloatVector HALF = FloatVector.broadcast(FloatVector.SPECIES_PREFERRED, 0.5f);

    /** For a call with {@code 1/T = invT}. */
    public static ExponentScale of(float invT) {
        float invT2 = invT * VectorMath.LOG2_E;
        return new ExponentScale(invT2, invT2 < 0x1p-120f);
    }

    /** What the loops multiply the difference by: {@code invT2}, or {@code 2 invT2} when halved. */
    public float loopScale() {
        return halved ? 2 * invT2 : invT2;
    }

    /** What the loops add to {@code z} for the max {@code m}: {@code -m}, or {@code -m/2} when halved. */
    public float offset(float m) {
        return halved ? -0.5f * m : -m;
    }

    /** {@code d} lane-wise, from broadcasts of {@link #offset} and {@link #loopScale}. */
    public FloatVector exponent(FloatVector z, FloatVector offset, FloatVector loopScale) {
        return (halved ? z.fma(HALF, offset) : z.add(offset)).mul(loopScale);
    }
}
