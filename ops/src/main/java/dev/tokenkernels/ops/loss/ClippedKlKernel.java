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
import java.util.Arrays;

/**
 * {@link ClippedKl} on a {@link KernelBackend}: {@code kernels/loss/clipped_kl.cu}, one block per
 * row. Tensors are host tensors for now: logits and bounds go in, losses and gradients come out.
 * Rows whose band edges need more than {@link ClippedKl#KERNEL_RANKED_CLASSES} classes ordered
 * are flagged by the first launch and run again in groups, each row with global scratch for its sort
 * ({@code 20} bytes per class, the vocabulary rounded up to a power of two; at most
 * {@value #SCRATCH_BYTES} bytes per launch).
 */
final class ClippedKlKernel {
    static final String SOURCE = "loss/clipped_kl.cu";
    static final int THREADS = 256;
    /** Scratch bytes of one sorting launch (more rows need more launches). */
    static final long SCRATCH_BYTES = 1L << 26;
    private static final Kernel CLIPPED_KL = new Kernel(SOURCE, "clipped_kl", pointer("student"), i32("student_dtype"),
            pointer("teacher"), i32("teacher_dtype"), pointer("grad"), pointer("row_loss"), pointer("kept_mass"),
            pointer("lower_grad"), pointer("upper_grad"), pointer("weights"), pointer("grad_coef"),
            pointer("bound_coef"), pointer("lower"), pointer("upper"), pointer("targets"), i64("vocab"), f32("inv_t"),
            f32("gamma"), i32("reverse"), i32("has_grad"), i32("pass"),
            pointer("overflow_rows"), pointer("row_list"), pointer("sort_keys"), pointer("sort_gates"),
            i64("sort_stride"));

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
             DeviceBuffer targets = gpu.allocate(4L * rows);
             DeviceBuffer overflow = gpu.allocate(4L * rows)) {
            gpu.copyToDevice(job.student().segment(), student);
            gpu.copyToDevice(job.teacher().segment(), teacher);
            gpu.copyToDevice(MemorySegment.ofArray(job.weights()), weights);
            gpu.copyToDevice(MemorySegment.ofArray(withGradient ? job.gradCoef() : new float[rows]), gradCoef);
            gpu.copyToDevice(MemorySegment.ofArray(withGradient ? job.boundCoef() : new float[rows]), boundCoef);
            gpu.copyToDevice(MemorySegment.ofArray(job.lower()), lower);
            gpu.copyToDevice(MemorySegment.ofArray(job.upper()), upper);
            gpu.copyToDevice(MemorySegment.ofArray(job.targets()), targets);
            int[] overflowRows = new int[rows];
            gpu.copyToDevice(MemorySegment.ofArray(overflowRows), overflow);
            // In place on the host means in place on the device: the kernel gets the student buffer.
            DeviceBuffer gradTarget = job.inPlace() ? student : grad;
            Object[] common = {student, DivergenceKernel.dtypeCode(job.student().dtype()), teacher,
                DivergenceKernel.dtypeCode(job.teacher().dtype()), gradTarget, rowLoss, keptMass, lowerGrad, upperGrad,
                weights, gradCoef, boundCoef, lower, upper, targets, (long) job.vocab(), job.invT(), job.gamma(),
                job.direction() == Divergence.Kind.REVERSE_KL ? 1 : 0, withGradient ? 1 : 0};
            // Pass 0 has no scratch: the row list and sort buffers are placeholders it does not read.
            gpu.launch(CLIPPED_KL, LaunchConfig.of1d(rows, THREADS, 0),
                    arguments(common, 0, overflow, overflow, overflow, overflow, 0L));
            gpu.copyToHost(overflow, MemorySegment.ofArray(overflowRows));
            sortOverflowRows(gpu, common, overflowRows, job.vocab(), overflow);
            gpu.copyToHost(rowLoss, MemorySegment.ofArray(job.rowLoss()));
            gpu.copyToHost(keptMass, MemorySegment.ofArray(job.keptMass()));
            if (withGradient) {
                gpu.copyToHost(gradTarget, job.gradient().segment());
                gpu.copyToHost(lowerGrad, MemorySegment.ofArray(job.lowerGradient()));
                gpu.copyToHost(upperGrad, MemorySegment.ofArray(job.upperGradient()));
            }
        }
    }

    /** Pass 1 for the flagged rows, as many rows per launch as {@link #SCRATCH_BYTES} holds. */
    private static void sortOverflowRows(KernelBackend gpu, Object[] common, int[] flags, int vocab,
                                         DeviceBuffer placeholder) {
        int[] list = new int[flags.length];
        int n = 0;
        for (int row = 0; row < flags.length; row++) {
            if (flags[row] != 0) {
                list[n++] = row;
            }
        }
        if (n == 0) {
            return;
        }
        long stride = Long.highestOneBit(Math.max(1, vocab - 1)) << 1; // a power of two >= vocab
        int perLaunch = (int) Math.max(1, Math.min(n, SCRATCH_BYTES / (20 * stride)));
        try (DeviceBuffer rowList = gpu.allocate(4L * perLaunch);
             DeviceBuffer keys = gpu.allocate(8 * stride * perLaunch);
             DeviceBuffer gates = gpu.allocate(12 * stride * perLaunch)) {
            for (int first = 0; first < n; first += perLaunch) {
                int count = Math.min(perLaunch, n - first);
                gpu.copyToDevice(MemorySegment.ofArray(Arrays.copyOfRange(list, first, first + perLaunch)),
                        rowList);
                gpu.launch(CLIPPED_KL, LaunchConfig.of1d(count, THREADS, 0),
                        arguments(common, 1, placeholder, rowList, keys, gates, stride));
            }
        }
    }

    private static Object[] arguments(Object[] common, Object... rest) {
        Object[] all = Arrays.copyOf(common, common.length + rest.length);
        System.arraycopy(rest, 0, all, common.length, rest.length);
        return all;
    }
}
