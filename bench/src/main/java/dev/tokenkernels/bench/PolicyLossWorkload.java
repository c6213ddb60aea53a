package dev.tokenkernels.bench;

import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;

/**
 * The clipped policy loss (eps 0.2/0.28 as DAPO, token mean) with its gradient into a reused
 * buffer (F32, or F16/BF16 for the half-gradient variant), 8 sequences, as the report and JMH run it.
 */
final class PolicyLossWorkload extends LogitsWorkload {
    private static final float EPS_LOW = 0.2f;
    private static final float EPS_HIGH = 0.28f;
    private final Tensor logits;
    private final Tensor targets;
    private final Tensor oldLogProb;
    private final Tensor advantages;
    private final Tensor gradient;
    private final int[] starts;
    private final long[] target;
    private final float[] old;
    private final float[] advantage;

    PolicyLossWorkload(int rows, int vocab, DType dtype) {
        this(rows, vocab, dtype, DType.F32);
    }

    /** With the gradient stored as {@code gradientType} (F32, F16 or BF16). */
    PolicyLossWorkload(int rows, int vocab, DType dtype, DType gradientType) {
        super(rows, vocab, dtype);
        this.logits = LogitStatsWorkload.randomLogits(rows, vocab, dtype, 46);
        SplittableRandom random = new SplittableRandom(11);
        int[] y = new int[rows];
        target = new long[rows];
        old = new float[rows];
        advantage = new float[rows];
        for (int i = 0; i < rows; i++) {
            y[i] = random.nextInt(vocab);
            target[i] = y[i];
            old[i] = (float) (-10 + random.nextDouble(-1, 1)); // the logits' log-probabilities are near -10
            advantage[i] = (float) random.nextGaussian();
        }
        this.targets = Tensor.ofInts(y, rows);
        this.oldLogProb = Tensor.of(old, rows);
        this.advantages = Tensor.of(advantage, rows);
        this.gradient = Tensor.allocate(gradientType, rows, vocab);
        int sequences = Math.min(8, rows);
        starts = new int[sequences + 1];
        for (int b = 0; b <= sequences; b++) {
            starts[b] = (int) ((long) rows * b / sequences);
        }
    }

    @Override
    public String op() {
        DType stored = gradient.dtype();
        return stored == DType.F32 ? "policy_loss" : "policy_loss/" + stored.name().toLowerCase() + "-grad";
    }

    /** Logits read once, the gradient written once. */
    @Override
    public long bytes() {
        return logits.byteSize() + gradient.byteSize();
    }

    @Override
    public void run(Backend backend) {
        PolicyLoss.Options options = PolicyLoss.Options.defaults().withClip(EPS_LOW, EPS_HIGH).on(backend);
        PolicyLoss.computeWithGradient(logits, targets, oldLogProb, advantages, null, starts, options, 1f, gradient)
                .close();
    }

    /** The scalar loop writes an F32 gradient: a baseline only for the F32-gradient workload. */
    @Override
    public boolean hasScalar() {
        return gradient.dtype() == DType.F32;
    }

    @Override
    public void runScalar() {
        if (!hasScalar()) {
            throw new UnsupportedOperationException("the scalar baseline writes an F32 gradient");
        }
        ScalarBaselines.clippedPolicyLoss(logits.segment(), dtype, rows, vocab, target, old, advantage, EPS_LOW,
                EPS_HIGH, gradient.segment());
    }

    @Override
    public void close() {
        logits.close();
        targets.close();
        oldLogProb.close();
        advantages.close();
        gradient.close();
    }
}
