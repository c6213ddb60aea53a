package dev.tokenkernels.ops.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import jdk.incubator.vector.FloatVector;
import org.junit.jupiter.api.Test;

class VectorMathTest {
    private static final int LANES = FloatVector.SPECIES_PREFERRED.length();

    /** {@code function} applied a vector at a time ({@code x.length} a multiple of the lanes). */
    private static float[] lanewise(float[] x, java.util.function.UnaryOperator<FloatVector> function) {
        float[] out = new float[x.length];
        for (int i = 0; i < x.length; i += LANES) {
            function.apply(FloatVector.fromArray(FloatVector.SPECIES_PREFERRED, x, i)).intoArray(out, i);
        }
        return out;
    }

    private static float[] exp(float[] x) {
        return lanewise(x, VectorMath::expNonPositive);
    }

    @Test
    void matchesMathExpWithinTwoUlpOverTheRange() {
        SplittableRandom random = new SplittableRandom(1);
        float[] x = new float[LANES * 20000];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) (-86 * Math.pow(random.nextDouble(), 3)); // dense near 0, where softmax mass is
        }
        x[0] = 0f;
        x[1] = -0f;
        x[2] = -86f;
        x[3] = Math.nextDown(0f);
        double worst = worstUlps(x, exp(x), Math::exp);
        assertTrue(worst <= 2, "worst error " + worst + " ulp");
    }

    /** The largest error of {@code y} against {@code exact(x)}, in ulps of the float nearest the exact value. */
    private static double worstUlps(float[] x, float[] y, java.util.function.DoubleUnaryOperator exact) {
        double worst = 0;
        for (int i = 0; i < x.length; i++) {
            double e = exact.applyAsDouble(x[i]);
            worst = Math.max(worst, Math.abs(y[i] - e) / Math.ulp((float) e));
        }
        return worst;
    }

    @Test
    void underflowIsZeroAndNaNStaysNaN() {
        float[] x = new float[2 * LANES]; // two vectors where a vector has 4 lanes
        x[0] = -86.5f;
        x[1] = -1000f;
        x[2] = Float.NEGATIVE_INFINITY;
        x[3] = Float.NaN;
        float[] y = exp(x);
        assertEquals(0f, y[0]);
        assertEquals(0f, y[1]);
        assertEquals(0f, y[2]);
        assertTrue(Float.isNaN(y[3]));
        assertEquals(1f, y[4]);
    }

    private static float[] exp2(float[] x) {
        return lanewise(x, VectorMath::exp2NonPositive);
    }

    /** Every float in [-1, 0] at a stride, and random ones down to the underflow bound. */
    @Test
    void exp2MatchesPowWithinTwoUlpOverTheRange() {
        SplittableRandom random = new SplittableRandom(4);
        float[] x = new float[LANES * 40000];
        for (int i = 0; i < x.length; i++) {
            x[i] = i % 2 == 0 ? -(float) Math.pow(random.nextDouble(), 3) * 124 : -(float) i / x.length;
        }
        x[0] = 0f;
        x[1] = -0f;
        x[2] = -124f;
        x[3] = -0.5f;
        x[4] = Math.nextDown(-0.5f);
        x[5] = -123.5f; // n rounds to -124 (even): the smallest scaling
        float[] y = exp2(x);
        double worst = worstUlps(x, y, v -> Math.pow(2, v));
        assertTrue(worst <= 2, "worst error " + worst + " ulp");
        assertEquals(1f, y[0]);
        assertEquals(1f, y[1]);
    }

    @Test
    void exp2UnderflowIsZeroAndNaNStaysNaN() {
        float[] x = new float[2 * LANES];
        x[0] = -124.5f;
        x[1] = -1000f;
        x[2] = Float.NEGATIVE_INFINITY;
        x[3] = Float.NaN;
        x[4] = -1f;
        float[] y = exp2(x);
        assertEquals(0f, y[0]);
        assertEquals(0f, y[1]);
        assertEquals(0f, y[2]);
        assertTrue(Float.isNaN(y[3]));
        assertEquals(0.5f, y[4]);
        assertEquals(1f, y[5]);
    }

    private static float[] log(float[] x) {
        return lanewise(x, VectorMath::log);
    }

    @Test
    void logMatchesMathLogWithinThreeUlpFromSubnormalsToTheLargestFloat() {
        SplittableRandom random = new SplittableRandom(2);
        float[] x = new float[LANES * 20000];
        for (int i = 0; i < x.length; i++) {
            x[i] = Float.intBitsToFloat(1 + random.nextInt(0x7f7fffff)); // every positive finite float
        }
        x[0] = 1f;
        x[1] = Float.MIN_VALUE;
        x[2] = Float.MIN_NORMAL;
        x[3] = Float.MAX_VALUE;
        x[4] = Math.nextDown(1.41421356f);
        x[5] = 1.41421356f;
        float[] y = log(x);
        double worst = 0;
        for (int i = 0; i < x.length; i++) {
            double exact = Math.log(x[i]);
            double ulps = Math.abs(y[i] - exact) / Math.max(Math.ulp((float) exact), Float.MIN_NORMAL);
            worst = Math.max(worst, ulps);
        }
        assertTrue(worst <= 3, "worst error " + worst + " ulp");
        assertEquals(0f, y[0]);
    }

    @Test
    void logOfZeroInfinityAndNaN() {
        float[] x = new float[LANES];
        x[0] = 0f;
        x[1] = Float.POSITIVE_INFINITY;
        x[2] = Float.NaN;
        x[3] = 1f;
        float[] y = log(x);
        assertEquals(Float.NEGATIVE_INFINITY, y[0]);
        assertEquals(Float.POSITIVE_INFINITY, y[1]);
        assertTrue(Float.isNaN(y[2]));
        assertEquals(0f, y[3]);
    }

    /**
     * max agrees with a Math.max fold bit for bit (-0 below +0, NaN of either sign wins) on
     * arrays drawn from every kind of float: random bits (NaNs, infinities, subnormals), zeros of
     * both signs, and a few NaNs with payloads in the low bits; -inf for no element.
     */
    @Test
    void maxAgreesWithMathMaxOnEveryKindOfFloat() {
        SplittableRandom random = new SplittableRandom(17);
        float[] specials = {0f, -0f, Float.NEGATIVE_INFINITY, Float.POSITIVE_INFINITY, Float.MIN_VALUE,
            -Float.MIN_VALUE, Float.MAX_VALUE, -Float.MAX_VALUE, Float.intBitsToFloat(0x7f800001),
            Float.intBitsToFloat(0xffc00000), Float.intBitsToFloat(0xff800001), Float.intBitsToFloat(0xffffffff)};
        assertEquals(Float.NEGATIVE_INFINITY, VectorMath.max(new float[0], 0));
        for (int trial = 0; trial < 4000; trial++) {
            float[] x = new float[LANES * (1 + random.nextInt(4))];
            int kind = trial % 4;
            for (int i = 0; i < x.length; i++) {
                x[i] = switch (kind) {
                    case 0 -> Float.intBitsToFloat(random.nextInt()); // about 1 in 256 is a NaN
                    case 1 -> random.nextBoolean() ? 0f : -0f;
                    case 2 -> specials[random.nextInt(specials.length)];
                    default -> random.nextInt(8) == 0 ? Float.NEGATIVE_INFINITY : (float) random.nextGaussian();
                };
            }
            float expected = Float.NEGATIVE_INFINITY;
            for (float v : x) {
                expected = Math.max(expected, v);
            }
            assertEquals(expected, VectorMath.max(x, x.length), "trial " + trial); // NaNs compare equal
        }
    }
}
