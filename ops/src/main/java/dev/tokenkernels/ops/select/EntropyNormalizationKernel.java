package dev.tokenkernels.ops.select;

import static dev.tokenkernels.runtime.KernelParam.f32;
import static dev.tokenkernels.runtime.KernelParam.i32;
import static dev.tokenkernels.runtime.KernelParam.i64;
import static dev.tokenkernels.runtime.KernelParam.pointer;

import dev.tokenkernels.runtime.DeviceBuffer;
import dev.tokenkernels.runtime.Kernel;
import dev.tokenkernels.runtime.KernelBackend;
import dev.tokenkernels.runtime.LaunchConfig;
import java.lang.foreign.MemorySegment;

/**
 * {@link EntropyNormalization} on a {@link KernelBackend}: {@code kernels/select/entropy_normalization.cu},
 * the statistics kernel (per-block partials, combined on the host in float64) then the output
 * kernel. Tensors are host tensors for now: entropies and mask are copied in for each pass.
 */
final class EntropyNormalizationKernel {
    static final String SOURCE = "select/entropy_normalization.cu";
    static final int THREADS = 256;
    private static final Kernel STATS = new Kernel(SOURCE, "entropy_stats", pointer("entropy"), pointer("mask"),
            i32("has_mask"), i64("n"), f32("pivot_entropy"), f32("pivot"), pointer("partials"));
    private static final Kernel NORMALIZE = new Kernel(SOURCE, "entropy_normalize", pointer("entropy"),
            pointer("mask"), i32("has_mask"), i64("n"), f32("pivot_entropy"), f32("pivot"), f32("s"), f32("p"),
            f32("negative_scale"), pointer("out"));

    private EntropyNormalizationKernel() {
    }

    static int blocks(int n) {
        return (int) Math.max(1, Math.min(TokenSelectionKernel.MAX_BLOCKS, ((long) n + THREADS * 4L - 1) / (THREADS * 4L)));
    }

    static EntropyNormalization.Stats stats(KernelBackend gpu, EntropyNormalization.Job job) {
        int n = job.n();
        int blocks = blocks(n);
        boolean hasMask = job.mask() != null;
        float[] partials = new float[3 * blocks];
        try (DeviceBuffer entropy = gpu.allocate(4L * n);
             DeviceBuffer mask = gpu.allocate(hasMask ? n : 1);
             DeviceBuffer out = gpu.allocate(4L * partials.length)) {
            gpu.copyToDevice(job.entropy().segment(), entropy);
            if (hasMask) {
                gpu.copyToDevice(job.mask().segment(), mask);
            }
            gpu.launch(STATS, LaunchConfig.of1d(blocks, THREADS, 0), entropy, mask, hasMask ? 1 : 0, (long) n,
                    job.pivotEntropy(), job.pivot(), out);
            gpu.copyToHost(out, MemorySegment.ofArray(partials));
        }
        double sum = 0;
        float hi = Float.NEGATIVE_INFINITY;
        float lo = Float.POSITIVE_INFINITY;
        for (int b = 0; b < blocks; b++) {
            sum += partials[3 * b];
            hi = Math.max(hi, partials[3 * b + 1]);
            lo = Math.min(lo, partials[3 * b + 2]);
        }
        return new EntropyNormalization.Stats(sum, hi, lo);
    }

    static void normalize(KernelBackend gpu, EntropyNormalization.Job job, float s, float p, float q) {
        int n = job.n();
        boolean hasMask = job.mask() != null;
        try (DeviceBuffer entropy = gpu.allocate(4L * n);
             DeviceBuffer mask = gpu.allocate(hasMask ? n : 1);
             DeviceBuffer out = gpu.allocate(4L * n)) {
            gpu.copyToDevice(job.entropy().segment(), entropy);
            if (hasMask) {
                gpu.copyToDevice(job.mask().segment(), mask);
            }
            gpu.launch(NORMALIZE, LaunchConfig.of1d(blocks(n), THREADS, 0), entropy, mask, hasMask ? 1 : 0, (long) n,
                    job.pivotEntropy(), job.pivot(), s, p, job.releasedSigns() ? -q : q, out);
            gpu.copyToHost(out, job.out().segment());
        }
    }
}
