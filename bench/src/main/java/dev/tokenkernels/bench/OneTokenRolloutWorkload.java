package dev.tokenkernels.bench;

import dev.tokenkernels.ops.loss.OneTokenRollout;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;

/**
 * One-token rollout with its gradient (into a reused F32 buffer) at the defaults (K = 4, beta 0.1,
 * T = 1), a new seed every run as in training, as the report and JMH run it. The logits are the
 * shared flat ones (uniform in [-4, 4], rare spikes of +12), where the CPU draws noise for almost
 * every entry, or, {@code peaked}, Gaussian (sigma 3) with three entries per row at 22 to 24: most
 * entries are too far below the top to win a draw and get no noise.
 */
final class OneTokenRolloutWorkload extends LogitsWorkload {
    private static final int SAMPLES = 4;
    private static final float BETA = 0.1f;
    private final Tensor logits;
    private final Tensor targets;
    private final Tensor gradient;
    private final long[] target;
    private final boolean peaked;
    private long step;

    OneTokenRolloutWorkload(int rows, int vocab, DType dtype) {
        this(rows, vocab, dtype, false);
    }

    OneTokenRolloutWorkload(int rows, int vocab, DType dtype, boolean peaked) {
        super(rows, vocab, dtype);
        this.peaked = peaked;
        this.logits = peaked ? peakedLogits(rows, vocab, dtype) : LogitStatsWorkload.randomLogits(rows, vocab, dtype, 47);
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

    private static Tensor peakedLogits(int rows, int vocab, DType dtype) {
        Tensor t = Tensor.allocate(dtype, rows, vocab);
        SplittableRandom random = new SplittableRandom(48);
        for (int r = 0; r < rows; r++) {
            long base = (long) r * vocab;
            for (int v = 0; v < vocab; v++) {
                t.setFloat(base + v, (float) (3 * random.nextGaussian()));
            }
            for (int top = 0; top < 3; top++) {
                t.setFloat(base + random.nextInt(vocab), 22f + top);
            }
        }
        return t;
    }

    @Override
    public String op() {
        return peaked ? "one_token_rollout/peaked" : "one_token_rollout";
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
