package dev.tokenkernels.ops.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import jdk.incubator.vector.FloatVector;
import org.junit.jupiter.api.Test;

class VectorMathTest {
    private static final int LANES = FloatVector.SPECIES_PREFERRED.length();

    private static float[] exp(float[] x) {
        float[] out = new float[x.length];
        for (int i = 0; i < x.length; i += LANES) {
            VectorMath.expNonPositive(FloatVector.fromArray(FloatVector.SPECIES_PREFERRED, x, i))
                    .intoArray(out, i);
        }
        return out;
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
        float[] y = exp(x);
        double worst = 0;
        for (int i = 0; i < x.length; i++) {
            double exact = Math.exp(x[i]);
            double ulps = Math.abs(y[i] - exact) / Math.ulp((float) exact);
            worst = Math.max(worst, ulps);
        }
        assertTrue(worst <= 2, "worst error " + worst + " ulp");
    }

    @Test
    void underflowIsZeroAndNaNStaysNaN() {
        float[] x = new float[LANES];
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
}
