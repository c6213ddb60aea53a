package dev.tokenkernels.cuda;

import java.lang.foreign.MemorySegment;
import java.util.Map;

/**
 * How a {@link CudaKernelBackend} turns a kernel source into a loaded driver module: NVRTC and
 * {@code cuModuleLoadData} on a GPU, the host library of {@link EmuModuleBuilder} and
 * {@code cuModuleLoad} on {@code cuda-emu}. Everything after loading is shared.
 */
interface ModuleLoader {

    /** Compiles (or takes from the cache) and loads {@code source}. */
    Loaded load(CudaDriver driver, KernelSource source);

    /** One line on the compiler, for the backend's description. */
    String describe();

    /** The same loader over another cache (an empty one times a cold compile). */
    ModuleLoader withCache(KernelCache cache);

    /**
     * A loaded module.
     *
     * @param handle the driver's CUmodule
     * @param entryParameterSizes parameter byte sizes per entry point from the compiled PTX; empty
     *     when the driver reports them itself (cuFuncGetParamInfo)
     * @param fromCache whether the compiled module came from the disk cache
     * @param millis time to compile or read, and load
     */
    record Loaded(MemorySegment handle, Map<String, int[]> entryParameterSizes, boolean fromCache, double millis) {
        public Loaded {
            entryParameterSizes = Map.copyOf(entryParameterSizes);
        }
    }
}
