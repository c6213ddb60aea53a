package dev.tokenkernels.bench;

import dev.tokenkernels.ops.loss.PreferenceLoss;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;

/**
 * DPO with its gradients on a batch of chosen/rejected pairs: {@code rows / 2} tokens a side in
 * responses of {@link #RESPONSE_LENGTH}, gradients into reused F32 buffers. Two
 * {@code TargetLogProb} passes a side (the log-probabilities, then the gradient), so the logits
 * are read twice; no scalar baseline of its own (its passes are target_log_prob's).
 */
final class PreferenceLossWorkload extends LogitsWorkload {
    static final int RESPONSE_LENGTH = 256;

    private final PreferenceLoss.Responses chosen;
    private final PreferenceLoss.Responses rejected;
    private final Tensor chosenGradient;
    private final Tensor rejectedGradient;
    private final Tensor[] owned;

    PreferenceLossWorkload(int rows, int vocab, DType dtype) {
        super(rows, vocab, dtype);
        int side = Math.max(1, rows / 2);
        int responses = Math.max(1, side / RESPONSE_LENGTH);
        int[] starts = new int[responses + 1];
        for (int b = 1; b <= responses; b++) {
            starts[b] = b == responses ? side : b * (side / responses);
        }
        SplittableRandom random = new SplittableRandom(21);
        Tensor[] sides = new Tensor[6];
        for (int s = 0; s < 2; s++) {
            int[] y = new int[side];
            float[] ref = new float[side];
            for (int t = 0; t < side; t++) {
                y[t] = random.nextInt(vocab);
                ref[t] = (float) -random.nextDouble(1, 12);
            }
            sides[3 * s] = LogitStatsWorkload.randomLogits(side, vocab, dtype, 46 + s);
            sides[3 * s + 1] = Tensor.ofInts(y, side);
            sides[3 * s + 2] = Tensor.of(ref, side);
        }
        this.chosen = PreferenceLoss.Responses.of(sides[0], sides[1], starts, sides[2]);
        this.rejected = PreferenceLoss.Responses.of(sides[3], sides[4], starts, sides[5]);
        this.chosenGradient = Tensor.allocate(DType.F32, side, vocab);
        this.rejectedGradient = Tensor.allocate(DType.F32, side, vocab);
        this.owned = sides;
    }

    @Override
    public String op() {
        return "preference_loss";
    }

    /** Both logits tensors read twice (two passes), both gradients written once. */
    @Override
    public long bytes() {
        return 2 * (chosen.logits().byteSize() + rejected.logits().byteSize()) + chosenGradient.byteSize()
                + rejectedGradient.byteSize();
    }

    @Override
    public void run(Backend backend) {
        PreferenceLoss.computeWithGradient(chosen, rejected, PreferenceLoss.Options.dpo(0.1f).on(backend), 1f,
                chosenGradient, rejectedGradient).close();
    }

    @Override
    public boolean hasScalar() {
        return false;
    }

    @Override
    public void close() {
        for (Tensor t : owned) {
            t.close();
        }
        chosenGradient.close();
        rejectedGradient.close();
    }
}
