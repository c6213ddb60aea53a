package dev.tokenkernels.bench;

import dev.tokenkernels.ops.loss.ClippedKl;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * DAC-KL's band-clipped forward KL with its gradients, the band [0.1, 0.9) of the teacher's mass,
 * hard ({@code gamma = 0}) or soft ({@code gamma = 0.01}). No scalar baseline: its cost is read
 * against the plain divergence on the same shape (the report has both).
 */
final class ClippedKlWorkload extends LogitsWorkload {
    private final float gamma;
    private final Tensor student;
    private final Tensor teacher;
    private final Tensor lower;
    private final Tensor upper;
    private final Tensor gradient;

    ClippedKlWorkload(int rows, int vocab, DType dtype, float gamma) {
        super(rows, vocab, dtype);
        this.gamma = gamma;
        this.student = LogitStatsWorkload.randomLogits(rows, vocab, dtype, 42);
        this.teacher = Tensor.allocate(dtype, rows, vocab);
        SplittableRandom random = new SplittableRandom(43); // the divergence workload's teacher
        long n = (long) rows * vocab;
        for (long i = 0; i < n; i++) {
            teacher.setFloat(i, student.getFloat(i) + (float) (random.nextDouble() - 0.5));
        }
        float[] l = new float[rows];
        float[] u = new float[rows];
        Arrays.fill(l, 0.1f);
        Arrays.fill(u, 0.9f);
        this.lower = Tensor.of(l, rows);
        this.upper = Tensor.of(u, rows);
        this.gradient = Tensor.allocate(DType.F32, rows, vocab);
    }

    @Override
    public String op() {
        return gamma == 0f ? "clipped_kl/hard" : "clipped_kl/soft";
    }

    /** Student and teacher read once, the gradient written once. */
    @Override
    public long bytes() {
        return student.byteSize() + teacher.byteSize() + gradient.byteSize();
    }

    @Override
    public void run(Backend backend) {
        ClippedKl.computeWithGradient(student, teacher, lower, upper, ClippedKl.Options.forwardKl(gamma).on(backend), 1f,
                gradient).close();
    }

    @Override
    public boolean hasScalar() {
        return false;
    }

    @Override
    public void close() {
        student.close();
        teacher.close();
        lower.close();
        upper.close();
        gradient.close();
    }
}
