package dev.tokenkernels.ops.loss;

import static dev.tokenkernels.runtime.KernelParam.f32;
import static dev.tokenkernels.runtime.KernelParam.i32;
import static dev.tokenkernels.runtime.KernelParam.i64;
import static dev.tokenkernels.runtime.KernelParam.pointer;

import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.DeviceBuffer;
import dev.tokenkernels.runtime.Kernel;
import dev.tokenkernels.runtime.KernelBackend;
import dev.tokenkernels.runtime.LaunchConfig;
import java.lang.foreign.MemorySegment;

/**
 * {@link Divergence} on a {@link KernelBackend}: {@code kernels/loss/divergence.cu}, one block per
 * row. Tensors are host tensors for now: logits go in, per-row losses and the gradient come out.
 */
final class DivergenceKernel {
    static final String SOURCE = "loss/divergence.cu";
    static final int THREADS = 256;
    private static final Kernel DIVERGENCE = new Kernel(SOURCE, "divergence", pointer("student"), i32("student_dtype"),
            pointer("teacher"), i32("teacher_dtype"), pointer("grad"), i32("grad_dtype"), pointer("row_loss"),
            pointer("weights"), pointer("grad_coef"), i64("vocab"), i64("teacher_stride"), f32("inv_t"), f32("beta"),
            i32("kind"), i32("has_grad"), i32("filter_mode"), f32("filter_log_threshold"), pointer("reference"),
            i32("reference_dtype"), pointer("alphas"), i32("has_reference"));

    private DivergenceKernel() {
    }

    static void run(KernelBackend gpu, DivergenceRows job) {
        int rows = job.rows();
        if (rows == 0) {
            return;
        }
        boolean withGradient = job.gradCoef() != null;
        try (DeviceBuffer student = gpu.allocate(job.student().byteSize());
             DeviceBuffer teacher = gpu.allocate(job.teacher().byteSize());
             DeviceBuffer grad = gpu.allocate(withGradient && !job.inPlace() ? job.gradient().byteSize() : 4);
             DeviceBuffer rowLoss = gpu.allocate(4L * rows);
             DeviceBuffer weights = gpu.allocate(4L * rows);
             DeviceBuffer coef = gpu.allocate(4L * rows);
             DeviceBuffer reference = gpu.allocate(job.reference() == null ? 4 : job.reference().byteSize());
             DeviceBuffer alphas = gpu.allocate(4L * rows)) {
            if (job.reference() != null) {
                gpu.copyToDevice(job.reference().segment(), reference);
                gpu.copyToDevice(MemorySegment.ofArray(job.alpha()), alphas);
            }
            gpu.copyToDevice(job.student().segment(), student);
            gpu.copyToDevice(job.teacher().segment(), teacher);
            gpu.copyToDevice(MemorySegment.ofArray(job.weights()), weights);
            gpu.copyToDevice(MemorySegment.ofArray(withGradient ? job.gradCoef() : new float[rows]), coef);
            // In place on the host means in place on the device: the kernel gets the student buffer.
            DeviceBuffer gradTarget = job.inPlace() ? student : grad;
            gpu.launch(DIVERGENCE, LaunchConfig.of1d(rows, THREADS, 0), student, dtypeCode(job.student().dtype()),
                    teacher, dtypeCode(job.teacher().dtype()), gradTarget,
                    withGradient ? dtypeCode(job.gradient().dtype()) : 0, rowLoss, weights, coef,
                    (long) job.vocab(), (long) job.teacherStride(), job.invT(), job.beta(), kindCode(job.kind()),
                    withGradient ? 1 : 0, job.filter() == null ? -1 : job.filter() == ProxyDistribution.Mode.FIXED ? 1 : 0,
                    job.filterLogThreshold(), reference,
                    job.reference() == null ? 0 : dtypeCode(job.reference().dtype()), alphas,
                    job.reference() == null ? 0 : 1);
            gpu.copyToHost(rowLoss, MemorySegment.ofArray(job.rowLoss()));
            if (withGradient) {
                gpu.copyToHost(gradTarget, job.gradient().segment());
            }
        }
    }

    /** The kernels' dtype codes (tk::kF32, kF16, kBf16 in kernels/include/tk_numeric.cuh). */
    static int dtypeCode(DType dtype) {
        return switch (dtype) {
            case F32 -> 0;
            case F16 -> 1;
            case BF16 -> 2;
            default -> throw new IllegalStateException("unexpected dtype " + dtype);
        };
    }

    /** The kernel's kind codes (kForwardKl ... kTotalVariation in divergence.cu). */
    private static int kindCode(Divergence.Kind kind) {
        return switch (kind) {
            case FORWARD_KL -> 0;
            case REVERSE_KL -> 1;
            case JSD -> 2;
            case TOTAL_VARIATION -> 3;
        };
    }
}
