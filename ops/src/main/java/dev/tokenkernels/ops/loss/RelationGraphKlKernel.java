package dev.tokenkernels.ops.loss;

import static dev.tokenkernels.runtime.KernelParam.f32;
import static dev.tokenkernels.runtime.KernelParam.i32;
import static dev.tokenkernels.runtime.KernelParam.i64;
import static dev.tokenkernels.runtime.KernelParam.pointer;

import dev.tokenkernels.ops.cpu.HalfFloats;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.DeviceBuffer;
import dev.tokenkernels.runtime.Kernel;
import dev.tokenkernels.runtime.KernelBackend;
import dev.tokenkernels.runtime.LaunchConfig;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * {@link RelationGraphKl} on a {@link KernelBackend}: {@code kernels/loss/relation_graph_kl.cu},
 * two launches of one block per (sequence, row). The rows' log-sum-exps stay on the device between
 * them. Tensors are host tensors for now: features go in, losses and the gradient come out.
 */
final class RelationGraphKlKernel {
    static final String SOURCE = "loss/relation_graph_kl.cu";
    static final int THREADS = 256;
    private static final Kernel ROWS = new Kernel(SOURCE, "relation_graph_rows", pointer("student"),
            i32("student_dtype"), i64("student_dim"), pointer("teacher"), i32("teacher_dtype"), i64("teacher_dim"),
            pointer("lengths"), pointer("row_loss"), pointer("lse_s"), pointer("lse_t"), i64("tokens"), f32("inv_t"),
            i32("self_loops"));
    private static final Kernel GRAD = new Kernel(SOURCE, "relation_graph_grad", pointer("student"),
            i32("student_dtype"), i64("student_dim"), pointer("teacher"), i32("teacher_dtype"), i64("teacher_dim"),
            pointer("lengths"), pointer("lse_s"), pointer("lse_t"), pointer("grad"), i64("tokens"), f32("inv_t"),
            f32("coef"), i32("self_loops"));

    private RelationGraphKlKernel() {
    }

    /**
     * The kernel's F32 gradient (it accumulates column tiles in place, so it needs fp32 rows) into
     * the caller's tensor: as is for F32, else rounded once per value, a row at a time.
     */
    private static void copyGradient(KernelBackend gpu, DeviceBuffer grad, Tensor out, int rows, int dim) {
        if (out.dtype() == DType.F32) {
            gpu.copyToHost(grad, out.segment());
            return;
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment values = arena.allocate(4L * rows * dim, 4);
            gpu.copyToHost(grad, values);
            float[] row = new float[dim];
            short[] bits = new short[dim];
            for (int r = 0; r < rows; r++) {
                MemorySegment.copy(values, ValueLayout.JAVA_FLOAT, 4L * r * dim, row, 0, dim);
                HalfFloats.store(row, dim, out.dtype(), bits, out.segment(), (long) r * dim * out.dtype().byteSize());
            }
        }
    }

    static void run(KernelBackend gpu, RelationGraphKl.GraphJob job) {
        int rows = job.rows();
        if (rows == 0) {
            return;
        }
        boolean withGradient = job.gradient() != null;
        try (DeviceBuffer student = gpu.allocate(job.student().byteSize());
             DeviceBuffer teacher = gpu.allocate(job.teacher().byteSize());
             DeviceBuffer lengths = gpu.allocate(4L * job.batch());
             DeviceBuffer rowLoss = gpu.allocate(4L * rows);
             DeviceBuffer lseS = gpu.allocate(4L * rows);
             DeviceBuffer lseT = gpu.allocate(4L * rows);
             DeviceBuffer grad = gpu.allocate(withGradient ? 4L * rows * job.studentDim() : 4)) {
            gpu.copyToDevice(job.student().segment(), student);
            gpu.copyToDevice(job.teacher().segment(), teacher);
            gpu.copyToDevice(MemorySegment.ofArray(job.lengths()), lengths);
            int studentDtype = DivergenceKernel.dtypeCode(job.student().dtype());
            int teacherDtype = DivergenceKernel.dtypeCode(job.teacher().dtype());
            int selfLoops = job.selfLoops() ? 1 : 0;
            LaunchConfig perRow = LaunchConfig.of1d(rows, THREADS, 0);
            gpu.launch(ROWS, perRow, student, studentDtype, (long) job.studentDim(), teacher, teacherDtype,
                    (long) job.teacherDim(), lengths, rowLoss, lseS, lseT, (long) job.tokens(), job.invT(), selfLoops);
            gpu.copyToHost(rowLoss, MemorySegment.ofArray(job.rowLoss()));
            if (withGradient) {
                gpu.launch(GRAD, perRow, student, studentDtype, (long) job.studentDim(), teacher, teacherDtype,
                        (long) job.teacherDim(), lengths, lseS, lseT, grad, (long) job.tokens(), job.invT(),
                        job.gradCoef(), selfLoops);
                copyGradient(gpu, grad, job.gradient(), rows, job.studentDim());
            }
        }
    }
}
