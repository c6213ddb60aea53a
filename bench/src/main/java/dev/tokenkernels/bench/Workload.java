package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.Backend;

/**
 * One op at one shape, as the report measures it: prepared once, run on each backend and as the
 * scalar baseline. {@link #bytes()} is the traffic the op cannot avoid (inputs read once, outputs
 * written once), which turns a time into GB/s.
 */
interface Workload extends AutoCloseable {

    /** The op's name, as in ops/ and kernels/. */
    String op();

    /** E.g. "4096x32000". */
    String shape();

    String dtype();

    long bytes();

    void run(Backend backend);

    /** Whether {@link #runScalar()} exists for this op. */
    default boolean hasScalar() {
        return true;
    }

    /** The scalar Java baseline; ops without one (see their class doc) say so in {@link #hasScalar()}. */
    default void runScalar() {
        throw new UnsupportedOperationException(op() + " has no scalar baseline");
    }

    @Override
    void close();
}
