package dev.tokenkernels.runtime;

/** Memory owned by a {@link KernelBackend}; closing frees it, and use after close is an error. */
public interface DeviceBuffer extends AutoCloseable {

    /** The device address, valid until {@link #close()}. */
    long address();

    /** Size of the allocation in bytes. */
    long byteSize();

    @Override
    void close();
}
