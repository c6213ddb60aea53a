package dev.tokenkernels.cuda;

import static dev.tokenkernels.cuda.EmuDevice.backend;
import static dev.tokenkernels.cuda.EmuDevice.floats;
import static dev.tokenkernels.cuda.EmuDevice.shorts;
import static dev.tokenkernels.cuda.EmuDevice.upload;
import static dev.tokenkernels.runtime.KernelParam.i32;
import static dev.tokenkernels.runtime.KernelParam.i64;
import static dev.tokenkernels.runtime.KernelParam.pointer;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.DeviceBuffer;
import dev.tokenkernels.runtime.Kernel;
import dev.tokenkernels.runtime.LaunchConfig;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * {@code tk::FloatRow} of {@code kernels/include/tk_numeric.cuh}, through which the kernels store
 * F16 and BF16 gradients, rounds bit for bit as the CPU backend does ({@code Float.floatToFloat16},
 * {@code DType.floatToBf16}), on cuda-emu: every half value and the midpoints between neighbours
 * (ties to even), halves' subnormals and overflow threshold, and random bits (NaN payloads too:
 * a NaN must stay a NaN of its sign in F16, whose NaN bits Java itself does not fix).
 */
class FloatRowTest {
    private static final Kernel STORES = new Kernel("test/float_row.cu", "float_row_stores", pointer("in"),
            pointer("out"), i32("dtype"), i64("n"));

    @Test
    void storesRoundAsJavaDoes() {
        SplittableRandom random = new SplittableRandom(12);
        int n = 65536 + 40000;
        float[] in = new float[n];
        for (int i = 0; i < 65536; i++) {
            in[i] = Float.float16ToFloat((short) i);
        }
        for (int i = 65536; i < n; i++) {
            in[i] = switch (i % 5) {
                case 0 -> Float.intBitsToFloat(random.nextInt());
                case 1 -> (float) (random.nextDouble() - 0.5) * 1e-4f;
                case 2 -> (float) (random.nextDouble() - 0.5) * 140000f;
                case 3 -> { // midway between adjacent halves
                    short h = (short) random.nextInt(0x7bff);
                    yield (Float.float16ToFloat(h) + Float.float16ToFloat((short) (h + 1))) / 2;
                }
                default -> Float.intBitsToFloat((random.nextInt(0x10000) << 16) | 0x8000); // bf16 ties
            };
        }
        in[65536] = 65520f; // half MAX_VALUE + 1/2 ulp: infinity
        in[65537] = Math.nextDown(65520f);
        in[65538] = 0x1p-25f; // half the least half subnormal: zero
        in[65539] = Math.nextUp(0x1p-25f);
        try (DeviceBuffer din = upload(in); DeviceBuffer half = backend().allocate(2L * n);
             DeviceBuffer bf16 = backend().allocate(2L * n); DeviceBuffer f32 = upload(new float[n])) {
            LaunchConfig grid = LaunchConfig.of1d((n + 255) / 256, 256, 0);
            backend().launch(STORES, grid, din, half, 1, (long) n);
            backend().launch(STORES, grid, din, bf16, 2, (long) n);
            backend().launch(STORES, grid, din, f32, 0, (long) n);
            short[] halfBits = shorts(half, n);
            short[] bf16Bits = shorts(bf16, n);
            float[] same = floats(f32, n);
            for (int i = 0; i < n; i++) {
                if (Float.isNaN(in[i])) {
                    assertTrue(Float.isNaN(Float.float16ToFloat(halfBits[i])), "f16 of a NaN is a NaN");
                    assertEquals(Float.floatToRawIntBits(in[i]) < 0, halfBits[i] < 0, "f16 of a NaN keeps its sign");
                } else {
                    assertEquals(Float.floatToFloat16(in[i]), halfBits[i], "f16 of " + in[i]);
                }
                assertEquals(DType.floatToBf16(in[i]), bf16Bits[i], "bf16 of " + Integer.toHexString(Float.floatToRawIntBits(in[i])));
                assertEquals(Float.floatToRawIntBits(in[i]), Float.floatToRawIntBits(same[i]), "f32 of " + in[i]);
            }
        }
    }
}
