package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.BackendProvider;
import dev.tokenkernels.runtime.BackendUnavailableException;
import dev.tokenkernels.runtime.TokenKernelsException;
import java.lang.foreign.Arena;
import java.lang.foreign.SymbolLookup;
import java.nio.file.Path;

/**
 * The {@code cuda} backend: the kernels of {@code kernels/} compiled by NVRTC for the GPU's
 * architecture and launched through the driver API, all through FFM. Available when libcuda.so.1
 * loads, a device exists and NVRTC is found ({@link NvrtcLocator}); otherwise it reports which of
 * these is missing.
 */
@SuppressWarnings("restricted") // loads libcuda with FFM
public final class CudaBackendProvider implements BackendProvider {

    /** For {@link java.util.ServiceLoader}; the backend starts in {@link #start()}. */
    public CudaBackendProvider() {
    }

    @Override
    public String name() {
        return "cuda";
    }

    @Override
    public Backend start() {
        SymbolLookup libcuda;
        try {
            libcuda = SymbolLookup.libraryLookup("libcuda.so.1", Arena.global());
        } catch (IllegalArgumentException e) {
            throw new BackendUnavailableException(name(), "libcuda.so.1 does not load (no NVIDIA driver on this machine)");
        }
        NvrtcLocator.Result nvrtc = NvrtcLocator.find();
        if (!nvrtc.available()) {
            throw new BackendUnavailableException(name(), "NVRTC: " + nvrtc.unavailableReason());
        }
        CudaDriver driver = new CudaDriver(Path.of("libcuda.so.1"), libcuda);
        try {
            driver.init();
            if (driver.deviceCount() < 1) {
                throw new BackendUnavailableException(name(), "the NVIDIA driver reports no CUDA device");
            }
            int device = driver.device(0);
            int cc = 10 * driver.attribute(device, CudaDriver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
                    + driver.attribute(device, CudaDriver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
            return new CudaKernelBackend(name(), driver,
                    new NvrtcModuleLoader(new NvrtcCompiler(nvrtc.nvrtc()), KernelCache.standard(), cc));
        } catch (TokenKernelsException e) {
            throw new BackendUnavailableException(name(), e.getMessage());
        }
    }
}
