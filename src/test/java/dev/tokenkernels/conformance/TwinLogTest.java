package dev.tokenkernels.conformance;

import static dev.tokenkernels.runtime.KernelParam.i64;
import static dev.tokenkernels.runtime.KernelParam.pointer;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.cpu.VectorMath;
import dev.tokenkernels.runtime.Backends;
import dev.tokenkernels.runtime.DeviceBuffer;
import dev.tokenkernels.runtime.Kernel;
import dev.tokenkernels.runtime.KernelBackend;
import dev.tokenkernels.runtime.LaunchConfig;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;
import org.junit.jupiter.api.Test;

/**
 * The twin argument behind bit-identical sampling, tested directly: {@code tk::twin_log}
 * ({@code kernels/include/vector_math.cuh}) on cuda-emu equals {@code VectorMath.log} on the CPU
 * bit for bit on every input the samplers feed it (all 2^23 uniforms {@code (2 m + 1) 2^-24}, and
 * the {@code -log u} of each, whose log is the noise) and on a sweep of positive floats, subnormals
 * included; likewise {@code tk::twin_exp_nonpositive} equals {@code VectorMath.expNonPositive} on a
 * sweep of non-positive floats (the exponential race's class weights). A mismatch is reported with
 * its input and both results' bits.
 */
class TwinLogTest {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final Kernel TWIN_LOGS = new Kernel("test/philox_twin.cu", "twin_logs", pointer("in"),
            pointer("out"), i64("n"));
    private static final Kernel TWIN_EXPS = new Kernel("test/philox_twin.cu", "twin_exps", pointer("in"),
            pointer("out"), i64("n"));
    private static final int CHUNK = 1 << 22;

    @Test
    void twinLogEqualsVectorMathLogOnEveryNoiseInputAndASweepOfFloats() {
        KernelBackend emu = (KernelBackend) Backends.named("cuda-emu");
        int uniforms = 1 << 23;
        float[] u = new float[uniforms];
        for (int m = 0; m < uniforms; m++) {
            u[m] = (2 * m + 1) * 0x1p-24f; // exact
        }
        float[] minusLogU = cpu(TWIN_LOGS, u);
        for (int i = 0; i < uniforms; i++) {
            minusLogU[i] = -minusLogU[i];
        }
        // Every 997th positive finite bit pattern from the smallest subnormal up, and the first 2^16 subnormals.
        int stride = 997;
        int sweepCount = (0x7f7fffff - 1) / stride + 1;
        float[] sweep = new float[sweepCount + (1 << 16)];
        for (int i = 0; i < sweepCount; i++) {
            sweep[i] = Float.intBitsToFloat(1 + i * stride);
        }
        for (int i = 0; i < 1 << 16; i++) {
            sweep[sweepCount + i] = Float.intBitsToFloat(1 + i);
        }
        compare(emu, TWIN_LOGS, "u", u);
        compare(emu, TWIN_LOGS, "-log u", minusLogU);
        compare(emu, TWIN_LOGS, "sweep", sweep);
    }

    /**
     * The skip rule of the samplers' exponential race (TokenSamplerCpu, gumbel_max.cuh) rests on
     * every exponential {@code -log u} being at least 5.9e-8 (their MIN_EXPONENTIAL); all 2^23 are
     * checked, and that the top entry's weight {@code e^0} is exactly 1.
     */
    @Test
    void everyExponentialIsAtLeastTheSkipRulesBound() {
        int uniforms = 1 << 23;
        float[] u = new float[uniforms];
        for (int m = 0; m < uniforms; m++) {
            u[m] = (2 * m + 1) * 0x1p-24f;
        }
        float[] logU = cpu(TWIN_LOGS, u);
        float least = Float.POSITIVE_INFINITY;
        for (float l : logU) {
            least = Math.min(least, -l);
        }
        assertTrue(least >= 5.9e-8f, "least -log u " + least);
        assertEquals(1f, cpu(TWIN_EXPS, new float[] {0f})[0]);
    }

    @Test
    void twinExpEqualsVectorMathExpNonPositiveOnASweepOfNonPositiveFloats() {
        KernelBackend emu = (KernelBackend) Backends.named("cuda-emu");
        // Every 251st bit pattern of the negative floats down to -100 (all magnitudes, subnormals
        // included, and the underflow bound), and the integers and halves down to -100.
        int top = Float.floatToRawIntBits(100f);
        int stride = 251;
        int count = top / stride + 1;
        float[] x = new float[count + 401];
        for (int i = 0; i < count; i++) {
            x[i] = -Float.intBitsToFloat(i * stride);
        }
        for (int i = 0; i <= 400; i++) {
            x[count + i] = -0.25f * i;
        }
        compare(emu, TWIN_EXPS, "exp sweep", x);
    }

    /** The failure this test exists for: one ulp anywhere, e.g. from a contracted fma, must fail. */
    @Test
    void aOneUlpDifferenceFails() {
        float[] x = {0.3f};
        float[] cpu = cpu(TWIN_LOGS, x);
        assertThrows(AssertionError.class,
                () -> assertSameBits("case", x, new float[] {Math.nextUp(cpu[0])}, cpu, 0));
    }

    private static void compare(KernelBackend emu, Kernel kernel, String what, float[] x) {
        float[] cpu = cpu(kernel, x);
        for (int first = 0; first < x.length; first += CHUNK) {
            int n = Math.min(CHUNK, x.length - first);
            float[] gpu = new float[n];
            try (DeviceBuffer in = emu.allocate(4L * n); DeviceBuffer out = emu.allocate(4L * n)) {
                emu.copyToDevice(MemorySegment.ofArray(x).asSlice(4L * first, 4L * n), in);
                emu.launch(kernel, LaunchConfig.of1d((n + 255) / 256, 256, 0), in, out, (long) n);
                emu.copyToHost(out, MemorySegment.ofArray(gpu));
            }
            assertSameBits(what, x, gpu, cpu, first);
        }
    }

    private static void assertSameBits(String what, float[] x, float[] gpu, float[] cpu, int first) {
        for (int i = 0; i < gpu.length; i++) {
            int a = Float.floatToRawIntBits(gpu[i]);
            int b = Float.floatToRawIntBits(cpu[first + i]);
            if (a != b) {
                assertEquals(Integer.toHexString(b), Integer.toHexString(a), what + ": twin(" + x[first + i] + " = 0x"
                        + Integer.toHexString(Float.floatToRawIntBits(x[first + i])) + ") = " + gpu[i] + ", VectorMath = "
                        + cpu[first + i]);
            }
        }
    }

    /**
     * The Java twin of {@code kernel} ({@code VectorMath.log} or {@code expNonPositive}) of every
     * element (a padded tail so that the last vector is whole).
     */
    private static float[] cpu(Kernel kernel, float[] x) {
        int lanes = F.length();
        float[] padded = Arrays.copyOf(x, (x.length + lanes - 1) / lanes * lanes);
        for (int i = x.length; i < padded.length; i++) {
            padded[i] = kernel == TWIN_LOGS ? 1f : 0f;
        }
        for (int i = 0; i < padded.length; i += lanes) {
            FloatVector v = FloatVector.fromArray(F, padded, i);
            (kernel == TWIN_LOGS ? VectorMath.log(v) : VectorMath.expNonPositive(v)).intoArray(padded, i);
        }
        return x.length == padded.length ? padded : Arrays.copyOf(padded, x.length);
    }
}
