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

/**
 * {@link ContrastiveTargetProb} on a {@link KernelBackend}: {@code kernels/loss/contrastive_target_prob.cu},
 * one block per row. Tensors are host tensors for now: both logits go in, the two [N] outputs come out.
 */
final class ContrastiveTargetProbKernel {
    static final String SOURCE = "loss/contrastive_target_prob.cu";
    static final int THREADS = 256;
    private static final Kernel CONTRASTIVE_TARGET_PROB = new Kernel(SOURCE, "contrastive_target_prob",
            pointer("positive"), i32("positive_dtype"), pointer("negative"), i32("negative_dtype"),
            pointer("targets"), pointer("log_prob"), pointer("prob"), i64("vocab"), f32("lambda"), f32("inv_t"));

    private ContrastiveTargetProbKernel() {
    }

    static void run(KernelBackend gpu, ContrastiveTargetProb.Rows job) {
        int rows = job.rows();
        if (rows == 0) {
            return;
        }
        try (DeviceBuffer positive = gpu.allocate(job.positive().byteSize());
             DeviceBuffer negative = gpu.allocate(job.negative().byteSize());
             DeviceBuffer targets = gpu.allocate(4L * rows);
             DeviceBuffer logProb = gpu.allocate(4L * rows);
             DeviceBuffer prob = gpu.allocate(4L * rows)) {
            gpu.copyToDevice(job.positive().segment(), positive);
            gpu.copyToDevice(job.negative().segment(), negative);
            gpu.copyToDevice(MemorySegment.ofArray(job.targets()), targets);
            gpu.launch(CONTRASTIVE_TARGET_PROB, LaunchConfig.of1d(rows, THREADS, 0), positive,
                    DivergenceKernel.dtypeCode(job.positive().dtype()), negative,
                    DivergenceKernel.dtypeCode(job.negative().dtype()), targets, logProb, prob, (long) job.vocab(),
                    job.lambda(), job.invT());
            gpu.copyToHost(logProb, MemorySegment.ofArray(job.logProb()));
            gpu.copyToHost(prob, MemorySegment.ofArray(job.prob()));
        }
    }
}
