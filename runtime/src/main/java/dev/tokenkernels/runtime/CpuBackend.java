package dev.tokenkernels.runtime;

import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.RecursiveAction;

/**
 * The always-available backend: ops run their Vector API code here, with rows split over a
 * fork-join pool.
 *
 * <p>{@link #shared()} uses as many threads as the system property {@code tokenkernels.cpu.threads}
 * says (else the environment variable {@code TOKENKERNELS_CPU_THREADS}), by default all available
 * processors.
 * {@link #withThreads(int)} makes a private backend with its own pool, closed by {@link #close()}.
 * With one thread, work runs on the calling thread and no pool is created.
 */
public final class CpuBackend implements Backend, AutoCloseable {
    /** Environment variable with the thread count of {@link #shared()}. */
    public static final String ENV_THREADS = "TOKENKERNELS_CPU_THREADS";
    /** System property with the thread count of {@link #shared()}; it wins over {@link #ENV_THREADS}. */
    public static final String PROPERTY_THREADS = "tokenkernels.cpu.threads";

    /** Work on rows {@code [from, to)}. */
    @FunctionalInterface
    public interface RowRange {
        /** Processes rows {@code [from, to)}. */
        void run(int from, int to);
    }

    private static final class SharedHolder {
        static final CpuBackend INSTANCE = new CpuBackend(configuredThreads());
    }

    private final int threads;
    private final ForkJoinPool pool;

    private CpuBackend(int threads) {
        this.threads = threads;
        this.pool = threads == 1 ? null : new ForkJoinPool(threads, CpuBackend::newWorker, null, false);
    }

    private static java.util.concurrent.ForkJoinWorkerThread newWorker(ForkJoinPool pool) {
        var worker = ForkJoinPool.defaultForkJoinWorkerThreadFactory.newThread(pool);
        worker.setName("tokenkernels-cpu-" + worker.getPoolIndex());
        worker.setDaemon(true);
        return worker;
    }

    /** The process-wide CPU backend. */
    public static CpuBackend shared() {
        return SharedHolder.INSTANCE;
    }

    /** A CPU backend with its own pool of {@code threads} threads; close it when done. */
    public static CpuBackend withThreads(int threads) {
        Checks.require(threads >= 1, "threads", ">= 1", threads);
        return new CpuBackend(threads);
    }

    static int configuredThreads() {
        String value = System.getProperty(PROPERTY_THREADS);
        String source = PROPERTY_THREADS;
        if (value == null || value.isBlank()) {
            value = System.getenv(ENV_THREADS);
            source = ENV_THREADS;
        }
        if (value == null || value.isBlank()) {
            return Runtime.getRuntime().availableProcessors();
        }
        try {
            int n = Integer.parseInt(value.trim());
            Checks.require(n >= 1, source, "a thread count >= 1", value);
            return n;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(source + ": expected a thread count >= 1, got '" + value + "'", e);
        }
    }

    @Override
    public String name() {
        return "cpu";
    }

    @Override
    public Device device() {
        return Device.CPU;
    }

    /** Number of threads work is split over. */
    public int threads() {
        return threads;
    }

    @Override
    public String description() {
        return "Vector API (" + jdk.incubator.vector.FloatVector.SPECIES_PREFERRED.vectorBitSize()
                + "-bit float vectors), " + threads + " thread" + (threads == 1 ? "" : "s");
    }

    /**
     * Runs {@code body} over rows {@code [0, rows)}, split into ranges of at least {@code grain}
     * rows spread over the pool; returns when all are done. Exceptions from a range propagate.
     */
    public void parallelFor(int rows, int grain, RowRange body) {
        Checks.require(rows >= 0, "rows", ">= 0", rows);
        Checks.require(grain >= 1, "grain", ">= 1", grain);
        if (pool == null || rows <= grain) {
            if (rows > 0) {
                body.run(0, rows);
            }
            return;
        }
        if (pool.isShutdown()) {
            throw new IllegalStateException("this CpuBackend is closed");
        }
        // About four ranges per thread balances rows of uneven cost without much overhead.
        int split = Math.max(grain, rows / (threads * 4));
        pool.invoke(new Ranges(body, 0, rows, split));
    }

    private static final class Ranges extends RecursiveAction {
        private static final long serialVersionUID = 1L;
        private final transient RowRange body;
        private final int from;
        private final int to;
        private final int split;

        Ranges(RowRange body, int from, int to, int split) {
            this.body = body;
            this.from = from;
            this.to = to;
            this.split = split;
        }

        @Override
        protected void compute() {
            if (to - from <= split) {
                body.run(from, to);
                return;
            }
            int mid = (from + to) >>> 1;
            invokeAll(new Ranges(body, from, mid, split), new Ranges(body, mid, to, split));
        }
    }

    /** Shuts the pool down; the shared backend ignores this. */
    @Override
    public void close() {
        if (pool != null && this != SharedHolder.INSTANCE) {
            pool.shutdown();
        }
    }

    @Override
    public String toString() {
        return "CpuBackend[" + threads + " threads]";
    }
}
