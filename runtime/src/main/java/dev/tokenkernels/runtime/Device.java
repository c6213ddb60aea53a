package dev.tokenkernels.runtime;

import java.util.Objects;

/**
 * Where a tensor's storage lives: a backend name and a device index. Host memory is
 * {@link #CPU}; device backends (for example {@code cuda}, {@code cuda-emu}) own their memory.
 */
public record Device(String backend, int index) {

    /** Host memory, the home of every tensor created from Java arrays, buffers or segments. */
    public static final Device CPU = new Device("cpu", 0);

    /** Checks {@code backend} is not null and {@code index >= 0}. */
    public Device {
        Objects.requireNonNull(backend, "backend");
        if (index < 0) {
            throw new IllegalArgumentException("index: expected >= 0, got " + index);
        }
    }

    /** Whether this is host memory, {@link #CPU}. */
    public boolean isHost() {
        return equals(CPU);
    }

    @Override
    public String toString() {
        return index == 0 ? backend : backend + ":" + index;
    }
}
