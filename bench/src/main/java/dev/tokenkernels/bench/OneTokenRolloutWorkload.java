package dev.tokenkernels.bench;

import dev.tokenkernels.ops.loss.OneTokenRollout;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;

/**
 * One-token rollout with its gradient (into a reused F32 buffer) at the defaults (K = 4, beta 0.1,
 * T = 1), a new seed every run as in training, as the report and JMH run it.
 */
final class OneTokenRolloutWorkload extends LogitsWorkload {
    private static final int SAMPLES = 4;
    private static final float BETA = 0.1f;
    private final Tensor logits;
    private final Tensor targets;
    private final Tensor gradient;
    private final long[] target;
    private long step;

    OneTokenRolloutWorkload(int rows, int vocab, DType dtype) {
        super(rows, vocab, dtype);
        this.logits = LogitStatsWorkload.randomLogits(rows, vocab, dtype, 47);
        SplittableRandom random = new SplittableRandom(12);
        int[] y = new int[rows];
        target = new long[rows];
        for (int i = 0; i < rows; i++) {
            y[i] = random.nextInt(vocab);
            target[i] = y[i];
        }
        this.targets = Tensor.ofInts(y, rows);
        this.gradient = Tensor.allocate(DType.F32, rows, vocab);
    }

    @Override
    public String op() {
        return "one_token_rollout";
    }

    /** Logits read once, the gradient written once. */
    @Override
    public long bytes() {
        return logits.byteSize() + gradient.byteSize();
    }

    @Override
    public void run(Backend backend) {
        OneTokenRollout.Options options = OneTokenRollout.Options.defaults().withSamples(SAMPLES).withBeta(BETA)
                .withSeed(step++).on(backend);
        OneTokenRollout.computeWithGradient(logits, targets, options, 1f, gradient).close();
    }

    @Override
    public void runScalar() {
        ScalarBaselines.oneTokenRollout(logits.segment(), dtype, rows, vocab, target, SAMPLES, BETA, step++,
                gradient.segment());
    }

    @Override
    public void close() {
        logits.close();
        targets.close();
        gradient.close();
    }
}
