package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.BackendProvider;
import dev.tokenkernels.runtime.BackendUnavailableException;

/**
 * The {@code cuda} backend. Not written yet: the FFM driver-API bindings, NVRTC compilation and
 * launch are the work of issue 3, so this provider always reports itself unavailable with that
 * reason instead of pretending to run anything.
 */
public final class CudaBackendProvider implements BackendProvider {

    @Override
    public String name() {
        return "cuda";
    }

    @Override
    public Backend start() {
        throw new BackendUnavailableException(name(),
                "not implemented yet (FFM driver-API bindings and NVRTC compilation are still to be written)");
    }
}
