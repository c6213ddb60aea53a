package dev.tokenkernels.cuda;

import static dev.tokenkernels.cuda.EmuDevice.backend;
import static dev.tokenkernels.cuda.EmuDevice.floats;
import static dev.tokenkernels.cuda.EmuDevice.upload;
import static dev.tokenkernels.runtime.KernelParam.pointer;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.runtime.DeviceBuffer;
import dev.tokenkernels.runtime.Kernel;
import dev.tokenkernels.runtime.LaunchConfig;
import dev.tokenkernels.runtime.TokenKernelsException;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * A GPU refuses a launch with more threads per block than the kernel's {@code __launch_bounds__};
 * cuda-emu does too ({@code kernels/test/emu_launch_bounds.cu}), so a launcher that outgrows its
 * kernel's bound fails in the tests, not first on a GPU.
 */
class CudaEmuLaunchBoundsTest {
    private static final String SOURCE = "test/emu_launch_bounds.cu";

    private static float[] run(String entry, int threads) {
        float[] in = new float[threads];
        for (int i = 0; i < threads; i++) {
            in[i] = i + 1;
        }
        Kernel k = new Kernel(SOURCE, entry, pointer("in"), pointer("out"));
        try (DeviceBuffer din = upload(in); DeviceBuffer dout = upload(new float[threads])) {
            backend().launch(k, LaunchConfig.of1d(1, threads, 0), din, dout);
            return floats(dout, threads);
        }
    }

    private static float[] scaled(int threads, float factor) {
        float[] out = new float[threads];
        for (int i = 0; i < threads; i++) {
            out[i] = factor * (i + 1);
        }
        return out;
    }

    @Test
    void launchesWithinTheBoundRun() {
        assertArrayEquals(scaled(64, 2f), run("doubled_named_bound", 64));
        assertArrayEquals(scaled(128, 3f), run("tripled_literal_bound", 128));
    }

    @Test
    void launchesAboveTheBoundFailNamingIt() {
        TokenKernelsException named = assertThrows(TokenKernelsException.class, () -> run("doubled_named_bound", 96));
        assertTrue(named.getMessage().contains("__launch_bounds__(64)"), named.getMessage());
        TokenKernelsException literal = assertThrows(TokenKernelsException.class,
                () -> run("tripled_literal_bound", 256));
        assertTrue(literal.getMessage().contains("__launch_bounds__(128)"), literal.getMessage());
    }

    @Test
    void theModuleBuilderReadsEachBoundAsWritten() {
        String text = "extern \"C\" __global__ void __launch_bounds__(kThreads, kBlocks) a(int x) {}\n"
                + "extern \"C\" __global__ void __launch_bounds__( 256 ) b(int x) {}\n"
                + "extern \"C\" __global__ void c(int x) {}\n";
        assertEquals(Map.of("a", "kThreads", "b", "256", "c", "0"), EmuModuleBuilder.launchBounds(text));
        assertEquals(List.of("a", "b", "c"), EmuModuleBuilder.entryPoints(text));
        // parentheses inside the bound (a review found the first regex stopping at the first ')')
        String nested = "extern \"C\" __global__ void __launch_bounds__((kWarps) * 32) reduce(int x) {}\n"
                + "extern \"C\" __global__ void __launch_bounds__(TK_THREADS(4), 1) scan(int x) {}\n";
        assertEquals(Map.of("reduce", "(kWarps) * 32", "scan", "TK_THREADS(4)"), EmuModuleBuilder.launchBounds(nested));
    }
}
