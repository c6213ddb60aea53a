package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.TokenKernelsException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.Optional;

/**
 * Loads kernels on a GPU: NVRTC compiles each source for the device's exact architecture (a CUBIN;
 * if this NVRTC does not know the architecture yet, PTX for the newest one it knows, which the
 * driver compiles on load) and the result is cached on disk, keyed by the sources, the options,
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
            NvrtcCompiler.Compiled compiled;
            try {
                compiled = compiler.compile(source, arch, List.of());
            } catch (TokenKernelsException e) {
                if (!e.getMessage().contains("gpu-architecture")) {
                    throw e;
                }
                // A device newer than this NVRTC: PTX for the newest architecture it knows.
                compiled = compiler.compile(source, "compute_90", List.of());
            }
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
