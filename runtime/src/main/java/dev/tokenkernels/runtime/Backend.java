package dev.tokenkernels.runtime;

/**
 * Something that runs ops: the Vector API {@link CpuBackend}, or a {@link KernelBackend} that
 * launches the CUDA kernels of {@code kernels/} (on a GPU, or on the CPU through {@code cuda-emu}).
 * Backends are found by {@link Backends}; each op decides how it runs on each kind.
 */
public interface Backend {

    /** The name used by {@code TOKENKERNELS_BACKEND} and {@code tokenkernels info}, e.g. "cpu". */
    String name();

    /** The device this backend computes on; its tensors (if any) live there. */
    Device device();

    /** One line for {@code tokenkernels info}: threads, device name, compiler and the like. */
    String description();
}
