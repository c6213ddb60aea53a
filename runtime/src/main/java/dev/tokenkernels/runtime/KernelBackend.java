package dev.tokenkernels.runtime;

import java.lang.foreign.MemorySegment;

/**
 * A backend that runs the CUDA kernels of {@code kernels/}: {@code cuda} on a GPU, or
 * {@code cuda-emu}, which runs the same sources on the host. Ops use only this interface, so the
 * ops module never depends on the CUDA module.
 */
public interface KernelBackend extends Backend {

    /** Uninitialized device memory of {@code bytes} bytes. */
    DeviceBuffer allocate(long bytes);

    /** Copies all of {@code source} to the start of {@code destination}, which must be at least as large. */
    void copyToDevice(MemorySegment source, DeviceBuffer destination);

    /** Fills the writable {@code destination} from the start of {@code source}, which must be at least as large. */
    void copyToHost(DeviceBuffer source, MemorySegment destination);

    /**
     * Launches {@code kernel} (compiling its source on first use) and waits for it to finish.
     *
     * @throws IllegalArgumentException if {@code args} do not match the kernel's parameters
     * @throws TokenKernelsException if compiling or launching fails, with the compiler log or driver error
     */
    void launch(Kernel kernel, LaunchConfig config, Object... args);
}
