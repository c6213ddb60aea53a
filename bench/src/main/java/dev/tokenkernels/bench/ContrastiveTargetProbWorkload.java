package dev.tokenkernels.bench;

import dev.tokenkernels.ops.loss.ContrastiveTargetProb;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;

/**
 * cDPO's contrastive target probability: a positive and a negative model's logits of one dtype
 * (the negative near the positive), lambda 1. Bytes: both logits tensors read once.
 */
final class ContrastiveTargetProbWorkload extends LogitsWorkload {
    private final Tensor positive;
    private final Tensor negative;
    private final Tensor targets;
    private final long[] targetIndex;
    private final float[] prob;

    ContrastiveTargetProbWorkload(int rows, int vocab, DType dtype) {
        super(rows, vocab, dtype);
        this.positive = LogitStatsWorkload.randomLogits(rows, vocab, dtype, 45);
        this.negative = Tensor.allocate(dtype, rows, vocab);
        SplittableRandom random = new SplittableRandom(47);
        long n = (long) rows * vocab;
        for (long i = 0; i < n; i++) {
            negative.setFloat(i, positive.getFloat(i) + (float) (random.nextDouble() - 0.5));
        }
        int[] y = new int[rows];
        targetIndex = new long[rows];
        for (int i = 0; i < rows; i++) {
            y[i] = random.nextInt(vocab);
            targetIndex[i] = y[i];
        }
        this.targets = Tensor.ofInts(y, rows);
        this.prob = new float[rows];
    }

    @Override
    public String op() {
        return "contrastive_target_prob";
    }

    @Override
    public long bytes() {
        return positive.byteSize() + negative.byteSize();
    }

    @Override
    public void run(Backend backend) {
        ContrastiveTargetProb.compute(positive, negative, targets, ContrastiveTargetProb.Options.defaults().on(backend))
                .close();
    }

    @Override
    public void runScalar() {
        ScalarBaselines.contrastiveTargetProb(positive.segment(), negative.segment(), dtype, rows, vocab, 1f,
                targetIndex, prob);
    }

    @Override
    public void close() {
        positive.close();
        negative.close();
        targets.close();
    }
}
