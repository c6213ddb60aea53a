package dev.tokenkernels.bench;

import dev.tokenkernels.ops.loss.Divergence;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;

/**
 * Divergence loss with its gradient (into a reused F32 buffer), student and teacher of one dtype,
 * as the report and the JMH benchmark run it. The scalar baseline exists for forward KL.
 */
final class DivergenceWorkload extends LogitsWorkload {
    private final Divergence.Kind kind;
    private final Tensor student;
    private final Tensor teacher;
    private final Tensor gradient;
    private final float[] rowLoss;

    DivergenceWorkload(int rows, int vocab, DType dtype, Divergence.Kind kind) {
        super(rows, vocab, dtype);
        this.kind = kind;
        this.student = LogitStatsWorkload.randomLogits(rows, vocab, dtype, 42);
        this.teacher = Tensor.allocate(dtype, rows, vocab);
        // A teacher close to the student, as in distillation: the student's logits plus noise.
        SplittableRandom random = new SplittableRandom(43);
        long n = (long) rows * vocab;
        for (long i = 0; i < n; i++) {
            teacher.setFloat(i, student.getFloat(i) + (float) (random.nextDouble() - 0.5));
        }
        this.gradient = Tensor.allocate(DType.F32, rows, vocab);
        this.rowLoss = new float[rows];
    }

    static String opName(Divergence.Kind kind) {
        return "divergence/" + switch (kind) {
            case FORWARD_KL -> "fkl";
            case REVERSE_KL -> "rkl";
            case JSD -> "jsd";
            case TOTAL_VARIATION -> "tvd";
        };
    }

    private Divergence.Options options() {
        return switch (kind) {
            case FORWARD_KL -> Divergence.Options.forwardKl();
            case REVERSE_KL -> Divergence.Options.reverseKl();
            case JSD -> Divergence.Options.jsd(0.5f);
            case TOTAL_VARIATION -> Divergence.Options.totalVariation();
        };
    }

    @Override
    public String op() {
        return opName(kind);
    }

    /** Student and teacher read once, the gradient written once. */
    @Override
    public long bytes() {
        return student.byteSize() + teacher.byteSize() + gradient.byteSize();
    }

    @Override
    public void run(Backend backend) {
        Divergence.computeWithGradient(student, teacher, options().on(backend), 1f, gradient).close();
    }

    @Override
    public boolean hasScalar() {
        return kind == Divergence.Kind.FORWARD_KL;
    }

    @Override
    public void runScalar() {
        if (!hasScalar()) {
            throw new UnsupportedOperationException("the scalar baseline is forward KL only");
        }
        ScalarBaselines.forwardKl(student.segment(), teacher.segment(), dtype, rows, vocab, 1f, gradient.segment(),
                rowLoss);
    }

    @Override
    public void close() {
        student.close();
        teacher.close();
        gradient.close();
    }
}
