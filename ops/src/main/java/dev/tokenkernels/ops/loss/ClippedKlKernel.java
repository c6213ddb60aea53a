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
 * {@link ClippedKl} on a {@link KernelBackend}: {@code kernels/loss/clipped_kl.cu}, one block per
 * row. Tensors are host tensors for now: logits and bounds go in, losses and gradients come out.
 */
final class ClippedKlKernel {
    static final String SOURCE = "loss/clipped_kl.cu";
    static final int THREADS = 256;
    private static final Kernel CLIPPED_KL = new Kernel(SOURCE, "clipped_kl", pointer("student"), i32("student_dtype"),
            pointer("teacher"), i32("teacher_dtype"), pointer("grad"), pointer("row_loss"), pointer("kept_mass"),
            pointer("lower_grad"), pointer("upper_grad"), pointer("weights"), pointer("grad_coef"),
            pointer("bound_coef"), pointer("lower"), pointer("upper"), pointer("targets"), i64("vocab"), f32("inv_t"),
            f32("gamma"), i32("reverse"), i32("has_grad"));

    private ClippedKlKernel() {
    }

    static void run(KernelBackend gpu, ClippedKl.ClipRows job) {
        int rows = job.rows();
        if (rows == 0) {
            return;
        }
        boolean withGradient = job.gradCoef() != null;
        try (DeviceBuffer student = gpu.allocate(job.student().byteSize());
             DeviceBuffer teacher = gpu.allocate(job.teacher().byteSize());
             DeviceBuffer grad = gpu.allocate(withGradient && !job.inPlace() ? job.gradient().byteSize() : 4);
             DeviceBuffer rowLoss = gpu.allocate(4L * rows);
             DeviceBuffer keptMass = gpu.allocate(4L * rows);
             DeviceBuffer lowerGrad = gpu.allocate(4L * rows);
             DeviceBuffer upperGrad = gpu.allocate(4L * rows);
             DeviceBuffer weights = gpu.allocate(4L * rows);
             DeviceBuffer gradCoef = gpu.allocate(4L * rows);
             DeviceBuffer boundCoef = gpu.allocate(4L * rows);
             DeviceBuffer lower = gpu.allocate(4L * rows);
             DeviceBuffer upper = gpu.allocate(4L * rows);
             DeviceBuffer targets = gpu.allocate(4L * rows)) {
            gpu.copyToDevice(job.student().segment(), student);
            gpu.copyToDevice(job.teacher().segment(), teacher);
            gpu.copyToDevice(MemorySegment.ofArray(job.weights()), weights);
            gpu.copyToDevice(MemorySegment.ofArray(withGradient ? job.gradCoef() : new float[rows]), gradCoef);
            gpu.copyToDevice(MemorySegment.ofArray(withGradient ? job.boundCoef() : new float[rows]), boundCoef);
            gpu.copyToDevice(MemorySegment.ofArray(job.lower()), lower);
            gpu.copyToDevice(MemorySegment.ofArray(job.upper()), upper);
            gpu.copyToDevice(MemorySegment.ofArray(job.targets()), targets);
            // In place on the host means in place on the device: the kernel gets the student buffer.
            DeviceBuffer gradTarget = job.inPlace() ? student : grad;
            gpu.launch(CLIPPED_KL, LaunchConfig.of1d(rows, THREADS, 0), student,
                    DivergenceKernel.dtypeCode(job.student().dtype()), teacher,
                    DivergenceKernel.dtypeCode(job.teacher().dtype()), gradTarget, rowLoss, keptMass, lowerGrad,
                    upperGrad, weights, gradCoef, boundCoef, lower, upper, targets, (long) job.vocab(), job.invT(),
                    job.gamma(), job.direction() == Divergence.Kind.REVERSE_KL ? 1 : 0, withGradient ? 1 : 0);
            gpu.copyToHost(rowLoss, MemorySegment.ofArray(job.rowLoss()));
            gpu.copyToHost(keptMass, MemorySegment.ofArray(job.keptMass()));
            if (withGradient) {
                gpu.copyToHost(gradTarget, job.gradient().segment());
                gpu.copyToHost(lowerGrad, MemorySegment.ofArray(job.lowerGradient()));
                gpu.copyToHost(upperGrad, MemorySegment.ofArray(job.upperGradient()));
            }
        }
    }
}
