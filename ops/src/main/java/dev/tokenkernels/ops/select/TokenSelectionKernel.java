package dev.tokenkernels.ops.select;

import static dev.tokenkernels.runtime.KernelParam.i32;
import static dev.tokenkernels.runtime.KernelParam.i64;
import static dev.tokenkernels.runtime.KernelParam.pointer;

import dev.tokenkernels.runtime.DeviceBuffer;
import dev.tokenkernels.runtime.Kernel;
import dev.tokenkernels.runtime.KernelBackend;
import dev.tokenkernels.runtime.LaunchConfig;
import dev.tokenkernels.runtime.Tensor;
import dev.tokenkernels.runtime.TokenKernelsException;
import java.lang.foreign.MemorySegment;

/**
 * {@link TokenSelection} on a {@link KernelBackend}: {@code kernels/select/token_selection.cu}.
 * Radix select with the state on the device (a histogram and a one-block pick per 8-bit digit,
 * the key's 4 digits then the index's), then one read of the 20-byte state; the mask kernel when
 * a mask is asked for. Tensors are host tensors for now: scores and mask go in, the mask comes out.
 */
final class TokenSelectionKernel {
    static final String SOURCE = "select/token_selection.cu";
    static final int THREADS = 256;
    /** Enough blocks to fill a large GPU; each sweeps a grid-stride share of the entries. */
    static final int MAX_BLOCKS = 1024;
    private static final Kernel HISTOGRAM = new Kernel(SOURCE, "select_histogram", pointer("scores"),
            pointer("mask"), i32("has_mask"), i64("n"), i32("largest"), i32("index_pass"), i32("shift"),
            pointer("state"), pointer("histogram"));
    private static final Kernel PICK = new Kernel(SOURCE, "select_pick", pointer("state"), pointer("histogram"),
            i32("index_pass"), i32("shift"));
    private static final Kernel MASK = new Kernel(SOURCE, "select_mask", pointer("scores"), pointer("mask"),
            i32("has_mask"), i64("n"), i32("largest"), i32("mode"), i32("key_selected"), i64("selected"),
            pointer("out"));

    private TokenSelectionKernel() {
    }

    static long run(KernelBackend gpu, TokenSelection.Job job, TokenSelection.MaskMode mode, Tensor out) {
        int n = job.n();
        boolean hasMask = job.mask() != null;
        int largest = job.largest() ? 1 : 0;
        int blocks = (int) Math.max(1, Math.min(MAX_BLOCKS, ((long) n + THREADS * 8L - 1) / (THREADS * 8L)));
        LaunchConfig grid = LaunchConfig.of1d(blocks, THREADS, 0);
        try (DeviceBuffer scores = gpu.allocate(4L * n);
             DeviceBuffer mask = gpu.allocate(hasMask ? n : 1);
             DeviceBuffer state = gpu.allocate(4L * 5);
             DeviceBuffer histogram = gpu.allocate(4L * 256)) {
            gpu.copyToDevice(job.scores().segment(), scores);
            if (hasMask) {
                gpu.copyToDevice(job.mask().segment(), mask);
            }
            gpu.copyToDevice(MemorySegment.ofArray(new int[] {0, 0, 0, 0, (int) job.rank()}), state);
            gpu.copyToDevice(MemorySegment.ofArray(new int[256]), histogram);
            for (int shift = 24; shift >= 0; shift -= 8) {
                gpu.launch(HISTOGRAM, grid, scores, mask, hasMask ? 1 : 0, (long) n, largest, 0, shift, state, histogram);
                gpu.launch(PICK, LaunchConfig.of1d(1, 256, 0), state, histogram, 0, shift);
            }
            int indexBits = 32 - Integer.numberOfLeadingZeros(n - 1);
            for (int shift = (indexBits + 7) / 8 * 8 - 8; shift >= 0; shift -= 8) {
                gpu.launch(HISTOGRAM, grid, scores, mask, hasMask ? 1 : 0, (long) n, largest, 1, shift, state, histogram);
                gpu.launch(PICK, LaunchConfig.of1d(1, 256, 0), state, histogram, 1, shift);
            }
            int[] found = new int[5];
            gpu.copyToHost(state, MemorySegment.ofArray(found));
            int selected = found[2];
            int key = found[0];
            int expected = TokenSelectionCpu.sortableKey(Float.floatToRawIntBits(job.scores().getFloat(
                    Math.max(0, Math.min(n - 1, selected)))));
            expected = (job.largest() ? ~expected : expected) ^ Integer.MIN_VALUE;
            if (selected < 0 || selected >= n || expected != key || found[4] != 1) {
                throw new TokenKernelsException("token selection on " + gpu.name() + " ended in an inconsistent state "
                        + "(index " + selected + ", key " + Integer.toHexString(key) + ", residual rank " + found[4]
                        + "): a kernel bug, please report it");
            }
            if (mode != null) {
                try (DeviceBuffer bytes = gpu.allocate(n)) {
                    gpu.launch(MASK, grid, scores, mask, hasMask ? 1 : 0, (long) n, largest,
                            mode == TokenSelection.MaskMode.UP_TO ? 0 : 1, key, (long) selected, bytes);
                    gpu.copyToHost(bytes, out.segment());
                }
            }
            return selected;
        }
    }
}
