package dev.tokenkernels.cuda;

import static dev.tokenkernels.cuda.EmuDevice.backend;
import static dev.tokenkernels.cuda.EmuDevice.floats;
import static dev.tokenkernels.cuda.EmuDevice.ints;
import static dev.tokenkernels.cuda.EmuDevice.upload;
import static dev.tokenkernels.runtime.KernelParam.i64;
import static dev.tokenkernels.runtime.KernelParam.pointer;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.runtime.DeviceBuffer;
import dev.tokenkernels.runtime.Kernel;
import dev.tokenkernels.runtime.LaunchConfig;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * {@code kernels/include/philox.cuh} against the Random123 known answers of Philox4x32-10
 * (Salmon et al., SC 2011; {@code examples/kat_vectors}), and {@code twin_log} of
 * {@code vector_math.cuh} against {@code Math.log}, on cuda-emu. (That twin_log equals the Java
 * VectorMath.log bit for bit on every input the samplers give it is the conformance suite's TwinLogTest.)
 */
class PhiloxTwinTest {
    private static final String SOURCE = "test/philox_twin.cu";

    @Test
    void philoxMatchesTheKnownAnswers() {
        int[] in = {
            0, 0, 0, 0, 0, 0,
            -1, -1, -1, -1, -1, -1,
            0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
        };
        int[] expected = {
            0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8,
            0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd,
            0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1,
        };
        Kernel k = new Kernel(SOURCE, "philox_cases", pointer("in"), pointer("out"), i64("n"));
        try (DeviceBuffer din = upload(in); DeviceBuffer dout = upload(new int[12])) {
            backend().launch(k, LaunchConfig.of1d(1, 32, 0), din, dout, 3L);
            assertArrayEquals(expected, ints(dout, 12));
        }
    }

    @Test
    void twinLogIsWithinThreeUlpAndKeepsTheSpecialValues() {
        SplittableRandom random = new SplittableRandom(9);
        int n = 1 << 14;
        float[] x = new float[n];
        for (int i = 0; i < n; i++) {
            x[i] = Float.intBitsToFloat(1 + random.nextInt(0x7f7fffff)); // positive finite, subnormals too
        }
        x[0] = 0f;
        x[1] = Float.POSITIVE_INFINITY;
        x[2] = Float.NaN;
        x[3] = 1f;
        x[4] = Float.MIN_VALUE;
        x[5] = 1f - 0x1p-24f;
        Kernel k = new Kernel(SOURCE, "twin_logs", pointer("in"), pointer("out"), i64("n"));
        try (DeviceBuffer din = upload(x); DeviceBuffer dout = upload(new float[n])) {
            backend().launch(k, LaunchConfig.of1d((n + 255) / 256, 256, 0), din, dout, (long) n);
            float[] y = floats(dout, n);
            assertEquals(Float.NEGATIVE_INFINITY, y[0]);
            assertEquals(Float.POSITIVE_INFINITY, y[1]);
            assertTrue(Float.isNaN(y[2]));
            assertEquals(0f, y[3]);
            for (int i = 4; i < n; i++) {
                double exact = Math.log(x[i]);
                double ulps = Math.abs(y[i] - exact) / Math.ulp((float) exact);
                assertTrue(ulps <= 3, "log(" + x[i] + ") = " + y[i] + ", " + ulps + " ulp from " + exact);
            }
        }
    }
}
