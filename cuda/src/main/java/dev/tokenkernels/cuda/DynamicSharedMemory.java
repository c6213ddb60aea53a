package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.Checks;
import java.lang.foreign.MemorySegment;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The dynamic shared memory of launches on one device. Up to 48 KB any kernel may use; beyond
 * that CUDA refuses the launch unless the function's CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
 * was raised first, and nothing can go past the device's opt-in maximum per block.
 */
final class DynamicSharedMemory {
    /** What every kernel may use without raising its attribute. */
    static final int WITHOUT_OPT_IN = 48 * 1024;

    /** Raises a function's attribute to {@code bytes} (cuFuncSetAttribute). */
    @FunctionalInterface
    interface OptIn {
        void raise(MemorySegment function, String entry, int bytes);
    }

    private final int deviceMaximum;
    private final OptIn optIn;
    /** The attribute as last raised, by function address; it only grows, so a smaller size needs no call. */
    private final Map<Long, Integer> raised = new ConcurrentHashMap<>();

    /**
     * @param deviceMaximum the device's CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
     */
    DynamicSharedMemory(int deviceMaximum, OptIn optIn) {
        this.deviceMaximum = deviceMaximum;
        this.optIn = optIn;
    }

    /**
     * Makes {@code function} ready to launch with {@code bytes} of dynamic shared memory.
     *
     * @throws IllegalArgumentException if {@code bytes} exceeds the device's maximum
     */
    void prepare(MemorySegment function, String entry, int bytes) {
        Checks.require(bytes <= deviceMaximum, "kernel " + entry + " sharedBytes",
                "at most " + deviceMaximum + " bytes of dynamic shared memory (the device's maximum per block)", bytes);
        if (bytes <= WITHOUT_OPT_IN) {
            return;
        }
        // compute holds the key's lock: two launches cannot raise the same function out of order.
        raised.compute(function.address(), (address, current) -> {
            if (current != null && current >= bytes) {
                return current;
            }
            optIn.raise(function, entry, bytes);
            return bytes;
        });
    }
}
