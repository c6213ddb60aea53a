package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.TokenKernelsException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import java.util.OptionalInt;

/**
 * Loads kernels on a GPU: NVRTC compiles each source for the device's exact architecture (a CUBIN;
 * if this NVRTC does not know the architecture, PTX for the newest one it knows at or below the
 * device's, which the driver compiles on load) and the result is cached on disk, keyed by the sources, the options,
 * the architecture and the NVRTC version. The PTX is kept with the CUBIN: its {@code .entry}
 * lists are what launches are checked against.
 */
final class NvrtcModuleLoader implements ModuleLoader {
    private final NvrtcCompiler compiler;
    private final KernelCache cache;
    private final int computeCapability;

    NvrtcModuleLoader(NvrtcCompiler compiler, KernelCache cache, int computeCapability) {
        this.compiler = compiler;
        this.cache = cache;
        this.computeCapability = computeCapability;
    }

    @Override
    public Loaded load(CudaDriver driver, KernelSource source) {
        long start = System.nanoTime();
        String arch = "sm_" + computeCapability;
        String key = KernelCache.key("nvrtc", source.fingerprint(), NvrtcCompiler.options(arch).toString(), arch,
                Integer.toString(compiler.nvrtc().version()));
        Optional<Path> cachedPtx = cache.find(key, "ptx");
        Optional<Path> cachedCubin = cache.find(key, "cubin");
        String ptx;
        byte[] image;
        boolean fromCache = cachedPtx.isPresent();
        if (fromCache) {
            ptx = new String(cache.read(cachedPtx.get()), StandardCharsets.UTF_8);
            image = cachedCubin.isPresent() ? cache.read(cachedCubin.get()) : ptxImage(ptx);
        } else {
            NvrtcCompiler.Compiled compiled = compile(source);
            ptx = compiled.ptx();
            if (compiled.cubin() != null) {
                cache.store(key, "cubin", compiled.cubin());
                image = compiled.cubin();
            } else {
                image = ptxImage(ptx);
            }
            cache.store(key, "ptx", ptx.getBytes(StandardCharsets.UTF_8)); // last: it marks the entry complete
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment module = driver.loadModuleData(arena.allocateFrom(java.lang.foreign.ValueLayout.JAVA_BYTE, image));
            return new Loaded(module, PtxEntries.parse(ptx), fromCache, (System.nanoTime() - start) / 1e6);
        }
    }

    /**
     * Compiles {@code source} for this device: a CUBIN for {@code sm_<cc>}, or, when this NVRTC
     * does not know that architecture, PTX for the newest one it knows that the device can run.
     */
    NvrtcCompiler.Compiled compile(KernelSource source) {
        try {
            return compiler.compile(source, "sm_" + computeCapability, List.of());
        } catch (NvrtcCompileException e) {
            int[] supported = compiler.nvrtc().supportedArchitectures();
            if (!rejectsArchitecture(e.result(), computeCapability, supported)) {
                throw e;
            }
            OptionalInt fallback = fallbackArchitecture(computeCapability, supported);
            if (fallback.isEmpty()) {
                throw new TokenKernelsException("NVRTC " + compiler.nvrtc().version() + " cannot compile for this sm_"
                        + computeCapability + " device: the architectures it supports are "
                        + Arrays.toString(supported) + ", none at or below the device's", e);
            }
            // PTX of an older virtual architecture is forward compatible: the driver JIT-compiles it
            // for the device at cuModuleLoadData. A CUBIN of an older sm_XX would not be (it only runs
            // within its major version), hence compute_XX. The newest one keeps the most features.
            return compiler.compile(source, "compute_" + fallback.getAsInt(), List.of());
        }
    }

    /**
     * Whether a compile for {@code sm_<computeCapability>} failed because NVRTC does not support
     * that architecture: NVRTC then answers NVRTC_ERROR_INVALID_OPTION, and the architecture is not
     * among those it lists. Any other failure (a compile error, another bad option) is the caller's.
     */
    static boolean rejectsArchitecture(int result, int computeCapability, int[] supported) {
        return result == Nvrtc.NVRTC_ERROR_INVALID_OPTION
                && Arrays.stream(supported).noneMatch(arch -> arch == computeCapability);
    }

    /** The newest of {@code supported} at or below the device's, or empty if all are newer. */
    static OptionalInt fallbackArchitecture(int computeCapability, int[] supported) {
        return Arrays.stream(supported).filter(arch -> arch <= computeCapability).max();
    }

    private static byte[] ptxImage(String ptx) {
        return (ptx + "\0").getBytes(StandardCharsets.UTF_8); // cuModuleLoadData takes PTX as a C string
    }

    @Override
    public ModuleLoader withCache(KernelCache other) {
        return new NvrtcModuleLoader(compiler, other, computeCapability);
    }

    @Override
    public String describe() {
        return "NVRTC " + compiler.nvrtc().version() + " (" + compiler.nvrtc().library() + ")";
    }
}
