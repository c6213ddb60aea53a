package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.BackendProvider;
import dev.tokenkernels.runtime.BackendUnavailableException;
import java.lang.foreign.Arena;
import java.lang.foreign.SymbolLookup;
import java.nio.file.Path;

/**
 * The {@code cuda-emu} backend: the kernels of {@code kernels/} compiled for the host and run by
 * the emulator of {@code kernels/emu/}, behind a stand-in for libcuda, through the same
 * {@link CudaKernelBackend} as a GPU. Available when a host C++ compiler is found; the first start
 * on a machine builds the stand-in library into the kernel cache.
 *
 * <p>{@code TOKENKERNELS_EMU_THREADS} sets how many host threads run blocks (default: all cores);
 * a launch uses at most 16384 / (threads per block) of them, as each needs a fiber stack per thread.
 */
@SuppressWarnings("restricted") // loads the emulator's driver library with FFM
public final class CudaEmuBackendProvider implements BackendProvider {

    /** For {@link java.util.ServiceLoader}; the backend starts in {@link #start()}. */
    public CudaEmuBackendProvider() {
    }

    @Override
    public String name() {
        return "cuda-emu";
    }

    @Override
    public Backend start() {
        HostCompiler compiler = HostCompiler.find()
                .orElseThrow(() -> new BackendUnavailableException(name(), HostCompiler.notFoundReason()));
        EmuModuleBuilder builder = new EmuModuleBuilder(compiler, KernelCache.standard());
        Path library = builder.driverLibrary();
        CudaDriver driver = new CudaDriver(library, SymbolLookup.libraryLookup(library, Arena.global()));
        return new CudaKernelBackend(name(), driver, new EmuModuleLoader(builder));
    }
}
