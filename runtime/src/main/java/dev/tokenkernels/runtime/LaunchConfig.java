package dev.tokenkernels.runtime;

/** Grid and block sizes of one kernel launch, and its dynamic shared memory in bytes. */
public record LaunchConfig(int gridX, int gridY, int gridZ, int blockX, int blockY, int blockZ, int sharedBytes) {

    /**
     * Checks every grid and block dimension is at least 1, a block has at most 1024 threads and {@code sharedBytes >=
     * 0}.
     */
    public LaunchConfig {
        Checks.require(gridX >= 1 && gridY >= 1 && gridZ >= 1, "grid", "all dimensions >= 1",
                gridX + "x" + gridY + "x" + gridZ);
        Checks.require(blockX >= 1 && blockY >= 1 && blockZ >= 1, "block", "all dimensions >= 1",
                blockX + "x" + blockY + "x" + blockZ);
        Checks.require((long) blockX * blockY * blockZ <= 1024, "block", "at most 1024 threads",
                (long) blockX * blockY * blockZ);
        Checks.require(sharedBytes >= 0, "sharedBytes", ">= 0", sharedBytes);
    }

    /** A 1-D grid of {@code blocks} blocks of {@code threads} threads. */
    public static LaunchConfig of1d(int blocks, int threads, int sharedBytes) {
        return new LaunchConfig(blocks, 1, 1, threads, 1, 1, sharedBytes);
    }
}
