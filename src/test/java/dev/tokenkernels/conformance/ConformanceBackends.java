package dev.tokenkernels.conformance;

import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Backends;
import dev.tokenkernels.runtime.CpuBackend;
import java.util.ArrayList;
import java.util.List;

/**
 * The backends every op is checked on: the CPU with one thread and with two (so both the
 * sequential and the split row paths run), {@code cuda-emu} (required: the CUDA kernels must run
 * in every test run, so a machine where it cannot start fails here with the reason), and every
 * other backend that starts on this machine ({@code cuda} on a GPU).
 */
final class ConformanceBackends {
    private static final CpuBackend ONE_THREAD = CpuBackend.withThreads(1);
    private static final CpuBackend TWO_THREADS = CpuBackend.withThreads(2);

    private ConformanceBackends() {
    }

    static List<Backend> all() {
        List<Backend> backends = new ArrayList<>(List.of(ONE_THREAD, TWO_THREADS, Backends.named("cuda-emu")));
        if (Boolean.getBoolean("tokenkernels.requireCuda")) {
            backends.add(Backends.named("cuda")); // -Pgpu: a GPU machine that cannot start cuda fails here
        }
        for (Backends.Status status : Backends.status()) {
            if (status.available() && !(status.backend() instanceof CpuBackend) && !backends.contains(status.backend())) {
                backends.add(status.backend());
            }
        }
        return backends;
    }
}
