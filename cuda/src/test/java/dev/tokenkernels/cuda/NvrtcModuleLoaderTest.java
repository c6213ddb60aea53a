package dev.tokenkernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.runtime.TokenKernelsException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.OptionalInt;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Which architecture the GPU loader compiles for, decided without a GPU. */
class NvrtcModuleLoaderTest {
    private static final int[] SUPPORTED = {75, 80, 86, 89, 90, 100, 120};
    private static final KernelSource PROBE = new KernelSource("probe.cu",
            Map.of("probe.cu", "extern \"C\" __global__ void probe(float* x) { x[threadIdx.x] = 1; }"));

    private static NvrtcModuleLoader loader(Path cache, int computeCapability) {
        NvrtcLocator.Result nvrtc = NvrtcLocator.find();
        assertTrue(nvrtc.available(), nvrtc.unavailableReason());
        return new NvrtcModuleLoader(new NvrtcCompiler(nvrtc.nvrtc()), new KernelCache(cache), computeCapability);
    }

    @Test
    void onlyAnInvalidOptionForAnUnlistedArchitectureIsARejectedArchitecture() {
        assertTrue(NvrtcModuleLoader.rejectsArchitecture(Nvrtc.NVRTC_ERROR_INVALID_OPTION, 130, SUPPORTED));
        assertFalse(NvrtcModuleLoader.rejectsArchitecture(Nvrtc.NVRTC_ERROR_INVALID_OPTION, 90, SUPPORTED),
                "a listed architecture: another option was invalid");
        assertFalse(NvrtcModuleLoader.rejectsArchitecture(6, 130, SUPPORTED), "NVRTC_ERROR_COMPILATION is a source error");
    }

    @Test
    void theFallbackIsTheNewestArchitectureTheDeviceCanRun() {
        assertEquals(OptionalInt.of(120), NvrtcModuleLoader.fallbackArchitecture(130, SUPPORTED));
        assertEquals(OptionalInt.of(100), NvrtcModuleLoader.fallbackArchitecture(110, SUPPORTED), "never a newer one");
        assertEquals(OptionalInt.of(90), NvrtcModuleLoader.fallbackArchitecture(90, SUPPORTED));
        assertEquals(OptionalInt.empty(), NvrtcModuleLoader.fallbackArchitecture(70, SUPPORTED));
    }

    @Test
    void thisNvrtcListsItsArchitectures() {
        int[] supported = NvrtcLocator.find().nvrtc().supportedArchitectures();
        assertTrue(Arrays.stream(supported).anyMatch(a -> a == 90), Arrays.toString(supported));
        assertTrue(Arrays.stream(supported).allMatch(a -> a >= 50 && a < 1000), Arrays.toString(supported));
    }

    @Test
    void aDeviceNewerThanNvrtcGetsPtxForTheNewestKnownArchitecture(@TempDir Path dir) {
        int[] supported = NvrtcLocator.find().nvrtc().supportedArchitectures();
        int newest = Arrays.stream(supported).max().orElseThrow();
        NvrtcCompiler.Compiled c = loader(dir, 999).compile(PROBE);
        assertEquals("compute_" + newest, c.arch());
        assertNull(c.cubin(), "PTX only: the driver compiles it for the device");
        assertTrue(c.ptx().contains(".target sm_" + newest), c.ptx());
    }

    @Test
    void aSourceErrorIsReportedAsItIsNotRetriedForAnotherArchitecture(@TempDir Path dir) {
        KernelSource bad = new KernelSource("bad.cu", Map.of("bad.cu", "__global__ void k() { undeclared_name = 1; }"));
        NvrtcCompileException e = assertThrows(NvrtcCompileException.class, () -> loader(dir, 90).compile(bad));
        assertTrue(e.getMessage().contains("--gpu-architecture=sm_90") && e.log().contains("undeclared_name"),
                e.getMessage());
    }

    @Test
    void aDeviceOlderThanEveryArchitectureIsAClearError(@TempDir Path dir) {
        TokenKernelsException e = assertThrows(TokenKernelsException.class, () -> loader(dir, 10).compile(PROBE));
        assertTrue(e.getMessage().contains("cannot compile for this sm_10 device"), e.getMessage());
    }
}
