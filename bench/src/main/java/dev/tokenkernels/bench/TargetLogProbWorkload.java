package dev.tokenkernels.bench;

import dev.tokenkernels.ops.loss.TargetLogProb;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;

/** Target log-probabilities with the gradient (into a reused F32 buffer), as the report and JMH run it. */
final class TargetLogProbWorkload extends LogitsWorkload {
    private final Tensor logits;
    private final Tensor targets;
    private final Tensor coefficients;
    private final Tensor gradient;
    private final long[] targetIndex;
    private final float[] coefficient;
    private final float[] logProb;

    TargetLogProbWorkload(int rows, int vocab, DType dtype) {
        super(rows, vocab, dtype);
        this.logits = LogitStatsWorkload.randomLogits(rows, vocab, dtype, 45);
        SplittableRandom random = new SplittableRandom(10);
        int[] y = new int[rows];
        targetIndex = new long[rows];
        coefficient = new float[rows];
        for (int i = 0; i < rows; i++) {
            y[i] = random.nextInt(vocab);
            targetIndex[i] = y[i];
            coefficient[i] = (float) random.nextDouble(-1, 1);
        }
        this.targets = Tensor.ofInts(y, rows);
        this.coefficients = Tensor.of(coefficient, rows);
        this.gradient = Tensor.allocate(DType.F32, rows, vocab);
        this.logProb = new float[rows];
    }

    @Override
    public String op() {
        return "target_log_prob";
    }

    /** Logits read once, the gradient written once. */
    @Override
    public long bytes() {
        return logits.byteSize() + gradient.byteSize();
    }

    @Override
    public void run(Backend backend) {
        TargetLogProb.computeWithGradient(logits, targets, coefficients, TargetLogProb.Options.defaults().on(backend),
                gradient).close();
    }

    @Override
    public void runScalar() {
        ScalarBaselines.targetLogProb(logits.segment(), dtype, rows, vocab, 1f, targetIndex, coefficient,
                gradient.segment(), logProb);
    }

    @Override
    public void close() {
        logits.close();
        targets.close();
        coefficients.close();
        gradient.close();
    }
}
