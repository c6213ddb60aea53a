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
 * {@link TargetLogProb} on a {@link KernelBackend}: {@code kernels/loss/target_log_prob.cu}, one
 * block per row. Tensors are host tensors for now: logits (and an accumulated gradient) go in,
 * log-probabilities and the gradient come out.
 */
final class TargetLogProbKernel {
    static final String SOURCE = "loss/target_log_prob.cu";
    static final int THREADS = 256;
    private static final Kernel TARGET_LOG_PROB = new Kernel(SOURCE, "target_log_prob", pointer("logits"),
            i32("dtype"), pointer("targets"), pointer("coefficients"), pointer("grad"), i32("grad_dtype"),
            pointer("log_prob"), i64("vocab"), f32("inv_t"), i32("has_grad"), i32("accumulate"));

    private TargetLogProbKernel() {
    }

    static void run(KernelBackend gpu, TargetLogProb.Rows job) {
        int rows = job.rows();
        if (rows == 0) {
            return;
        }
        boolean withGradient = job.coefficients() != null;
        try (DeviceBuffer logits = gpu.allocate(job.logits().byteSize());
             DeviceBuffer targets = gpu.allocate(4L * rows);
             DeviceBuffer coefficients = gpu.allocate(4L * rows);
             DeviceBuffer grad = gpu.allocate(withGradient && !job.inPlace() ? job.gradient().byteSize() : 4);
             DeviceBuffer logProb = gpu.allocate(4L * rows)) {
            gpu.copyToDevice(job.logits().segment(), logits);
            gpu.copyToDevice(MemorySegment.ofArray(job.targets()), targets);
            gpu.copyToDevice(MemorySegment.ofArray(withGradient ? job.coefficients() : new float[rows]), coefficients);
            if (job.accumulate()) {
                gpu.copyToDevice(job.gradient().segment(), grad);
            }
            // In place on the host means in place on the device: the kernel gets the logits buffer.
            DeviceBuffer gradTarget = job.inPlace() ? logits : grad;
            gpu.launch(TARGET_LOG_PROB, LaunchConfig.of1d(rows, THREADS, 0), logits,
                    DivergenceKernel.dtypeCode(job.logits().dtype()), targets, coefficients, gradTarget,
                    withGradient ? DivergenceKernel.dtypeCode(job.gradient().dtype()) : 0, logProb,
                    (long) job.vocab(), job.invT(), withGradient ? 1 : 0, job.accumulate() ? 1 : 0);
            gpu.copyToHost(logProb, MemorySegment.ofArray(job.logProb()));
            if (withGradient) {
                gpu.copyToHost(gradTarget, job.gradient().segment());
            }
        }
    }
}
