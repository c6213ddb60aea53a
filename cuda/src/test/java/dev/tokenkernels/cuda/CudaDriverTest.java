package dev.tokenkernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.runtime.TokenKernelsException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The driver-API bindings, against the emulator's stand-in for libcuda: the same calls the cuda
 * backend makes on a GPU (device queries, memory, memset, streams, events, modules, errors).
 */
class CudaDriverTest {

    private static CudaDriver driver() {
        EmuModuleBuilder builder = new EmuModuleBuilder(HostCompiler.find().orElseThrow(), KernelCache.standard());
        Path library = builder.driverLibrary();
        @SuppressWarnings("restricted")
        SymbolLookup lookup = SymbolLookup.libraryLookup(library, Arena.global());
        CudaDriver driver = new CudaDriver(library, lookup);
        driver.init();
        return driver;
    }

    @Test
    void deviceQueries() {
        CudaDriver d = driver();
        assertEquals(1, d.deviceCount());
        int device = d.device(0);
        assertTrue(d.deviceName(device).startsWith("cuda-emu"), d.deviceName(device));
        assertEquals(32, d.attribute(device, CudaDriver.CU_DEVICE_ATTRIBUTE_WARP_SIZE));
        assertEquals(1024, d.attribute(device, CudaDriver.CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK));
        assertTrue(d.attribute(device, CudaDriver.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT) >= 1);
        assertEquals(9, d.attribute(device, CudaDriver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR));
        assertTrue(d.totalMemory(device) > 0);
        assertTrue(d.driverVersion() >= 12000);
        d.setCurrentContext(d.retainPrimaryContext(device));
        d.releasePrimaryContext(device);
        TokenKernelsException bad = assertThrows(TokenKernelsException.class, () -> d.device(3));
        assertTrue(bad.getMessage().contains("CUDA_ERROR_INVALID_DEVICE"), bad.getMessage());
    }

    /** The emulator's dynamic shared memory limit is the Java one, in the driver and in every module. */
    @Test
    void theEmulatorsSharedMemoryLimitIsTheJavaOne() throws Throwable {
        CudaDriver d = driver();
        assertEquals(EmuModuleBuilder.MAX_DYNAMIC_SHARED,
                d.attribute(d.device(0), CudaDriver.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN));
        Path module = new EmuModuleBuilder(HostCompiler.find().orElseThrow(), KernelCache.standard())
                .module(KernelSource.load("test/emu_selftest.cu"));
        @SuppressWarnings("restricted")
        SymbolLookup lookup = SymbolLookup.libraryLookup(module, Arena.ofAuto());
        @SuppressWarnings("restricted")
        MethodHandle limit = Linker.nativeLinker().downcallHandle(lookup.find("tk_emu_max_dynamic_shared").orElseThrow(),
                FunctionDescriptor.of(ValueLayout.JAVA_INT));
        assertEquals(EmuModuleBuilder.MAX_DYNAMIC_SHARED, (int) limit.invokeExact());
    }

    @Test
    void memoryCopiesMemsetStreamsAndEvents() {
        CudaDriver d = driver();
        long p = d.malloc(64);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(64);
            d.memset(p, (byte) 0x5a, 64);
            d.copyToHost(host, p, 64);
            for (byte b : host.toArray(ValueLayout.JAVA_BYTE)) {
                assertEquals(0x5a, b);
            }
            MemorySegment values = arena.allocateFrom(ValueLayout.JAVA_INT, 1, 2, 3, 4);
            d.copyToDevice(p + 16, values, 16);
            d.copyToHost(host, p, 64);
            assertArrayEquals(new int[] {1, 2, 3, 4}, host.asSlice(16, 16).toArray(ValueLayout.JAVA_INT));

            MemorySegment stream = d.createStream();
            MemorySegment start = d.createEvent();
            MemorySegment end = d.createEvent();
            d.recordEvent(start, stream);
            d.synchronize(stream);
            d.recordEvent(end, stream);
            assertTrue(d.elapsedMillis(start, end) >= 0);
            d.destroyEvent(start);
            d.destroyEvent(end);
            d.destroyStream(stream);

            TokenKernelsException outside = assertThrows(TokenKernelsException.class, () -> d.copyToHost(host, p + 32, 64));
            assertTrue(outside.getMessage().contains("CUDA_ERROR_INVALID_VALUE")
                    && outside.getMessage().contains("not inside a live device allocation"), outside.getMessage());
        }
        d.free(p);
        TokenKernelsException twice = assertThrows(TokenKernelsException.class, () -> d.free(p));
        assertTrue(twice.getMessage().contains("cuMemFree"), twice.getMessage());
    }

    /**
     * The GPU module path as far as it goes without a GPU: NVRTC compiles for the device's arch
     * and both CUBIN and PTX land in the cache; the emulator then refuses the image with a clear
     * error, as its cuModuleLoadData cannot run device code.
     */
    @Test
    void nvrtcModulesAreCompiledCachedAndHandedToTheDriver(@TempDir Path dir) {
        NvrtcLocator.Result nvrtc = NvrtcLocator.find();
        assertTrue(nvrtc.available(), nvrtc.unavailableReason());
        KernelCache cache = new KernelCache(dir);
        NvrtcModuleLoader loader = new NvrtcModuleLoader(new NvrtcCompiler(nvrtc.nvrtc()), cache, 90);
        KernelSource source = new KernelSource("probe.cu",
                Map.of("probe.cu", "extern \"C\" __global__ void probe(float* x, int n) { if (threadIdx.x < n) x[threadIdx.x] = 1; }"));
        CudaDriver d = driver();
        for (int attempt = 0; attempt < 2; attempt++) { // the second one reads the cache
            TokenKernelsException e = assertThrows(TokenKernelsException.class, () -> loader.load(d, source));
            assertTrue(e.getMessage().contains("cuModuleLoadData") && e.getMessage().contains("cuda-emu cannot run CUBIN"),
                    e.getMessage());
            List<String> entries = dir.toFile().list() == null ? List.of() : List.of(dir.toFile().list());
            assertTrue(entries.stream().anyMatch(f -> f.endsWith(".cubin")) && entries.stream().anyMatch(f -> f.endsWith(".ptx")),
                    entries.toString());
        }
    }
}
