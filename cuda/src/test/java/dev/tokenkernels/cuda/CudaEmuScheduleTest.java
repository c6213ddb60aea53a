package dev.tokenkernels.cuda;

import static dev.tokenkernels.cuda.EmuDevice.backend;
import static dev.tokenkernels.cuda.EmuDevice.floats;
import static dev.tokenkernels.cuda.EmuDevice.upload;
import static dev.tokenkernels.runtime.KernelParam.pointer;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.runtime.DeviceBuffer;
import dev.tokenkernels.runtime.Kernel;
import dev.tokenkernels.runtime.LaunchConfig;
import dev.tokenkernels.runtime.TokenKernelsException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.util.Arrays;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.parallel.Isolated;

/**
 * The emulator's adversarial schedule (TOKENKERNELS_EMU_SCHEDULE=adversarial): the races of
 * {@code kernels/test/emu_schedule.cu} pass unnoticed in the default order and give wrong answers
 * in the adversarial one, and fresh device memory reads as 0xff bytes. The variable is read by every launch, so the test sets it in this
 * process (libc setenv) around its launches; {@link Isolated} keeps other tests from launching then.
 */
@Isolated
class CudaEmuScheduleTest {
    private static final String SOURCE = "test/emu_schedule.cu";
    private static final String VARIABLE = "TOKENKERNELS_EMU_SCHEDULE";

    private static float[] run(String entry, float[] in, int threads, boolean adversarial) throws Throwable {
        Kernel k = new Kernel(SOURCE, entry, pointer("in"), pointer("out"));
        String saved = System.getenv(VARIABLE); // the JVM's copy: the value at start-up
        setenv(VARIABLE, adversarial ? "adversarial" : "default");
        try (DeviceBuffer din = upload(in); DeviceBuffer dout = upload(new float[threads])) {
            backend().launch(k, LaunchConfig.of1d(1, threads, 0), din, dout);
            return floats(dout, threads);
        } finally {
            setenv(VARIABLE, saved == null ? "" : saved);
        }
    }

    @SuppressWarnings("restricted") // the tests run with native access (tk.jvmArgs)
    private static void setenv(String name, String value) throws Throwable {
        Linker linker = Linker.nativeLinker();
        MethodHandle setenv = linker.downcallHandle(linker.defaultLookup().find("setenv").orElseThrow(),
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.ADDRESS, ValueLayout.JAVA_INT));
        try (Arena arena = Arena.ofConfined()) {
            assertEquals(0, (int) setenv.invokeExact(arena.allocateFrom(name), arena.allocateFrom(value), 1));
        }
    }

    private static float[] ramp(int n) {
        float[] in = new float[n];
        for (int i = 0; i < n; i++) {
            in[i] = i % 7 + 1;
        }
        return in;
    }

    @Test
    void aReusedReductionSlotWithoutABarrierIsCaughtOnlyByTheAdversarialSchedule() throws Throwable {
        float[] in = ramp(256);
        float sum = 0;
        for (float v : in) {
            sum += v;
        }
        float[] expected = new float[256];
        Arrays.fill(expected, sum);
        assertArrayEquals(expected, run("reduction_reuse_without_barrier", in, 256, false), "default order hides the race");
        float[] adversarial = run("reduction_reuse_without_barrier", in, 256, true);
        assertFalse(Arrays.equals(expected, adversarial), "the adversarial order must expose the race");
    }

    @Test
    void aHandOffBetweenWarpsWithoutABarrierIsCaughtOnlyByTheAdversarialSchedule() throws Throwable {
        float[] in = {11, 12, 13, 14, 15, 16, 17, 18};
        float[] expected = new float[256];
        for (int t = 0; t < 256; t++) {
            expected[t] = in[(t / 32 + 1) % 8];
        }
        assertArrayEquals(expected, run("handoff_without_barrier", in, 256, false), "default order hides the race");
        assertFalse(Arrays.equals(expected, run("handoff_without_barrier", in, 256, true)),
                "the adversarial order must expose the race");
    }

    @Test
    void freshDeviceMemoryIsPoisonedInTheAdversarialSchedule() throws Throwable {
        String saved = System.getenv(VARIABLE);
        setenv(VARIABLE, "adversarial");
        try (DeviceBuffer fresh = backend().allocate(4L * 100)) {
            float[] values = floats(fresh, 100);
            for (float v : values) {
                assertEquals(0xffffffff, Float.floatToRawIntBits(v), "unwritten device memory reads as 0xff bytes");
            }
        } finally {
            setenv(VARIABLE, saved == null ? "" : saved);
        }
    }

    @Test
    void anIdempotentReductionOverAPartialWarpReadsPoisonInTheAdversarialSchedule() throws Throwable {
        float[] in = ramp(52);
        float[] byDefault = run("partial_warp_max", in, 52, false);
        assertEquals(7.0f, byDefault[40], "default: a missing lane gives the reader's own value, max hides it");
        assertEquals(Float.intBitsToFloat(0x7f7fdead), run("partial_warp_max", in, 52, true)[40],
                "adversarial: a missing lane's value is undefined, shown as a huge value");
    }

    @Test
    void aDivergentBarrierFailsTheLaunchOnlyInTheAdversarialSchedule() throws Throwable {
        float[] in = ramp(256);
        float[] expected = new float[256];
        for (int t = 0; t < 256; t++) {
            expected[t] = in[(t + 128) % 256];
        }
        assertArrayEquals(expected, run("divergent_barrier", in, 256, false), "default: any barrier releases any other");
        TokenKernelsException e = assertThrows(TokenKernelsException.class, () -> run("divergent_barrier", in, 256, true));
        assertTrue(e.getMessage().contains("divergent __syncthreads"), e.getMessage());
    }
}
