package dev.tokenkernels.ops.loss;

import static dev.tokenkernels.runtime.KernelParam.f32;
import static dev.tokenkernels.runtime.KernelParam.i32;
import static dev.tokenkernels.runtime.KernelParam.i64;
import static dev.tokenkernels.runtime.KernelParam.pointer;

import dev.tokenkernels.runtime.DeviceBuffer;
import dev.tokenkernels.runtime.Kernel;
import dev.tokenkernels.runtime.KernelBackend;
import dev.tokenkernels.runtime.LaunchConfig;
import java.lang.foreign.MemorySegment;

/** {@link ProxyDistribution} on a {@link KernelBackend}: {@code kernels/loss/proxy_distribution.cu}, a block per row. */
final class ProxyDistributionKernel {
    static final String SOURCE = "loss/proxy_distribution.cu";
    static final int THREADS = 256;
    private static final Kernel PROXY = new Kernel(SOURCE, "proxy_distribution", pointer("logits"), i32("dtype"),
            pointer("targets"), pointer("log_prob"), pointer("kept_lse"), pointer("kept_count"), i64("vocab"),
            f32("inv_t"), f32("log_threshold"), i32("mode"), i64("ignore_index"));

    private ProxyDistributionKernel() {
    }

    static void run(KernelBackend gpu, ProxyDistribution.ProxyRows job) {
        int rows = job.rows();
        if (rows == 0) {
            return;
        }
        try (DeviceBuffer z = gpu.allocate(job.logits().byteSize());
             DeviceBuffer y = gpu.allocate(8L * rows);
             DeviceBuffer logProb = gpu.allocate(4L * rows);
             DeviceBuffer keptLse = gpu.allocate(4L * rows);
             DeviceBuffer keptCount = gpu.allocate(4L * rows)) {
            gpu.copyToDevice(job.logits().segment(), z);
            gpu.copyToDevice(MemorySegment.ofArray(job.targets()), y);
            int dtype = DivergenceKernel.dtypeCode(job.logits().dtype());
            gpu.launch(PROXY, LaunchConfig.of1d(rows, THREADS, 0), z, dtype, y, logProb, keptLse, keptCount,
                    (long) job.vocab(), job.invT(), job.logThreshold(),
                    job.mode() == ProxyDistribution.Mode.FIXED ? 1 : 0, job.ignoreIndex());
            gpu.copyToHost(logProb, job.out().logProb().segment());
            gpu.copyToHost(keptLse, job.out().keptLse().segment());
            gpu.copyToHost(keptCount, job.out().keptCount().segment());
        }
    }
}
